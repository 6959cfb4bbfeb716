"""HTTP: staff tools. Staff accounts are created only from the CLI (relay create-staff)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import Role
from marketplace.domain.staff import services
from marketplace.domain.staff.schemas import OverrideIn, ReviewQueue, RouteIn
from marketplace.domain.tasks.schemas import TaskOut
from marketplace.domain.tasks.services import task_out


class StaffController(Controller):
    path = "/api/v1/staff"
    tags = ["staff"]
    guards = [require_role(Role.STAFF)]

    @get("/review-queue", sync_to_thread=True, summary="Tasks routing could not place, oldest first")
    def review_queue(self, db_session: Session, limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
                     offset: Annotated[int, Parameter(ge=0)] = 0) -> ReviewQueue:
        return services.review_queue(db_session, limit, offset)

    @post("/tasks/{task_id:uuid}/route", sync_to_thread=True, status_code=202, summary="Place a task by hand")
    def route(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, data: RouteIn,
              db_session: Session) -> TaskOut:
        task = services.route_by_hand(db_session, request.user, task_id, data.category, data.reason)
        return task_out(db_session, task, request.user)

    @post("/tasks/{task_id:uuid}/transition", sync_to_thread=True, status_code=200,
          summary="Override a task's status (recorded with the reason)")
    def override(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, data: OverrideIn,
                 db_session: Session) -> TaskOut:
        task = services.override(db_session, request.user, task_id, data.to, data.reason)
        return task_out(db_session, task, request.user)
