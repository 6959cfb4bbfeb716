"""Partners see who they referred through stable pseudonyms, and only the status and category of their tasks."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import (
    Account,
    Category,
    PartnerProfile,
    Referral,
    Task,
    TaskStatus,
    TaskTransition,
)
from marketplace.domain.categories.services import require_active
from marketplace.domain.partners.schemas import (
    PartnerProfileIn,
    PartnerProfileOut,
    ReferralsOut,
    ReferredCustomer,
    ReferredTask,
)
from marketplace.errors import NotFound
from marketplace.security import keyed_hash


def customer_ref(secret: str, partner_id: uuid.UUID, customer_id: uuid.UUID) -> str:
    """Stable for one partner, unlinkable across partners, and not reversible to an account id."""
    return "C-" + keyed_hash(secret, "referral", str(partner_id), str(customer_id), length=12).upper()


def _profile(session: Session, partner_id: uuid.UUID) -> PartnerProfile:
    profile = session.get(PartnerProfile, partner_id)
    if profile is None:
        raise NotFound("Partner profile not found.")
    return profile


def profile_out(session: Session, partner_id: uuid.UUID) -> PartnerProfileOut:
    profile = _profile(session, partner_id)
    return PartnerProfileOut(profile.referral_code, list(profile.expertise or []))


def update_expertise(session: Session, partner_id: uuid.UUID, data: PartnerProfileIn) -> PartnerProfileOut:
    """Replace the categories the partner assists with (active category slugs, each once, in the given order)."""
    profile = _profile(session, partner_id)
    slugs = list(dict.fromkeys(s.strip() for s in data.expertise if s.strip()))
    require_active(session, slugs, "expertise")
    profile.expertise = slugs
    session.flush()
    return profile_out(session, partner_id)


def partners_mark(session: Session) -> tuple[object, ...]:
    """What moves whenever :func:`active_partners` would give something new, for much less than every partner's
    row: the number of partner profiles (a count over the narrowest index, ~1 ms at 20,000 on SQLite) and the
    newest change to one (one index lookup): expertise saved, a partner joining, an erased partner's profile
    deleted. A partner account closed moves neither: routing looks up the accounts of the partners it suggests
    (marketplace.domain.routing.services). An edit committed after a later-stamped one shows after
    PARTNERS_AGE (routing.engine) at most."""
    return tuple(session.execute(select(
        select(func.count()).select_from(PartnerProfile).scalar_subquery(),
        select(func.max(PartnerProfile.updated_at)).scalar_subquery(),
    )).one())


def active_partners(session: Session) -> list[tuple[uuid.UUID, list[str]]]:
    """Every partner whose account is open, with the categories they assist with (plain rows: there can be
    tens of thousands; the routing engine reads them again only when :func:`partners_mark` moves)."""
    return [(pid, list(expertise or [])) for pid, expertise in session.execute(
        select(PartnerProfile.account_id, PartnerProfile.expertise)
        .join(Account, Account.id == PartnerProfile.account_id).where(Account.is_active.is_(True)))]


def referrals(session: Session, secret: str, partner_id: uuid.UUID, limit: int, offset: int) -> ReferralsOut:
    profile = _profile(session, partner_id)
    base = select(Referral).where(Referral.partner_id == partner_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(Referral.created_at.desc(), Referral.id).limit(limit).offset(offset)).all()
    slugs = dict(session.execute(select(Category.id, Category.slug)).all())
    tasks: dict[uuid.UUID, list[ReferredTask]] = defaultdict(list)
    if rows:
        for customer_id, status, category_id, created_at in session.execute(
            select(Task.customer_id, Task.status, Task.category_id, Task.created_at)
            .where(Task.customer_id.in_([r.customer_id for r in rows])).order_by(Task.created_at)
        ):
            tasks[customer_id].append(ReferredTask(status.value, slugs.get(category_id), created_at))
    customers = [
        ReferredCustomer(customer_ref(secret, partner_id, r.customer_id), r.created_at, tasks[r.customer_id])
        for r in rows
    ]
    return ReferralsOut(profile.referral_code, customers, total, limit, offset)


@dataclass(frozen=True, slots=True)
class FunnelStage:
    key: str
    label: str
    customers: int  # referred customers who reached this stage
    tasks: int  # their tasks that reached it


STATUS_GROUPS = (  # how a partner's chart groups task statuses
    ("waiting", "Waiting to be placed", (TaskStatus.SUBMITTED, TaskStatus.ROUTING, TaskStatus.NEEDS_REVIEW)),
    ("routed", "Offered to providers", (TaskStatus.ROUTED,)),
    ("in_progress", "In progress", (TaskStatus.ASSIGNED, TaskStatus.IN_PROGRESS, TaskStatus.DELIVERED)),
    ("completed", "Completed", (TaskStatus.COMPLETED,)),
    ("cancelled", "Cancelled", (TaskStatus.CANCELLED,)),
)


def funnel(session: Session, partner_id: uuid.UUID) -> list[FunnelStage]:
    """Referred → posted → routed → completed, counted in customers and in tasks. Counts only: no task text,
    no contact data."""
    referred = select(Referral.customer_id).where(Referral.partner_id == partner_id)
    tasks = select(Task.id, Task.customer_id, Task.status).where(Task.customer_id.in_(referred))
    rows = session.execute(tasks).all()
    routed = set(session.scalars(
        select(TaskTransition.task_id).where(TaskTransition.task_id.in_([r.id for r in rows]),
                                             TaskTransition.to_status == TaskStatus.ROUTED)
    )) if rows else set()
    n_referred = session.scalar(select(func.count()).select_from(referred.subquery())) or 0

    def stage(key: str, label: str, keep: Any) -> FunnelStage:
        kept = [r for r in rows if keep(r)]
        return FunnelStage(key, label, len({r.customer_id for r in kept}), len(kept))

    return [
        FunnelStage("referred", "Signed up with your link", n_referred, 0),
        stage("posted", "Posted a task", lambda r: True),
        stage("routed", "Matched with providers", lambda r: r.id in routed),
        stage("completed", "Completed a task", lambda r: r.status is TaskStatus.COMPLETED),
    ]


def tasks_by_week(session: Session, partner_id: uuid.UUID, weeks: int = 12,
                  today: date | None = None) -> list[tuple[date, dict[str, int]]]:
    """Tasks of referred customers by the week they were posted (Monday first) and their current status
    group, for the last ``weeks`` weeks including this one."""
    today = today or now().date()
    first = today - timedelta(days=today.weekday(), weeks=weeks - 1)
    counts: dict[date, dict[str, int]] = {first + timedelta(weeks=k): {g: 0 for g, _, _ in STATUS_GROUPS}
                                          for k in range(weeks)}
    group_of = {status: key for key, _, statuses in STATUS_GROUPS for status in statuses}
    start = datetime.combine(first, time.min, tzinfo=UTC)
    for created_at, status in session.execute(
        select(Task.created_at, Task.status).where(
            Task.customer_id.in_(select(Referral.customer_id).where(Referral.partner_id == partner_id)),
            Task.created_at >= start)
    ):
        day = created_at.astimezone(UTC).date()
        week = day - timedelta(days=day.weekday())
        if week in counts:
            counts[week][group_of[status]] += 1
    return sorted(counts.items())
