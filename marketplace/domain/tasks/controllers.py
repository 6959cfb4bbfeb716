"""HTTP: customers post and follow tasks; assigned providers move them through delivery."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import Role, TaskStatus
from marketplace.domain.tasks import services
from marketplace.domain.tasks.schemas import (
    CreatedOut,
    MessageIn,
    Page,
    RatingIn,
    RatingOut,
    ReasonIn,
    TaskIn,
    TaskOut,
)

Limit = Annotated[int, Parameter(ge=1, le=100)]
Offset = Annotated[int, Parameter(ge=0)]


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]

    @post("/", sync_to_thread=True, guards=[require_role(Role.CUSTOMER)], summary="Post a task")
    def create(self, request: Request[Principal, Any, Any], data: TaskIn, db_session: Session) -> CreatedOut:
        task = services.create_task(db_session, request.user.account_id, data)
        return CreatedOut(str(task.id), task.status.value)

    @get("/", sync_to_thread=True, summary="My tasks (customers: posted; providers: assigned)")
    def list_all(self, request: Request[Principal, Any, Any], db_session: Session, status: TaskStatus | None = None,
             limit: Limit = 20, offset: Offset = 0) -> Page:
        return services.list_tasks(db_session, request.user, status, limit, offset)

    @get("/{task_id:uuid}", sync_to_thread=True, summary="One task with its routing and history")
    def get_one(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, db_session: Session) -> TaskOut:
        task = services.get_visible_task(db_session, request.user, task_id)
        return services.task_out(db_session, task, request.user)

    @post("/{task_id:uuid}/cancel", sync_to_thread=True, status_code=200,
          guards=[require_role(Role.CUSTOMER, Role.STAFF)], summary="Cancel a task")
    def cancel(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, db_session: Session,
               data: ReasonIn | None = None) -> TaskOut:
        task = services.cancel(db_session, request.user, task_id, data.reason if data else "")
        return services.task_out(db_session, task, request.user)

    @post("/{task_id:uuid}/start", sync_to_thread=True, status_code=200,
          guards=[require_role(Role.PROVIDER)], summary="Start work on an assigned task")
    def start(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, db_session: Session) -> TaskOut:
        return services.task_out(db_session, services.start(db_session, request.user, task_id), request.user)

    @post("/{task_id:uuid}/deliver", sync_to_thread=True, status_code=200,
          guards=[require_role(Role.PROVIDER)], summary="Deliver the work")
    def deliver(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, db_session: Session,
                data: ReasonIn | None = None) -> TaskOut:
        task = services.deliver(db_session, request.user, task_id, data.reason if data else "")
        return services.task_out(db_session, task, request.user)

    @post("/{task_id:uuid}/complete", sync_to_thread=True, status_code=200,
          guards=[require_role(Role.CUSTOMER)], summary="Accept the delivery")
    def complete(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, db_session: Session) -> TaskOut:
        return services.task_out(db_session, services.complete(db_session, request.user, task_id), request.user)

    @post("/{task_id:uuid}/request-changes", sync_to_thread=True, status_code=200,
          guards=[require_role(Role.CUSTOMER)], summary="Send the delivery back with what should change")
    def request_changes(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, data: ReasonIn,
                        db_session: Session) -> TaskOut:
        task = services.request_changes(db_session, request.user, task_id, data.reason)
        return services.task_out(db_session, task, request.user)

    @post("/{task_id:uuid}/messages", sync_to_thread=True, status_code=201,
          guards=[require_role(Role.CUSTOMER, Role.STAFF)],
          summary="Write to the other side of a task (customer ⇄ Relay staff)")
    def message(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, data: MessageIn,
                db_session: Session) -> TaskOut:
        services.send_message(db_session, request.user, task_id, data.body, data.from_draft)
        return services.task_out(db_session, services.get_visible_task(db_session, request.user, task_id),
                                 request.user)

    @post("/{task_id:uuid}/rating", sync_to_thread=True, status_code=201,
          guards=[require_role(Role.CUSTOMER)], summary="Rate the provider who completed this task (once)")
    def rate(self, request: Request[Principal, Any, Any], task_id: uuid.UUID, data: RatingIn,
             db_session: Session) -> RatingOut:
        rating = services.rate(db_session, request.user, task_id, data.stars, data.comment)
        return RatingOut(str(rating.task_id), str(rating.provider_id), rating.stars, rating.comment,
                         rating.created_at)

