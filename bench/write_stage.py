"""The routing worker's write stage alone: CPU per task of ``route_tasks``, the tasks' vectors encoded ahead.

What bounds the Redis-mode pipeline (bench.pipeline): a worker spends the encoder's CPU on every task plus
this stage's (one thread; the rest, reading jobs and sending the draft jobs, is small), so on a machine whose
cores are all busy tasks routed per second can reach at most ``encoder / (encoder + write stage)`` of the
encoder's throughput. Baseline, measured in the same run: the encoder's CPU per text on the same task texts
(one call over all of them, as bench.pipeline's baseline). The result is that ceiling and the two CPU costs.

In one process, on a fresh SQLite file with the demo data (capacity raised as in bench.pipeline):
``BENCH_TASKS`` (default 3,200) demo-like tasks are posted, their texts encoded into the routing engine, then
routed in batches of the worker's size (``workers.actors.ROUTE_BATCH``) by the worker's write stage itself
(``workers.actors._route``: the routing model for the current taxonomy, then one transaction per batch); the
offers a round leaves open expire before the next one. Rounds (``BENCH_ROUNDS``, default 3) alternate encoder
and write stage on new tasks; the median round is reported. BLAS is limited to one thread, as in the worker.
``BENCH_EXAMPLES`` (default 0) adds that many learned examples to the demo taxonomy's 350 first, as staff
feedback does over time (the routing model is fitted for them in the warm-up round, outside the clock).

``RELAY_BENCH_POSTGRES_URL`` (an admin URL such as postgresql+psycopg://postgres@127.0.0.1:5432/test): a fresh
database on that server instead of the SQLite file, dropped afterwards. A server on this machine takes its CPU
from the cores the worker needs, so on Linux the CPU of every ``postgres`` process (the connections' backends,
the WAL writer, the checkpointer) is reported too, per task, and counted in the ceiling.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

BIN = Path(sys.executable).parent


def _postgres_cpu() -> float | None:
    """CPU seconds (user + system) of every process named ``postgres`` on this machine (Linux /proc); None
    where that cannot be read. Counts other databases' work on the same server too: run on a quiet one."""
    from bench.pipeline import proc_stat

    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    total, found = 0.0, False
    for entry in entries:
        try:
            name, cpu = proc_stat(entry)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if name == "postgres":
            total, found = total + cpu, True
    return total if found else None


def main() -> None:
    n_tasks = int(os.environ.get("BENCH_TASKS", "3200"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    learned = int(os.environ.get("BENCH_EXAMPLES", "0"))
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    pg_admin, pg_name = os.environ.get("RELAY_BENCH_POSTGRES_URL"), None
    if pg_admin:
        from bench.pipeline import _drop_postgres, _fresh_postgres

        db_url, pg_name = _fresh_postgres(pg_admin)
    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    env = {**os.environ, "RELAY_DATABASE_URL": db_url, "RELAY_BROKER": "stub", "RELAY_SECRET_KEY": "bench",
           "RELAY_ROUTER_TUNING": "0", "RELAY_INPROCESS_WORKER": "0", "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("RELAY_")})
    try:
        subprocess.run([BIN / "relay", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([BIN / "relay", "seed", "--demo"], env=env, check=True, capture_output=True)

        import structlog
        import threadpoolctl
        from sqlalchemy import insert, select, update

        from marketplace.db.models import Category, CategoryExample, Offer, OfferStatus, ProviderProfile, Role
        from marketplace.db.session import get_database
        from marketplace.domain.accounts.services import create_account
        from marketplace.domain.routing.engine import get_engine, task_text
        from marketplace.domain.routing.services import encode_ahead, routing_texts
        from marketplace.domain.tasks.schemas import TaskIn
        from marketplace.domain.tasks.services import create_task
        from marketplace.settings import Settings
        from workers import runtime
        from workers.actors import ROUTE_BATCH, _route

        threadpoolctl.threadpool_limits(1, user_api="blas")
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # JSON only
        settings = Settings(database_url=db_url, broker="stub", router_tuning=False,
                            run_inprocess_worker=False)
        runtime.configure(settings)
        db = get_database(db_url)
        with db.session() as session:
            session.execute(update(ProviderProfile).values(capacity=1_000_000))
            customer = create_account(session, f"bench-{uuid.uuid4().hex[:6]}@example.com",
                                      "bench-password-123", Role.CUSTOMER, "Bench customer")
        taxonomy = json.loads(resources.files("marketplace.demo").joinpath("taxonomy.json").read_text())
        examples = [e for c in taxonomy["categories"] for e in c["examples"]]
        if learned:
            with db.session() as session:
                category_ids = dict(session.execute(select(Category.slug, Category.id)).all())
                slugs = [c["slug"] for c in taxonomy["categories"] for _ in c["examples"]]
                session.execute(insert(CategoryExample.__table__), [
                    {"category_id": category_ids[slugs[i % len(slugs)]], "source": "staff",
                     "text": f"{examples[i % len(examples)]} (request {i})"} for i in range(learned)])
        engine = get_engine()  # the worker's: _route, the write stage itself, routes with it
        # A round's vectors and texts must still be cached when its batches are written (a worker hands them
        # over within seconds; here a whole round is encoded first).
        for cache in (engine._recent, task_text.cache):  # type: ignore[attr-defined]
            cache.size, cache.max_age = max(cache.size, 2 * n_tasks), max(cache.max_age, 3600.0)

        results = []
        for r in range(rounds + 1):  # round 0 warms up
            with db.session() as session:  # as in bench.pipeline: each round starts with no offer open
                session.execute(update(Offer).where(Offer.status == OfferStatus.OPEN)
                                .values(status=OfferStatus.EXPIRED))
            with db.session() as session:
                ids = sorted(create_task(session, customer.id, TaskIn(
                    title=f"Request {i}: {examples[i % len(examples)][:60]}",
                    description=examples[i % len(examples)],
                )).id for i in range(r * n_tasks, (r + 1) * n_tasks))
                session.info.pop("outbox", None)  # nobody relays them: the stub broker has no worker here
            with db.session(readonly=True) as session:
                texts = routing_texts(session, ids)
            encoder_start = time.process_time()
            encode_ahead(engine, texts)
            encoder_cpu = time.process_time() - encoder_start
            with db.session(readonly=True) as session:
                engine.refresh_providers(session)
            server_start = _postgres_cpu() if pg_admin else None
            write_start, wall_start = time.process_time(), time.perf_counter()
            outcomes = []
            for k in range(0, len(ids), ROUTE_BATCH):
                outcomes += _route(ids[k:k + ROUTE_BATCH]).values()
            write_cpu, wall = time.process_time() - write_start, time.perf_counter() - wall_start
            server_end = _postgres_cpu() if server_start is not None else None
            if r == 0:
                continue
            enc_ms, write_ms = 1000 * encoder_cpu / n_tasks, 1000 * write_cpu / n_tasks
            server_ms = None if server_end is None else 1000 * (server_end - server_start) / n_tasks
            results.append({"encoder_cpu_ms_per_text": round(enc_ms, 3),
                            "write_cpu_ms_per_task": round(write_ms, 3),
                            "write_wall_ms_per_task": round(1000 * wall / n_tasks, 3),
                            "routed": outcomes.count("routed"),
                            "ceiling": round(enc_ms / (enc_ms + write_ms + (server_ms or 0.0)), 3)})
            if server_ms is not None:
                results[-1]["db_server_cpu_ms_per_task"] = round(server_ms, 3)
        median = sorted(results, key=lambda x: x["ceiling"])[len(results) // 2]
        print(json.dumps({
            "benchmark": "write_stage", "database": "postgresql" if pg_admin else "sqlite", "tasks": n_tasks,
            "batch": ROUTE_BATCH,
            "learned_examples": learned,
            "rounds": results, "encoder_cpu_ms_per_text": median["encoder_cpu_ms_per_text"],
            "write_cpu_ms_per_task": median["write_cpu_ms_per_task"],
            "write_to_encoder": round(median["write_cpu_ms_per_task"] / median["encoder_cpu_ms_per_text"], 3),
            "pipeline_ceiling": median["ceiling"],
            "write_cpu_ms_per_task_range": [min(x["write_cpu_ms_per_task"] for x in results),
                                            max(x["write_cpu_ms_per_task"] for x in results)],
            **({"db_server_cpu_ms_per_task": median["db_server_cpu_ms_per_task"]}
               if "db_server_cpu_ms_per_task" in median else {}),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_admin and pg_name is not None:
            from marketplace.db.session import forget_database

            forget_database(db_url)  # its pooled connections closed before the database is dropped
            _drop_postgres(pg_admin, pg_name)


if __name__ == "__main__":
    main()
