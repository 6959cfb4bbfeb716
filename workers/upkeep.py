"""The routing upkeep thread of a worker process that routes (RoutingEngine.warm_up and refresh_ahead, between
routing batches).

It keeps the process's routing engine ready, so that routing batches find the work done:

- the routing model: the frozen one fitted at start, a tuned one loaded once the refit job has saved it and its
  profile vectors embedded a few hundred at a time until it takes over, whether tasks come or not;
- the provider snapshot, read again shortly before its age is up, and when a profile or rating changed, while
  batches use it (they then leave looking for such changes to this thread).

Started with the routing worker: by the in-process worker (stub broker) and, in Redis mode, by dramatiq's
``after_worker_boot`` hook in each worker process that consumes the routing queue. RELAY_ROUTING_UPKEEP_S is
its pause between rounds (0: no thread; batches then do this work themselves, as they always can).
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import structlog

from workers import runtime

log = structlog.get_logger(__name__)


class RoutingUpkeep(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(name="relay-routing-upkeep", daemon=True)
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        from marketplace.domain.routing.engine import NoTaxonomy, get_engine

        failures = 0
        while not self._stop_event.is_set():
            warming, due_in = False, float("inf")
            try:
                settings, engine = runtime.settings(), get_engine()
                with runtime.database().session(readonly=True) as session:
                    warming = engine.warm_up(session, tuning=settings.router_tuning)
                # A session of its own: on SQLite a read transaction sees the database as it was at its first
                # read, and the warm-up before it may have embedded profiles for seconds.
                with runtime.database().session(readonly=True) as session:
                    due_in = engine.refresh_ahead(session, watching=True)
                if failures:
                    log.info("routing.upkeep_recovered", failures=failures)
                failures = 0
            except NoTaxonomy:
                pass  # nothing to route to yet (relay seed loads the taxonomy)
            except Exception:
                failures += 1  # the database is away, say: tried again less and less often, up to a minute
                log.warning("routing.upkeep_failed", failures=failures, exc_info=True)
            if warming:
                wait = 0.0
            elif failures:
                wait = min(self.interval_s * 2 ** min(failures, 6), 60.0)
            else:  # the next round, or sooner when the provider snapshot is due to be read again (not back to
                # back, should a read take longer than a snapshot lasts)
                wait = min(self.interval_s, max(due_in, 0.5))
            self._stop_event.wait(wait)

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
        from marketplace.domain.routing.engine import get_engine

        get_engine().stop_watching()


def start_upkeep() -> RoutingUpkeep | None:
    """Start the upkeep thread (None when RELAY_ROUTING_UPKEEP_S is 0)."""
    interval = runtime.settings().routing_upkeep_s
    if interval <= 0:
        return None
    upkeep = RoutingUpkeep(interval)
    upkeep.start()
    return upkeep


class RoutingUpkeepMiddleware(dramatiq.Middleware):
    """Runs a RoutingUpkeep thread in each dramatiq worker process whose worker consumes the routing queue
    (not in the drafting worker's processes, which never route)."""

    def __init__(self) -> None:
        self.upkeep: RoutingUpkeep | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        from marketplace.jobs import JOBS

        queues = worker.consumer_whitelist  # None or empty: every queue
        if not queues or JOBS["route_task"] in queues:
            self.upkeep = start_upkeep()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if self.upkeep is not None:
            self.upkeep.stop()
            self.upkeep = None
