"""Tasks: posting (with the routing hand-off), visibility rules, and the customer/provider lifecycle."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marketplace import jobs
from marketplace.auth import Principal
from marketplace.clock import now
from marketplace.db.models import (
    Account,
    Category,
    Draft,
    Message,
    Offer,
    OfferStatus,
    Rating,
    Role,
    RoutingDecision,
    Task,
    TaskStatus,
    TaskTransition,
)
from marketplace.domain.tasks.lifecycle import transition
from marketplace.domain.tasks.schemas import (
    CategoryScore,
    MessageOut,
    Money,
    Page,
    PartnerSuggestionOut,
    ProposalOut,
    ProviderCandidateOut,
    ProviderRef,
    RoutingOut,
    TaskIn,
    TaskOut,
    TaskSummary,
    TransitionOut,
)
from marketplace.errors import Conflict, InvalidInput, NotFound
from models.drafter import was_edited

_CENT = Decimal("0.01")
MAX_DEADLINE = timedelta(days=5 * 365)


def create_task(session: Session, customer_id: uuid.UUID, data: TaskIn) -> Task:
    title, description = " ".join(data.title.split()), data.description.strip()
    errors = []
    if len(title) < 3:
        errors.append({"field": "title", "message": "must have at least 3 characters"})
    if len(description) < 10:
        errors.append({"field": "description", "message": "must have at least 10 characters"})
    amount = data.budget.amount if data.budget else None
    if amount is not None:
        amount = amount.quantize(_CENT) if amount.is_finite() and abs(amount) < 10**12 else None
        if amount is None or not 0 < amount <= 10_000_000:
            errors.append({"field": "budget.amount", "message": "must be at least 0.01 and at most 10000000"})
    deadline = data.deadline
    if deadline is not None:
        if deadline.tzinfo is None:
            errors.append({"field": "deadline", "message": "must include a timezone, e.g. 2027-01-31T17:00:00Z"})
        elif not now() < deadline < now() + MAX_DEADLINE:
            errors.append({"field": "deadline", "message": "must be in the future and within 5 years"})
    requested = None
    if data.category is not None:
        requested = session.scalar(select(Category.id).where(Category.slug == data.category,
                                                             Category.active.is_(True)))
        if requested is None:
            errors.append({"field": "category", "message": "unknown category"})
    if errors:
        raise InvalidInput("; ".join(f"{e['field']} {e['message']}" for e in errors), errors=errors)
    task = Task(
        customer_id=customer_id, title=title, description=description, requested_category_id=requested,
        budget_amount=amount,
        budget_currency=data.budget.currency.upper() if data.budget else None,
        deadline=data.deadline, status=TaskStatus.SUBMITTED,
    )
    session.add(task)
    session.flush()
    session.add(TaskTransition(task_id=task.id, from_status=None, to_status=TaskStatus.SUBMITTED,
                               actor_id=customer_id, actor_role=Role.CUSTOMER.value, reason="posted"))
    jobs.enqueue(session, "route_task", task.id)
    return task


def _is_party(session: Session, task: Task, principal: Principal) -> bool:
    if principal.role is Role.STAFF:
        return True
    if principal.role is Role.CUSTOMER:
        return task.customer_id == principal.account_id
    if principal.role is Role.PROVIDER:
        if task.assigned_provider_id == principal.account_id:
            return True
        # Only while the offer is open: a provider who declined, let it expire or lost it to another
        # provider has no business following the task any further.
        return session.scalar(
            select(Offer.id).where(Offer.task_id == task.id, Offer.provider_id == principal.account_id,
                                   Offer.status == OfferStatus.OPEN)
        ) is not None
    return False


def get_visible_task(session: Session, principal: Principal, task_id: uuid.UUID) -> Task:
    """The task if this account may see it; 404 otherwise (never reveal that it exists)."""
    task = session.get(Task, task_id)
    if task is None or not _is_party(session, task, principal):
        raise NotFound("Task not found.")
    return task


def latest_decision(session: Session, task_id: uuid.UUID) -> RoutingDecision | None:
    return session.scalar(
        select(RoutingDecision).where(RoutingDecision.task_id == task_id)
        .order_by(RoutingDecision.created_at.desc(), RoutingDecision.id.desc()).limit(1)
    )


CUSTOMER_HIDDEN_EVIDENCE = {"summary", "suggested_partner_ids", "suggested_partners"}


def routing_out(session: Session, task: Task, principal: Principal | None = None) -> RoutingOut:
    decision = latest_decision(session, task.id)
    if decision is None:
        pending = task.status in (TaskStatus.SUBMITTED, TaskStatus.ROUTING)
        return RoutingOut(None, [], "Routing is in progress." if pending else "Not routed.")
    names = dict(session.execute(select(Category.slug, Category.name)).all())
    staff = principal is not None and principal.role is Role.STAFF
    hidden = {"summary"} if staff else CUSTOMER_HIDDEN_EVIDENCE
    evidence: dict[str, Any] = {k: v for k, v in decision.explanation.items() if k not in hidden}
    return RoutingOut(
        decision=decision.outcome.value,
        categories=[CategoryScore(c["slug"], c.get("score"), names.get(c["slug"])) for c in decision.categories],
        explanation=decision.explanation.get("summary", ""),
        evidence=evidence,
        decided_at=decision.created_at,
        providers=_ranked_providers(session, task, decision) if staff else None,
        partners=_suggested_partners(session, decision) if staff else None,
    )


def _suggested_partners(session: Session, decision: RoutingDecision) -> list[PartnerSuggestionOut]:
    """The decision's suggested assisting partners with their names (for staff). Decisions made before the
    partners' scores were stored list their ids only (score 0, no components)."""
    explanation = decision.explanation
    suggested = explanation.get("suggested_partners") or [
        {"partner_id": pid, "score": 0.0, "components": {}} for pid in explanation.get("suggested_partner_ids", [])]
    ids = [uuid.UUID(p["partner_id"]) for p in suggested]
    accounts = {pid: (name, active) for pid, name, active in session.execute(
        select(Account.id, Account.display_name, Account.is_active).where(Account.id.in_(ids)))}
    return [PartnerSuggestionOut(p["partner_id"], *accounts.get(pid, (None, False)), float(p["score"]),
                                 dict(p.get("components") or {}))
            for p, pid in zip(suggested, ids, strict=True)]


def _ranked_providers(session: Session, task: Task, decision: RoutingDecision) -> list[ProviderCandidateOut]:
    """The decision's ranked providers with their score components, names and offers (for staff)."""
    ids = [uuid.UUID(c["provider_id"]) for c in decision.candidates]
    names = dict(session.execute(select(Account.id, Account.display_name).where(Account.id.in_(ids))).all())
    offers = dict(session.execute(select(Offer.provider_id, Offer.status).where(Offer.task_id == task.id)).all())
    return [
        ProviderCandidateOut(c["provider_id"], names.get(pid), float(c["score"]), dict(c.get("components") or {}),
                             offers[pid].value if pid in offers else None)
        for c, pid in zip(decision.candidates, ids, strict=True)
    ]


def task_out(session: Session, task: Task, principal: Principal) -> TaskOut:
    provider = session.get(Account, task.assigned_provider_id) if task.assigned_provider_id else None
    offered = session.scalar(select(func.count()).select_from(Offer).where(Offer.task_id == task.id)) or 0
    routing = routing_out(session, task, principal)
    if principal.role is Role.PROVIDER:
        # providers see what the task is about, not the router's internals or other providers
        routing = RoutingOut(routing.decision, routing.categories, "", {}, routing.decided_at)
        offered = 0
    return TaskOut(
        id=str(task.id), title=task.title, description=task.description, status=task.status.value,
        created_at=task.created_at,
        budget=Money(task.budget_amount, task.budget_currency) if task.budget_amount is not None else None,
        deadline=task.deadline, routing=routing,
        assigned_provider=ProviderRef(str(provider.id), provider.display_name) if provider else None,
        offered_to=offered,
        transitions=[TransitionOut(t.from_status.value if t.from_status else None, t.to_status.value,
                                   t.actor_role, t.reason, t.at) for t in task.transitions],
        rating=session.scalar(select(Rating.stars).where(Rating.task_id == task.id)),
        proposal=_proposal(session, task),
        messages=[] if principal.role is Role.PROVIDER else [
            MessageOut(m.author_role, m.body, m.created_at, m.from_draft)
            for m in session.scalars(select(Message).where(Message.task_id == task.id)
                                     .order_by(Message.created_at, Message.id))
        ],
    )


def send_message(session: Session, principal: Principal, task_id: uuid.UUID, body: str,
                 from_draft: bool = False) -> Message:
    """A message on a task from its customer or from staff. Staff usually start from the drafted clarifying
    question; whether they did, and whether they changed it, is recorded with the message."""
    task = get_visible_task(session, principal, task_id)  # a customer sees only their own tasks
    if principal.role not in (Role.CUSTOMER, Role.STAFF):
        raise NotFound("Task not found.")
    body = body.strip()
    if not body:
        raise InvalidInput("Write a message.", errors=[{"field": "body", "message": "required"}])
    if len(body) > 5000:
        raise InvalidInput("The message is too long.", errors=[{"field": "body", "message": "at most 5000"}])
    draft = session.scalar(select(Draft.text).where(Draft.task_id == task.id)) \
        if from_draft and principal.role is Role.STAFF else None
    message = Message(task_id=task.id, author_id=principal.account_id, author_role=principal.role.value,
                      body=body, from_draft=draft is not None,
                      edited=None if draft is None else was_edited(draft, body))
    session.add(message)
    session.flush()
    return message


def _proposal(session: Session, task: Task) -> ProposalOut | None:
    if task.assigned_provider_id is None:
        return None
    row = session.execute(
        select(Offer.proposal, Offer.proposal_from_draft, Offer.proposal_edited)
        .where(Offer.task_id == task.id, Offer.provider_id == task.assigned_provider_id,
               Offer.status == OfferStatus.ACCEPTED, Offer.proposal.is_not(None))
    ).first()
    return ProposalOut(row.proposal, bool(row.proposal_from_draft), row.proposal_edited) if row else None


def list_tasks(session: Session, principal: Principal, status: TaskStatus | None, limit: int,
               offset: int) -> Page:
    query = select(Task)
    if principal.role is Role.CUSTOMER:
        query = query.where(Task.customer_id == principal.account_id)
    elif principal.role is Role.PROVIDER:
        query = query.where(Task.assigned_provider_id == principal.account_id)
    elif principal.role is not Role.STAFF:
        query = query.where(False)
    if status is not None:
        query = query.where(Task.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Task.created_at.desc(), Task.id).limit(limit).offset(offset)).all()
    slugs = dict(session.execute(select(Category.id, Category.slug)).all())
    items = [TaskSummary(str(t.id), t.title, t.status.value, slugs.get(t.category_id), t.created_at) for t in rows]
    return Page(items, total, limit, offset)


def withdraw_open_offers(session: Session, task_id: uuid.UUID, except_offer: uuid.UUID | None = None) -> int:
    query = update(Offer).where(Offer.task_id == task_id, Offer.status == OfferStatus.OPEN)
    if except_offer is not None:
        query = query.where(Offer.id != except_offer)
    result = session.execute(query.values(status=OfferStatus.WITHDRAWN, responded_at=now())
                             .execution_options(synchronize_session=False))
    return result.rowcount or 0


def cancel(session: Session, principal: Principal, task_id: uuid.UUID, reason: str) -> Task:
    task = get_visible_task(session, principal, task_id)
    if principal.role is not Role.CUSTOMER and principal.role is not Role.STAFF:
        raise NotFound("Task not found.")
    transition(session, task, TaskStatus.CANCELLED, actor_id=principal.account_id,
               actor_role=principal.role.value, reason=reason or "cancelled by customer")
    withdraw_open_offers(session, task.id)
    return task


def _own_step(session: Session, principal: Principal, task_id: uuid.UUID, to: TaskStatus, reason: str) -> Task:
    """A lifecycle step the task's own customer or its assigned provider takes (the route guard says which)."""
    task = get_visible_task(session, principal, task_id)
    owner = task.assigned_provider_id if principal.role is Role.PROVIDER else task.customer_id
    if owner != principal.account_id:
        raise NotFound("Task not found.")
    return transition(session, task, to, actor_id=principal.account_id, actor_role=principal.role.value,
                      reason=reason)


def start(session: Session, principal: Principal, task_id: uuid.UUID) -> Task:
    return _own_step(session, principal, task_id, TaskStatus.IN_PROGRESS, "work started")


def deliver(session: Session, principal: Principal, task_id: uuid.UUID, note: str) -> Task:
    return _own_step(session, principal, task_id, TaskStatus.DELIVERED, note or "delivered")


def complete(session: Session, principal: Principal, task_id: uuid.UUID) -> Task:
    return _own_step(session, principal, task_id, TaskStatus.COMPLETED, "accepted the delivery")


def rate(session: Session, principal: Principal, task_id: uuid.UUID, stars: int, comment: str) -> Rating:
    """The task's customer rates the provider who completed it: once, and only a completed task."""
    task = get_visible_task(session, principal, task_id)
    if task.customer_id != principal.account_id:
        raise NotFound("Task not found.")
    if task.status is not TaskStatus.COMPLETED or task.assigned_provider_id is None:
        raise Conflict(f"Only a completed task can be rated; this one is {task.status.value}.")
    if not 1 <= stars <= 5:
        raise InvalidInput("Stars go from 1 to 5.", errors=[{"field": "stars", "message": "1 to 5"}])
    if session.scalar(select(Rating.id).where(Rating.task_id == task.id)) is not None:
        raise Conflict("This task is already rated.")
    rating = Rating(task_id=task.id, provider_id=task.assigned_provider_id, customer_id=principal.account_id,
                    stars=stars, comment=comment.strip() or None)
    session.add(rating)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # a concurrent request rated it first
        raise Conflict("This task is already rated.") from None
    return rating


def request_changes(session: Session, principal: Principal, task_id: uuid.UUID, reason: str) -> Task:
    if not reason.strip():
        raise InvalidInput("Say what should change.", errors=[{"field": "reason", "message": "required"}])
    return _own_step(session, principal, task_id, TaskStatus.IN_PROGRESS, reason)
