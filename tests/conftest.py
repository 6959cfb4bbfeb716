"""Shared fixtures: real databases (SQLite always, PostgreSQL when RELAY_TEST_POSTGRES_URL is set), migrated
with Alembic; the real app with its in-process dramatiq worker; an API client with sign-up helpers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("RELAY_SECRET_KEY", "test-secret-key-not-for-production")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from marketplace.db.migrate import upgrade
from marketplace.db.models import Base
from marketplace.db.session import forget_database, get_database
from marketplace.settings import Settings

PASSWORD = "correct horse battery"
BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("RELAY_TEST_POSTGRES_URL") else [])
KEEP_TABLES = {"categories", "category_examples"}


def create_postgres_database(admin_url: str) -> str:
    """A fresh database on the test server, so parallel runs and leftovers never collide."""
    url = make_url(admin_url)
    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, db_url: str) -> None:
    forget_database(db_url)
    name = make_url(db_url).database
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database with the category taxonomy loaded."""
    from marketplace.demo.loader import load_taxonomy

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'relay.db'}"
    else:
        url = create_postgres_database(os.environ["RELAY_TEST_POSTGRES_URL"])
    upgrade(url)
    with get_database(url).session() as session:
        load_taxonomy(session)
    yield url
    if request.param == "postgres":
        drop_postgres_database(os.environ["RELAY_TEST_POSTGRES_URL"], url)
    else:
        forget_database(url)


def _wipe(url: str) -> None:
    db = get_database(url)
    tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name not in KEEP_TABLES]
    with db.session() as session:
        session.execute(text("DELETE FROM category_examples WHERE source <> 'seed'"))
        for table in tables:
            session.execute(table.delete())


@pytest.fixture
def settings(database_url: str) -> Iterator[Settings]:
    yield Settings(database_url=database_url, broker="stub", secret_key="test-secret", scheduler_interval_s=3600,
                   router_tuning=False,  # frozen router (seconds); tests that tune say so
                   draft_engine="composer",  # tests that run the generative model say so
                   worker_threads=2,
                   routing_upkeep_s=0)  # no upkeep thread working beside the test; tests of it start one
    _wipe(database_url)


@pytest.fixture
def db(settings: Settings) -> Any:
    return get_database(settings.database_url)


class Api:
    """The HTTP API as a user sees it, plus a way to wait for background jobs."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client

    def drain(self) -> None:
        self.client.app.state.worker.drain()

    def signup(self, role: str, email: str | None = None, referral_code: str | None = None,
               display_name: str = "Test User") -> dict[str, Any]:
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        body: dict[str, Any] = {"email": email, "password": PASSWORD, "role": role, "display_name": display_name}
        if referral_code is not None:
            body["referral_code"] = referral_code
        r = self.client.post("/api/v1/accounts", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def login(self, email: str, password: str = PASSWORD) -> dict[str, str]:
        r = self.client.post("/api/v1/sessions", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def user(self, role: str, **kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
        account = self.signup(role, **kwargs)
        return account, self.login(account["email"])

    def provider(self, categories: list[str], headline: str, description: str = "", capacity: int = 3,
                 accepting_work: bool = True, hourly_rate: str | None = "40",
                 rate_currency: str = "USD") -> tuple[dict[str, Any], dict[str, str]]:
        account, headers = self.user("provider", display_name=headline[:30])
        body = {"headline": headline, "description": description or headline, "skills": [headline.split()[0]],
                "categories": categories, "languages": ["en"], "capacity": capacity,
                "accepting_work": accepting_work, "hourly_rate": hourly_rate,
                "rate_currency": rate_currency if hourly_rate is not None else None}
        r = self.client.put("/api/v1/providers/me", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return account, headers

    def post_task(self, headers: dict[str, str], title: str, description: str, **extra: Any) -> str:
        r = self.client.post("/api/v1/tasks", json={"title": title, "description": description, **extra},
                             headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "submitted"
        return r.json()["id"]

    def staff(self, db: Any) -> dict[str, str]:
        from marketplace.db.models import Role
        from marketplace.domain.accounts.services import create_account

        email = f"staff-{uuid.uuid4().hex[:6]}@relay.example"
        with db.session() as session:
            create_account(session, email, PASSWORD, Role.STAFF, "Staff member")
        return self.login(email)


BOOKKEEPING_TASK = ("Bookkeeping catch-up for my studio",
                    "I need someone to reconcile six months of bank transactions in QuickBooks and categorize "
                    "expenses.")


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` have passed (False): for what a background
    thread does in its own time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def bookkeepers(api: Api, n: int, capacity: int = 2) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """n providers who all fit BOOKKEEPING_TASK."""
    return [api.provider(["bookkeeping-accounting"], f"Bookkeeper number {i}",
                         "I reconcile bank accounts and keep books in QuickBooks and Xero.", capacity=capacity)
            for i in range(n)]


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    from marketplace.asgi import build

    with TestClient(build(settings)) as client:
        yield Api(client)
