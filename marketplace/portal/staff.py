"""Portal pages for staff: the needs-review queue with the router's candidate categories and one-click
routing, and status overrides with a recorded reason (on the task page)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from sqlalchemy.orm import Session

from marketplace.db.models import Role
from marketplace.domain.categories.services import list_categories
from marketplace.domain.staff import services as staff
from marketplace.errors import InvalidInput
from marketplace.portal.web import Form, FormData, Pager, Viewer, redirect, render, require
from marketplace.settings import Settings


class StaffPages(Controller):
    path = "/"

    @get("/review", sync_to_thread=True)
    def review(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
               page: int = 1) -> Response[Any]:
        require(request, viewer, Role.STAFF)
        pager = Pager(page, 10)
        queue = staff.review_queue(db_session, pager.size, pager.offset)
        return render(request, "staff/review.html", viewer, items=queue.items,
                      pager=pager.counted(queue.total), categories=list_categories(db_session))

    @post("/review/{task_id:uuid}/route", sync_to_thread=True)
    def route(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData, viewer: Viewer | None,
              db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.STAFF)
        form = Form(data)
        task = staff.route_by_hand(db_session, me.principal, task_id, form.get("category"),
                                   form.get("reason")[:2000])
        return redirect("/review", settings,
                        f"“{task.title}” is placed; providers are being ranked and offered it now.")

    @post("/tasks/{task_id:uuid}/transition", sync_to_thread=True)
    def override(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData,
                 viewer: Viewer | None, db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.STAFF)
        form = Form(data)
        reason = form.get("reason")
        if len(reason) < 3:
            raise InvalidInput("Say why you override the status (at least 3 characters).",
                               errors=[{"field": "reason", "message": "required"}])
        task = staff.override(db_session, me.principal, task_id, form.get("to"), reason[:2000])
        return redirect(f"/tasks/{task_id}", settings, f"Status set to {task.status.value.replace('_', ' ')}.")
