"""What a routing batch waits for the provider snapshot at a large marketplace, with and without the worker's
upkeep thread (workers.upkeep; RoutingEngine.refresh_ahead).

A routing batch copies the process's provider snapshot (``RoutingEngine.provider_index``). The snapshot is
read again from the database every PROVIDER_SNAPSHOT_AGE seconds; at 100,000 providers that read (open
profiles, their loads, recent offers and ratings, the index built from them) takes long. Without the upkeep
thread the batch that finds the snapshot too old reads it itself and waits; with it, the upkeep reads it
shortly before it is due and batches copy it meanwhile.

A fresh SQLite file gets ``BENCH_PROVIDERS`` (default 100,000) open providers in 25 categories. Their profile
vectors are put in the engine's memory as random unit vectors with the profiles' ``updated_at``, as in a
worker that has embedded them already (embedding 100,000 profiles takes ~5 minutes of both cores and is not
what this measures). Then, for ``BENCH_SECONDS`` (default 20) each, alternating (``BENCH_ROUNDS``, default 2):

- baseline: one thread calls ``provider_index`` every 20 ms, like a worker's write stage, and reads the
  snapshot itself whenever it is due (RELAY_ROUTING_UPKEEP_S=0);
- upkeep: the same, with the worker's upkeep thread (``workers.upkeep.RoutingUpkeep``) beside it;
- edits_full_reads: with the upkeep thread, while providers edit their profiles (one edit every
  ``BENCH_EDIT_S`` seconds, default 1: new description and categories), every profile read again at each
  change (``RoutingEngine._profile_changes`` finding too many: what every snapshot read after a profile change
  did before it);
- edits_patched_no_upkeep: the same edits, only the changed profiles read (as shipped), no upkeep thread: the
  batch after an edit reads the changed profile and every provider's counts;
- edits_patched: the same, with the upkeep thread (as shipped): the batch after an edit reads the changed
  profile and its provider's counts, the upkeep the others', and a batch does not wait for a read of the
  upkeep's under way (since 2026-12-05, later session);
- edits_patch_waits: the same, but a batch after an edit waits for a read of the upkeep's under way before it
  patches (as before that session).

The upkeep reads every profile again each PROVIDER_PROFILES_AGE seconds (60); in a round of 20 s that happens
only when ``BENCH_PROFILES_AGE`` makes it shorter (10 s: a read of every profile about every 10 s, and in the
edit settings a batch that finds an edit during one). ``BENCH_SETTINGS`` (comma-separated) runs only some.

Printed: the time of one snapshot read (every profile, ``snapshot_read_s``; only the counts, as when its age is
up and no profile changed, ``counts_read_s``; after ten profiles were edited, ``patch_read_s``; after picks
that did not hold, ``fresh_read_s``, and after a routing transaction that read it rolled back,
``after_rollback_read_s``: both read every profile before 2026-12-05, as ``snapshot_read_s``), and the latency
of ``provider_index`` (p50, p99, max, and ``stuck_s``: the seconds spent in calls of over 100 ms) in each
setting; ``p99_ratio`` / ``max_ratio`` are baseline over upkeep, ``edits_p99_ratio`` / ``edits_max_ratio``
edits_full_reads over edits_patched, ``waits_p99_ratio`` / ``waits_max_ratio`` edits_patch_waits over
edits_patched.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

CATEGORIES = [f"category-{i:02d}" for i in range(25)]
UPKEEP_S = 2.0  # RELAY_ROUTING_UPKEEP_S's default


def _seed(db, n: int) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from sqlalchemy import insert

    from marketplace.clock import now
    from marketplace.db.models import Account, ProviderProfile, Role

    rng = np.random.default_rng(7)
    at = now() - timedelta(hours=1)  # written before: no profile changed in the last PROFILE_CHANGE_LAG
    chunk = 10_000
    for start in range(0, n, chunk):
        ids = [uuid.uuid4() for _ in range(min(chunk, n - start))]
        with db.session() as session:
            session.execute(insert(Account), [
                {"id": i, "email": f"p{start + k}@bench.example", "password_hash": "-", "role": Role.PROVIDER,
                 "display_name": f"Provider {start + k}", "created_at": at} for k, i in enumerate(ids)])
            session.execute(insert(ProviderProfile), [
                {"account_id": i, "headline": "Provider", "description": "", "skills": [], "languages": ["en"],
                 "categories": [CATEGORIES[c] for c in rng.choice(25, size=int(rng.integers(1, 4)), replace=False)],
                 "capacity": 3, "accepting_work": True, "hourly_rate": 40, "rate_currency": "USD",
                 "updated_at": at} for i in ids])


def _edit(db, rng, ids: list[uuid.UUID]) -> None:  # type: ignore[no-untyped-def]
    """A provider rewrites their profile (its ``updated_at`` moves: the engine embeds it again)."""
    from sqlalchemy import update

    from marketplace.db.models import ProviderProfile

    who = ids[int(rng.integers(len(ids)))]
    with db.session() as session:
        session.execute(update(ProviderProfile).where(ProviderProfile.account_id == who).values(
            description=f"I take on work number {int(rng.integers(10**6))} in my trade.",
            categories=[CATEGORIES[c] for c in rng.choice(25, size=int(rng.integers(1, 4)), replace=False)]))


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "calls": len(ordered),
            # A batch stuck for seconds is one sample, the calls it kept from being made none: what the p99 of
            # calls hides, the seconds spent in calls of over 100 ms show.
            "stuck_s": round(sum(s for s in ordered if s > 0.1), 2)}


def main() -> None:
    n = int(os.environ.get("BENCH_PROVIDERS", "100000"))
    seconds = float(os.environ.get("BENCH_SECONDS", "20"))
    edit_s = float(os.environ.get("BENCH_EDIT_S", "1"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    profiles_age = os.environ.get("BENCH_PROFILES_AGE")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-snapshot-"))
    url = f"sqlite:///{tmp / 'relay.db'}"
    os.environ["RELAY_DATABASE_URL"] = url

    import numpy as np

    from marketplace.db.migrate import upgrade
    from marketplace.db.session import get_database
    from marketplace.demo.loader import load_taxonomy
    from marketplace.domain.routing import engine as engine_module
    from marketplace.domain.routing.engine import RoutingEngine
    from marketplace.settings import Settings
    from models import load_encoder
    from workers import runtime
    from workers.upkeep import RoutingUpkeep

    upgrade(url)
    db = get_database(url)
    started = time.monotonic()
    _seed(db, n)
    seed_s = time.monotonic() - started

    encoder = load_encoder()
    engine = RoutingEngine(encoder=encoder)
    rng = np.random.default_rng(11)
    with db.session(readonly=True) as session:
        rows = engine._open_profiles(session)
    vectors = rng.standard_normal((len(rows), encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    engine._spaces[encoder.model_id] = {r.account_id: (r.updated_at, v) for r, v in zip(rows, vectors, strict=True)}

    ids = [r.account_id for r in rows]
    reads, count_reads, patch_reads, fresh_reads, expired_reads = [], [], [], [], []
    for _ in range(3):
        engine.forget_providers()
        with db.session(readonly=True) as session:
            t = time.monotonic()
            engine._provider_snapshot(session, encoder)  # every profile
            reads.append(time.monotonic() - t)
        with db.session(readonly=True) as session:
            t = time.monotonic()
            engine._provider_snapshot(session, encoder, max_age=0)  # its age up, no profile changed: the counts
            count_reads.append(time.monotonic() - t)
        for _ in range(10):
            _edit(db, rng, ids)
        with db.session(readonly=True) as session:
            t = time.monotonic()
            engine._provider_snapshot(session, encoder)  # ten profiles changed: those, and the counts
            patch_reads.append(time.monotonic() - t)
        with db.session(readonly=True) as session:
            t = time.monotonic()
            engine.provider_index(session, encoder, fresh=True)  # after picks that did not hold
            fresh_reads.append(time.monotonic() - t)
        engine.expire_providers()  # as after a routing transaction that read it rolled back
        with db.session(readonly=True) as session:
            t = time.monotonic()
            engine.provider_index(session, encoder)
            expired_reads.append(time.monotonic() - t)

    def batches(stop: threading.Event, out: list[float]) -> None:
        while not stop.is_set():
            with db.session(readonly=True) as session:
                t = time.monotonic()
                engine.provider_index(session, encoder)
                out.append(time.monotonic() - t)
            stop.wait(0.02)

    # The worker's own upkeep thread runs against this engine and database, its routing model fitted first.
    engine_module._engine = engine
    runtime.configure(Settings(database_url=url, router_tuning=False))
    with db.session() as session:
        load_taxonomy(session)
    with db.session(readonly=True) as session:
        engine.router(session, tuning=False)

    def edits(stop: threading.Event) -> None:
        while not stop.wait(edit_s):
            _edit(db, rng, ids)

    settings = ("baseline", "upkeep", "edits_full_reads", "edits_patched_no_upkeep", "edits_patched",
                "edits_patch_waits")
    chosen = os.environ.get("BENCH_SETTINGS")
    if chosen:
        settings = tuple(s for s in settings if s in chosen.split(","))
    if profiles_age is not None:
        engine_module.PROVIDER_PROFILES_AGE = float(profiles_age)
    patch = engine._patch

    def patch_after_the_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        with engine._building:  # a read under way ends first
            pass
        return patch(*args, **kwargs)

    results: dict[str, list[float]] = {setting: [] for setting in settings}
    for _ in range(rounds):
        for setting in settings:
            # (instance attributes over the methods)
            engine.__dict__.pop("_profile_changes", None)
            engine.__dict__.pop("_patch", None)
            if setting == "edits_full_reads":
                engine._profile_changes = lambda *args, **kwargs: None  # type: ignore[method-assign]
            elif setting == "edits_patch_waits":
                engine._patch = patch_after_the_read  # type: ignore[method-assign]
            engine.forget_providers()
            with db.session(readonly=True) as session:
                engine.provider_index(session, encoder)  # fresh, as after the last batch's read
            stop = threading.Event()
            threads = [threading.Thread(target=batches, args=(stop, results[setting]))]
            if setting.startswith("edits"):
                threads.append(threading.Thread(target=edits, args=(stop,)))
            upkeep = RoutingUpkeep(UPKEEP_S) if setting not in {"baseline", "edits_patched_no_upkeep"} else None
            for thread in threads:
                thread.start()
            if upkeep is not None:
                upkeep.start()
            time.sleep(seconds)
            stop.set()
            for thread in threads:
                thread.join()
            if upkeep is not None:
                upkeep.stop()
    engine.__dict__.pop("_profile_changes", None)
    engine.__dict__.pop("_patch", None)

    out = {setting: _percentiles(samples) for setting, samples in results.items()}

    def ratio(a: str, b: str, key: str) -> float | None:
        if a not in out or b not in out:
            return None
        return round(out[a][key] / max(out[b][key], 1e-3), 1)

    print(json.dumps({
        "providers": len(rows), "seed_s": round(seed_s, 1), "snapshot_age_s": engine_module.PROVIDER_SNAPSHOT_AGE,
        "edit_every_s": edit_s, "profiles_age_s": engine_module.PROVIDER_PROFILES_AGE,
        "snapshot_read_s": round(statistics.median(reads), 3),
        "counts_read_s": round(statistics.median(count_reads), 3),
        "patch_read_s": round(statistics.median(patch_reads), 3),
        "fresh_read_s": round(statistics.median(fresh_reads), 3),
        "after_rollback_read_s": round(statistics.median(expired_reads), 3), **out,
        "p99_ratio": ratio("baseline", "upkeep", "p99_ms"), "max_ratio": ratio("baseline", "upkeep", "max_ms"),
        "edits_p99_ratio": ratio("edits_full_reads", "edits_patched", "p99_ms"),
        "edits_max_ratio": ratio("edits_full_reads", "edits_patched", "max_ms"),
        "waits_p99_ratio": ratio("edits_patch_waits", "edits_patched", "p99_ms"),
        "waits_max_ratio": ratio("edits_patch_waits", "edits_patched", "max_ms"),
        "cpu_count": os.cpu_count(),
    }))
    db.dispose()
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
