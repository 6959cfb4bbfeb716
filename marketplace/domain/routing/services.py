"""Routing a task: categorize (or abstain), rank providers, record the decision, make the first offers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import (
    Account,
    Category,
    PartnerProfile,
    RoutingDecision,
    RoutingOutcome,
    Task,
    TaskStatus,
)
from marketplace.domain.offers.services import make_offers, provider_loads
from marketplace.domain.routing.engine import RoutingEngine, task_text
from marketplace.domain.tasks.lifecycle import SYSTEM, transition
from marketplace.settings import Settings

log = structlog.get_logger(__name__)
MAX_STORED_CANDIDATES = 50


def _record(session: Session, task: Task, outcome: RoutingOutcome, categories: list[dict[str, Any]],
            explanation: dict[str, Any], candidates: list[dict[str, Any]], model_id: str,
            taxonomy_version: str) -> RoutingDecision:
    decision = RoutingDecision(task_id=task.id, outcome=outcome, categories=categories, explanation=explanation,
                               candidates=candidates, model_id=model_id, taxonomy_version=taxonomy_version)
    session.add(decision)
    session.flush()
    return decision


def _to_review(session: Session, task: Task, reason: str, **decision: Any) -> str:
    _record(session, task, RoutingOutcome.NEEDS_REVIEW, **decision)
    transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM, reason=reason)
    return "needs_review"


def _abstain_summary(closest: str, confidence: float, decision: Any) -> str:
    if decision.similarity < decision.similarity_threshold:
        why = "it is unlike the requests we have categories for"
    else:
        why = f"the closest category, {closest}, is only a {confidence:.0%} match"
    return f"We could not place this task automatically: {why}. A member of staff will place it."


def route_task(session: Session, settings: Settings, engine: RoutingEngine, task_id: uuid.UUID) -> str:
    """Route one task. Idempotent: a task that is no longer waiting for routing is left alone."""
    task = session.scalar(select(Task).where(Task.id == task_id).with_for_update())
    if task is None:
        log.warning("route_task.missing", task_id=str(task_id))
        return "missing"
    if task.status not in (TaskStatus.SUBMITTED, TaskStatus.ROUTING):
        return "skipped"
    # A task in ROUTING that already has a category was placed by staff; the model only ranks providers.
    staff_category = session.get(Category, task.category_id) if task.category_id else None
    if task.status is TaskStatus.SUBMITTED:
        transition(session, task, TaskStatus.ROUTING, actor_id=None, actor_role=SYSTEM, reason="routing started")

    customer = session.get(Account, task.customer_id)
    objected = customer is not None and customer.ai_processing_objection
    if objected and staff_category is None:
        return _to_review(
            session, task, "the customer objected to AI processing; staff will place the task",
            categories=[], candidates=[], model_id="none", taxonomy_version="none",
            explanation={"summary": "You asked us not to process your data with AI, so a member of staff "
                                    "will choose the category and providers by hand.", "source": "objection"},
        )

    if staff_category is not None:
        # Staff chose the category. With the customer's objection the task text is never embedded:
        # providers are ranked on category, availability and price only.
        vector = None if objected else engine.encode_task(task.title, task.description)
        meta = {"model_id": "none" if objected else engine.model_id, "taxonomy_version": "staff"}
        chosen = [{"slug": staff_category.slug, "score": None}]
        explanation: dict[str, Any] = {
            "summary": f"Placed in {staff_category.name} by our staff.", "source": "staff",
            "threshold": None, "ranking": [], "nearest_examples": [],
        }
    else:
        model, taxonomy = engine.router(session, tuning=settings.router_tuning)
        vector = engine.encode_task(task.title, task.description)
        meta = {"model_id": model.model_id, "taxonomy_version": taxonomy.version}
        names = {c.slug: c.name for c in taxonomy.categories}
        # The tuned encoder (if any) decides the category; the shared one's vector ranks the providers.
        decision = model.decide(task_text(task.title, task.description), base_vector=vector)
        evidence = {
            "ranking": [{"slug": s, "score": sc} for s, sc in decision.ranking],
            # only our own seed examples are ever shown; examples learned from tasks stay private
            "nearest_examples": [{"slug": s, "text": t, "similarity": sim}
                                 for s, t, sim in decision.nearest_examples if t],
            "threshold": decision.threshold, "similarity": decision.similarity,
            "similarity_threshold": decision.similarity_threshold, "encoder_backend": engine.backend,
            "tuned": model.tuned, **meta,
        }
        if decision.abstain:
            best_slug, best_score = decision.ranking[0]
            return _to_review(
                session, task, "no category is close enough to this request", categories=[], candidates=[],
                explanation={"summary": _abstain_summary(names[best_slug], best_score, decision),
                             "source": "model", **evidence},
                **meta,
            )
        chosen = [{"slug": s, "score": sc} for s, sc in decision.categories]
        also = [names[c["slug"]] for c in chosen[1:]]
        nearest = evidence["nearest_examples"][0]["text"] if evidence["nearest_examples"] else ""
        summary = f"This looks like {names[chosen[0]['slug']]} (confidence {chosen[0]['score']:.0%})"
        summary += f", and also {', '.join(also)}." if also else "."
        if nearest:
            summary += f" It reads most like the example \u201c{nearest.rstrip('.')}\u201d."
        explanation = {"summary": summary, "source": "model", **evidence}

    slugs = [c["slug"] for c in chosen]
    loads = provider_loads(session)
    ranked = engine.matcher.rank(vector, slugs, engine.provider_records(session, loads), budget=task.budget_amount,
                                 exclude={str(task.customer_id)})
    candidates = [{"provider_id": c.provider_id, "score": c.score, "components": c.components}
                  for c in ranked[:MAX_STORED_CANDIDATES]]
    explanation["suggested_partner_ids"] = [
        str(pid) for pid, expertise in session.execute(select(PartnerProfile.account_id, PartnerProfile.expertise))
        if slugs[0] in (expertise or [])
    ]
    primary = session.scalar(select(Category).where(Category.slug == slugs[0]))
    task.category_id = primary.id if primary else None
    made = make_offers(session, settings, task, candidates, settings.offers_per_task)
    explanation["offered"] = made
    if made == 0:
        explanation["summary"] += " No provider in this category is available right now, so staff will follow up."
        return _to_review(session, task, "no available provider for the category", categories=chosen,
                          candidates=candidates, explanation=explanation, **meta)
    explanation["summary"] += f" Offered to {made} provider{'s' if made != 1 else ''} chosen for fit, " \
                              "category, availability, price, customer ratings and a fair share of work."
    _record(session, task, RoutingOutcome.ROUTED, chosen, explanation, candidates, **meta)
    transition(session, task, TaskStatus.ROUTED, actor_id=None, actor_role=SYSTEM,
               reason=f"routed to {slugs[0]}")
    return "routed"


def sweep_stalled(session: Session, older_than: timedelta, limit: int = 200) -> int:
    """Hand tasks whose routing never finished (a job that failed every retry) to staff instead of leaving
    them waiting forever. A routing job that turns up later finds them in review and does nothing."""
    stalled = session.scalars(
        select(Task).where(Task.status.in_((TaskStatus.SUBMITTED, TaskStatus.ROUTING)),
                           Task.updated_at < now() - older_than)
        .order_by(Task.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    for task in stalled:
        transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM,
                   reason="routing did not finish in time; staff will place the task")
    return len(stalled)
