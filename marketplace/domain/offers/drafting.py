"""Draft proposals for offers, written by a worker with the local drafter and shown only to the offer's provider.
A draft is never sent: the provider edits or approves it as the proposal they accept with."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marketplace.db.models import (
    Account,
    Category,
    Draft,
    Offer,
    ProviderProfile,
    Task,
    TaskStatus,
    TaskTransition,
)
from marketplace.domain.tasks.services import latest_decision
from models import DraftInput, DraftResult, ProviderInput
from models.drafter import SimilarWork

SIMILAR_TASKS = 50  # the most recent completed tasks of a category that an estimate looks at


def similar_work(session: Session, category_id: uuid.UUID | None, currency: str | None,
                 exclude: uuid.UUID) -> SimilarWork | None:
    """Completed tasks of the category: their budgets (in the task's currency, if it has one) and how long
    they took from acceptance to delivery. Only amounts and durations: no other customer's text."""
    if category_id is None:
        return None
    rows = session.execute(
        select(Task.id, Task.budget_amount, Task.budget_currency)
        .where(Task.category_id == category_id, Task.status == TaskStatus.COMPLETED, Task.id != exclude)
        .order_by(Task.updated_at.desc()).limit(SIMILAR_TASKS)
    ).all()
    if not rows:
        return None
    currencies = {c for _, a, c in rows if a is not None}
    use = currency if currency else (next(iter(currencies)) if len(currencies) == 1 else None)
    budgets = tuple(a for _, a, c in rows if a is not None and c == use)
    times: dict[uuid.UUID, dict[TaskStatus, datetime]] = {}
    for task_id, to_status, at in session.execute(
        select(TaskTransition.task_id, TaskTransition.to_status, TaskTransition.at)
        .where(TaskTransition.task_id.in_([r.id for r in rows]),
               TaskTransition.to_status.in_([TaskStatus.ASSIGNED, TaskStatus.DELIVERED]))
        .order_by(TaskTransition.id)
    ):
        times.setdefault(task_id, {}).setdefault(to_status, at)  # first acceptance, first delivery
    days = tuple((t[TaskStatus.DELIVERED] - t[TaskStatus.ASSIGNED]).total_seconds() / 86400
                 for t in times.values() if TaskStatus.ASSIGNED in t and TaskStatus.DELIVERED in t
                 and t[TaskStatus.DELIVERED] >= t[TaskStatus.ASSIGNED])
    return SimilarWork(len(rows), budgets, use if budgets else None, days)


def offer_draft_inputs(session: Session, offer_id: uuid.UUID) -> tuple[DraftInput, ProviderInput] | str:
    """What a draft for this offer is written from, or why there is none to write (``exists``, ``missing``,
    ``objection``). Read-only: the worker writes the draft with no transaction open (the generative model takes
    seconds, and on SQLite a write transaction holds the whole database's write lock)."""
    if session.scalar(select(Draft.id).where(Draft.offer_id == offer_id)) is not None:
        return "exists"
    offer = session.get(Offer, offer_id)
    if offer is None:
        return "missing"
    task = session.get(Task, offer.task_id)
    customer = session.get(Account, task.customer_id)
    if customer is not None and customer.ai_processing_objection:
        return "objection"
    provider = session.get(Account, offer.provider_id)
    profile = session.get(ProviderProfile, offer.provider_id)
    category = session.get(Category, task.category_id) if task.category_id else None
    return (
        DraftInput(
            title=task.title, description=task.description,
            category_name=category.name if category else None,
            playbook=tuple(category.playbook) if category else (),
            questions=tuple(category.questions) if category else (),
            budget_amount=task.budget_amount, budget_currency=task.budget_currency, deadline=task.deadline,
            similar=similar_work(session, task.category_id, task.budget_currency, task.id),
        ),
        ProviderInput(
            display_name=provider.display_name, headline=profile.headline if profile else "",
            skills=tuple(profile.skills) if profile else (), hourly_rate=profile.hourly_rate if profile else None,
            description=profile.description if profile else "",
        ),
    )


def save_offer_draft(session: Session, offer_id: uuid.UUID, result: DraftResult) -> str:
    """Store a written draft once. Idempotent: a concurrent or repeated job finds it there (``exists``)."""
    if session.scalar(select(Draft.id).where(Draft.offer_id == offer_id)) is not None:
        return "exists"
    if session.get(Offer, offer_id) is None:  # the offer's task was erased meanwhile
        return "missing"
    try:
        with session.begin_nested():
            session.add(Draft(offer_id=offer_id, text=result.text, engine=result.engine, model_id=result.model_id,
                              weights_hash=result.weights_hash, guard=result.guard, sources=result.sources))
    except IntegrityError:  # a concurrent run wrote it first
        return "exists"
    return "drafted"


def _awaiting_question(session: Session, task_id: uuid.UUID) -> Task | str:
    """The task, if it is still in review and has no drafted question yet; otherwise why not."""
    task = session.get(Task, task_id)
    if task is None:
        return "missing"
    if task.status is not TaskStatus.NEEDS_REVIEW:
        return "skipped"
    if session.scalar(select(Draft.id).where(Draft.task_id == task_id)) is not None:
        return "exists"
    return task


def clarifying_question_inputs(session: Session, task_id: uuid.UUID) -> tuple[DraftInput, list[str]] | str:
    """What the question staff may send is written from when routing could not place a task (the task and the
    closest categories), or why there is none to write (``missing``, ``skipped`` for a task no longer in review,
    ``exists``, ``objection``: staff write to such a customer by hand). Read-only, like offer_draft_inputs."""
    task = _awaiting_question(session, task_id)
    if isinstance(task, str):
        return task
    customer = session.get(Account, task.customer_id)
    if customer is not None and customer.ai_processing_objection:
        return "objection"
    decision = latest_decision(session, task_id)
    names = dict(session.execute(select(Category.slug, Category.name)).all())
    closest = [names[r["slug"]] for r in (decision.explanation.get("ranking", []) if decision else [])[:3]
               if r["slug"] in names]
    return DraftInput(title=task.title, description=task.description), closest


def save_clarifying_question(session: Session, task_id: uuid.UUID, result: DraftResult) -> str:
    """Store a written question once, if the task still waits for staff (it may have been placed, cancelled or
    erased while the question was being written)."""
    task = _awaiting_question(session, task_id)
    if isinstance(task, str):
        return task
    try:
        with session.begin_nested():
            session.add(Draft(task_id=task.id, kind="clarifying_question", text=result.text, engine=result.engine,
                              model_id=result.model_id, weights_hash=result.weights_hash, guard=result.guard,
                              sources=result.sources))
    except IntegrityError:  # a concurrent run wrote it first
        return "exists"
    return "drafted"
