"""Staff: the needs-review queue, routing by hand, and audited transition overrides."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from marketplace import jobs
from marketplace.auth import Principal
from marketplace.db.models import (
    Account,
    Category,
    CategoryExample,
    Draft,
    Message,
    Role,
    Task,
    TaskStatus,
    TaskTransition,
)
from marketplace.db.sql import for_change
from marketplace.domain.categories.services import get_by_slug
from marketplace.domain.routing.engine import task_text as routing_text
from marketplace.domain.staff.schemas import ReviewItem, ReviewQueue
from marketplace.domain.tasks.lifecycle import transition
from marketplace.domain.tasks.schemas import CategoryScore, MessageOut
from marketplace.domain.tasks.services import latest_decision, withdraw_open_offers
from marketplace.errors import InvalidInput, NotFound


def review_queue(session: Session, limit: int, offset: int) -> ReviewQueue:
    base = select(Task).where(Task.status == TaskStatus.NEEDS_REVIEW)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    tasks = session.scalars(base.order_by(Task.created_at, Task.id).limit(limit).offset(offset)).all()
    names = dict(session.execute(select(Category.slug, Category.name)).all())
    slugs = dict(session.execute(select(Category.id, Category.slug)).all())
    ids = [t.id for t in tasks]
    questions = dict(session.execute(select(Draft.task_id, Draft.text).where(Draft.task_id.in_(ids))).all())
    messages: dict[uuid.UUID, list[MessageOut]] = {}
    for m in session.scalars(select(Message).where(Message.task_id.in_(ids)).order_by(Message.created_at)):
        messages.setdefault(m.task_id, []).append(MessageOut(m.author_role, m.body, m.created_at, m.from_draft))
    items = []
    for task in tasks:
        decision = latest_decision(session, task.id)
        ranking = decision.explanation.get("ranking", []) if decision else []
        last = session.scalar(select(TaskTransition.reason).where(TaskTransition.task_id == task.id)
                              .order_by(TaskTransition.id.desc()).limit(1))
        requested = slugs.get(task.requested_category_id) if task.requested_category_id else None
        items.append(ReviewItem(
            str(task.id), task.title, task.description, task.created_at, last or "",
            [CategoryScore(r["slug"], r["score"], names.get(r["slug"])) for r in ranking if r["slug"] != requested],
            CategoryScore(requested, None, names.get(requested)) if requested else None,
            questions.get(task.id), messages.get(task.id, []),
        ))
    return ReviewQueue(items, total, limit, offset)


def _task(session: Session, task_id: uuid.UUID) -> Task:
    task = session.scalar(for_change(select(Task).where(Task.id == task_id)))
    if task is None:
        raise NotFound("Task not found.")
    return task


def route_by_hand(session: Session, principal: Principal, task_id: uuid.UUID, slug: str, reason: str) -> Task:
    """Place a needs-review task in a category; the worker then ranks providers and makes offers."""
    # The customer's account first (FOR SHARE, before the task: the order erasure locks them in): a customer
    # objecting to AI processing at this moment either commits first, and the objection is read here, or
    # waits for this placement and then deletes the example it adds. Read without a lock, the objection could
    # be the one from before the customer's commit, and the example would stay.
    customer_id = session.scalar(select(Task.customer_id).where(Task.id == task_id))
    objection = session.scalar(select(Account.ai_processing_objection).where(Account.id == customer_id)
                               .with_for_update(read=True)) if customer_id is not None else None
    task = _task(session, task_id)
    category = get_by_slug(session, slug)
    if category is None:
        raise InvalidInput(f"Unknown category {slug!r}.", errors=[{"field": "category", "message": "unknown"}])
    transition(session, task, TaskStatus.ROUTING, actor_id=principal.account_id, actor_role=Role.STAFF.value,
               reason=reason or f"placed in {slug} by staff")
    task.category_id = category.id
    # A task placed again (the first placement was wrong too, or found no provider) teaches the router only
    # its latest category: the earlier placement's example would label the same text twice.
    session.execute(delete(CategoryExample).where(CategoryExample.task_id == task.id,
                                                  CategoryExample.source == "staff"))
    if objection is False:  # (None: the customer's account is gone)
        # Staff placements teach the router: the task becomes a labelled example of the category (the
        # taxonomy version changes, so workers refit). Never quoted to customers; erased with the task.
        session.add(CategoryExample(category_id=category.id, text=routing_text(task.title, task.description),
                                    source="staff", task_id=task.id))
    session.flush()
    jobs.enqueue(session, "route_task", task.id)
    return task


def override(session: Session, principal: Principal, task_id: uuid.UUID, to: str, reason: str) -> Task:
    try:
        target = TaskStatus(to)
    except ValueError:
        raise InvalidInput(f"Unknown status {to!r}.",
                           errors=[{"field": "to", "message": f"one of {', '.join(s.value for s in TaskStatus)}"}]
                           ) from None
    task = _task(session, task_id)
    transition(session, task, target, actor_id=principal.account_id, actor_role=Role.STAFF.value,
               reason=f"staff override: {reason}", force=True)
    if target in (TaskStatus.CANCELLED, TaskStatus.NEEDS_REVIEW, TaskStatus.COMPLETED):
        withdraw_open_offers(session, task.id)
    if target in (TaskStatus.SUBMITTED, TaskStatus.ROUTING) and task.category_id is not None \
            and not _placed_by_staff(session, task):
        # Routing takes a waiting task's category as staff's choice and only ranks providers. The category
        # here is the model's (the one providers may have said was wrong): the model decides afresh, and
        # offers still open in that category are withdrawn.
        task.category_id = None
        withdraw_open_offers(session, task.id)
    if target is TaskStatus.ROUTING:
        jobs.enqueue(session, "route_task", task.id)
    return task


def _placed_by_staff(session: Session, task: Task) -> bool:
    """Whether the task's category is staff's choice rather than the model's: the latest routing decision is a
    staff placement, or placed the task elsewhere (staff placed it since, and it is not routed yet)."""
    decision = latest_decision(session, task.id)
    if decision is None or decision.explanation.get("source") != "model" or not decision.categories:
        return True
    return session.scalar(select(Category.slug).where(Category.id == task.category_id)) \
        != decision.categories[0]["slug"]
