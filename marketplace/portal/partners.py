"""Portal page for partners: their referral link, the funnel of the customers they referred and a chart of
those customers' tasks by status over time. Counts, categories and pseudonyms only: no task text, no names,
no contact data."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db.models import Category, Role
from marketplace.domain.partners import services as partners
from marketplace.portal.charts import stacked_weekly_bars
from marketplace.portal.web import Pager, Viewer, render, require
from marketplace.settings import Settings


class PartnerPages(Controller):
    path = "/referrals"

    @get("/", sync_to_thread=True)
    def referrals(self, request: Request[Any, Any, Any], viewer: Viewer | None, db_session: Session,
                  settings: Settings, page: int = 1) -> Response[Any]:
        me = require(request, viewer, Role.PARTNER)
        pager = Pager(page, 20)
        result = partners.referrals(db_session, settings.secret_key, me.account_id, pager.size, pager.offset)
        weeks = partners.tasks_by_week(db_session, me.account_id)
        groups = [(key, label) for key, label, _ in partners.STATUS_GROUPS]
        chart = stacked_weekly_bars(
            weeks, groups, "Tasks of the customers you referred, by week posted",
            "Stacked bars, one per week for the last 12 weeks; each bar is split by where those tasks are now.")
        link = f"{request.base_url}signup?ref={result.referral_code}"
        return render(request, "partner/referrals.html", viewer, code=result.referral_code, link=link,
                      funnel=partners.funnel(db_session, me.account_id), chart=chart, weeks=weeks, groups=groups,
                      customers=result.customers, pager=pager.counted(result.total),
                      names=dict(db_session.execute(select(Category.slug, Category.name)).all()))
