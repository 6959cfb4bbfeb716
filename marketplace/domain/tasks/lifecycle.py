"""The task state machine: which transitions exist, and the one function that performs them."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import Task, TaskStatus, TaskTransition
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
    current = task.status
    if not force and to not in ALLOWED[current]:
        raise IllegalTransition(f"A task that is {current.value} cannot become {to.value}.")
    if force and to == current:
        raise IllegalTransition(f"The task is already {to.value}.")
    result = session.execute(
        update(Task).where(Task.id == task.id, Task.status == current)
        .values(status=to, updated_at=now()).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise Conflict("The task changed while this request was processed; reload and try again.")
    session.add(TaskTransition(task_id=task.id, from_status=current, to_status=to, actor_id=actor_id,
                               actor_role=actor_role, reason=reason))
    session.flush()
    session.refresh(task)
    return task
