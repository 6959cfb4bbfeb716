"""Partners see who they referred through stable pseudonyms, and only the status and category of their tasks."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.db.models import Category, PartnerProfile, Referral, Task
from marketplace.domain.partners.schemas import ReferralsOut, ReferredCustomer, ReferredTask
from marketplace.errors import NotFound
from marketplace.security import keyed_hash


def customer_ref(secret: str, partner_id: uuid.UUID, customer_id: uuid.UUID) -> str:
    """Stable for one partner, unlinkable across partners, and not reversible to an account id."""
    return "C-" + keyed_hash(secret, "referral", str(partner_id), str(customer_id), length=12).upper()


def referrals(session: Session, secret: str, partner_id: uuid.UUID, limit: int, offset: int) -> ReferralsOut:
    profile = session.get(PartnerProfile, partner_id)
    if profile is None:
        raise NotFound("Partner profile not found.")
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
