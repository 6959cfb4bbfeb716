"""Portal pages for providers: the profile the matcher ranks on, the offers inbox with each AI draft as an
editable proposal, accept or decline with a reason, and the work in hand."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from litestar import Controller, Request, Response, get, post
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db.models import Draft, OfferStatus, Role
from marketplace.domain.categories.services import list_categories
from marketplace.domain.offers import services as offers
from marketplace.domain.offers.services import DECLINE_CODES
from marketplace.domain.providers import services as providers
from marketplace.domain.providers.schemas import ProviderProfileIn
from marketplace.domain.tasks import services as tasks
from marketplace.errors import DomainError
from marketplace.portal.customers import CURRENCIES
from marketplace.portal.web import Form, FormData, Pager, Viewer, redirect, render, require
from marketplace.settings import Settings

DECLINE_LABELS = {
    "too_busy": "I am too busy right now",
    "budget_too_low": "The budget is too low for this work",
    "deadline_too_short": "The deadline is too short",
    "wrong_category": "This task is not in my line of work (wrong category)",
    "other": "Another reason",
}
OFFER_TABS = (("open", "Waiting for you"), ("accepted", "Accepted"), ("declined", "Declined"),
              ("expired", "Expired"), ("withdrawn", "Taken by others or cancelled"))

# The matcher's score components (routing.matcher.WEIGHTS), as a provider reads them on an offer.
WHY_LABELS = (("semantic", "How well your profile fits the request"), ("category", "Your categories"),
              ("availability", "Your free capacity"), ("price", "Your rate against the budget"),
              ("rating", "Your customer ratings"), ("fairness", "Fair share (fewer recent offers score higher)"))


def _currency_options(current: str | None) -> list[tuple[str, str]]:
    """The portal's currencies, plus the one the profile has if the API set another; "—" when it has none
    (a profile from before currencies were recorded: the provider chooses, nothing is assumed)."""
    codes = list(CURRENCIES) + ([current.upper()] if current and current.upper() not in CURRENCIES else [])
    return [("", "—")] + [(c, c) for c in codes]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


class ProviderPages(Controller):
    path = "/"

    @get("/profile", sync_to_thread=True)
    def profile_page(self, request: Request[Any, Any, Any], viewer: Viewer | None,
                     db_session: Session) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        p = providers.get_profile(db_session, me.account_id)
        form = Form({"headline": p.headline, "description": p.description, "skills": ", ".join(p.skills),
                     "categories": list(p.categories), "languages": ", ".join(p.languages),
                     "hourly_rate": "" if p.hourly_rate is None else str(p.hourly_rate),
                     "rate_currency": p.rate_currency or "",
                     "capacity": str(p.capacity), "accepting_work": "on" if p.accepting_work else ""})
        return render(request, "provider/profile.html", viewer, form=form, categories=list_categories(db_session),
                      currencies=_currency_options(p.rate_currency))

    @post("/profile", sync_to_thread=True)
    def save_profile(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None,
                     db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        form = Form(data)
        rate = None
        if form.get("hourly_rate"):
            try:
                rate = Decimal(form.get("hourly_rate").replace(",", ""))
            except InvalidOperation:
                form.add("hourly_rate", "Write the rate as a number, for example 45")
        currency = form.get("rate_currency").upper()
        if rate is not None and not currency:
            form.add("rate_currency", "Choose the currency of your rate")
        elif currency and not (len(currency) == 3 and currency.isalpha() and currency.isascii()):
            form.add("rate_currency", f"Choose one of {', '.join(CURRENCIES)}")
        try:
            capacity = int(form.get("capacity") or 0)
            if not 0 <= capacity <= 20:
                raise ValueError
        except ValueError:
            form.add("capacity", "Capacity is a whole number from 0 to 20")
            capacity = 0
        if not form.get("headline"):
            form.add("headline", "Headline is required")
        skills, languages = _split(form.get("skills")), [s.lower() for s in _split(form.get("languages"))]
        if len(skills) > 30 or any(len(s) > 60 for s in skills):
            form.add("skills", "Up to 30 skills of at most 60 characters each")
        if len(form.getall("categories")) > 5:
            form.add("categories", "Choose at most 5 categories")
        if any(not (2 <= len(code) <= 3 and code.isalpha() and code.isascii()) for code in languages):
            form.add("languages", "Use two- or three-letter language codes, for example en, de, pt")
        if not form:
            try:
                providers.update_profile(db_session, me.account_id, ProviderProfileIn(
                    headline=form.get("headline")[:120], description=form.get("description")[:4000], skills=skills,
                    categories=form.getall("categories"), languages=languages, capacity=capacity,
                    accepting_work=form.get("accepting_work") == "on", hourly_rate=rate,
                    rate_currency=currency if rate is not None else None))
            except DomainError as exc:
                form.absorb(exc)
            else:
                return redirect("/profile", settings, "Profile saved. New offers are matched on it from now on.")
        form.message = form.message or "Please correct the fields below."
        return render(request, "provider/profile.html", viewer, status=422, form=form,
                      categories=list_categories(db_session), currencies=_currency_options(form.get("rate_currency")))

    @get("/offers", sync_to_thread=True)
    def inbox(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
              status: str = "open", page: int = 1) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        tab = OfferStatus(status) if status in {s.value for s in OfferStatus} else OfferStatus.OPEN
        pager = Pager(page, 10)
        result = offers.list_offers(db_session, me.principal, tab, pager.size, pager.offset)
        drafts = {str(d.offer_id): d for d in db_session.scalars(select(Draft).where(
            Draft.offer_id.in_([uuid.UUID(o.id) for o in result.items])))} if tab is OfferStatus.OPEN else {}
        profile = providers.get_profile(db_session, me.account_id)
        categories = list_categories(db_session)
        return render(request, "provider/offers.html", viewer, offers=result.items, tab=tab.value, tabs=OFFER_TABS,
                      drafts=drafts, pager=pager.counted(result.total),
                      decline_codes=[(c, DECLINE_LABELS[c]) for c in DECLINE_CODES], categories=categories,
                      names={c.slug: c.name for c in categories}, profile=profile, why_labels=WHY_LABELS)

    @post("/offers/{offer_id:uuid}/accept", sync_to_thread=True)
    def accept(self, request: Request[Any, Any, Any], offer_id: uuid.UUID, data: FormData, viewer: Viewer | None,
               db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        form = Form(data)
        offer = offers.accept(db_session, me.principal, offer_id, form.get("proposal"),
                              from_draft=form.get("from_draft") == "1")
        return redirect(f"/work#task-{offer.task_id}", settings,
                        "Accepted: the task is yours, and the customer can read your proposal.")

    @post("/offers/{offer_id:uuid}/decline", sync_to_thread=True)
    def decline(self, request: Request[Any, Any, Any], offer_id: uuid.UUID, data: FormData, viewer: Viewer | None,
                db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        form = Form(data)
        code = form.get("code") or "other"
        suggested = form.get("suggested_category") or None
        offers.decline(db_session, settings, me.principal, offer_id, form.get("reason")[:2000], code,
                       suggested if code == "wrong_category" else None)
        return redirect("/offers", settings, "Declined. Thank you for saying why: it improves routing.")

    @get("/work", sync_to_thread=True)
    def work(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
             page: int = 1) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        pager = Pager(page, 20)
        result = tasks.list_tasks(db_session, me.principal, None, pager.size, pager.offset)
        return render(request, "provider/work.html", viewer, tasks=result.items,
                      pager=pager.counted(result.total))

    @post("/work/{task_id:uuid}/start", sync_to_thread=True)
    def start(self, request: Request[Any, Any, Any], task_id: uuid.UUID, viewer: Viewer | None,
              db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        tasks.start(db_session, me.principal, task_id)
        return redirect("/work", settings, "Work started: the customer can see it.")

    @post("/work/{task_id:uuid}/deliver", sync_to_thread=True)
    def deliver(self, request: Request[Any, Any, Any], task_id: uuid.UUID, data: FormData, viewer: Viewer | None,
                db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PROVIDER)
        tasks.deliver(db_session, me.principal, task_id, Form(data).get("note")[:2000])
        return redirect("/work", settings, "Delivered: the customer will accept it or ask for changes.")

