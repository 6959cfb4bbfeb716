"""Which dramatiq worker processes run the routing upkeep thread (workers.upkeep.RoutingUpkeepMiddleware)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workers import upkeep


@pytest.mark.parametrize(("queues", "runs"), [
    (None, True),  # every queue, the routing one among them
    (set(), True),  # dramatiq's Worker(queues=[]) also consumes every queue
    ({"routing", "training"}, True),  # `make worker`
    ({"drafting"}, False),  # `make drafter`: never routes
])
def test_the_upkeep_thread_runs_only_where_tasks_are_routed(
        queues: set[str] | None, runs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    thread = SimpleNamespace(stop=lambda: started.append("stopped"))
    monkeypatch.setattr(upkeep, "start_upkeep", lambda: started.append("started") or thread)
    middleware = upkeep.RoutingUpkeepMiddleware()
    worker = SimpleNamespace(consumer_whitelist=queues)
    middleware.after_worker_boot(None, worker)
    middleware.before_worker_shutdown(None, worker)
    assert started == (["started", "stopped"] if runs else [])
