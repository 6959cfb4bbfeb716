"""Regression tests for the rules a review found missing: visibility after an offer closes, AI objection,
parallel sign-in guessing, capacity on accept, hostile inputs, stalled routing, outbox upkeep."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from marketplace import jobs
from marketplace.clock import now
from marketplace.db.models import OutboxMessage, Task, TaskStatus
from tests.conftest import BOOKKEEPING_TASK as TASK
from tests.conftest import Api, bookkeepers


@pytest.mark.model
def test_a_provider_whose_offer_closed_no_longer_sees_the_task(api: Api) -> None:
    c = api.client
    (_, winner_h), (_, loser_h) = bookkeepers(api, 2)
    _, customer_h = api.user("customer")
    task_id = api.post_task(customer_h, *TASK)
    api.drain()
    assert c.get(f"/api/v1/tasks/{task_id}", headers=loser_h).status_code == 200  # offer open: may look
    offer = c.get("/api/v1/offers", headers=winner_h).json()["items"][0]
    c.post(f"/api/v1/offers/{offer['id']}/accept", headers=winner_h)
    assert c.get(f"/api/v1/tasks/{task_id}", headers=loser_h).status_code == 404
    assert c.get(f"/api/v1/tasks/{task_id}", headers=winner_h).status_code == 200
    withdrawn = c.get("/api/v1/offers", headers=loser_h).json()["items"][0]
    assert withdrawn["status"] == "withdrawn" and withdrawn["task_description"] == ""
    assert c.get("/api/v1/offers", headers=winner_h).json()["items"][0]["task_description"] == TASK[1]


@pytest.mark.model
def test_staff_placement_for_an_objecting_customer_never_embeds_the_task(api: Api, db, monkeypatch) -> None:
    from marketplace.domain.routing import engine as engine_module

    c = api.client
    bookkeepers(api, 2)
    _, customer_h = api.user("customer")
    c.put("/api/v1/me/privacy", json={"ai_processing_objection": True}, headers=customer_h)
    task_id = api.post_task(customer_h, *TASK)
    api.drain()
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"

    encoded: list[str] = []
    real_encode = engine_module.RoutingEngine.encode

    def recording(self, encoder, texts):  # every task text the routing engine encodes passes here
        encoded.extend(texts)
        return real_encode(self, encoder, texts)

    monkeypatch.setattr(engine_module.RoutingEngine, "encode", recording)
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{task_id}/route", json={"category": "bookkeeping-accounting"}, headers=staff_h)
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()
    assert task["status"] == "routed"
    assert task["routing"]["evidence"]["source"] == "staff"
    assert not [t for t in encoded if TASK[1][:40] in t], "an objecting customer's task text was encoded"
    other_id = api.post_task(api.user("customer")[1], *TASK)  # the check sees what a normal task gets
    api.drain()
    assert c.get(f"/api/v1/tasks/{other_id}", headers=staff_h).status_code == 200
    assert [t for t in encoded if TASK[1][:40] in t]


@pytest.mark.model
def test_objecting_to_ai_processing_takes_the_customers_tasks_out_of_what_the_router_learns(api: Api, db) -> None:
    from marketplace.db.models import CategoryExample
    from marketplace.domain.categories.services import load_taxonomy

    c = api.client
    _, customer_h = api.user("customer")
    _, other_h = api.user("customer")
    staff_h = api.staff(db)
    # staff place both customers' tasks by hand, which makes them labelled examples
    odd = ("Odd job", "Please count the pigeons on the roof of the town hall every morning this week.")
    mine, theirs = api.post_task(customer_h, *odd), api.post_task(other_h, *odd)
    api.drain()
    for task_id in (mine, theirs):
        if c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()["status"] != "needs_review":
            c.post(f"/api/v1/staff/tasks/{task_id}/transition", json={"to": "needs_review", "reason": "check"},
                   headers=staff_h).raise_for_status()
        c.post(f"/api/v1/staff/tasks/{task_id}/route", json={"category": "bookkeeping-accounting"},
               headers=staff_h).raise_for_status()

    def learned() -> set[str]:
        with db.session() as session:
            return {str(e.task_id) for e in session.scalars(select(CategoryExample).where(
                CategoryExample.source == "staff"))}

    assert learned() == {mine, theirs}
    with db.session() as session:
        version = load_taxonomy(session).version
    c.put("/api/v1/me/privacy", json={"ai_processing_objection": True}, headers=customer_h).raise_for_status()
    assert learned() == {theirs}  # the objecting customer's task no longer teaches the router
    with db.session() as session:
        assert load_taxonomy(session).version != version  # so the next refit fits without it
    # withdrawing the objection later does not bring it back
    c.put("/api/v1/me/privacy", json={"ai_processing_objection": False}, headers=customer_h).raise_for_status()
    assert learned() == {theirs}


def test_an_objection_saved_while_staff_place_the_task_keeps_it_out_of_what_the_router_learns(api: Api, db) -> None:
    """Staff place a customer's task by hand at the moment the customer objects to AI processing: whichever
    commits first, the task does not stay a labelled example (PostgreSQL: the placement read the objection
    from before the customer's commit, and added its example after the objection had deleted theirs)."""
    import threading
    import uuid

    from marketplace.auth import Principal
    from marketplace.db.models import CategoryExample, Role
    from marketplace.domain.accounts.services import create_account, set_ai_objection
    from marketplace.domain.staff.services import override, route_by_hand

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the two cannot overlap")
    customer, customer_h = api.user("customer")
    task_id = uuid.UUID(api.post_task(customer_h, "Odd job", "Please count the pigeons on the roof every morning."))
    api.drain()
    with db.session() as session:
        staff = create_account(session, f"staff-{uuid.uuid4().hex[:6]}@relay.example", "a staff password 1",
                               Role.STAFF, "Staff member")
        me = Principal(staff.id, Role.STAFF, uuid.uuid4())
        if api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] != "needs_review":
            override(session, me, task_id, "needs_review", "check it")
    failures: list[BaseException] = []

    def place() -> None:
        try:
            with db.session() as session:
                route_by_hand(session, me, task_id, "bookkeeping-accounting", "")
        except BaseException as e:  # reported below
            failures.append(e)

    placing = threading.Thread(target=place)
    with db.session() as objecting:  # the customer's objection, saved but not yet committed
        set_ai_objection(objecting, uuid.UUID(customer["id"]), True)
        placing.start()
        placing.join(1.0)
    placing.join(30)
    assert not placing.is_alive() and not failures, failures
    with db.session(readonly=True) as session:
        assert session.get(Task, task_id).status in (TaskStatus.ROUTING, TaskStatus.ROUTED)  # placed all the same
        assert not session.scalars(select(CategoryExample).where(CategoryExample.task_id == task_id)).all()


def test_parallel_password_guesses_are_bounded_by_the_limit(api: Api, settings) -> None:
    account = api.signup("customer")

    def guess(i: int) -> int:
        return api.client.post("/api/v1/sessions", json={"email": account["email"],
                                                         "password": f"wrong guess {i}"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(guess, range(24)))
    assert codes.count(401) <= settings.login_max_failures
    assert codes.count(429) >= 24 - settings.login_max_failures
    assert set(codes) <= {401, 429}


@pytest.mark.model
def test_accepting_beyond_capacity_is_refused_and_delivered_work_still_counts(api: Api) -> None:
    c = api.client
    (_, provider_h), = bookkeepers(api, 1, capacity=1)
    _, customer_h = api.user("customer")
    first = api.post_task(customer_h, *TASK)
    api.drain()
    offer = c.get("/api/v1/offers?status=open", headers=provider_h).json()["items"][0]
    assert c.post(f"/api/v1/offers/{offer['id']}/accept", headers=provider_h).status_code == 200
    c.post(f"/api/v1/tasks/{first}/start", headers=provider_h)
    c.post(f"/api/v1/tasks/{first}/deliver", headers=provider_h)
    # delivered but not accepted by the customer: the slot is still taken, so no new offer
    second = api.post_task(customer_h, "Monthly bookkeeping for a cafe",
                           "Reconcile the cafe's bank and card transactions every month in Xero.")
    api.drain()
    assert c.get("/api/v1/offers?status=open", headers=provider_h).json()["items"] == []
    assert c.get(f"/api/v1/tasks/{second}", headers=customer_h).json()["status"] == "needs_review"


@pytest.mark.model
def test_lowering_capacity_blocks_accepting_open_offers(api: Api) -> None:
    c = api.client
    (_, provider_h), = bookkeepers(api, 1, capacity=2)
    _, customer_h = api.user("customer")
    api.post_task(customer_h, *TASK)
    api.post_task(customer_h, "Monthly bookkeeping for a cafe",
                  "Reconcile the cafe's bank and card transactions every month in Xero.")
    api.drain()
    offers = c.get("/api/v1/offers?status=open", headers=provider_h).json()["items"]
    assert len(offers) == 2
    profile = c.get("/api/v1/providers/me", headers=provider_h).json()
    body = {k: profile[k] for k in ("headline", "description", "skills", "categories", "languages",
                                    "accepting_work", "hourly_rate", "rate_currency")}
    assert c.put("/api/v1/providers/me", json={**body, "capacity": 1}, headers=provider_h).status_code == 200
    assert c.post(f"/api/v1/offers/{offers[0]['id']}/accept", headers=provider_h).status_code == 200
    refused = c.post(f"/api/v1/offers/{offers[1]['id']}/accept", headers=provider_h)
    assert refused.status_code == 409 and "capacity" in refused.json()["detail"]


def test_hostile_values_get_422_not_500(api: Api) -> None:
    c = api.client
    _, customer_h = api.user("customer")
    _, provider_h = api.user("provider")
    ok = {"title": "A fine title", "description": "A long enough description."}
    cases = [
        ("post", "/api/v1/tasks", customer_h, {**ok, "title": "Nul\u0000title"}),
        ("post", "/api/v1/tasks", customer_h, {**ok, "deadline": "9999-12-31T23:00:00-05:00"}),
        ("post", "/api/v1/tasks", customer_h, {**ok, "budget": {"amount": "1e-30", "currency": "EUR"}}),
        ("post", "/api/v1/tasks", customer_h, {**ok, "budget": {"amount": "1e400", "currency": "EUR"}}),
        ("post", "/api/v1/accounts", {}, {"email": "a\u0000@example.com", "password": "long enough pw",
                                          "role": "customer", "display_name": "X"}),
        ("post", "/api/v1/sessions", {}, {"email": "a\u0000@example.com", "password": "whatever"}),
        ("put", "/api/v1/providers/me", provider_h, {"headline": "Dev", "description": "", "skills": [],
                                                     "categories": [], "languages": ["en"], "capacity": 1,
                                                     "accepting_work": True, "hourly_rate": "NaN"}),
    ]
    for method, path, headers, body in cases:
        r = c.request(method.upper(), path, json=body, headers=headers)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.json()["type"] == "/problems/validation-error"
    assert c.get("/api/v1/tasks?status=%00", headers=customer_h).status_code == 422


def test_stalled_routing_goes_to_staff(api: Api, settings, db, monkeypatch) -> None:
    from marketplace.domain.routing.services import sweep_stalled

    _, customer_h = api.user("customer")
    monkeypatch.setattr(jobs, "_send", lambda *_: (_ for _ in ()).throw(ConnectionError("broker down")))
    task_id = api.post_task(customer_h, *TASK)
    with db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 0
    with time_machine.travel(now() + timedelta(minutes=31), tick=False), db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 1
    task = api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "needs_review"
    assert "did not finish" in task["transitions"][-1]["reason"]


def test_a_committed_request_succeeds_even_if_sending_its_job_fails(api: Api, db, monkeypatch) -> None:
    _, customer_h = api.user("customer")

    def dispatch_broken(*_args, **_kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(jobs, "dispatch", dispatch_broken)
    task_id = api.post_task(customer_h, *TASK)  # asserts 201
    with db.session() as session:
        pending = session.scalar(select(func.count()).select_from(OutboxMessage)
                                 .where(OutboxMessage.dispatched_at.is_(None)))
    assert pending == 1 and task_id


def test_dispatched_outbox_rows_are_purged_after_a_week(api: Api, settings, db) -> None:
    _, customer_h = api.user("customer")
    api.post_task(customer_h, *TASK)
    with db.session() as session:
        jobs.relay_pending(session, settings)
    with db.session() as session:
        assert jobs.purge_dispatched(session, timedelta(days=7)) == 0
    with time_machine.travel(now() + timedelta(days=8), tick=False), db.session() as session:
        assert jobs.purge_dispatched(session, timedelta(days=7)) == 1


@pytest.mark.model
def test_a_scheduler_tick_does_its_other_duties_when_asking_for_a_refit_fails(
    api: Api, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for a tuned model loads the encoder; if that fails (unreadable weights, say), offers must still
    expire and be re-offered, the outbox relayed, stalled routing handed to staff."""
    from marketplace.domain.routing import engine as engine_module
    from workers import runtime, scheduler

    bookkeepers(api, 4)
    _, customer_h = api.user("customer")
    api.post_task(customer_h, *TASK)
    api.drain()

    def broken(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("the model's weights cannot be read")

    monkeypatch.setattr(engine_module.RoutingEngine, "needs_tuning", broken)
    monkeypatch.setattr(scheduler, "_refit_asked", {})
    monkeypatch.setattr(runtime, "_settings", settings.with_(router_tuning=True))
    with time_machine.travel(now() + timedelta(hours=settings.offer_window_hours, minutes=1), tick=False):
        result = scheduler.run_once()
    assert result["refits_requested"] == 0 and result["expired"] == 3


def test_a_redis_that_stops_answering_fails_the_send_and_keeps_the_jobs(db, settings, monkeypatch) -> None:
    """A Redis that takes connections and never answers (hung, or a network that drops its replies): the send
    fails after the client's socket timeout (redis-py's default, 5 s), instead of hanging the outbox relay (and
    the scheduler tick it runs in) with its claimed rows locked, and the jobs stay in the outbox for the next
    run."""
    import socket
    import threading
    import uuid

    from marketplace.settings import Settings

    server = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connections.append(server.accept()[0])  # read nothing, answer nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    with db.session() as session:
        queued = jobs.enqueue_many(session, "draft_clarifying_question", [(uuid.uuid4(),)])
    silent = jobs._redis_broker(Settings(broker="redis", redis_url=f"redis://127.0.0.1:{server.getsockname()[1]}/0",
                                         secret_key="x"))
    monkeypatch.setattr(jobs, "get_broker", lambda _settings: silent)
    monkeypatch.setattr(jobs, "can_deliver", lambda _settings: True)
    sent: list[int] = []

    def relay() -> None:
        with db.session() as session:
            sent.append(jobs.relay_pending(session, settings))

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    relaying.join(60)
    try:
        assert not relaying.is_alive(), "the relay hung on a Redis that does not answer"
        assert sent == [0] and connections
        with db.session(readonly=True) as session:
            row = session.get(OutboxMessage, queued[0].id)
            assert row.dispatched_at is None and row.attempts == 1
    finally:
        server.close()
        for connection in connections:
            connection.close()
