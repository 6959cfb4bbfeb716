"""Portal page for partners: the categories they assist with, their referral link, the funnel of the customers they referred and a chart of
those customers' tasks by status over time. Counts, categories and pseudonyms only: no task text, no names,
no contact data."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db.models import Category, Role
from marketplace.domain.categories.services import list_categories
from marketplace.domain.partners import services as partners
from marketplace.domain.partners.schemas import PartnerProfileIn
from marketplace.errors import DomainError
from marketplace.portal.charts import stacked_weekly_bars
from marketplace.portal.web import Form, FormData, Pager, Viewer, redirect, render, require
from marketplace.settings import Settings


class PartnerPages(Controller):
    path = "/referrals"

    @get("/", sync_to_thread=True)
    def referrals(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
                  settings: Settings, page: int = 1) -> Response[Any]:
        me = require(request, viewer, Role.PARTNER)
        form = Form({"expertise": partners.profile_out(db_session, me.account_id).expertise})
        return _page(request, viewer, db_session, settings, me.account_id, page, form)

    @post("/expertise", sync_to_thread=True)
    def save_expertise(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None,
                       db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer, Role.PARTNER)
        form = Form(data)
        chosen = form.getall("expertise")
        if len(chosen) > 10:
            form.add("expertise", "Choose at most 10 categories")
        if not form:
            try:
                partners.update_expertise(db_session, me.account_id, PartnerProfileIn(expertise=chosen))
            except DomainError as exc:
                form.absorb(exc)
            else:
                return redirect("/referrals", settings,
                                "Saved. Staff see you as a possible assisting partner on tasks in these categories.")
        form.message = form.message or "Please correct the fields below."
        return _page(request, viewer, db_session, settings, me.account_id, 1, form, status=422)


def _page(request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session, settings: Settings,
          partner_id: uuid.UUID, page: int, form: Form, status: int = 200) -> Response[Any]:
    pager = Pager(page, 20)
    result = partners.referrals(db_session, settings.secret_key, partner_id, pager.size, pager.offset)
    weeks = partners.tasks_by_week(db_session, partner_id)
    groups = [(key, label) for key, label, _ in partners.STATUS_GROUPS]
    chart = stacked_weekly_bars(
        weeks, groups, "Tasks of the customers you referred, by week posted",
        "Stacked bars, one per week for the last 12 weeks; each bar is split by where those tasks are now.")
    link = f"{request.base_url}signup?ref={result.referral_code}"
    return render(request, "partner/referrals.html", viewer, status=status, code=result.referral_code, link=link,
                  funnel=partners.funnel(db_session, partner_id), chart=chart, weeks=weeks, groups=groups,
                  customers=result.customers, pager=pager.counted(result.total),
                  names=dict(db_session.execute(select(Category.slug, Category.name)).all()),
                  form=form, categories=list_categories(db_session))
