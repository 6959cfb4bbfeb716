"""Periodic duties: relay the outbox, expire offers and re-offer, hand stalled routing to staff, purge, and ask
for a tuned routing model when the taxonomy has changed.

Every duty is a conditional, idempotent update, so any number of schedulers may run at once.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import structlog

from marketplace import jobs
from marketplace.domain.accounts.services import purge_login_failures
from marketplace.domain.offers.services import due_for_expiry, expire_task
from marketplace.domain.routing.services import sweep_stalled
from marketplace.privacy.datamap import RETENTION_RULES
from marketplace.settings import Settings
from workers import runtime

log = structlog.get_logger(__name__)
# dramatiq's retries back off for about a minute in all; past this a routing job is not coming back
ROUTING_DEADLINE = timedelta(minutes=30)
OUTBOX_KEEP = timedelta(days=7)


# A refit asked for but never finished (worker died) is asked for again after this long.
REFIT_RETRY_S = 3600.0
_refit_asked: dict[str, float] = {}


def request_refit(settings: Settings, db: Any) -> int:
    """Ask for a tuned routing model when the current taxonomy has none (1 if a refit job was enqueued)."""
    if not settings.router_tuning:
        return 0
    from marketplace.domain.categories.services import load_taxonomy
    from marketplace.domain.routing.engine import get_engine

    with db.session() as session:
        version = load_taxonomy(session).version
        asked = _refit_asked.get(version)
        if asked is not None and time.monotonic() - asked < REFIT_RETRY_S:
            return 0
        if not get_engine().needs_tuning(session):  # also with no taxonomy loaded yet
            return 0
        jobs.enqueue(session, "refit_router")
    _refit_asked[version] = time.monotonic()
    log.info("scheduler.refit_requested", taxonomy_version=version)
    return 1


def expire_offers(settings: Settings, db: Any, limit: int = 500) -> int:
    """Expire the offers past their window and re-offer their tasks, one task per transaction (see
    offers.services.expire_task); a task that fails is logged and left for the next run, the others go on."""
    with db.session(readonly=True) as session:
        due = due_for_expiry(session, limit)
    expired = 0
    for task_id in due:
        try:
            with db.session() as session:
                expired += expire_task(session, settings, task_id)
        except Exception:
            log.exception("scheduler.expiry_failed", task_id=str(task_id))
    return expired


def run_once() -> dict[str, int]:
    settings, db = runtime.settings(), runtime.database()
    try:
        refits = request_refit(settings, db)
    except Exception:  # the model cannot be loaded, say: the other duties do not wait for it
        log.exception("scheduler.refit_request_failed")
        refits = 0
    with db.session() as session:
        relayed = jobs.relay_pending(session, settings)
    expired = expire_offers(settings, db)
    # re-offers made by expire_offers enqueue drafts through the outbox: send them now
    with db.session() as session:
        relayed += jobs.relay_pending(session, settings)
    with db.session() as session:
        stalled = sweep_stalled(session, ROUTING_DEADLINE)
    keep = RETENTION_RULES["security_log"].keep_for or timedelta(days=90)
    with db.session() as session:
        purged = purge_login_failures(session, keep)
        purged_outbox = jobs.purge_dispatched(session, OUTBOX_KEEP)
    result = {"relayed": relayed, "refits_requested": refits, "expired": expired, "stalled_to_review": stalled,
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
