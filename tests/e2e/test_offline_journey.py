"""Post -> route -> draft (both engines) with no network at all. scripts/offline-journey.sh runs this file in
a network namespace that has only loopback (`make test` calls it); elsewhere it is skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from marketplace.db.models import Draft
from tests.conftest import Api

pytestmark = [pytest.mark.model, pytest.mark.skipif(not os.environ.get("RELAY_OFFLINE_JOURNEY"),
                                                    reason="runs inside scripts/offline-journey.sh")]


def test_there_is_no_network_here() -> None:
    # a subprocess, so the suite's own socket guard is not what refuses it
    probe = "import socket; socket.create_connection(('192.0.2.1', 443), timeout=2)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode != 0 and "unreachable" in result.stderr.lower()


def test_a_task_is_posted_routed_and_drafted_by_both_engines_offline(api: Api, db: Any, settings: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import runtime

    monkeypatch.setattr(runtime, "_settings", settings.with_(draft_engine="generative"))
    api.provider(["plumbing"], "Plumber for homes and small shops", "Leaks, taps, pipes and water heaters.")
    _, customer = api.user("customer")
    task_id = api.post_task(customer, "Leaking kitchen tap", "The kitchen mixer tap drips all night; please "
                                                             "replace the cartridge.")
    api.drain()
    task = api.client.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert task["status"] == "routed" and task["routing"]["categories"][0]["slug"] == "plumbing"
    with db.session(readonly=True) as session:
        draft = session.scalars(select(Draft)).one()
    assert draft.weights_hash and draft.guard is not None  # the generative model ran, from local files
    # its text is used only if the grounding guard accepted it; the composer's questions are there either way
    assert draft.guard["accepted"] is (draft.engine == "generative")
    assert "Before I start, could you tell me" in draft.text
