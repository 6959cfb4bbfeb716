"""Routing tasks: categorize (or abstain), rank providers, record the decision, make the first offers."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import structlog
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from marketplace import jobs
from marketplace.clock import now
from marketplace.db.models import (
    Account,
    Category,
    Offer,
    OfferStatus,
    Referral,
    RoutingDecision,
    RoutingOutcome,
    Task,
    TaskStatus,
)
from marketplace.db.sql import for_change, likely
from marketplace.domain.accounts.services import active_accounts
from marketplace.domain.offers.services import NOBODY_LEFT, Pick, add_offers, open_offers, overbooked
from marketplace.domain.routing.engine import RoutingEngine, task_text
from marketplace.domain.tasks.lifecycle import SYSTEM, transition, transition_all
from marketplace.domain.tasks.services import latest_decision
from marketplace.errors import Conflict
from marketplace.settings import Settings
from models import Encoder
from routing.matcher import Candidate, ProviderIndex
from routing.taxonomy import Taxonomy
from routing.tuned import RoutingModel

log = structlog.get_logger(__name__)
MAX_STORED_CANDIDATES = 50


@dataclass
class _Plan:
    """What routing decided for one task, written to the database with the rest of its batch."""

    task: Task
    outcome: RoutingOutcome | None = None  # None: not decided yet
    reason: str = ""  # why the task went to staff review
    categories: list[dict[str, Any]] = field(default_factory=list)
    explanation: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    model_id: str = "none"
    taxonomy_version: str = "none"
    vector: np.ndarray | None = None
    offers: list[Candidate] = field(default_factory=list)  # the providers to offer it to, best first
    ranked: bool = False  # providers were ranked for it in ``category_id`` (written with the batch)
    category_id: uuid.UUID | None = None
    first_rank: int = 1  # after the offers of an earlier routing of the same task

    def picks(self) -> list[Pick]:
        """The offers to make, ranked after any the task had before."""
        return [Pick(self.task.id, uuid.UUID(c.provider_id), rank, c.score, c.components)
                for rank, c in enumerate(self.offers, start=self.first_rank)]

    def review(self, reason: str, explanation: dict[str, Any] | None = None) -> None:
        self.outcome, self.reason = RoutingOutcome.NEEDS_REVIEW, reason
        if explanation is not None:
            self.explanation = explanation


def _abstain_summary(closest: str, confidence: float, decision: Any) -> str:
    if decision.unfamiliar:
        why = "it is unlike the requests we have categories for"
    else:
        why = f"the closest category, {closest}, is only a {confidence:.0%} match"
    return f"We could not place this task automatically: {why}. A member of staff will place it."


def route_task(session: Session, settings: Settings, engine: RoutingEngine, task_id: uuid.UUID) -> str:
    """Route one task. Idempotent: a task that is no longer waiting for routing is left alone."""
    return route_tasks(session, settings, engine, [task_id])[task_id]


def route_tasks(session: Session, settings: Settings, engine: RoutingEngine, task_ids: Sequence[uuid.UUID],
                router: tuple[RoutingModel, Taxonomy] | None = None) -> dict[uuid.UUID, str]:
    """Route several tasks in one transaction, with one read of the taxonomy and the providers, one encoder
    pass and one write per table. The result is what routing them one after another would give: each task is
    ranked after the offers made to the tasks before it (in id order) count against capacity and fair share.

    Returns an outcome per id: ``routed``, ``needs_review``, ``skipped`` (no longer waiting for routing: a
    job delivered twice, a cancelled task) or ``missing``. Raises :class:`Conflict` when a chosen provider's
    capacity was taken by a concurrent transaction (PostgreSQL only); retrying routes afresh.

    ``router``: the routing model (and its taxonomy) to decide with, fetched before this transaction began.
    Workers pass it: fitting a model for a new taxonomy version takes seconds, and this transaction holds
    SQLite's write lock, which every sign-up and posted task would otherwise wait for meanwhile.
    """
    outcomes = dict.fromkeys(task_ids, "missing")
    found, tasks, placed, objecting = _waiting(session, task_ids, lock=True)
    outcomes.update((task_id, "skipped") for task_id in found)
    if not tasks:
        return outcomes
    for missing in [i for i, o in outcomes.items() if o == "missing"]:
        log.warning("route_task.missing", task_id=str(missing))
    transition_all(session, [(t, "routing started") for t in tasks if t.status is TaskStatus.SUBMITTED],
                   TaskStatus.ROUTING, actor_id=None, actor_role=SYSTEM)

    plans = [_Plan(t) for t in tasks]
    for plan in plans:
        if plan.task.customer_id in objecting and plan.task.category_id not in placed:
            plan.review("the customer objected to AI processing; staff will place the task", {
                "summary": "You asked us not to process your data with AI, so a member of staff will "
                           "choose the category and providers by hand.",
                "source": "objection",
            })
    if router is None and any(p.outcome is None and p.task.category_id not in placed for p in plans):
        router = engine.router(session, tuning=settings.router_tuning)
    # One encoder pass per task: the routing model's encoder (a tuned one, once it is in use) gives the vector
    # that decides the category and ranks the providers, whose profiles the engine embeds with it too.
    encoder = router[0].encoder if router is not None else engine.ranking_encoder()
    # With the customer's objection the task text is never embedded: providers are ranked on category,
    # availability and price only.
    embed = [p for p in plans if p.outcome is None and p.task.customer_id not in objecting]
    texts = [task_text(p.task.title, p.task.description) for p in embed]
    for plan, vector in zip(embed, engine.encode(encoder, texts), strict=True):
        plan.vector = vector

    for plan in plans:
        category = placed.get(plan.task.category_id) if plan.task.category_id else None
        if plan.outcome is None and category is not None:
            plan.categories = [{"slug": category.slug, "score": None}]
            plan.model_id = "none" if plan.vector is None else encoder.model_id
            plan.taxonomy_version = "staff"
            plan.explanation = {"summary": f"Placed in {category.name} by our staff.", "source": "staff",
                                "threshold": None, "ranking": [], "nearest_examples": []}
    _categorize(engine, [p for p in plans if p.outcome is None and not p.categories], router)
    _choose_providers(session, settings, engine, [p for p in plans if p.outcome is None], encoder)
    _write(session, settings, plans)
    outcomes.update((p.task.id, "routed" if p.outcome is RoutingOutcome.ROUTED else "needs_review")
                    for p in plans)
    return outcomes


def _waiting(session: Session, task_ids: Sequence[uuid.UUID], lock: bool
             ) -> tuple[set[uuid.UUID], list[Task], dict[uuid.UUID, Category], set[uuid.UUID]]:
    """Of ``task_ids``: those that exist, those waiting for routing (in id order, locked if asked), the
    categories staff placed them in and their customers who object to AI processing."""
    statuses = (TaskStatus.SUBMITTED, TaskStatus.ROUTING)
    query = select(Task).where(Task.id.in_(set(task_ids))).order_by(Task.id)
    if lock:
        # Only the waiting ones are locked: a job delivered again for a task routed meanwhile must not hold
        # it (and a provider accepting its offer) for the batch's length. PostgreSQL checks the status again
        # on a row it had to wait for.
        found = set(session.scalars(select(Task.id).where(Task.id.in_(set(task_ids)))))
        waiting = list(session.scalars(for_change(query.where(Task.status.in_(statuses)))))
    else:
        tasks = session.scalars(query).all()
        found, waiting = {t.id for t in tasks}, [t for t in tasks if t.status in statuses]
    # A task in ROUTING that already has a category was placed by staff; the model only ranks providers.
    staff_ids = {t.category_id for t in waiting if t.category_id}
    placed = {c.id: c for c in session.scalars(select(Category).where(Category.id.in_(staff_ids)))} \
        if staff_ids else {}
    objecting = set(session.scalars(select(Account.id).where(
        Account.id.in_({t.customer_id for t in waiting}), Account.ai_processing_objection.is_(True)))) \
        if waiting else set()
    return found, waiting, placed, objecting


def routing_texts(session: Session, task_ids: Sequence[uuid.UUID], routed: bool = False) -> list[str]:
    """What routing these tasks will encode: each waiting task's text (none for customers who object to AI
    processing). Workers read and encode them (:func:`encode_ahead`) before :func:`route_tasks`' write
    transaction, which on SQLite holds the database's write lock: it then finds the vectors ready. Skipping
    that changes nothing but speed. ``routed``: the tasks are routed already (a re-offer ranks providers for
    them again)."""
    # Plain columns, not ORM objects: this runs for every batch, and the write transaction loads the tasks anyway.
    rows = session.execute(
        select(Task.title, Task.description)
        .join(Account, Account.id == Task.customer_id)
        .where(Task.id.in_(set(task_ids)),
               Task.status == TaskStatus.ROUTED if routed
               else likely(Task.status.in_((TaskStatus.SUBMITTED, TaskStatus.ROUTING))),
               Account.ai_processing_objection.is_not(True))
        .order_by(Task.id)
    ).all()
    return [task_text(r.title, r.description) for r in rows]


def encode_ahead(engine: RoutingEngine, texts: Sequence[str]) -> None:
    """Encode :func:`routing_texts`' texts into the engine's cache of recent vectors, with the encoder of the
    model the last decision used (``RoutingEngine.ranking_encoder``). Not engine.router: reading the taxonomy
    on every batch to check its version cost more than the guess saves when it is wrong (a batch whose model
    changed meanwhile encodes its texts again)."""
    if texts:
        engine.encode(engine.ranking_encoder(), list(texts))


def _categorize(engine: RoutingEngine, plans: list[_Plan], router: tuple[RoutingModel, Taxonomy] | None) -> None:
    """Decide the plans' categories with ``router`` (route_tasks fetches it whenever there are plans)."""
    if not plans:
        return
    assert router is not None, "route_tasks fetches the routing model for tasks it must categorize"
    model, taxonomy = router
    names = {c.slug: c.name for c in taxonomy.categories}
    texts = [task_text(p.task.title, p.task.description) for p in plans]
    # the vectors came from this model's encoder (route_tasks)
    decisions = model.decide_many(texts, np.stack([p.vector for p in plans]))  # type: ignore[misc]
    for plan, decision in zip(plans, decisions, strict=True):
        plan.model_id, plan.taxonomy_version = model.model_id, taxonomy.version
        evidence = {
            "ranking": [{"slug": s, "score": sc} for s, sc in decision.ranking],
            # only our own seed examples are ever shown; examples learned from tasks stay private
            "nearest_examples": [{"slug": s, "text": t, "similarity": sim}
                                 for s, t, sim in decision.nearest_examples if t],
            "threshold": decision.threshold, "similarity": decision.similarity,
            "similarity_threshold": decision.similarity_threshold, "encoder_backend": engine.backend,
            "tuned": model.tuned, "model_id": model.model_id, "taxonomy_version": taxonomy.version,
        }
        if decision.abstain:
            best_slug, best_score = decision.ranking[0]
            plan.review("no category is close enough to this request", {
                "summary": _abstain_summary(names[best_slug], best_score, decision), "source": "model",
                **evidence,
            })
            continue
        plan.categories = [{"slug": s, "score": sc} for s, sc in decision.categories]
        also = [names[c["slug"]] for c in plan.categories[1:]]
        nearest = evidence["nearest_examples"][0]["text"] if evidence["nearest_examples"] else ""
        primary = plan.categories[0]
        summary = f"This looks like {names[primary['slug']]} (confidence {primary['score']:.0%})"
        summary += f", and also {', '.join(also)}." if also else "."
        if nearest:
            summary += f" It reads most like the example \u201c{nearest.rstrip('.')}\u201d."
        plan.explanation = {"summary": summary, "source": "model", **evidence}


def _choose_providers(session: Session, settings: Settings, engine: RoutingEngine,
                      plans: list[_Plan], encoder: Encoder, with_partners: bool = True) -> None:
    """Rank providers for each task and pick its offers on the engine's provider snapshot in the space of
    ``encoder`` (the one that gave the plans' vectors), counting each offer
    in it as it is picked (so the result is what routing the tasks one after another gives); then lock the
    picked providers and check in the database that they can still take them. If the snapshot was stale
    (another process's offers took the last slots), pick again on a fresh read of the providers, once."""
    if not plans:
        return
    if with_partners:  # a re-offer keeps its decision's suggestions
        _suggest_partners(session, engine, plans)
    primaries = {p.categories[0]["slug"] for p in plans}
    category_ids = dict(session.execute(
        select(Category.slug, Category.id).where(Category.slug.in_(primaries))).all())
    offered: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)  # earlier offers (a task placed again)
    for task_id, provider_id in session.execute(
        select(Offer.task_id, Offer.provider_id).where(Offer.task_id.in_([p.task.id for p in plans]))
    ):
        offered[task_id].add(provider_id)
    summaries = [p.explanation["summary"] for p in plans]

    def pick(index: ProviderIndex) -> None:
        for plan, summary in zip(plans, summaries, strict=True):
            plan.outcome, plan.reason, plan.offers = None, "", []
            plan.explanation["summary"] = summary
            _pick_offers(settings, engine, index, plan, category_ids.get(plan.categories[0]["slug"]),
                         offered[plan.task.id])

    taken: set[uuid.UUID] = set()
    for fresh in (False, True):
        # the fresh pass reads the counts again, and the profiles of those the check turned away whatever their
        # updated_at says (a capacity lowered by hand, an account closed: neither moves it)
        pick(engine.provider_index(session, encoder, fresh=fresh, recheck=taken))
        planned = Counter(uuid.UUID(c.provider_id) for p in plans for c in p.offers)
        if fresh:
            taken = overbooked(session, planned)
        else:
            # Within a savepoint, rolled back when the picks do not hold: that releases the first pass's profile
            # locks before the second pass locks its own, which it would otherwise take out of id order while
            # holding them (a deadlock on PostgreSQL with any transaction locking both in order).
            first_pass = session.begin_nested()
            taken = overbooked(session, planned)
            if taken:
                first_pass.rollback()
            else:
                first_pass.commit()
        if not taken:
            engine.count_offers(session, Counter({str(pid): n for pid, n in planned.items()}))
            return
        log.info("route_batch.providers_changed", providers=len(taken), fresh=fresh)
    engine.expire_providers()
    raise Conflict(f"{len(taken)} provider(s) filled up while these tasks were routed; routing again.")


def _suggest_partners(session: Session, engine: RoutingEngine, plans: list[_Plan]) -> None:
    """A few assisting partners for staff on each plan, best first (Matcher.suggest_partners), with what their
    score is made of. From the engine's pool of active partners, kept between batches: closing a partner account
    moves nothing the pool is read again for, so the accounts of the partners suggested are looked up, and if
    any was closed the pool is read again (without them) and the batch's suggestions made again from it."""
    pool = engine.partners(session)
    referrers = dict(session.execute(  # the partner who referred each customer (suggested first)
        select(Referral.customer_id, Referral.partner_id)
        .where(Referral.customer_id.in_(list({p.task.customer_id for p in plans})))).all()) if pool.by_id else {}
    for read_again in (False, True):
        made = [pool.suggest([c["slug"] for c in plan.categories], key=str(plan.task.id),
                             referrer=str(r) if (r := referrers.get(plan.task.customer_id)) else None)
                for plan in plans]
        named = {p.partner_id for suggested in made for p in suggested}
        closed = named - {str(pid) for pid in active_accounts(session, {uuid.UUID(p) for p in named})}
        if not closed or read_again:
            break
        # Read again rather than the pool edited in place: suggestions always come from a pool as read. (Equals take
        # turns by their number in a tier, so a closed partner whom no batch suggests still counts there until the
        # pool's next read, PARTNERS_AGE at most.)
        log.info("route_batch.partners_closed", partners=len(closed))
        pool = engine.partners(session, fresh=True)
    for plan, suggested in zip(plans, made, strict=True):
        suggested = [p for p in suggested if p.partner_id not in closed]  # (closed since the pool was read again)
        plan.explanation["suggested_partner_ids"] = [p.partner_id for p in suggested]
        plan.explanation["suggested_partners"] = [{"partner_id": p.partner_id, "score": p.score,
                                                   "components": p.components} for p in suggested]


def _pick_offers(settings: Settings, engine: RoutingEngine, index: ProviderIndex, plan: _Plan,
                 category_id: uuid.UUID | None, offered: set[uuid.UUID]) -> None:
    task, slugs = plan.task, [c["slug"] for c in plan.categories]
    # a task placed again is not offered twice to the same provider: those offered it before are left out of
    # its candidates, where they would take places from providers who have not seen it
    ranked = engine.matcher.rank_index(index, plan.vector, slugs, budget=task.budget_amount,
                                       budget_currency=task.budget_currency,
                                       exclude={str(task.customer_id)} | {str(p) for p in offered},
                                       limit=MAX_STORED_CANDIDATES,
                                       include_full=True)  # stored: re-offers reach those who free up
    plan.candidates = [{"provider_id": c.provider_id, "score": c.score, "components": c.components}
                       for c in ranked]
    plan.ranked, plan.category_id = True, category_id
    plan.first_rank = len(offered) + 1
    for candidate in ranked:
        if len(plan.offers) >= settings.offers_per_task:
            break
        row = index.row_of[candidate.provider_id]
        if index.load[row] >= index.capacity[row]:
            continue
        plan.offers.append(candidate)
        index.record_offer(candidate.provider_id)
    plan.explanation["offered"] = len(plan.offers)
    if not plan.offers:
        plan.explanation["summary"] += (" No provider in this category is available right now, so staff "
                                        "will follow up.")
        plan.review("no available provider for the category")
        return
    made = len(plan.offers)
    plan.explanation["summary"] += (
        f" Offered to {made} provider{'s' if made != 1 else ''} chosen for fit, category, availability, "
        "price, customer ratings and a fair share of work.")
    plan.outcome = RoutingOutcome.ROUTED


def _write(session: Session, settings: Settings, plans: list[_Plan]) -> None:
    """One INSERT per table for the whole batch (ORM objects for hundreds of rows cost more than routing).
    The decisions and their offers carry the same time (wrong-category votes count from a task's decision)."""
    at = now()
    add_offers(session, settings, [pick for plan in plans for pick in plan.picks()], at)
    # The tasks' categories: one executemany, not a flush of every task object (a tenth of the batch's time).
    placed = [p for p in plans if p.ranked and p.category_id != p.task.category_id]
    if placed:
        table = Task.__table__
        session.execute(update(table).where(table.c.id == bindparam("b_task"))
                        .values(category_id=bindparam("b_category")),
                        [{"b_task": p.task.id, "b_category": p.category_id} for p in placed])
        for plan in placed:
            set_committed_value(plan.task, "category_id", plan.category_id)
    session.execute(insert(RoutingDecision.__table__), [
        {"id": uuid.uuid4(), "task_id": p.task.id, "outcome": p.outcome, "categories": p.categories,
         "explanation": p.explanation, "candidates": p.candidates, "model_id": p.model_id,
         "taxonomy_version": p.taxonomy_version, "created_at": at}
        for p in plans
    ])
    transition_all(session, [(p.task, f"routed to {p.categories[0]['slug']}") for p in plans
                             if p.outcome is RoutingOutcome.ROUTED],
                   TaskStatus.ROUTED, actor_id=None, actor_role=SYSTEM)
    transition_all(session, [(p.task, p.reason) for p in plans if p.outcome is RoutingOutcome.NEEDS_REVIEW],
                   TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM)
    # The model could not place these: a question for staff to send the customer (tasks of customers who
    # object never reach the model, so they get none).
    jobs.enqueue_many(session, "draft_clarifying_question",
                      [(p.task.id,) for p in plans if p.outcome is RoutingOutcome.NEEDS_REVIEW
                       and p.explanation.get("source") == "model" and not p.categories])


def reoffer(session: Session, settings: Settings, engine: RoutingEngine, task_id: uuid.UUID, wanted: int,
            encoder: Encoder | None = None) -> str:
    """Rank the providers again for a routed task whose stored candidates have all been offered it (or left,
    or filled up) and which has no open offer: in its category, among everyone who has not been offered it,
    on the providers as they are now (new ones included). Up to ``wanted`` offers; with nobody, the task goes to
    staff review. The decision stays the task's decision (wrong-category votes still count against its
    category); the new candidates are added to its list. Idempotent: ``skipped`` when there is nothing to do.
    ``encoder``: the space to rank in (the current routing model's encoder, which the worker reads before this
    transaction; default ``RoutingEngine.ranking_encoder``)."""
    task = session.scalar(for_change(select(Task).where(Task.id == task_id)))
    if task is None or task.status is not TaskStatus.ROUTED or open_offers(session, task.id):
        return "skipped"
    decision = latest_decision(session, task.id)
    if decision is None or not decision.categories:
        transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM, reason=NOBODY_LEFT)
        return "needs_review"
    plan = _Plan(task, categories=decision.categories, explanation={"summary": ""})
    encoder = encoder or engine.ranking_encoder()
    customer = session.get(Account, task.customer_id)
    if customer is not None and not customer.ai_processing_objection:
        plan.vector = engine.encode(encoder, [task_text(task.title, task.description)])[0]
    _choose_providers(session, settings.with_(offers_per_task=max(1, wanted)), engine, [plan], encoder,
                      with_partners=False)
    if not plan.offers:
        transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM, reason=NOBODY_LEFT)
        return "needs_review"
    # dated no earlier than their decision, whatever this host's clock says
    add_offers(session, settings, plan.picks(), max(now(), decision.created_at))
    listed = {c["provider_id"] for c in decision.candidates}
    decision.candidates = [*decision.candidates, *(c for c in plan.candidates if c["provider_id"] not in listed)]
    return "reoffered"


def sweep_stalled(session: Session, older_than: timedelta, limit: int = 200) -> int:
    """Hand tasks whose routing never finished (a job that failed every retry) to staff instead of leaving
    them waiting forever, and routed tasks left with no offer open or accepted for as long (a re-offer job
    that failed every retry). A job that turns up later finds them in review and does nothing."""
    stalled = session.scalars(for_change(
        select(Task).where(Task.status.in_((TaskStatus.SUBMITTED, TaskStatus.ROUTING)),
                           Task.updated_at < now() - older_than)
        .order_by(Task.id).limit(limit), skip_locked=True
    )).all()
    for task in stalled:
        transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM,
                   reason="routing did not finish in time; staff will place the task")
    # Routed (or forced to routed by staff) that long ago, with no offer open or accepted and none answered
    # since: per routed task, two index lookups (the offers table is never scanned as a whole).
    cutoff = now() - older_than
    live = select(Offer.id).where(Offer.task_id == Task.id,
                                  Offer.status.in_((OfferStatus.OPEN, OfferStatus.ACCEPTED))).exists()
    recent = select(Offer.id).where(Offer.task_id == Task.id, Offer.responded_at >= cutoff).exists()
    unoffered = session.scalars(for_change(
        select(Task).where(Task.status == TaskStatus.ROUTED, Task.updated_at < cutoff, ~live, ~recent)
        .order_by(Task.id).limit(limit), skip_locked=True
    )).all()
    swept = 0
    for task in unoffered:
        if open_offers(session, task.id):  # a late re-offer committed between the query and the lock
            continue
        transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM, reason=NOBODY_LEFT)
        swept += 1
    return len(stalled) + swept
