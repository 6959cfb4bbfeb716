"""Routing concurrent jobs as one batch: the same decisions and offers as routing one task after another,
never an overbooked provider, and one bad task never fails the others."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from marketplace.db.models import (
    Account,
    Category,
    Offer,
    RoutingDecision,
    RoutingOutcome,
    Task,
    TaskStatus,
    TaskTransition,
)
from marketplace.domain.offers.services import Pick, add_offers
from marketplace.domain.routing.engine import get_engine, task_text
from marketplace.domain.routing.recent import RecentItems
from marketplace.domain.routing.services import encode_ahead, route_task, route_tasks, routing_texts
from marketplace.domain.tasks.schemas import TaskIn
from marketplace.domain.tasks.services import create_task
from marketplace.errors import Conflict
from models.batching import StageLimit
from routing.matcher import MAX_SUGGESTED_PARTNERS
from tests.conftest import BOOKKEEPING_TASK, Api, bookkeepers, wait_until

pytestmark = pytest.mark.model

REQUESTS = [
    BOOKKEEPING_TASK,
    ("Quarterly books", "Reconcile our bank feeds in Xero and prepare the VAT return figures."),
    ("Payroll and ledgers", "Categorize two years of expenses in QuickBooks for my bakery."),
    ("Fix a dripping tap", "The kitchen mixer tap drips all night and needs a new cartridge."),
    ("Books for a cafe", "Monthly bookkeeping: reconcile card payments and supplier invoices."),
    ("Year-end accounts", "Tidy our QuickBooks file and reconcile the loan account before year end."),
]


def submitted_tasks(db: Any, customer_id: str, requests: list[tuple[str, str]]) -> list[uuid.UUID]:
    """Tasks committed as the API would, but whose routing jobs are never sent: the test routes them."""
    with db.session() as session:
        return [create_task(session, uuid.UUID(customer_id), TaskIn(title=t, description=d)).id
                for t, d in requests]


def routing_state(session: Session, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    state = {}
    for task_id in task_ids:
        task = session.get(Task, task_id)
        decision = session.scalar(select(RoutingDecision).where(RoutingDecision.task_id == task_id))
        offers = session.scalars(select(Offer).where(Offer.task_id == task_id).order_by(Offer.rank)).all()
        state[task_id] = {
            "status": task.status, "category_id": task.category_id,
            "outcome": decision.outcome, "categories": [c["slug"] for c in decision.categories],
            "candidates": [c["provider_id"] for c in decision.candidates],
            "offers": [(o.provider_id, o.rank) for o in offers],
            "transitions": [(t.from_status, t.to_status) for t in session.scalars(
                select(TaskTransition).where(TaskTransition.task_id == task_id).order_by(TaskTransition.id))],
        }
    return state


def test_a_batch_routes_like_one_task_after_another(api: Api, db: Any, settings: Any) -> None:
    bookkeepers(api, 4, capacity=2)  # 8 free slots for 5 bookkeeping tasks wanting 3 offers each
    api.provider(["plumbing"], "Plumber for taps and leaks", "I fix dripping taps, leaks and cartridges.")
    customer, _ = api.user("customer")
    ids = sorted(submitted_tasks(db, customer["id"], REQUESTS))
    engine = get_engine()

    session = db.sessionmaker()
    try:  # one after another, in the order a batch takes them, then rolled back
        one_by_one = [route_task(session, settings, engine, task_id) for task_id in ids]
        expected = routing_state(session, ids)
    finally:
        session.rollback()
        session.close()

    stranger = uuid.uuid4()
    with db.session() as session:  # any order, a job delivered twice, a task that does not exist
        outcomes = route_tasks(session, settings, engine, [*reversed(ids), ids[0], stranger])
    assert outcomes == {**dict(zip(ids, one_by_one, strict=True)), stranger: "missing"}
    with db.session(readonly=True) as session:
        assert routing_state(session, ids) == expected
        # each routed task is stored in its decision's category (a fresh session reads it from the database)
        slugs = dict(session.execute(select(Category.id, Category.slug)).all())
        routed = [state for state in expected.values() if state["outcome"] == RoutingOutcome.ROUTED]
        assert routed and all(slugs.get(s["category_id"]) == s["categories"][0] for s in routed)

    # the capacity ran out part-way: the last bookkeeping tasks got fewer offers or went to staff
    assert "routed" in one_by_one and "needs_review" in one_by_one
    loads: dict[uuid.UUID, int] = {}
    for state in expected.values():
        for provider_id, _ in state["offers"]:
            loads[provider_id] = loads.get(provider_id, 0) + 1
    assert max(loads.values()) <= 2
    with db.session() as session:  # routing them again changes nothing
        assert set(route_tasks(session, settings, engine, ids).values()) == {"skipped"}


def suggested_partners(db: Any, settings: Any, customer_id: str, request: tuple[str, str]) -> tuple[set[str], int]:
    """One task routed in a batch of its own: the partners suggested on it, and how many statements of the batch
    read the partners' rows."""
    task, = submitted_tasks(db, customer_id, [request])
    queries: list[str] = []
    listen = (db.engine, "before_cursor_execute", lambda *args: queries.append(args[2]))
    event.listen(*listen)
    try:
        with db.session() as session:
            assert route_tasks(session, settings, get_engine(), [task]) == {task: "routed"}
    finally:
        event.remove(*listen)
    with db.session(readonly=True) as session:
        decision = session.scalar(select(RoutingDecision).where(RoutingDecision.task_id == task))
        suggested = decision.explanation["suggested_partner_ids"]
    assert len(suggested) == len(set(suggested))
    return set(suggested), sum("partner_profiles.expertise" in q for q in queries)


def partners_of(api: Api, expertise: list[str], n: int) -> dict[str, dict[str, str]]:
    """``n`` partners who assist with ``expertise``: id -> their headers."""
    partners = {}
    for _ in range(n):
        account, headers = api.user("partner")
        r = api.client.put("/api/v1/partners/me", json={"expertise": expertise}, headers=headers)
        assert r.status_code == 200, r.text
        partners[account["id"]] = headers
    return partners


def test_assisting_partners_are_read_again_only_when_they_change_and_a_closed_account_is_never_suggested(
        api: Api, db: Any, settings: Any) -> None:
    bookkeepers(api, 1, capacity=10)
    customer, _ = api.user("customer")

    def route(request: tuple[str, str]) -> tuple[set[str], int]:
        return suggested_partners(db, settings, customer["id"], request)

    # As many partners as a task is suggested: each is suggested on every bookkeeping task while they can be.
    headers = partners_of(api, ["bookkeeping-accounting"], MAX_SUGGESTED_PARTNERS)
    everyone = set(headers)
    assert route(BOOKKEEPING_TASK) == (everyone, 1)
    assert route(REQUESTS[1]) == (everyone, 0)  # nothing changed: the pool the first batch read

    # An account closed moves nothing the pool is read again for; the batch finds it closed among those it
    # suggests, reads the partners again, and the batches after it go on with that pool.
    closed = sorted(everyone)[0]
    with db.session() as session:
        session.execute(update(Account).where(Account.id == uuid.UUID(closed)).values(is_active=False))
    assert route(REQUESTS[2]) == (everyone - {closed}, 1)
    assert route(REQUESTS[4]) == (everyone - {closed}, 0)

    # A partner joining, and one saving their expertise: read again, and suggested as they assist now.
    newcomer, = partners_of(api, ["bookkeeping-accounting", "ux-ui-design"], 1)
    assert route(REQUESTS[5]) == (everyone - {closed} | {newcomer}, 1)
    moved = sorted(everyone - {closed})[0]
    r = api.client.put("/api/v1/partners/me", json={"expertise": ["plumbing"]}, headers=headers[moved])
    assert r.status_code == 200, r.text
    assert route(BOOKKEEPING_TASK) == (everyone - {closed, moved} | {newcomer}, 1)


def test_an_account_reopened_by_hand_is_suggested_again_once_the_partners_are_read_again_for_their_age(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import marketplace.domain.routing.engine as engine_module

    bookkeepers(api, 1, capacity=10)
    customer, _ = api.user("customer")
    everyone = set(partners_of(api, ["bookkeeping-accounting"], MAX_SUGGESTED_PARTNERS))
    reopened = sorted(everyone)[0]

    def set_active(active: bool) -> None:
        with db.session() as session:
            session.execute(update(Account).where(Account.id == uuid.UUID(reopened)).values(is_active=active))

    set_active(False)
    assert suggested_partners(db, settings, customer["id"], BOOKKEEPING_TASK) == (everyone - {reopened}, 1)
    set_active(True)  # moves no mark: the pool without them is kept...
    assert suggested_partners(db, settings, customer["id"], REQUESTS[1]) == (everyone - {reopened}, 0)
    monkeypatch.setattr(engine_module, "PARTNERS_AGE", 0.0)  # ...until it is PARTNERS_AGE old
    assert suggested_partners(db, settings, customer["id"], REQUESTS[2]) == (everyone, 1)


def test_a_partner_closed_again_after_the_batch_read_the_partners_again_is_left_out_without_another_read(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import marketplace.domain.routing.services as services

    bookkeepers(api, 1, capacity=10)
    customer, _ = api.user("customer")
    everyone = set(partners_of(api, ["bookkeeping-accounting"], MAX_SUGGESTED_PARTNERS))
    assert suggested_partners(db, settings, customer["id"], BOOKKEEPING_TASK) == (everyone, 1)
    # One of them is found closed by every look-up of this batch, the one after its read of the partners again
    # too (closed in between: the read still had them); the batch reads once more, never twice.
    closing, looked_up = sorted(everyone)[0], []
    real = services.active_accounts

    def closed_meanwhile(session: Session, ids: Any) -> set[uuid.UUID]:
        looked_up.append(set(ids))
        return real(session, ids) - {uuid.UUID(closing)}

    monkeypatch.setattr(services, "active_accounts", closed_meanwhile)
    assert suggested_partners(db, settings, customer["id"], REQUESTS[1]) == (everyone - {closing}, 1)
    assert len(looked_up) == 2 and all(uuid.UUID(closing) in ids for ids in looked_up)


def stale_snapshot(api: Api, db: Any, settings: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """One provider with one slot, whom this process's snapshot shows free after another worker took the slot;
    and a task to route to them. Returns (the provider's id, the task's id)."""
    (provider, _), = bookkeepers(api, 1, capacity=1)
    provider_id = uuid.UUID(provider["id"])
    customer, _ = api.user("customer")
    elsewhere, task = submitted_tasks(db, customer["id"], REQUESTS[:2])
    with db.session(readonly=True) as session:  # this process reads the provider as free...
        get_engine().refresh_providers(session)
    with db.session() as session:  # ...then another worker takes the provider's only slot
        add_offers(session, settings, [Pick(elsewhere, provider_id, 1, 0.9)])
    return provider_id, task


def test_a_stale_provider_snapshot_never_overbooks(api: Api, db: Any, settings: Any) -> None:
    provider_id, first = stale_snapshot(api, db, settings)
    engine = get_engine()
    with db.session() as session:  # the capacity check finds the snapshot stale and reads the providers again
        assert route_task(session, settings, engine, first) == "needs_review"
    with db.session(readonly=True) as session:
        assert len(session.scalars(select(Offer).where(Offer.provider_id == provider_id)).all()) == 1
        decision = session.scalar(select(RoutingDecision).where(RoutingDecision.task_id == first))
        assert decision.explanation["offered"] == 0
        assert "No provider in this category is available" in decision.explanation["summary"]


def test_a_second_pass_holds_no_lock_on_the_first_passs_providers(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the providers picked on a stale snapshot cannot take the offers, routing picks again; the first
    pick's profile locks are let go first. Held, the second pick's locks would be taken out of id order: a
    deadlock with any transaction locking both sets in order."""
    from sqlalchemy import text

    from marketplace.domain.routing import services

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks")
    provider_id, first = stale_snapshot(api, db, settings)
    engine = get_engine()
    real, calls = services.overbooked, []

    def overbooked(session: Session, planned: Any) -> set[uuid.UUID]:
        if calls:  # the second pass: can another transaction lock the first pass's provider now?
            with db.engine.connect() as other:
                assert other.execute(text("SELECT account_id FROM provider_profiles WHERE account_id = :id"
                                          " FOR UPDATE NOWAIT"), {"id": provider_id}).all()
                other.rollback()
        calls.append(set(planned))
        return real(session, planned)

    monkeypatch.setattr(services, "overbooked", overbooked)
    with db.session() as session:
        assert route_task(session, settings, engine, first) == "needs_review"
    assert calls == [{provider_id}, set()]


def test_a_routing_batch_locks_only_the_tasks_it_routes(api: Api, db: Any, settings: Any) -> None:
    """A routing job can be delivered again after its task was routed; the batch it joins must not hold that
    task locked (a provider accepting its offer would wait for the whole batch)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks")
    bookkeepers(api, 2)
    customer, _ = api.user("customer")
    done, waiting = submitted_tasks(db, customer["id"], REQUESTS[:2])
    engine = get_engine()
    with db.session() as session:
        assert route_task(session, settings, engine, done) == "routed"
    with db.session() as session:
        assert route_tasks(session, settings, engine, [done, waiting]) == {done: "skipped", waiting: "routed"}
        with db.engine.connect() as other:
            lock = text("SELECT id FROM tasks WHERE id = :id FOR UPDATE NOWAIT")
            assert other.execute(lock, {"id": done}).all()
            with pytest.raises(OperationalError, match="could not obtain lock"):
                other.execute(lock, {"id": waiting})
            other.rollback()


def test_a_customer_can_write_on_a_task_while_routing_or_an_accept_holds_it(api: Api, db: Any, settings: Any) -> None:
    """A routing batch, and a provider accepting an offer, hold the task locked until they commit. The
    customer's message on it (a row that references the task) goes in meanwhile: with FOR UPDATE, PostgreSQL's
    check of the message's foreign key waited for the whole batch."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from marketplace.auth import Principal
    from marketplace.db.models import Message, Role
    from marketplace.domain.offers.services import accept
    from marketplace.domain.tasks.services import send_message

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks")
    (provider, _), = bookkeepers(api, 1)
    customer, _ = api.user("customer")
    task_id, = submitted_tasks(db, customer["id"], REQUESTS[:1])
    as_customer = Principal(uuid.UUID(customer["id"]), Role.CUSTOMER, uuid.uuid4())
    as_provider = Principal(uuid.UUID(provider["id"]), Role.PROVIDER, uuid.uuid4())

    def write_meanwhile(body: str) -> None:
        with db.session() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))  # fails the test instead of waiting for good
            send_message(other, as_customer, task_id, body)
        with db.engine.connect() as probe, pytest.raises(OperationalError, match="could not obtain lock"):
            probe.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE NOWAIT"), {"id": task_id})

    with db.session() as session:
        assert route_tasks(session, settings, get_engine(), [task_id]) == {task_id: "routed"}
        write_meanwhile("The receipts are in the shared folder.")  # the batch still holds the task
    with db.session(readonly=True) as session:
        offer_id = session.scalar(select(Offer.id).where(Offer.task_id == task_id,
                                                         Offer.provider_id == as_provider.account_id))
    assert offer_id is not None
    with db.session() as session:
        assert accept(session, as_provider, offer_id).status.value == "accepted"
        write_meanwhile("Thanks, see you Monday.")  # the accept still holds the task
    with db.session(readonly=True) as session:
        assert session.get(Task, task_id).status is TaskStatus.ASSIGNED
        assert sorted(session.scalars(select(Message.body).where(Message.task_id == task_id))) == [
            "Thanks, see you Monday.", "The receipts are in the shared folder."]


def test_providers_that_fill_up_during_routing_roll_it_back(api: Api, db: Any, settings: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (provider, _), = bookkeepers(api, 1, capacity=1)
    customer, _ = api.user("customer")
    first, second = submitted_tasks(db, customer["id"], REQUESTS[:2])
    engine = get_engine()
    with db.session() as session:
        assert route_task(session, settings, engine, first) == "routed"  # the provider's only slot

    # Every read of the providers sees the slot free, as if a concurrent routing kept taking it (the check
    # under lock, which reads the loads of the picked providers only, sees it taken).
    from marketplace.domain.offers import services as offers_services

    real = offers_services.provider_loads
    monkeypatch.setattr(offers_services, "provider_loads",
                        lambda session, ids=None: real(session, ids) if ids is not None else {})
    engine.forget_providers()
    with pytest.raises(Conflict), db.session() as session:
        route_task(session, settings, engine, second)
    with db.session(readonly=True) as session:
        assert session.get(Task, second).status is TaskStatus.SUBMITTED  # rolled back: retried later
        assert not session.scalars(select(Offer).where(Offer.task_id == second)).all()

    monkeypatch.undo()
    with db.session() as session:  # the retry sees the provider full
        assert route_task(session, settings, engine, second) == "needs_review"
    with db.session(readonly=True) as session:
        offers = session.scalars(select(Offer).where(Offer.provider_id == uuid.UUID(provider["id"]))).all()
        assert len(offers) == 1



def reads_of_every_profile(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time ``engine`` reads every open profile (not only the changed ones)."""
    read_all: list[int] = []
    real = engine._open_profiles
    monkeypatch.setattr(engine, "_open_profiles", lambda session: read_all.append(1) or real(session))
    return read_all


def test_picks_that_no_longer_hold_and_a_rolled_back_batch_read_the_counts_again_not_every_profile(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's offer took a provider's last slot: the batch that picked them on its snapshot reads the
    counts again (a read of every profile took 2.1 – 3.6 s at 100,000 providers, the counts ~0.1 s) and offers the task
    to those who can take it. A batch that rolls back leaves the next one the same cheaper read."""
    (full, _), (free, _) = bookkeepers(api, 2, capacity=1)
    customer, _ = api.user("customer")
    elsewhere, task, later = submitted_tasks(db, customer["id"], REQUESTS[:3])
    engine = get_engine()
    with db.session(readonly=True) as session:
        before = engine.provider_index(session)
    assert before.load[before.row_of[full["id"]]] == 0
    read_all = reads_of_every_profile(engine, monkeypatch)
    with db.session() as session:  # another worker process's offer: this one's snapshot does not count it
        add_offers(session, settings, [Pick(elsewhere, uuid.UUID(full["id"]), 1, 0.9)])

    with db.session() as session:
        assert route_task(session, settings, engine, task) == "routed"
    with db.session(readonly=True) as session:
        offered = set(session.scalars(select(Offer.provider_id).where(Offer.task_id == task)))
        index = engine.provider_index(session)
    assert offered == {uuid.UUID(free["id"])}
    assert not read_all  # the counts only, with the profiles changed since (none)
    assert index.vectors is before.vectors and index.load[index.row_of[full["id"]]] == 1

    with pytest.raises(RuntimeError), db.session() as session:
        engine.provider_index(session, fresh=True)  # a snapshot read in this transaction
        route_task(session, settings, engine, later)
        raise RuntimeError("the batch fails after routing: its transaction rolls back")
    rolled_back = time.monotonic()
    with db.session(readonly=True) as session:
        after = engine.provider_index(session)
        assert not session.scalars(select(Offer).where(Offer.task_id == later)).all()
    assert engine._providers.taken >= rolled_back  # read again (it may have counted offers never made)
    assert not read_all and after.vectors is before.vectors  # the counts, not every profile
    assert after.load[after.row_of[free["id"]]] == 1  # the committed offer, not the one rolled back


def test_a_provider_the_check_turns_away_is_read_again_whatever_their_profile_says(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile written without moving its updated_at (a capacity lowered by hand in the database), or an
    account closed, shows as no change to a snapshot that reads only the changed profiles: the picks on it fail
    the check under lock, and the fresh pass reads those providers again, so the task is routed at once instead
    of failing every retry until the next read of every profile (a minute)."""
    from marketplace.db.models import Account, ProviderProfile

    (lowered, _), (closed, _), (free, _) = bookkeepers(api, 3, capacity=2)
    customer, _ = api.user("customer")
    elsewhere, first, second = submitted_tasks(db, customer["id"], REQUESTS[:3])
    engine = get_engine()
    with db.session() as session:
        add_offers(session, settings, [Pick(elsewhere, uuid.UUID(lowered["id"]), 1, 0.9)])
    with db.session(readonly=True) as session:
        engine.provider_index(session)
    read_all = reads_of_every_profile(engine, monkeypatch)

    def offered(task: uuid.UUID) -> set[str]:
        with db.session(readonly=True) as session:
            return {str(p) for p in session.scalars(select(Offer.provider_id).where(Offer.task_id == task))}

    with db.session() as session:  # full now: one offer in hand, a capacity of one
        session.execute(update(ProviderProfile).where(ProviderProfile.account_id == uuid.UUID(lowered["id"]))
                        .values(capacity=1, updated_at=ProviderProfile.updated_at))
    with db.session() as session:
        assert route_task(session, settings, engine, first) == "routed"
    assert offered(first) == {closed["id"], free["id"]} and not read_all

    with db.session() as session:
        session.execute(update(Account).where(Account.id == uuid.UUID(closed["id"])).values(is_active=False))
    with db.session() as session:
        assert route_task(session, settings, engine, second) == "routed"
    assert offered(second) == {free["id"]}
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
    assert not read_all  # those two read again, not every profile
    assert closed["id"] not in index.row_of and index.capacity[index.row_of[lowered["id"]]] == 1

def test_offers_are_counted_in_the_snapshot_only_once_committed(api: Api, db: Any, settings: Any) -> None:
    (provider, _), = bookkeepers(api, 1, capacity=1)
    customer, _ = api.user("customer")
    first, second = submitted_tasks(db, customer["id"], REQUESTS[:2])
    engine = get_engine()
    with pytest.raises(RuntimeError), db.session() as session:  # routed, then the transaction fails
        assert route_task(session, settings, engine, first) == "routed"
        raise RuntimeError("the commit never happened")
    with db.session(readonly=True) as session:
        before = engine.provider_index(session)
        assert before.load[before.row_of[provider["id"]]] == 0  # the rolled-back offer is not counted
    snapshot = engine._providers
    with db.session() as session:
        assert route_task(session, settings, engine, first) == "routed"
    with db.session(readonly=True) as session:
        after = engine.provider_index(session)
    assert engine._providers is snapshot  # the same snapshot, not read again...
    assert after.load[after.row_of[provider["id"]]] == 1  # ...with the committed offer counted
    with db.session() as session:
        assert route_task(session, settings, engine, second) == "needs_review"


def test_routing_goes_on_while_another_thread_reads_the_providers_again(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 100,000 providers a new provider snapshot takes seconds to read. A batch that needs one only because
    the old one's age is up routes with the old one while another thread reads it, and the offers it commits
    meanwhile count in the new snapshot (whose read did not see them)."""
    from marketplace.domain.routing import engine as engine_module

    (provider, _), = bookkeepers(api, 1, capacity=3)
    customer, _ = api.user("customer")
    task, = submitted_tasks(db, customer["id"], REQUESTS[:1])
    engine = get_engine()
    with db.session(readonly=True) as session:
        engine.provider_index(session)
    old = engine._providers
    reading, go_on = threading.Event(), threading.Event()
    real = engine._counts

    def slow(session: Session) -> Any:
        counts = real(session)  # read (after the loads) before the offer is made
        reading.set()
        assert go_on.wait(60)
        return counts

    def read_again() -> None:
        with db.session(readonly=True) as session:
            engine.refresh_providers(session)

    def route() -> str:
        with db.session() as session:
            return route_task(session, settings, engine, task)

    monkeypatch.setattr(engine, "_counts", slow)
    monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", 0.0)  # every snapshot's age is up
    with ThreadPoolExecutor(2) as pool:
        reader = pool.submit(read_again)
        try:
            assert reading.wait(60)
            assert pool.submit(route).result(timeout=30) == "routed"  # not waiting for the reader
        finally:
            go_on.set()
        reader.result(timeout=60)
    monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", 60.0)
    with db.session(readonly=True) as session:
        new = engine.provider_index(session)
        offered = {o.provider_id for o in session.scalars(select(Offer).where(Offer.task_id == task))}
    assert uuid.UUID(provider["id"]) in offered
    assert engine._providers is not old  # the reader's snapshot, in place now...
    assert new.load[new.row_of[provider["id"]]] == 1  # ...counting the offer committed during its read


def test_the_upkeep_reads_the_providers_again_before_a_batch_would(
        api: Api, db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's upkeep thread reads the provider snapshot again shortly before its age is up, while batches
    use it, so that they never wait for the read, and says when it is due next; one nobody uses is left alone."""
    from marketplace.domain.routing import engine as engine_module

    bookkeepers(api, 1)
    engine = get_engine()
    monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", 60.0)
    with db.session(readonly=True) as session:
        engine.provider_index(session)  # a routing batch's
        before = engine._providers
        due_in = engine.refresh_ahead(session)  # fresh: left as it is
        assert engine._providers is before
        assert 60.0 - engine_module.SNAPSHOT_AHEAD - 1 < due_in <= 60.0 - engine_module.SNAPSHOT_AHEAD
        monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", engine_module.SNAPSHOT_AHEAD)
        assert engine.refresh_ahead(session) == 0.0  # due to be read again by the upkeep (not yet by a batch)
        after = engine._providers
        assert after is not before and after.taken > before.taken
        monkeypatch.setattr(engine, "_index_used", time.monotonic() - 30)  # no batch for 30 s
        assert engine.refresh_ahead(session) == float("inf")
        assert engine._providers is after


def watched_snapshot(api: Api, db: Any, request: pytest.FixtureRequest
                     ) -> tuple[dict[str, Any], dict[str, Any], uuid.UUID, Any]:
    """Two bookkeepers and a task submitted, the process's provider snapshot read and an upkeep thread watching
    for changes (until the test ends: the engine is the process's, no later test may inherit it)."""
    (provider, _), (other, _) = bookkeepers(api, 2, capacity=3)
    customer, _ = api.user("customer")
    task, = submitted_tasks(db, customer["id"], [BOOKKEEPING_TASK])
    engine = get_engine()
    with db.session(readonly=True) as session:
        engine.provider_index(session)
        engine.refresh_ahead(session, watching=True)
    request.addfinalizer(engine.stop_watching)
    return provider, other, task, engine


def edit_profile(db: Any, provider: dict[str, Any], **values: Any) -> None:
    """The provider's profile changed (its ``updated_at`` moves)."""
    from marketplace.db.models import ProviderProfile

    with db.session() as session:
        session.execute(update(ProviderProfile).where(ProviderProfile.account_id == uuid.UUID(provider["id"]))
                        .values(**values))


def batch_and_statements(db: Any, engine: Any) -> tuple[Any, list[str]]:
    """A routing batch's copy of the provider snapshot, and the SQL statements it took (BEGIN left out)."""
    queries: list[str] = []
    listen = (db.engine, "before_cursor_execute", lambda *args: queries.append(args[2]))
    event.listen(*listen)
    try:
        with db.session(readonly=True) as session:
            return engine.provider_index(session), [q for q in queries if q.upper() != "BEGIN"]
    finally:
        event.remove(*listen)


def test_while_the_upkeep_watches_a_batch_reads_only_the_changed_profiles(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest) -> None:
    """While a running upkeep thread watches, a routing batch looks only for the newest profile change (one
    query, none about offers or ratings) and reads only the profiles changed since, with those providers' own
    loads: a provider who edits their profile is ranked as edited by the very next batch, while the other
    providers' counts stay the snapshot's for the upkeep to read. Once the thread stops, batches look for new
    ratings themselves again."""
    provider, other, task, engine = watched_snapshot(api, db, request)
    with db.session() as session:  # an offer to each, made by another worker process
        add_offers(session, settings, [Pick(task, uuid.UUID(p["id"]), rank, 0.5)
                                       for rank, p in enumerate((provider, other), start=1)])

    def batch() -> tuple[Any, list[str]]:
        return batch_and_statements(db, engine)

    index, queries = batch()
    assert len(queries) == 1 and "provider_profiles" in queries[0]
    assert "ratings" not in queries[0] and "offers" not in queries[0]
    assert [index.load[index.row_of[p["id"]]] for p in (provider, other)] == [0, 0]  # (the upkeep's to read)

    edit_profile(db, provider, capacity=5)
    index, queries = batch()
    row = index.row_of[provider["id"]]
    assert (index.capacity[row], index.load[row]) == (5, 1)  # the edit, and the load read with it
    assert index.load[index.row_of[other["id"]]] == 0
    # the counts read are the changed provider's alone (tasks, offers, ratings), the open profiles not counted
    counts = [q for q in queries if "count(" in q.lower()]
    assert {t for t in ("tasks", "offers", "ratings") if any(f"FROM {t}" in q for q in counts)} \
        == {"tasks", "offers", "ratings"}
    assert all(" IN (" in q for q in counts)

    edit_profile(db, provider, accepting_work=False)
    assert provider["id"] not in batch()[0].row_of

    engine.stop_watching()
    index, queries = batch()
    assert "ratings" in queries[0]  # a new rating is looked for by the batch again


def test_a_snapshot_dropped_while_a_batch_patches_it_is_not_put_back(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch puts a changed profile into the snapshot it has; if that snapshot is dropped meanwhile (a routing
    transaction rolled back, a stale pick), offers committed since were not counted in it: the batch ranks on
    its patch, but the next batch reads the counts again instead of finding the patch in place."""
    provider, other, task, engine = watched_snapshot(api, db, request)
    real = engine._profile_changes

    def dropped_meanwhile(*args: Any, **kwargs: Any) -> Any:
        with db.session() as session:  # an offer committed, then the snapshot dropped
            add_offers(session, settings, [Pick(task, uuid.UUID(other["id"]), 1, 0.5)])
        engine.forget_providers()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_profile_changes", dropped_meanwhile)
    edit_profile(db, provider, capacity=5)
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
    assert index.capacity[index.row_of[provider["id"]]] == 5
    monkeypatch.undo()
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
    assert index.load[index.row_of[other["id"]]] == 1


def commit_offer(db: Any, settings: Any, engine: Any, task: uuid.UUID, provider: dict[str, Any], rank: int) -> None:
    """An offer to ``provider`` committed by a routing transaction of this process (counted in its snapshot)."""
    with db.session() as session:
        add_offers(session, settings, [Pick(task, uuid.UUID(provider["id"]), rank, 0.5)])
        engine.count_offers(session, Counter({provider["id"]: 1}))


def test_while_the_upkeep_reads_every_profile_a_batch_after_a_profile_change_does_not_wait_for_it(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upkeep thread reads every profile once a minute (3.6 s at 100,000 providers). A batch after a profile
    change puts the changed profile into the snapshot it has instead of waiting for that read, also when the
    snapshot's age and the upkeep's last round are past PROVIDER_SNAPSHOT_AGE by then; the read, once done,
    neither loses the change nor the offers committed meanwhile."""
    provider, other, task, engine = watched_snapshot(api, db, request)
    read, done = threading.Event(), threading.Event()
    real, upkeep = engine._read_snapshot, []

    def slow_read(*args: Any, **kwargs: Any) -> Any:  # read, then put in place only once the test is done
        upkeep.append(real(*args, **kwargs))
        read.set()
        done.wait(30)
        return upkeep[-1]

    monkeypatch.setattr(engine, "_read_snapshot", slow_read)
    # a minute since the snapshot was read and since the upkeep's last round ended: due, and read now
    engine._providers = dataclasses.replace(engine._providers, taken=time.monotonic() - 60)
    engine._watched = time.monotonic() - 60

    def upkeep_reads() -> None:
        with db.session(readonly=True) as session:
            engine.refresh_ahead(session, watching=True)

    def batch() -> Any:
        with db.session(readonly=True) as session:
            return engine.provider_index(session)

    reader = threading.Thread(target=upkeep_reads)
    reader.start()
    try:
        assert read.wait(10)
        edit_profile(db, provider, capacity=5)  # after the read
        with ThreadPoolExecutor(1) as pool:
            index = pool.submit(batch).result(timeout=10)  # waiting for the read would take 30 s
        assert index.capacity[index.row_of[provider["id"]]] == 5
        commit_offer(db, settings, engine, task, other, 1)  # before the read is put in place
    finally:
        done.set()
        reader.join(30)
    assert engine._providers is upkeep[0]  # the read was put in place, without the edit made after it
    index = batch()
    assert index.capacity[index.row_of[provider["id"]]] == 5
    assert index.load[index.row_of[other["id"]]] == 1


def test_offers_committed_while_a_batch_patches_the_snapshot_count_once(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offers committed after a batch read the changed provider's load, and before its patch is in place, count
    in the patch: once for the changed provider (whose load it read), once for the others (whose counts it
    copies from the snapshot they were counted in)."""
    provider, other, task, engine = watched_snapshot(api, db, request)
    real = engine._profile_changes

    def offers_meanwhile(*args: Any, **kwargs: Any) -> Any:
        change = real(*args, **kwargs)
        for rank, p in enumerate((provider, other), start=1):
            commit_offer(db, settings, engine, task, p, rank)
        return change

    monkeypatch.setattr(engine, "_profile_changes", offers_meanwhile)
    edit_profile(db, provider, capacity=5)
    for _ in range(2):  # the batch's patch, then the next batch's copy of it in place
        with db.session(readonly=True) as session:
            index = engine.provider_index(session)
        assert index.capacity[index.row_of[provider["id"]]] == 5
        assert [index.load[index.row_of[p["id"]]] for p in (provider, other)] == [1, 1]


def test_a_batch_whose_snapshot_the_upkeep_replaced_meanwhile_ranks_on_the_new_one(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upkeep's read, put in place while a batch patches the snapshot it began from, counts the offers
    committed since: the batch ranks on it with the changed profile put in (on the old one a provider looks
    emptier than they are, and a pick that fails the capacity check makes the batch read every profile)."""
    provider, other, task, engine = watched_snapshot(api, db, request)
    real = engine._profile_changes

    def replaced_meanwhile(*args: Any, **kwargs: Any) -> Any:
        change = real(*args, **kwargs)
        monkeypatch.setattr(engine, "_profile_changes", real)  # (the upkeep's read below uses it)
        with db.session(readonly=True) as session:  # the upkeep's read, put in place
            engine.refresh_ahead(session, watching=True)
        commit_offer(db, settings, engine, task, other, 1)  # counted in it
        return change

    monkeypatch.setattr(engine, "_profile_changes", replaced_meanwhile)
    monkeypatch.setattr(engine, "_providers", dataclasses.replace(engine._providers, taken=time.monotonic() - 4))
    began_from = engine._providers
    edit_profile(db, provider, capacity=5)
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
    assert engine._providers is not began_from  # the upkeep's read is in place
    assert index.capacity[index.row_of[provider["id"]]] == 5
    assert index.load[index.row_of[other["id"]]] == 1


def test_a_batch_after_a_failed_upkeep_read_does_not_count_on_the_upkeep(
        api: Api, db: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upkeep round whose read fails (the database away) does not count as watching: once its last good round
    is PROVIDER_SNAPSHOT_AGE old, batches look for new ratings (and read the counts) themselves again."""
    _, _, _, engine = watched_snapshot(api, db, request)

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(engine, "_read_snapshot", fails)
    engine._watched = time.monotonic() - 60  # the last good round
    monkeypatch.setattr(engine, "_providers", dataclasses.replace(engine._providers, taken=time.monotonic() - 60))
    with pytest.raises(RuntimeError), db.session(readonly=True) as session:
        engine.refresh_ahead(session, watching=True)
    monkeypatch.undo()
    assert any("ratings" in q for q in batch_and_statements(db, engine)[1])


def test_a_model_replaced_while_a_batch_patches_the_snapshot_is_reported_as_such(
        api: Api, db: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new routing model taking over while a batch puts a changed profile in: the batch gets ModelReplaced
    (routed again on the new model), and no later batch inherits the half-done patch."""
    from marketplace.domain.routing.engine import ModelReplaced

    provider, _, _, engine = watched_snapshot(api, db, request)
    before = engine._providers

    def replaced(*args: Any, **kwargs: Any) -> Any:
        raise ModelReplaced("the routing model of the batch is no longer in use")

    monkeypatch.setattr(engine, "_profile_changes", replaced)
    edit_profile(db, provider, capacity=5)
    with pytest.raises(ModelReplaced), db.session(readonly=True) as session:
        engine.provider_index(session)
    assert engine._providers is before and not engine._collecting


@pytest.mark.parametrize("stale_by", ["watching", "reading"])
def test_a_provider_who_joined_after_the_snapshot_gets_a_task_no_one_else_can_take(
        api: Api, db: Any, settings: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
        stale_by: str) -> None:
    """A batch may route on the snapshot it has while the upkeep thread watches for changes, or while another
    thread reads a new one, but not once a profile changed: a provider who joined a moment ago is ranked by the
    next batch and gets a task no one else can take (not sent to staff for want of a provider)."""
    api.provider(["plumbing"], "Plumber for taps and leaks", "I fix dripping taps, leaks and cartridges.")
    engine = get_engine()
    with db.session(readonly=True) as session:
        engine.provider_index(session)
        if stale_by == "watching":
            engine.refresh_ahead(session, watching=True)
    request.addfinalizer(engine.stop_watching)
    (bookkeeper, _), = bookkeepers(api, 1, capacity=3)  # joins after the snapshot
    customer, _ = api.user("customer")
    task, = submitted_tasks(db, customer["id"], [BOOKKEEPING_TASK])
    if stale_by == "reading":
        class ReadUnderWay:  # another thread reading the providers, as far as batches can tell
            def __init__(self) -> None:
                self.lock = threading.Lock()

            def locked(self) -> bool:
                return True

            def __enter__(self) -> None:
                self.lock.acquire()

            def __exit__(self, *exc: object) -> None:
                self.lock.release()

        monkeypatch.setattr(engine, "_building", ReadUnderWay())
    with db.session() as session:
        assert route_task(session, settings, engine, task) == "routed"
    with db.session(readonly=True) as session:
        assert {o.provider_id for o in session.scalars(select(Offer).where(Offer.task_id == task))} \
            == {uuid.UUID(bookkeeper["id"])}


def test_a_savepoint_in_a_routing_transaction_counts_no_offer_before_the_commit(
        api: Api, db: Any, settings: Any) -> None:
    """Offers a transaction made count in the process's provider snapshot only once it commits. SQLAlchemy
    reports a savepoint's end (routing opens one for its capacity check) as a commit or rollback too: that must
    neither count a routed task's offers early nor forget them."""
    (provider, _), = bookkeepers(api, 1, capacity=2)
    customer, _ = api.user("customer")
    first, second = submitted_tasks(db, customer["id"], REQUESTS[:2])
    engine = get_engine()
    with pytest.raises(RuntimeError), db.session() as session:
        assert route_task(session, settings, engine, first) == "routed"
        assert route_task(session, settings, engine, second) == "routed"  # its savepoint ends
        raise RuntimeError("the commit never happened")
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
        assert index.load[index.row_of[provider["id"]]] == 0
    with db.session() as session:
        assert route_task(session, settings, engine, first) == "routed"
        session.begin_nested().rollback()  # a savepoint rolled back: the offer stays to be counted
    with db.session(readonly=True) as session:
        index = engine.provider_index(session)
        assert index.load[index.row_of[provider["id"]]] == 1


def test_a_snapshot_read_again_for_its_age_reads_only_the_counts_when_no_profile_changed(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every profile into a new snapshot took 3.7 s at 100,000 providers. When its age is up and no
    profile changed, joined or left, only the counts are read again (other workers' offers count then); a
    provider whose account was deactivated (the profile unchanged) makes it read the profiles, and so does
    PROVIDER_PROFILES_AGE."""
    from marketplace.db.models import Account
    from marketplace.domain.routing import engine as engine_module

    (provider, _), (other, _) = bookkeepers(api, 2, capacity=3)
    customer, _ = api.user("customer")
    task, = submitted_tasks(db, customer["id"], REQUESTS[:1])
    engine = get_engine()
    with db.session(readonly=True) as session:
        before = engine.provider_index(session)
    row = before.row_of[provider["id"]]
    assert before.load[row] == 0
    with db.session() as session:  # another worker's offer
        add_offers(session, settings, [Pick(task, uuid.UUID(provider["id"]), 1, 0.9)])
    monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", 0.0)
    with db.session(readonly=True) as session:
        after = engine.provider_index(session)
    assert after.vectors is before.vectors and after.row_of is before.row_of  # the profiles were not read
    assert after.load[row] == 1 and after.recent_offers[row] == 1  # the counts were

    with db.session() as session:
        session.execute(update(Account).where(Account.id == uuid.UUID(other["id"])).values(is_active=False))
    with db.session(readonly=True) as session:
        again = engine.provider_index(session)
    assert other["id"] not in again.row_of and again.load[again.row_of[provider["id"]]] == 1

    with db.session(readonly=True) as session:
        assert engine.provider_index(session).vectors is again.vectors
        monkeypatch.setattr(engine_module, "PROVIDER_PROFILES_AGE", 0.0)
        assert engine.provider_index(session).vectors is not again.vectors


def test_a_new_snapshot_reads_only_the_profiles_that_changed(
        api: Api, db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every profile into a new snapshot took 3.6 s at 100,000 providers: only those edited, joined or
    closed since the last one are read and put in it, and it ranks as a read of every profile would. An edit
    committed after a newer one (its ``updated_at`` behind the newest the snapshot saw) is found too."""
    from datetime import timedelta

    from marketplace.db.models import ProviderProfile
    from marketplace.domain.routing import engine as engine_module

    (a, _), (b, _), (c, _) = bookkeepers(api, 3, capacity=3)
    engine = get_engine()
    with db.session(readonly=True) as session:
        engine.provider_index(session)
    read_all = reads_of_every_profile(engine, monkeypatch)
    monkeypatch.setattr(engine_module, "PROVIDER_SNAPSHOT_AGE", 0.0)

    def edit(provider: dict[str, Any], **values: Any) -> None:
        with db.session() as session:
            session.execute(update(ProviderProfile)
                            .where(ProviderProfile.account_id == uuid.UUID(provider["id"])).values(**values))

    def ranked(index: Any, slugs: list[str]) -> list[tuple[str, float]]:
        vector = engine.encode(engine.encoder, ["Build a landing page for our bakery in React"])[0]
        return [(c.provider_id, c.score) for c in engine.matcher.rank_index(index, vector, slugs, include_full=True)]

    edit(a, categories=["web-development"], description="I build React websites and landing pages.",
         hourly_rate=90)
    edit(c, accepting_work=False)
    d, _ = api.provider(["web-development"], "Web developer", "Shopify and React storefronts.")
    with db.session(readonly=True) as session:
        patched = engine.provider_index(session)
    assert not read_all
    assert set(patched.row_of) >= {a["id"], b["id"], d["id"]} and c["id"] not in patched.row_of
    assert not any(uuid.UUID(c["id"]) in space for space in engine._spaces.values())
    engine.forget_providers()
    with db.session(readonly=True) as session:
        every = engine.provider_index(session)
    assert read_all == [1]
    for slugs in (["web-development"], ["bookkeeping-accounting"], ["web-development", "bookkeeping-accounting"]):
        assert ranked(patched, slugs) == ranked(every, slugs)
    assert [p for p, _ in ranked(patched, ["web-development"])][:2] in ([a["id"], d["id"]], [d["id"], a["id"]])

    # b's edit is stamped a little before the newest change the snapshot saw (d's), as by a transaction that
    # committed late: the newest updated_at does not move, and the edit is found all the same.
    with db.session(readonly=True) as session:
        newest = session.scalar(select(ProviderProfile.updated_at).order_by(ProviderProfile.updated_at.desc()))
    edit(b, categories=["web-development"], updated_at=newest - timedelta(seconds=5))
    with db.session(readonly=True) as session:
        late = engine.provider_index(session)
    assert read_all == [1]
    assert b["id"] in {p for p, _ in ranked(late, ["web-development"])}
    assert b["id"] not in {p for p, _ in ranked(late, ["bookkeeping-accounting"])}


def test_a_provider_no_longer_open_for_work_leaves_no_profile_vector_behind(api: Api, db: Any) -> None:
    # A vector is derived from the profile's text: once the provider stops taking work (or the account is
    # erased) the engine must not keep it for the rest of the process's life.
    from marketplace.db.models import ProviderProfile

    (provider, _), = bookkeepers(api, 1, capacity=1)
    provider_id = uuid.UUID(provider["id"])
    engine = get_engine()
    with db.session(readonly=True) as session:
        assert provider["id"] in engine.provider_index(session, fresh=True).row_of
    assert any(provider_id in space for space in engine._spaces.values())
    with db.session() as session:
        session.execute(update(ProviderProfile).where(ProviderProfile.account_id == provider_id)
                        .values(accepting_work=False))
    with db.session(readonly=True) as session:
        assert provider["id"] not in engine.provider_index(session, fresh=True).row_of
    assert not any(provider_id in space for space in engine._spaces.values())


def test_one_failing_task_fails_only_its_own_job(api: Api, db: Any, settings: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import actors, runtime

    bookkeepers(api, 3, capacity=5)
    customer, _ = api.user("customer")
    good, bad, also_good = submitted_tasks(db, customer["id"], REQUESTS[:3])
    real = actors.route_service

    def poisoned(session: Session, settings: Any, engine: Any, task_ids: list[uuid.UUID], **kwargs: Any) -> dict:
        if bad in task_ids:
            raise RuntimeError("this task cannot be routed")
        return real(session, settings, engine, task_ids, **kwargs)

    monkeypatch.setattr(actors, "route_service", poisoned)
    monkeypatch.setattr(runtime, "_settings", settings)
    results = actors.route_batch([good, bad, also_good])
    assert results[0] == results[2] == "routed"
    assert isinstance(results[1], RuntimeError)
    with db.session(readonly=True) as session:
        assert session.get(Task, bad).status is TaskStatus.SUBMITTED
        assert session.get(Task, good).status is TaskStatus.ROUTED

    # The same tasks sent together as one route_tasks message: the message fails (so dramatiq retries it),
    # naming the task; the others are routed and a retry leaves them alone.
    fourth, = submitted_tasks(db, customer["id"], REQUESTS[4:5])
    with pytest.raises(actors.GroupedJobFailed, match=f"1 of 3 routings failed, first {bad}"):
        actors.route_tasks.fn([str(fourth), str(bad), str(good)])
    with db.session(readonly=True) as session:
        assert session.get(Task, fourth).status is TaskStatus.ROUTED
        assert session.get(Task, bad).status is TaskStatus.SUBMITTED
    monkeypatch.setattr(actors, "route_service", real)
    actors.route_tasks.fn([str(fourth), str(bad), str(good)])  # the retry, once the fault is gone
    with db.session(readonly=True) as session:
        assert session.get(Task, bad).status is TaskStatus.ROUTED
    api.drain()  # the routed tasks' draft jobs went to this app's worker


def test_tasks_encoded_ahead_are_routed_without_encoding_in_the_write_transaction(
    api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import actors, runtime

    bookkeepers(api, 3)
    customer, _ = api.user("customer")
    ids = submitted_tasks(db, customer["id"], REQUESTS[:4])
    engine = get_engine()
    monkeypatch.setattr(runtime, "_settings", settings)
    assert actors._prepare(ids) == 4  # the worker's encoding stage, as a routing job runs it

    def no_encoding(texts: list[str]) -> None:
        raise AssertionError("encoded inside the write transaction")

    monkeypatch.setattr(engine.encoder, "encode", no_encoding)
    with db.session() as session:
        outcomes = route_tasks(session, settings, engine, ids)
    assert set(outcomes.values()) <= {"routed", "needs_review"} and "routed" in outcomes.values()


def test_a_backlog_is_encoded_once(api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many routing jobs at once (a backlog): the encode stage must not run so far ahead of the write stage
    that the vectors it left in the engine's cache are gone when their batch is written, to be encoded again.
    Here the cache holds 16 vectors and the stage limit lets 4 tasks ahead, as ENCODE_AHEAD does at scale;
    without the limit, all 24 tasks are encoded in the first encoder call and 8 of them again later."""
    from workers import actors, runtime

    bookkeepers(api, 3)
    customer, _ = api.user("customer")
    requests = [(f"{t} ({k})", d) for k in range(4) for t, d in REQUESTS]
    ids = submitted_tasks(db, customer["id"], requests)
    task_texts = {task_text(t, d) for t, d in requests}
    engine = get_engine()
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(engine, "_recent", RecentItems(16, 60.0))
    monkeypatch.setattr(actors, "_ahead", StageLimit(4))
    encoded: list[str] = []
    real = engine.encoder.encode

    def counting(texts: list[str]) -> Any:
        encoded.extend(texts)
        return real(texts)

    monkeypatch.setattr(engine.encoder, "encode", counting)
    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(actors.route_task.fn, [str(i) for i in ids]))
    encoded_tasks = [t for t in encoded if t in task_texts]  # providers' profiles are encoded here too
    assert len(encoded_tasks) == len(ids) == len(set(encoded_tasks))
    with db.session(readonly=True) as session:
        assert {session.get(Task, i).status for i in ids} <= {TaskStatus.ROUTED, TaskStatus.NEEDS_REVIEW}
    api.drain()


def test_routing_looks_tasks_up_by_primary_key_on_sqlite(api: Api, db: Any, settings: Any) -> None:
    """SQLite plans without statistics: for ``id IN (...) AND status = ...`` it walked the status index, i.e.
    every waiting task, once per batch (marketplace.db.sql.likely). No statement of a routing batch may."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("a SQLite query planner question")
    bookkeepers(api, 3)
    customer, _ = api.user("customer")
    ids = submitted_tasks(db, customer["id"], REQUESTS)
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if not executemany and "tasks.id IN" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session(readonly=True) as session:  # the worker's encode stage, then its write stage
            encode_ahead(get_engine(), routing_texts(session, ids))
        with db.session() as session:
            outcomes = route_tasks(session, settings, get_engine(), ids)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert "routed" in outcomes.values()
    assert len(statements) >= 3  # the texts, the tasks and their transitions
    with db.engine.connect() as conn:
        for statement, parameters in statements:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " ".join(row[3] for row in rows)
            assert "ix_tasks_status_created_at" not in plan, statement
    api.drain()


def test_the_worker_gets_the_routing_model_before_its_write_transaction(
    api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fitting a model for a new taxonomy version takes seconds; on SQLite the write transaction holds the
    database's write lock, so every sign-up and posted task would wait that long."""
    from marketplace.domain.routing.engine import RoutingEngine
    from workers import actors, runtime

    bookkeepers(api, 2)
    customer, _ = api.user("customer")
    ids = submitted_tasks(db, customer["id"], REQUESTS[:2])
    asked_in: list[bool] = []
    router = RoutingEngine.router

    def watched(self: RoutingEngine, session: Any, tuning: bool = True) -> Any:
        asked_in.append(bool(session.get_bind().get_execution_options().get("relay_readonly")))
        return router(self, session, tuning)

    monkeypatch.setattr(RoutingEngine, "router", watched)
    monkeypatch.setattr(runtime, "_settings", settings)
    assert actors.route_batch(ids) == ["routed", "routed"]
    assert asked_in and all(asked_in), "the model was fetched inside the write transaction"
    api.drain()


def test_a_customers_words_leave_the_routing_engines_memory_soon_after_routing(
        api: Api, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts and vectors kept between a worker's encode and write stages, and the scrubbed texts, are dropped
    after RECENT_SECONDS even if the process routes nothing else (an erasure cannot reach another process's
    memory; a long-lived worker must not keep the last tasks' words for days)."""
    from marketplace.domain.routing.engine import RECENT_SECONDS, RoutingEngine, task_text

    engine = RoutingEngine(encoder=get_engine().encoder)
    scrubbed = task_text.cache  # type: ignore[attr-defined]
    assert engine._recent.max_age == scrubbed.max_age == RECENT_SECONDS
    bookkeepers(api, 1, capacity=5)
    customer, _ = api.user("customer")
    title, description = "Private ledger", "Reconcile the accounts of Jane Roe's bakery, phone 07700 900123."
    (task_id,) = submitted_tasks(db, customer["id"], [(title, description)])
    with db.session() as session:
        assert route_tasks(session, settings, engine, [task_id])[task_id] == "routed"
    text = task_text(title, description)
    assert "07700" not in text  # what the model saw was scrubbed
    assert (title, description) in scrubbed
    assert engine._recent.get((engine.encoder.model_id, text)) is not None

    # RECENT_SECONDS (a minute) later, as if it were 0.3 s: nothing else is routed meanwhile
    monkeypatch.setattr(engine._recent, "max_age", 0.3)
    monkeypatch.setattr(scrubbed, "max_age", 0.3)
    assert wait_until(lambda: len(engine._recent) == 0 and (title, description) not in scrubbed), \
        "the task's words were still in memory long after routing"
