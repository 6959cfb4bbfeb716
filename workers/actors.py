"""Actors: take ids, load fresh rows, call one marketplace service, commit once. Safe to run twice."""

from __future__ import annotations

import uuid

import dramatiq
import structlog

from marketplace.db.session import unit_of_work
from marketplace.domain.offers.drafting import draft_for_offer as draft_service
from marketplace.domain.routing.engine import get_engine
from marketplace.domain.routing.services import route_task as route_service
from marketplace.jobs import JOBS
from models import Drafter
from workers import runtime
from workers.broker import broker  # noqa: F401  (declares the broker before the actors)

log = structlog.get_logger(__name__)
_drafter = Drafter()
RETRY = {"max_retries": 5, "min_backoff": 500, "max_backoff": 30_000, "time_limit": 120_000}


@dramatiq.actor(actor_name="route_task", queue_name=JOBS["route_task"], **RETRY)
def route_task(task_id: str) -> None:
    with unit_of_work(runtime.database(), runtime.settings()) as session:
        outcome = route_service(session, runtime.settings(), get_engine(), uuid.UUID(task_id))
    log.info("route_task.done", task_id=task_id, outcome=outcome)


@dramatiq.actor(actor_name="draft_for_offer", queue_name=JOBS["draft_for_offer"], **RETRY)
def draft_for_offer(offer_id: str) -> None:
    with unit_of_work(runtime.database(), runtime.settings()) as session:
        outcome = draft_service(session, _drafter, uuid.UUID(offer_id))
    log.info("draft_for_offer.done", offer_id=offer_id, outcome=outcome)


@dramatiq.actor(actor_name="refit_router", queue_name=JOBS["refit_router"], max_retries=1, time_limit=3_600_000)
def refit_router() -> None:
    """Fit and save the tuned routing model for the current taxonomy (no-op when it exists)."""
    engine = get_engine()
    with runtime.database().session(readonly=True) as session:  # read the examples, then let go of the DB
        plan = engine.refit_plan(session)
    outcome = engine.refit(plan) if plan is not None else "present"
    log.info("refit_router.done", outcome=outcome)

