"""Portal pages for customers: post a task (with category suggestions as they type), follow their tasks, and
act on them (cancel, accept the delivery or ask for changes, rate). Staff and assigned providers see the
same task page with their own actions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from litestar import Controller, Request, Response, get, post
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db.models import Account, Category, Role, TaskStatus
from marketplace.domain.categories.services import list_categories
from marketplace.domain.routing.suggest import suggest_categories
from marketplace.domain.tasks import services as tasks
from marketplace.domain.tasks.schemas import Money, TaskIn
from marketplace.errors import DomainError
from marketplace.portal.web import (
    Form,
    FormData,
    Pager,
    Viewer,
    is_htmx,
    redirect,
    render,
    require,
    safe_next,
)
from marketplace.settings import Settings

CURRENCIES = ("EUR", "USD", "GBP")
CANCELLABLE = {TaskStatus.SUBMITTED, TaskStatus.ROUTING, TaskStatus.ROUTED, TaskStatus.NEEDS_REVIEW,
               TaskStatus.ASSIGNED}


class CustomerPages(Controller):
    path = "/tasks"

    @get("/", sync_to_thread=True)
    def my_tasks(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
                 page: int = 1) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        pager = Pager(page, 20)
        result = tasks.list_tasks(db_session, me.principal, None, pager.size, pager.offset)
        names = dict(db_session.execute(select(Category.slug, Category.name)).all())
        return render(request, "customer/tasks.html", viewer, tasks=result.items, names=names,
                      pager=pager.counted(result.total))

    @get("/new", sync_to_thread=True)
    def new_task_page(self, request: Request[Any, Any, Any], viewer: Viewer | None,
                      db_session: Session) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        objects = _objects(db_session, me)
        return render(request, "customer/new_task.html", viewer, form=Form({"currency": "EUR"}),
                      currencies=CURRENCIES, objects=objects, categories=_category_options(db_session, objects))

    @post("/new", sync_to_thread=True)
    def post_task(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None,
                  db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        form = Form(data)
        objects = _objects(db_session, me)
        if objects and not form.get("category"):
            form.add("category", "Choose the category that fits best: our staff place your task by hand")
        task_in = _task_in(form)
        if task_in is not None:
            try:
                task = tasks.create_task(db_session, me.account_id, task_in)
            except DomainError as exc:
                form.absorb(exc, {"budget.amount": "budget"})
            else:
                return redirect(f"/tasks/{task.id}", settings,
                                "Your task is posted. We are finding the right providers now.")
        return render(request, "customer/new_task.html", viewer, status=422, form=form, currencies=CURRENCIES,
                      objects=objects, categories=_category_options(db_session, objects))

    @post("/suggest", sync_to_thread=True, opt={"readonly": True})
    def suggest(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None,
                db_session: Session, settings: Settings) -> Response[Any]:
        """The category preview while a customer types (HTMX): the live router, nothing stored."""
        me = require(request, viewer, Role.CUSTOMER)
        form = Form(data)
        if _objects(db_session, me):
            return render(request, "customer/_suggestions.html", viewer, objects=True, suggestion=None)
        text = f"{form.get('title')}. {form.get('description')}".strip(" .")
        suggestion = None
        if len(text) >= 12:
            suggestion = suggest_categories(db_session, settings, form.get("title"), form.get("description"))
        return render(request, "customer/_suggestions.html", viewer, objects=False, suggestion=suggestion)

    @get("/{task_id:uuid}", sync_to_thread=True)
    def task_page(self, request: Request[Any, Any, Any], task_id: uuid.UUID, viewer: Viewer | None,
                  db_session: Session) -> Response[Any]:
        me = require(request, viewer)
        task = tasks.get_visible_task(db_session, me.principal, task_id)
        out = tasks.task_out(db_session, task, me.principal)
        partial = is_htmx(request)  # the status poll: the status section, and the timeline out of band
        template = "customer/_task_status.html" if partial else "customer/task.html"
        return render(request, template, viewer, task=out, cancellable=TaskStatus(out.status) in CANCELLABLE,
                      oob=partial,
                      statuses=[s.value for s in TaskStatus],
                      categories=list_categories(db_session) if me.role is Role.STAFF else [],
                      pending=out.status in ("submitted", "routing"))

    @post("/{task_id:uuid}/cancel", sync_to_thread=True)
    def cancel(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData, viewer: Viewer | None,
               db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER, Role.STAFF)
        tasks.cancel(db_session, me.principal, task_id, Form(data).get("reason")[:2000])
        return redirect(f"/tasks/{task_id}", settings, "The task is cancelled; open offers were withdrawn.")

    @post("/{task_id:uuid}/complete", sync_to_thread=True)
    def complete(self, request: Request[Any, Any, Any], task_id: uuid.UUID, viewer: Viewer | None,
                 db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        tasks.complete(db_session, me.principal, task_id)
        return redirect(f"/tasks/{task_id}", settings, "Thank you: the task is complete. How did it go?")

    @post("/{task_id:uuid}/request-changes", sync_to_thread=True)
    def request_changes(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData,
                        viewer: Viewer | None, db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        tasks.request_changes(db_session, me.principal, task_id, Form(data).get("reason")[:2000])
        return redirect(f"/tasks/{task_id}", settings, "Sent back to the provider with your notes.")

    @post("/{task_id:uuid}/messages", sync_to_thread=True)
    def message(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData, viewer: Viewer | None,
                db_session: Session, settings: Settings) -> Response[Any]:
        """A customer's reply to Relay's staff, or staff writing to the customer (from the review queue, often
        starting from the drafted clarifying question)."""
        me = require(request, viewer, Role.CUSTOMER, Role.STAFF)
        form = Form(data)
        tasks.send_message(db_session, me.principal, task_id, form.get("body"), form.get("from_draft") == "1")
        if me.role is Role.STAFF:
            return redirect(safe_next(form.get("next"), f"/tasks/{task_id}"), settings,
                            "Sent to the customer. Their reply appears here and on the task page.")
        return redirect(f"/tasks/{task_id}#messages", settings, "Sent. Our staff will place your task.")

    @post("/{task_id:uuid}/rate", sync_to_thread=True)
    def rate(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData, viewer: Viewer | None,
             db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.CUSTOMER)
        form = Form(data)
        try:
            stars = int(form.get("stars"))
        except ValueError:
            stars = 0
        tasks.rate(db_session, me.principal, task_id, stars, form.get("comment")[:2000])
        return redirect(f"/tasks/{task_id}", settings, "Thank you for rating.")


def _objects(session: Session, viewer: Viewer) -> bool:
    """The customer objected to AI processing: no suggestions, and staff place their tasks."""
    return bool(session.scalar(select(Account.ai_processing_objection).where(Account.id == viewer.account_id)))


def _category_options(session: Session, objects: bool) -> list[tuple[str, str]]:
    """The categories a customer who objects to AI processing chooses from (others get suggestions)."""
    return [(c.slug, c.name) for c in list_categories(session)] if objects else []


def _task_in(form: Form) -> TaskIn | None:
    """The form as the API's TaskIn, or None with the form's errors set."""
    title, description = form.get("title"), form.get("description")
    if len(title) < 3:
        form.add("title", "Give the task a title of at least 3 characters")
    elif len(title) > 200:
        form.add("title", "Keep the title under 200 characters")
    if len(description) < 10:
        form.add("description", "Describe the task in at least 10 characters")
    elif len(description) > 10_000:
        form.add("description", "Keep the description under 10,000 characters")
    budget = None
    if form.get("budget"):
        currency = form.get("currency", "EUR").upper()
        try:
            amount = Decimal(form.get("budget").replace(",", ""))
        except InvalidOperation:
            form.add("budget", "Write the budget as a number, for example 250 or 99.50")
        else:
            if currency not in CURRENCIES:
                form.add("currency", f"Choose one of {', '.join(CURRENCIES)}")
            else:
                budget = Money(amount, currency)
    deadline = None
    if form.get("deadline"):
        try:
            deadline = datetime.fromisoformat(form.get("deadline")).replace(hour=17, tzinfo=UTC)
        except ValueError:
            form.add("deadline", "Pick a date")
    if form:
        form.message = "Please correct the fields below."
        return None
    return TaskIn(title=title, description=description, budget=budget, deadline=deadline,
                  category=form.get("category") or None)
