"""Redis-mode pipeline throughput: tasks routed per second by one worker process.

Baseline, measured in the same run: the encoder's raw batched throughput on the same task texts (one
``Encoder.encode`` call over all of them). A separate ``dramatiq workers.run`` process (one process,
``BENCH_WORKER_THREADS`` threads, routing queue only) routes ``BENCH_TASKS`` tasks that were committed with
their outbox rows and then sent to Redis at once, with the worker stopped (SIGSTOP) meanwhile; the clock runs
from the moment the worker is let go (SIGCONT) until no task is left waiting for routing. Before 2026-12-03
(evening) the worker ran during the send and the clock started with it: the sending process's CPU (~0.4 s for
3,000 tasks, ~8 % of a round on a fast machine) competed with the worker. That figure is still reported
(``ratio_with_send``). Each routing job does the whole service: lock the task, categorize, rank the demo's 40
providers, write the decision and three offers, enqueue the three draft jobs. The demo providers' capacity
is raised for the run so that every task gets its offers (with the demo's capacities, the providers are full
after a few dozen tasks and the rest would only be sent to staff, a cheaper path than real routing), and the
offers left open by a round expire before the next one (outside the clock). A round's 3,000 tasks take about
ten seconds: the worker's first half second (fetching the first messages, encoding the first batch before
anything can be written) and the last batch written after the last encoding weigh on the rate as little as in
a steady stream, while a short burst of 1,200 is still measured with ``BENCH_TASKS=1200``.

Rounds alternate (``BENCH_ROUNDS``, default 3): encoder alone on a round's texts, then the worker on that
round's tasks, so a busy neighbour on a shared machine slows both sides of a ratio alike; every round's texts
are new (no vector is reused). The result is the median round. On Linux each round also reports the machine's
CPU shares (user, system, idle, steal) while its tasks were waiting (idle cores mean the pipeline stalls, not
that it is short of CPU) and the worker process's CPU time per routed task, encoder included (the steadiest
measure on a shared machine).

The router is the frozen one (the shared encoder and a head over its vectors: one encoder pass per task) unless
``BENCH_TUNED=1``: then the demo taxonomy's tuned model (the app's default for a taxonomy of at least five
categories with a median of ten examples) is fitted first, outside the clock. Every task is then encoded once,
by the tuned encoder: its vector decides the category and ranks the providers, whose profiles the worker
embeds with it (until 2026-12-04, fifth session, the shared encoder's vector ranked them, and every task was
encoded twice). The baseline stays the shared encoder; each round also times the tuned encoder alone on the
same texts (``ratio_to_tuned_encoder``).

Needs Redis (``RELAY_BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0). The database is a fresh SQLite
file, or a fresh database on the PostgreSQL server of ``RELAY_BENCH_POSTGRES_URL`` (an admin URL such as
postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def _fresh_postgres(admin_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"relay_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU time by state (Linux /proc/stat: user, nice, system, idle, iowait, irq, softirq,
    steal), to tell a worker that is short of CPU from one that leaves cores idle."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None


def _cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float]:
    if before is None or after is None or before == after:
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = (b - a for a, b in zip(before, after, strict=True))
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return {"cpu_user": round((user + nice) / total, 3), "cpu_system": round((system + irq + softirq) / total, 3),
            "cpu_idle": round((idle + iowait) / total, 3), "cpu_steal": round(steal / total, 3)}


def _worker_pids(pid: int) -> list[int]:
    """The dramatiq master process and the worker processes it forked, which run the actors (Linux /proc;
    [] elsewhere)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *(int(c) for c in f.read().split())]
    except (OSError, ValueError):
        return []


def proc_stat(pid: int | str) -> tuple[str, float]:
    """(command name, CPU seconds user + system) of process ``pid`` from Linux /proc. Raises OSError where that
    cannot be read (another OS, a process gone meanwhile)."""
    with open(f"/proc/{pid}/stat") as f:
        head, _, rest = f.read().rpartition(")")
    fields = rest.split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return head.partition("(")[2], ticks / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of the dramatiq master process ``pid`` and its worker processes."""
    pids = _worker_pids(pid)
    if not pids:
        return None
    try:
        return sum(proc_stat(p)[1] for p in pids)
    except (OSError, ValueError):
        return None


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def main() -> None:
    n_tasks = int(os.environ.get("BENCH_TASKS", "3000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    threads = int(os.environ.get("BENCH_WORKER_THREADS", "96"))
    redis_url = os.environ.get("RELAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    pg_admin = os.environ.get("RELAY_BENCH_POSTGRES_URL")
    tuned = os.environ.get("BENCH_TUNED", "0") == "1"
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    pg_name = None
    if pg_admin:
        db_url, pg_name = _fresh_postgres(pg_admin)
    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    namespace = f"relay-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RELAY_DATABASE_URL": db_url, "RELAY_BROKER": "redis", "RELAY_REDIS_URL": redis_url,
           "RELAY_REDIS_NAMESPACE": namespace, "RELAY_SECRET_KEY": "bench",
           "RELAY_ROUTER_TUNING": "1" if tuned else "0",
           "RELAY_INPROCESS_WORKER": "0", "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("RELAY_")})
    worker = None
    try:
        subprocess.run([BIN / "relay", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([BIN / "relay", "seed", "--demo"], env=env, check=True, capture_output=True)

        from sqlalchemy import func, select, update

        from marketplace import jobs
        from marketplace.clock import now
        from marketplace.db.models import (
            Offer,
            OfferStatus,
            ProviderProfile,
            Role,
            RoutingDecision,
            Task,
            TaskStatus,
            TaskTransition,
        )
        from marketplace.db.session import get_database
        from marketplace.domain.accounts.services import create_account
        from marketplace.domain.routing.engine import task_text
        from marketplace.domain.tasks.schemas import TaskIn
        from marketplace.domain.tasks.services import create_task
        from marketplace.settings import Settings
        from models import Encoder

        settings = Settings(database_url=db_url, broker="redis", redis_url=redis_url, redis_namespace=namespace,
                            router_tuning=tuned, run_inprocess_worker=False)
        db = get_database(db_url)
        with db.session() as session:
            session.execute(update(ProviderProfile).values(capacity=1_000_000))
        taxonomy = json.loads((Path(__file__).parents[1] / "marketplace/demo/taxonomy.json").read_text())
        examples = [e for c in taxonomy["categories"] for e in c["examples"]]

        def bodies(first: int) -> list[tuple[str, str]]:
            return [(f"Request {i}: {examples[i % len(examples)][:60]}", examples[i % len(examples)])
                    for i in range(first, first + n_tasks)]

        encoder = Encoder()
        encoder.encode([task_text(t, d) for t, d in bodies(10 * n_tasks)][:64])  # warm up
        fit_s = None
        if tuned:  # fitted here and saved to the shared model cache, where the worker finds it
            from marketplace.domain.routing.engine import RoutingEngine

            fitter = RoutingEngine(encoder)

            def read_plan() -> Any:
                with db.session(readonly=True) as session:
                    return fitter.refit_plan(session)

            started_fit = time.perf_counter()
            if fitter.refit(read_plan) not in ("fitted", "present"):
                raise SystemExit("the tuned model could not be fitted")
            fit_s = round(time.perf_counter() - started_fit, 1)
            with db.session(readonly=True) as session:
                tuned_encoder = fitter.router(session, tuning=True)[0].encoder
            tuned_encoder.encode([task_text(t, d) for t, d in bodies(10 * n_tasks)][:64])  # warm up

        with open(tmp / "worker.log", "w") as log:  # the worker writes to its own copy of the descriptor
            worker = subprocess.Popen(
                [BIN / "dramatiq", "workers.run", "--processes", "1", "--threads", str(threads), "--queues",
                 "routing"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

        def waiting() -> int:
            with db.session(readonly=True) as session:
                return int(session.scalar(select(func.count()).select_from(Task).where(
                    Task.status.in_([TaskStatus.SUBMITTED, TaskStatus.ROUTING]))) or 0)

        deadline = time.monotonic() + 300
        while waiting() and time.monotonic() < deadline:  # the demo's tasks: the worker is warm after them
            time.sleep(0.2)
        if waiting():
            raise SystemExit(f"the worker did not route the demo tasks; see {tmp / 'worker.log'}")
        with db.session() as session:
            customer = create_account(session, f"bench-{uuid.uuid4().hex[:6]}@example.com",
                                      "bench-password-123", Role.CUSTOMER, "Bench customer")

        results = []
        for r in range(rounds):
            round_bodies = bodies(r * n_tasks)
            texts = [task_text(t, d) for t, d in round_bodies]
            start, start_cpu = time.perf_counter(), time.process_time()
            encoder.encode(texts)
            encoder_per_s = n_tasks / (time.perf_counter() - start)
            encoder_cpu_ms = 1000 * (time.process_time() - start_cpu) / n_tasks
            tuned_per_s = None
            if tuned:  # the encoder the worker runs: the same layers, other weights in the top three
                start_tuned = time.perf_counter()
                tuned_encoder.encode(texts)
                tuned_per_s = n_tasks / (time.perf_counter() - start_tuned)

            with db.session() as session:
                # Offers are answered or expire within hours; here nobody answers, and with the capacity raised
                # they would pile up round after round (tens of thousands open at 40 providers, where a real
                # provider has a handful) and every capacity check would count them all. Each round starts
                # with none open, outside the clock.
                session.execute(update(Offer).where(Offer.status == OfferStatus.OPEN)
                                .values(status=OfferStatus.EXPIRED))
            with db.session() as session:  # committed, not yet sent
                for title, description in round_bodies:
                    create_task(session, customer.id, TaskIn(title=title, description=description))
                session.info.pop("outbox", None)
            # The worker is stopped while the round's messages go to Redis: sending 3,000 of them takes this
            # process ~0.4 s of CPU, on the cores the worker needs (in real life the API sends them, over
            # time).
            paused = _worker_pids(worker.pid)
            send_started = now()
            _signal(paused, signal.SIGSTOP)
            try:
                with db.session() as session:
                    sent = jobs.relay_pending(session, settings, limit=n_tasks + 100)
                started = now()
                first_cpu = busy_cpu = _cpu_ticks()
                worker_cpu = _process_cpu(worker.pid)  # still stopped: exactly its CPU time at the start
            finally:
                _signal(paused, signal.SIGCONT)
            deadline = time.monotonic() + 600
            while (left := waiting()) and time.monotonic() < deadline:
                busy_cpu = _cpu_ticks()  # the last reading while tasks were still waiting
                time.sleep(0.5)  # polling takes CPU from the worker: seldom; the end time comes from the DB
            if left:
                raise SystemExit(f"{left} tasks still waiting after 600 s; see {tmp / 'worker.log'}")
            with db.session(readonly=True) as session:  # when the last task of the round left ROUTING
                finished = session.scalar(select(func.max(TaskTransition.at)).where(
                    TaskTransition.from_status == TaskStatus.ROUTING, TaskTransition.at >= send_started))
            elapsed = (finished - started).total_seconds()
            with_send = (finished - send_started).total_seconds()
            worker_cpu_after = _process_cpu(worker.pid)
            cpu_per_task = {} if worker_cpu is None or worker_cpu_after is None else {
                "worker_cpu_ms_per_task": round(1000 * (worker_cpu_after - worker_cpu) / n_tasks, 2),
                "encoder_cpu_ms_per_text": round(encoder_cpu_ms, 2)}
            routed_per_s = n_tasks / elapsed
            results.append({"sent": sent, "seconds": round(elapsed, 2), "routed_per_s": round(routed_per_s, 1),
                            "encoder_per_s": round(encoder_per_s, 1),
                            "ratio": round(routed_per_s / encoder_per_s, 3),
                            # the clock of bench runs before 2026-12-03 (evening): from the start of the send, with
                            # the worker running meanwhile
                            "seconds_with_send": round(with_send, 2),
                            "ratio_with_send": round(n_tasks / with_send / encoder_per_s, 3),
                            **({"tuned_encoder_per_s": round(tuned_per_s, 1),
                                "ratio_to_tuned_encoder": round(routed_per_s / tuned_per_s, 3)} if tuned_per_s else {}),
                            **cpu_per_task, **_cpu_shares(first_cpu, busy_cpu)})
        with db.session(readonly=True) as session:
            offers = int(session.scalar(select(func.count()).select_from(Offer)) or 0)
            models = Counter(session.scalars(select(RoutingDecision.model_id).where(
                RoutingDecision.created_at >= send_started)))
        median = sorted(results, key=lambda x: x["ratio"])[len(results) // 2]
        median_with_send = sorted(x["ratio_with_send"] for x in results)[len(results) // 2]
        print(json.dumps({
            "benchmark": "pipeline", "database": "postgresql" if pg_admin else "sqlite", "tasks": n_tasks,
            "rounds": results, "offers_per_task": round(offers / (n_tasks * rounds), 2),
            "worker_processes": 1, "worker_threads": threads,
            "routed_per_s": median["routed_per_s"], "baseline_encoder_per_s": median["encoder_per_s"],
            "ratio_to_encoder": median["ratio"],
            "ratio_min": min(x["ratio"] for x in results), "ratio_mean": round(statistics.mean(
                x["ratio"] for x in results), 3),
            "ratio_with_send_median": median_with_send,
            "router": "tuned" if tuned else "frozen", "tuned_fit_s": fit_s,
            **({"ratio_to_tuned_encoder": median["ratio_to_tuned_encoder"]} if tuned else {}),
            "last_round_models": dict(models),  # which routing model decided the last round's tasks
        }))
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        import redis

        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"{namespace}*"))
        if keys:
            r.delete(*keys)
        if pg_admin and pg_name:
            _drop_postgres(pg_admin, pg_name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
