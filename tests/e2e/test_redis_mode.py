"""The production topology: API process + separate dramatiq worker process over Redis, on PostgreSQL when
RELAY_TEST_POSTGRES_URL is set (CI sets both), talking to each other only through the broker and database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, create_postgres_database, drop_postgres_database

REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL")
pytestmark = [pytest.mark.redis, pytest.mark.model,
              pytest.mark.skipif(not REDIS_URL, reason="RELAY_TEST_REDIS_URL not set")]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("stack")
    pg_admin = os.environ.get("RELAY_TEST_POSTGRES_URL")
    db_url = create_postgres_database(pg_admin) if pg_admin else f"sqlite:///{tmp / 'relay.db'}"
    port = free_port()
    namespace = f"relay-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RELAY_DATABASE_URL": db_url, "RELAY_BROKER": "redis", "RELAY_REDIS_URL": REDIS_URL,
           "RELAY_REDIS_NAMESPACE": namespace, "RELAY_SECRET_KEY": "e2e-secret", "RELAY_VAR_DIR": str(tmp),
           "RELAY_SCHEDULER_INTERVAL_S": "2", "RELAY_ROUTER_TUNING": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "RELAY_DRAFT_ENGINE": "composer"}  # the generative engine has its own tests
    subprocess.run([BIN / "relay", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([BIN / "relay", "seed"], env=env, check=True, capture_output=True)
    with contextlib.ExitStack() as files:  # each process writes to its own copy of its log's descriptor
        logs = {name: files.enter_context(open(tmp / f"{name}.log", "w")) for name in ("api", "worker", "scheduler")}
        procs = {
            "worker": subprocess.Popen([BIN / "dramatiq", "workers.run", "--processes", "1", "--threads", "2"],
                                       env=env, stdout=logs["worker"], stderr=subprocess.STDOUT),
            "scheduler": subprocess.Popen([sys.executable, "-m", "workers.scheduler"], env=env,
                                          stdout=logs["scheduler"], stderr=subprocess.STDOUT),
            "api": subprocess.Popen([BIN / "relay", "serve", "--port", str(port)], env=env,
                                    stdout=logs["api"], stderr=subprocess.STDOUT),
        }
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: client.get("/health").status_code == 200, 90, "the API to be healthy")
        health = client.get("/health").json()
        assert health["broker"] == "ok (redis)"
        yield {"client": client, "tmp": tmp, "procs": procs, "db_url": db_url, "namespace": namespace}
    finally:
        client.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg_admin:
            drop_postgres_database(pg_admin, db_url)
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(f"{namespace}*"))
        if keys:
            r.delete(*keys)


def test_journey_across_processes(stack: dict[str, Any]) -> None:
    c: httpx.Client = stack["client"]

    def signup(role: str, **extra: Any) -> tuple[dict, dict]:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        r = c.post("/api/v1/accounts", json={"email": email, "password": PASSWORD, "role": role,
                                             "display_name": f"E2E {role}", **extra})
        assert r.status_code == 201, r.text
        token = c.post("/api/v1/sessions", json={"email": email, "password": PASSWORD}).json()["token"]
        return r.json(), {"Authorization": f"Bearer {token}"}

    partner, partner_h = signup("partner")
    _, customer_h = signup("customer", referral_code=partner["referral_code"])
    providers = []
    for headline in ("Bookkeeper for small firms", "QuickBooks and Xero bookkeeper"):
        account, h = signup("provider")
        r = c.put("/api/v1/providers/me", headers=h, json={
            "headline": headline, "description": "Monthly bookkeeping and bank reconciliation.",
            "skills": ["QuickBooks", "Xero"], "categories": ["bookkeeping-accounting"], "languages": ["en"],
            "capacity": 2, "accepting_work": True, "hourly_rate": "35", "rate_currency": "USD"})
        assert r.status_code == 200, r.text
        providers.append((account, h))

    r = c.post("/api/v1/tasks", headers=customer_h, json={
        "title": "Monthly bookkeeping for my shop",
        "description": "Reconcile my shop's bank account and card payments every month in QuickBooks."})
    assert r.status_code == 201
    task_id = r.json()["id"]

    task = wait_for(lambda: (t := c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json())["status"]
                    in ("routed", "needs_review") and t, 120, "the worker process to route the task")
    assert task["status"] == "routed", task
    assert task["routing"]["categories"][0]["slug"] == "bookkeeping-accounting"
    assert task["routing"]["explanation"]

    account, h = providers[0]
    offer = wait_for(lambda: c.get("/api/v1/offers?status=open", headers=h).json()["items"], 30, "an offer")[0]
    draft = wait_for(lambda: (r := c.get(f"/api/v1/offers/{offer['id']}/draft", headers=h)).status_code == 200
                     and r.json(), 60, "the draft")
    assert "Monthly bookkeeping for my shop" in draft["text"]
    assert c.post(f"/api/v1/offers/{offer['id']}/accept", headers=h).status_code == 200
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["assigned_provider"]["id"] == account["id"]

    referrals = c.get("/api/v1/partners/me/referrals", headers=partner_h).json()
    assert referrals["customers"][0]["tasks"][0] == {
        "status": "assigned", "category": "bookkeeping-accounting",
        "posted_at": referrals["customers"][0]["tasks"][0]["posted_at"]}
    assert "QuickBooks" not in str(referrals)
    # the work happened in the worker process, not in the API
    assert "route_batch.done" in (stack["tmp"] / "worker.log").read_text()
    assert "route_batch.done" not in (stack["tmp"] / "api.log").read_text()


def test_a_relayed_backlog_travels_as_grouped_jobs_and_is_routed(stack: dict[str, Any]) -> None:
    """Tasks whose routing jobs were never sent (the broker was down) are relayed together: one route_tasks
    message for all of them, consumed by the worker process over Redis."""
    from sqlalchemy import select

    from marketplace import jobs
    from marketplace.db.models import Role, RoutingDecision, Task, TaskStatus
    from marketplace.db.session import get_database
    from marketplace.domain.accounts.services import create_account
    from marketplace.domain.tasks.schemas import TaskIn
    from marketplace.domain.tasks.services import create_task
    from marketplace.settings import Settings

    settings = Settings(database_url=stack["db_url"], broker="redis", redis_url=REDIS_URL,
                        redis_namespace=stack["namespace"], router_tuning=False, run_inprocess_worker=False)
    db = get_database(stack["db_url"])
    with db.session() as session:  # committed with their outbox rows, never sent
        customer = create_account(session, f"backlog-{uuid.uuid4().hex[:8]}@example.com", PASSWORD,
                                  Role.CUSTOMER, "Backlog customer")
        ids = [create_task(session, customer.id, TaskIn(title=f"Shop bookkeeping {i}", description=(
            "Reconcile my shop's bank account and card payments every month in QuickBooks."))).id
               for i in range(3)]
        session.info.pop("outbox", None)
    sent: list[str] = []
    real_send = jobs._send

    def recording(broker: Any, rows: Any) -> None:
        sent.extend(m.actor_name for m in jobs._messages(rows))
        real_send(broker, rows)

    jobs._send = recording  # type: ignore[assignment]
    try:
        with db.session() as session:
            assert jobs.relay_pending(session, settings) >= 3
    finally:
        jobs._send = real_send  # type: ignore[assignment]
    # The scheduler relays pending rows every 2 s too, and may have sent them first; either way all three went
    # together (one relay takes every pending row), so the worker process got them as one route_tasks message.
    if "route_tasks" in sent or "route_task" in sent:
        assert sent.count("route_tasks") == 1 and "route_task" not in sent

    def statuses() -> set[TaskStatus]:
        with db.session(readonly=True) as session:
            return {t.status for t in session.scalars(select(Task).where(Task.id.in_(ids)))}

    wait_for(lambda: statuses() <= {TaskStatus.ROUTED, TaskStatus.NEEDS_REVIEW} and statuses(), 120,
             "the worker process to route the relayed tasks")
    with db.session(readonly=True) as session:  # each decided by the model (some may find the providers full)
        decisions = session.scalars(select(RoutingDecision).where(RoutingDecision.task_id.in_(ids))).all()
    assert len(decisions) == 3
    assert all(d.categories[0]["slug"] == "bookkeeping-accounting" for d in decisions)
