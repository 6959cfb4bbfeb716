"""Migrations, the transactional outbox, health, and the loopback-only network guard."""

from __future__ import annotations

import socket
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pytest_socket import SocketConnectBlockedError
from sqlalchemy import func, select

from marketplace import jobs
from marketplace.db.migrate import downgrade, upgrade
from marketplace.db.models import Base, OutboxMessage, Task
from marketplace.db.session import get_database, unit_of_work
from tests.conftest import Api


def test_migrations_match_the_models(database_url: str) -> None:
    engine = get_database(database_url).engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_migrations_go_down_and_up_again(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    with get_database(url).session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_a_posted_task_is_never_lost_when_the_broker_is_down(api: Api, settings, db, monkeypatch) -> None:
    _, customer_h = api.user("customer")

    def broker_down(*_args, **_kwargs):
        raise ConnectionError("broker unavailable")

    monkeypatch.setattr(jobs, "_send", broker_down)
    task_id = api.post_task(customer_h, "Logo for a coffee roastery",
                            "Design a modern logo for our small coffee roastery, with a bean motif.")
    api.drain()
    with db.session() as session:
        row = next(r for r in session.scalars(select(OutboxMessage)) if r.args == [task_id])
        assert row.actor_name == "route_task" and row.dispatched_at is None and row.attempts == 1
    assert api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "submitted"

    monkeypatch.undo()
    with db.session() as session:
        assert jobs.relay_pending(session, settings) >= 1
    api.drain()
    status = api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"]
    assert status in ("routed", "needs_review")


def test_routing_jobs_sent_together_travel_as_grouped_messages(api: Api, settings, db, monkeypatch) -> None:
    rows = [jobs.Job(uuid.uuid4(), "route_task", "routing", [str(uuid.uuid4())]) for _ in range(70)]
    drafts = [jobs.Job(uuid.uuid4(), "draft_for_offer", "drafting", [str(uuid.uuid4())]) for _ in range(10)]
    question = jobs.Job(uuid.uuid4(), "draft_clarifying_question", "drafting", [str(uuid.uuid4())])
    messages = jobs._messages([*rows[:40], *drafts, question, *rows[40:]])
    grouped = [m for m in messages if m.actor_name == "route_tasks"]
    assert [len(m.args[0]) for m in grouped] == [32, 32, 6] and {m.queue_name for m in grouped} == {"routing"}
    assert [t for m in grouped for t in m.args[0]] == [r.args[0] for r in rows]  # every job once, in order
    drafting = [m for m in messages if m.actor_name == "draft_for_offers"]
    assert [len(m.args[0]) for m in drafting] == [8, 2] and {m.queue_name for m in drafting} == {"drafting"}
    assert [o for m in drafting for o in m.args[0]] == [d.args[0] for d in drafts]
    batch_actors = {batch_actor for batch_actor, _ in jobs.GROUPED.values()}
    assert [(m.actor_name, m.message_id) for m in messages if m.actor_name not in batch_actors] == [
        ("draft_clarifying_question", str(question.id))]  # other jobs: one message each, as before
    (alone,) = jobs._messages(rows[:1])  # a job sent on its own stays an ordinary message
    assert (alone.actor_name, alone.args, alone.message_id) == ("route_task", (rows[0].args[0],), str(rows[0].id))

    # A backlog (the broker was down) is relayed as grouped jobs, and the worker routes every task in them.
    api.provider(["logo-brand-design"], "Logo designer", "Logos and brand identities for small businesses.")
    _, customer_h = api.user("customer")
    sent: list[str] = []
    real_send = jobs._send
    monkeypatch.setattr(jobs, "_send", lambda *_a: (_ for _ in ()).throw(ConnectionError("broker down")))
    task_ids = [api.post_task(customer_h, f"Logo {i} for a coffee roastery",
                              "Design a modern logo for our small coffee roastery, with a bean motif.")
                for i in range(3)]
    monkeypatch.setattr(jobs, "_send", lambda broker, rows: (sent.extend(m.actor_name for m in jobs._messages(rows)),
                                                             real_send(broker, rows)))
    with db.session() as session:
        assert jobs.relay_pending(session, settings) == 3
    api.drain()
    assert sent[0] == "route_tasks" and "route_task" not in sent  # one message for the three (then the drafts)
    for task_id in task_ids:
        assert api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"


def test_jobs_are_not_sent_when_the_transaction_rolls_back(settings, db) -> None:
    with pytest.raises(RuntimeError), unit_of_work(db, settings) as session:
        jobs.enqueue(session, "route_task", uuid.uuid4())
        raise RuntimeError("the request failed")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_unknown_jobs_are_refused(db) -> None:
    with db.session() as session, pytest.raises(ValueError):
        jobs.enqueue(session, "send_everything_to_a_third_party", 1)


def test_routing_twice_changes_nothing_the_second_time(api: Api, settings, db) -> None:
    from marketplace.db.models import Offer, RoutingDecision, TaskTransition
    from marketplace.domain.routing.engine import get_engine
    from marketplace.domain.routing.services import route_task

    api.provider(["logo-brand-design"], "Logo designer", "Logos and brand identities for small businesses.")
    _, customer_h = api.user("customer")
    task_id = api.post_task(customer_h, "Logo for a coffee roastery",
                            "Design a modern logo for our small coffee roastery, with a bean motif.")
    api.drain()

    def counts() -> tuple[int, ...]:
        with db.session() as session:
            return tuple(session.scalar(select(func.count()).select_from(m)) for m in
                         (RoutingDecision, Offer, TaskTransition, OutboxMessage))

    before = counts()
    with unit_of_work(db, settings) as session:
        assert route_task(session, settings, get_engine(), uuid.UUID(task_id)) == "skipped"
    assert counts() == before


def test_health_reports_each_dependency_without_loading_the_model(api: Api) -> None:
    r = api.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["broker"].startswith("ok")
    assert body["model"]["installed"] is True and body["model"]["id"].endswith("all-MiniLM-L6-v2")


def test_openapi_schema_is_served(api: Api) -> None:
    schema = api.client.get("/schema/openapi.json").json()
    assert "/api/v1/tasks" in schema["paths"] and "/api/v1/offers/{offer_id}/accept" in schema["paths"]


def test_the_suite_cannot_reach_beyond_loopback() -> None:
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: documentation-only address


def test_demo_data_loads_idempotently_and_routes(api: Api, db) -> None:
    from marketplace.db.models import Account, Category, CategoryExample, Referral
    from marketplace.demo.loader import load_people, load_taxonomy

    def snapshot() -> tuple[int, ...]:
        with db.session() as session:
            return tuple(session.scalar(select(func.count()).select_from(m))
                         for m in (Account, Task, Referral, Category, CategoryExample))

    with unit_of_work(db, api.client.app.state.settings) as session:
        assert load_taxonomy(session) == {"created": 0, "updated": 0}  # the fixture loaded it already
        first = load_people(session)
    assert first == {"providers": 40, "partners": 3, "customers": 5, "tasks": 10}
    after_first = snapshot()
    assert after_first[3] == 25 and after_first[4] >= 25 * 10
    with unit_of_work(db, api.client.app.state.settings) as session:
        assert load_people(session) == {"providers": 0, "partners": 0, "customers": 0, "tasks": 0}
        load_taxonomy(session)
    assert snapshot() == after_first
    api.drain()
    with db.session() as session:
        statuses = sorted(s.value for s in session.scalars(select(Task.status)))
    # the deliberately out-of-scope demo task goes to review; the others find providers
    assert statuses.count("routed") >= 8 and "submitted" not in statuses


def test_units_of_work_committing_together_are_dispatched_together(settings, db, monkeypatch) -> None:
    import threading
    import time

    sends: list[list[str]] = []
    first_send_started, release = threading.Event(), threading.Event()

    def slow_send(_broker, rows) -> None:
        sends.append([r.actor_name for r in rows])
        first_send_started.set()
        release.wait(5)

    monkeypatch.setattr(jobs, "_send", slow_send)
    monkeypatch.setattr(jobs, "can_deliver", lambda _settings: True)

    def post() -> None:
        with unit_of_work(db, settings) as session:
            jobs.enqueue(session, "route_task", uuid.uuid4())

    first = threading.Thread(target=post)
    first.start()
    assert first_send_started.wait(5)  # a lone unit of work is sent at once
    others = [threading.Thread(target=post) for _ in range(3)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 5
    while sum(len(b._waiting) for b in jobs._dispatchers.values()) < 3:  # committed, waiting to be sent
        assert time.monotonic() < deadline, "the other units of work did not commit"
        time.sleep(0.01)
    release.set()
    for t in [first, *others]:
        t.join(5)
    # the three that committed while the first was being sent went in one send, then all were marked sent
    assert sends == [["route_task"], ["route_task"] * 3]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.dispatched_at.is_(None))) == 0
