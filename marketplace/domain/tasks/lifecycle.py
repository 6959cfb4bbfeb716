"""The task state machine: which transitions exist, and the one function that performs them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import insert, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from marketplace.clock import now
from marketplace.db.models import Task, TaskStatus, TaskTransition
from marketplace.db.sql import likely
from marketplace.errors import Conflict, IllegalTransition

S = TaskStatus
ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.SUBMITTED: frozenset({S.ROUTING, S.NEEDS_REVIEW, S.CANCELLED}),
    S.ROUTING: frozenset({S.ROUTED, S.NEEDS_REVIEW, S.CANCELLED}),
    S.ROUTED: frozenset({S.ASSIGNED, S.NEEDS_REVIEW, S.CANCELLED}),
    S.NEEDS_REVIEW: frozenset({S.ROUTING, S.CANCELLED}),
    S.ASSIGNED: frozenset({S.IN_PROGRESS, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.DELIVERED, S.CANCELLED}),
    S.DELIVERED: frozenset({S.COMPLETED, S.IN_PROGRESS}),  # accept, or ask for changes
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in ALLOWED.items() if not nxt)
SYSTEM = "system"


def transition(session: Session, task: Task, to: TaskStatus, *, actor_id: uuid.UUID | None, actor_role: str,
               reason: str = "", force: bool = False) -> Task:
    """Move a task from its current status to ``to``, atomically, and record who did it and why.

    The UPDATE is conditional on the status we read, so two concurrent changes cannot both win.
    ``force`` (staff override) skips the transition table but still records the change.
    """
    transition_all(session, [(task, reason)], to, actor_id=actor_id, actor_role=actor_role, force=force)
    return task


def transition_all(session: Session, moves: Sequence[tuple[Task, str]], to: TaskStatus, *,
                   actor_id: uuid.UUID | None, actor_role: str, force: bool = False) -> None:
    """:func:`transition` for several ``(task, reason)`` pairs: one conditional UPDATE per current status."""
    by_status: dict[TaskStatus, list[Task]] = defaultdict(list)
    for task, _ in moves:
        current = task.status
        if not force and to not in ALLOWED[current]:
            raise IllegalTransition(f"A task that is {current.value} cannot become {to.value}.")
        if force and to == current:
            raise IllegalTransition(f"The task is already {to.value}.")
        by_status[current].append(task)
    at = now()
    for current, tasks in by_status.items():
        result = session.execute(
            update(Task).where(Task.id.in_([t.id for t in tasks]), likely(Task.status == current))
            .values(status=to, updated_at=at).execution_options(synchronize_session=False)
        )
        if result.rowcount != len(tasks):
            raise Conflict("The task changed while this request was processed; reload and try again.")
    if moves:
        session.execute(insert(TaskTransition.__table__), [
            {"task_id": task.id, "from_status": task.status, "to_status": to, "actor_id": actor_id,
             "actor_role": actor_role, "reason": reason, "at": at}
            for task, reason in moves
        ])
    for task, _ in moves:  # what the UPDATE wrote, without reading the rows back
        set_committed_value(task, "status", to)
        set_committed_value(task, "updated_at", at)
