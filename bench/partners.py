"""Assisting-partner suggestions for one routing batch (64 tasks, each in one category) at 5,000 and 20,000
active partners in 25 categories (1 - 10 each, as the API allows).

Two measurements, best of ``BENCH_ROUNDS`` (default 5) rounds each, milliseconds per batch:

- ``pool``: suggesting from partners in memory. Baseline, in the same run: ``Matcher.suggest_partners`` over
  every partner of each task's category (scoring and ordering them all). Against it ``PartnerPool`` built for
  the batch (grouping, and the tiers of each category a task asks for) and asked for each task: the same
  suggestions (tests/unit/test_matcher.py checks that).
- ``batch``: a routing batch's whole partner step on a SQLite file holding the partners' accounts and profiles
  (``marketplace.domain.routing.services._suggest_partners``). Baseline: what a batch did before 2026-12-05's
  fourth session, read every active partner's row and build the pool for it, then suggest. Against it the batch
  as shipped, the engine's pool kept from the batch before (``RoutingEngine.partners``: the mark read, the
  customers' referrers, the suggestions, the suggested partners' accounts looked up); and, for the record, the
  first batch after a partner saved their expertise (the pool read again) and the first after a partner it
  suggests closed their account (looked up, the pool read again, the suggestions made again). Each kind of batch
  gets new random tasks; the session is a plain one (the worker's is a write transaction).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from routing.matcher import Matcher, PartnerPool, PartnerRecord

CATEGORIES = [f"category-{i}" for i in range(25)]


def _in_memory(n: int, rounds: int, rng: random.Random) -> dict[str, Any]:
    partners = [PartnerRecord(f"p{i:06d}", tuple(rng.sample(CATEGORIES, rng.randint(1, 10)))) for i in range(n)]
    tasks = [([rng.choice(CATEGORIES)], f"task-{i}") for i in range(64)]
    timings: dict[str, float] = {"baseline": float("inf"), "pool": float("inf")}
    for _ in range(rounds):
        for name in timings:
            t = time.perf_counter()
            pool = PartnerPool(partners)
            if name == "pool":
                got = [pool.suggest(c, key=k) for c, k in tasks]
            else:
                want = [Matcher.suggest_partners(pool.by_category.get(c[0], ()), c, key=k) for c, k in tasks]
            timings[name] = min(timings[name], time.perf_counter() - t)
    assert got == want
    return {
        "partners_per_category": round(sum(len(v) for v in pool.by_category.values()) / len(CATEGORIES)),
        "baseline_ms_per_batch": round(timings["baseline"] * 1000, 1),
        "pool_ms_per_batch": round(timings["pool"] * 1000, 1),
        "speedup": round(timings["baseline"] / timings["pool"], 1),
    }


def _per_batch(n: int, rounds: int, rng: random.Random, tmp: Path) -> dict[str, Any]:
    from sqlalchemy import create_engine, insert, select, update
    from sqlalchemy.orm import Session

    from marketplace.clock import now
    from marketplace.db.models import Account, Base, PartnerProfile, Referral, Role
    from marketplace.domain.partners.services import active_partners
    from marketplace.domain.routing.engine import RoutingEngine
    from marketplace.domain.routing.services import _Plan, _suggest_partners

    db = create_engine(f"sqlite:///{tmp / f'partners-{n}.db'}")
    Base.metadata.create_all(db)
    ids = [uuid.uuid4() for _ in range(n)]
    customers = [uuid.uuid4() for _ in range(64)]
    with Session(db) as session:
        session.execute(insert(Account), [
            {"id": i, "email": f"{i.hex}@example.com", "password_hash": "-", "role": role, "display_name": "x"}
            for role, group in ((Role.PARTNER, ids), (Role.CUSTOMER, customers)) for i in group])
        session.execute(insert(PartnerProfile), [
            {"account_id": i, "referral_code": i.hex[:16], "expertise": rng.sample(CATEGORIES, rng.randint(1, 10))}
            for i in ids])
        # a quarter of the batch's customers came through a partner, as a referred customer's tasks do
        session.execute(insert(Referral), [{"partner_id": rng.choice(ids), "customer_id": c} for c in customers[::4]])
        session.commit()
    engine = RoutingEngine()  # the encoder is loaded lazily: never here

    def plans() -> list[Any]:
        return [_Plan(task=SimpleNamespace(id=uuid.uuid4(), customer_id=c),  # type: ignore[arg-type]
                      categories=[{"slug": rng.choice(CATEGORIES)}]) for c in customers]

    def read_per_batch(session: Session, batch: list[Any]) -> None:  # the batch before this change
        pool = PartnerPool(PartnerRecord(str(pid), frozenset(e)) for pid, e in active_partners(session))
        referrers = dict(session.execute(select(Referral.customer_id, Referral.partner_id).where(
            Referral.customer_id.in_([p.task.customer_id for p in batch]))).all())
        for p in batch:
            r = referrers.get(p.task.customer_id)
            p.explanation["suggested_partner_ids"] = [s.partner_id for s in pool.suggest(
                [c["slug"] for c in p.categories], key=str(p.task.id), referrer=str(r) if r else None)]

    def saved_expertise(session: Session) -> None:
        session.execute(update(PartnerProfile).where(PartnerProfile.account_id == ids[0])
                        .values(expertise=["category-0"], updated_at=now()))
        session.commit()

    def closed_a_referrer(session: Session, batch: list[Any]) -> None:
        """A partner who referred one of the batch's customers, their account still open, closed it; that
        customer's task is in one of the referrer's categories, so the batch suggests them first (on the pool it
        has) and finds them closed."""
        referrers = dict(session.execute(select(Referral.customer_id, Referral.partner_id)
                                         .join(Account, Account.id == Referral.partner_id)
                                         .where(Account.is_active.is_(True))).all())
        plan = next((p for p in batch if p.task.customer_id in referrers), None)
        if plan is None:
            raise SystemExit("more rounds than the batch has referred customers (16)")
        referrer = referrers[plan.task.customer_id]
        plan.categories = [{"slug": session.scalar(select(PartnerProfile.expertise).where(
            PartnerProfile.account_id == referrer))[0]}]
        session.execute(update(Account).where(Account.id == referrer).values(is_active=False))
        session.commit()

    timings = {"baseline": float("inf"), "kept": float("inf"), "after_a_change": float("inf"),
               "after_an_account_closed": float("inf")}
    with Session(db) as session:
        _suggest_partners(session, engine, plans())  # the engine's pool, read once
        for _ in range(rounds):
            for name in timings:
                batch = plans()
                if name == "after_a_change":
                    saved_expertise(session)
                elif name == "after_an_account_closed":
                    closed_a_referrer(session, batch)
                held = engine._kept_reads.get("partners")  # type: ignore[attr-defined]
                t = time.perf_counter()
                if name == "baseline":
                    read_per_batch(session, batch)
                else:
                    _suggest_partners(session, engine, batch)
                timings[name] = min(timings[name], time.perf_counter() - t)
                suggested = [p.explanation["suggested_partner_ids"] for p in batch]
                assert all(len(s) == 3 for s in suggested)
                if name != "baseline":  # read again after a change and after a closed account, and only then
                    assert (engine._kept_reads.get("partners") is held) == (name == "kept")  # type: ignore[attr-defined]
                if name == "after_an_account_closed":  # none closed suggested
                    named = {uuid.UUID(i) for s in suggested for i in s}
                    assert all(session.scalars(select(Account.is_active).where(Account.id.in_(named))))
    db.dispose()
    return {
        "read_per_batch_ms": round(timings["baseline"] * 1000, 1),
        "kept_pool_ms": round(timings["kept"] * 1000, 2),
        "after_a_change_ms": round(timings["after_a_change"] * 1000, 1),
        "after_an_account_closed_ms": round(timings["after_an_account_closed"] * 1000, 1),
        "speedup": round(timings["baseline"] / timings["kept"], 1),
    }


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-partners-"))
    try:
        results = {str(n): {"pool": _in_memory(n, rounds, rng), "batch": _per_batch(n, rounds, rng, tmp)}
                   for n in (5_000, 20_000)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
