"""Proof that no data leaves: importing the app connects to nothing; a task carrying a unique canary token is
routed and drafted by the local models (generative engine included) without any connection beyond loopback,
and the token is stored only in columns the data map marks as user content or AI output, nowhere on disk
outside the database, and never in a log. (`make test` also runs the journey with no network at all:
scripts/offline-journey.sh.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from marketplace.db.models import Base, CategoryExample, Draft
from marketplace.privacy.datamap import DataCategory
from tests.conftest import Api

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_seen: list[tuple[str, Any]] = []
_watching = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event in ("socket.connect", "socket.getaddrinfo"):
        _seen.append((event, args[1] if event == "socket.connect" else args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while a test watches


def test_importing_the_app_opens_no_connection(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append((e, str(a[:2]))) if e.startswith('socket.') and e != "
        "'socket.__new__' else None)\n"
        "import marketplace.asgi, workers.actors, models, routing\n"
        "print(repr(seen))\n"
    )
    env = {"RELAY_VAR_DIR": str(tmp_path), "RELAY_SECRET_KEY": "x", "PATH": "/usr/bin:/bin",
           "RELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def _columns_holding(db: Any, token: str) -> set[tuple[str, str]]:
    found = set()
    with db.session(readonly=True) as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)).mappings():
                for column, value in row.items():
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                    if token in text:
                        found.add((table.name, column))
    return found


@pytest.mark.model
def test_a_canary_task_reaches_no_one_and_is_stored_only_where_the_data_map_allows(
    api: Api, db: Any, settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    global _watching
    from models.onnx_backend import cache_dir
    from workers import runtime

    token = f"CANARY{uuid.uuid4().hex[:12].upper()}"
    connects: list[Any] = []
    guarded = socket.socket.connect

    def recording(self: socket.socket, address: Any) -> Any:
        connects.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    monkeypatch.setattr(runtime, "_settings", settings.with_(draft_engine="generative"))
    api.provider(["plumbing"], "Plumber for homes and small shops", "Leaks, taps, pipes and water heaters.")
    api.provider(["plumbing"], "Emergency plumber", "Burst pipes, dripping taps and blocked drains.")
    _, customer = api.user("customer")
    _seen.clear()
    _watching = True
    try:
        with socket.socket() as server, socket.socket() as client:  # the instruments see a connection
            server.bind(("127.0.0.1", 0))
            server.listen()
            client.connect(server.getsockname())
        socket.getaddrinfo("localhost", 80)
        assert connects and ("socket.getaddrinfo", "localhost") in _seen
        task_id = api.post_task(customer, f"Leaking kitchen tap {token}",
                                f"The kitchen tap drips all night, reference {token}. Please replace the cartridge.")
        api.drain()
    finally:
        _watching = False

    task = api.client.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert task["status"] == "routed"
    with db.session(readonly=True) as session:
        drafts = session.scalars(select(Draft)).all()
    assert drafts and all(d.weights_hash and d.guard is not None for d in drafts), "the generative model ran"

    remote = [a for a in connects if isinstance(a, tuple) and a[0] not in LOOPBACK]
    lookups = [host for event, host in _seen if event == "socket.getaddrinfo" and host not in LOOPBACK]
    assert remote == [] and lookups == []

    found = _columns_holding(db, token)
    assert ("tasks", "description") in found and ("tasks", "title") in found
    allowed = {(t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns
               if c.info.get("data_category") in (DataCategory.USER_CONTENT, DataCategory.AI_OUTPUT)}
    assert found <= allowed, f"the canary is stored where the data map does not allow it: {found - allowed}"
    assert token not in caplog.text, "the canary reached a log"
    for path in cache_dir().rglob("*"):  # the model cache: converted weights, graphs, tuned routers
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path


def test_a_database_error_names_the_statement_but_not_the_values_it_was_given(
        db: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Failed statements reach logs (a routing batch that failed, dramatiq's line for a failed job, a 500):
    the message says what failed, never what a customer wrote."""
    token = f"CANARY{uuid.uuid4().hex[:12].upper()}"
    # no such category: the foreign key fails
    with pytest.raises(DBAPIError) as caught, db.session() as session:
        session.execute(insert(CategoryExample.__table__).values(
            category_id=uuid.uuid4(), text=f"learned from a task: {token}", source="feedback"))
    message = f"{caught.value}\n{caught.value!r}"
    assert "category_examples" in message  # the statement is still named
    assert token not in message
    assert token not in caplog.text
