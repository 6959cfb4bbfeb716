"""Periodic duties: relay the outbox, expire offers and re-offer, hand stalled routing to staff, purge.

Every duty is a conditional, idempotent update, so any number of schedulers may run at once.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import structlog

from marketplace import jobs
from marketplace.domain.accounts.services import purge_login_failures
from marketplace.domain.offers.services import expire_due
from marketplace.domain.routing.services import sweep_stalled
from marketplace.privacy.datamap import RETENTION_RULES
from workers import runtime

log = structlog.get_logger(__name__)
# dramatiq's retries back off for about a minute in all; past this a routing job is not coming back
ROUTING_DEADLINE = timedelta(minutes=30)
OUTBOX_KEEP = timedelta(days=7)


def run_once() -> dict[str, int]:
    settings, db = runtime.settings(), runtime.database()
    with db.session() as session:
        relayed = jobs.relay_pending(session, settings)
    with db.session() as session:
        expired = expire_due(session, settings)
    # re-offers made by expire_due enqueue drafts through the outbox: send them now
    with db.session() as session:
        relayed += jobs.relay_pending(session, settings)
    with db.session() as session:
        stalled = sweep_stalled(session, ROUTING_DEADLINE)
    keep = RETENTION_RULES["security_log"].keep_for or timedelta(days=90)
    with db.session() as session:
        purged = purge_login_failures(session, keep)
        purged_outbox = jobs.purge_dispatched(session, OUTBOX_KEEP)
    result = {"relayed": relayed, "expired": expired, "stalled_to_review": stalled,
              "purged_login_failures": purged, "purged_outbox": purged_outbox}
    if any(result.values()):
        log.info("scheduler.tick", **result)
    return result


class Scheduler(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(name="relay-scheduler", daemon=True)
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                run_once()
            except Exception:
                log.exception("scheduler.failed")
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()


def main() -> None:
    """`python -m workers.scheduler`: the scheduler as its own process (Redis mode)."""
    from marketplace.app import configure_logging

    configure_logging()
    scheduler = Scheduler(runtime.settings().scheduler_interval_s)
    scheduler.start()
    try:
        scheduler.join()
    except KeyboardInterrupt:
        scheduler.stop()


if __name__ == "__main__":
    main()
