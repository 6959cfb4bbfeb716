"""Offers: made to the top-ranked providers, first accept wins, declines and expiries re-offer."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from marketplace import jobs
from marketplace.auth import Principal
from marketplace.clock import now
from marketplace.db.models import (
    Account,
    Category,
    Draft,
    Offer,
    OfferStatus,
    ProviderProfile,
    Role,
    Task,
    TaskStatus,
)
from marketplace.db.sql import for_change
from marketplace.domain.accounts.services import active_accounts
from marketplace.domain.categories.services import get_by_slug
from marketplace.domain.offers.schemas import OfferOut, OfferPage
from marketplace.domain.tasks.lifecycle import SYSTEM, transition
from marketplace.domain.tasks.services import latest_decision, withdraw_open_offers
from marketplace.errors import Conflict, InvalidInput, NotFound
from marketplace.settings import Settings
from models.drafter import was_edited
from routing.matcher import WEIGHTS

# Delivered work counts until the customer accepts it: they may still send it back for changes.
ACTIVE_WORK = (TaskStatus.ASSIGNED, TaskStatus.IN_PROGRESS, TaskStatus.DELIVERED)


def active_work(session: Session, provider_id: uuid.UUID) -> int:
    return session.scalar(
        select(func.count()).select_from(Task)
        .where(Task.assigned_provider_id == provider_id, Task.status.in_(ACTIVE_WORK))
    ) or 0


def provider_loads(session: Session, provider_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, int]:
    """Tasks in hand plus open offers, per provider: what counts against capacity."""
    loads: dict[uuid.UUID, int] = defaultdict(int)
    work = select(Task.assigned_provider_id, func.count()).where(Task.status.in_(ACTIVE_WORK))
    offers = select(Offer.provider_id, func.count()).where(Offer.status == OfferStatus.OPEN)
    if provider_ids is not None:
        work = work.where(Task.assigned_provider_id.in_(provider_ids))
        offers = offers.where(Offer.provider_id.in_(provider_ids))
    for pid, n in session.execute(work.group_by(Task.assigned_provider_id)):
        loads[pid] += n
    for pid, n in session.execute(offers.group_by(Offer.provider_id)):
        loads[pid] += n
    return loads


def make_offers(session: Session, settings: Settings, task: Task, candidates: list[dict[str, Any]],
                wanted: int, not_before: datetime | None = None, categories: set[str] | None = None) -> int:
    """Offer the task to the next ``wanted`` candidates who can still take it: their account is active, they
    accept work, have spare capacity and (with ``categories``, the task's) still declare one of those
    categories; a profile may have changed since the candidates were ranked. Returns offers made.
    ``not_before``: the offers are dated no earlier (the decision they come from, dated by another host's clock).

    The caller holds the task's lock. Candidates' profiles are locked in id order (every path locks the
    task first, then providers by id), so two tasks cannot both take a provider's last free slot and
    concurrent routings cannot deadlock.
    """
    if wanted <= 0:
        return 0
    already = set(session.scalars(select(Offer.provider_id).where(Offer.task_id == task.id)))
    ordered = [uuid.UUID(c["provider_id"]) for c in candidates]
    ordered = [pid for pid in ordered if pid not in already and pid != task.customer_id]
    if not ordered:
        return 0
    profiles = {
        p.account_id: p for p in session.scalars(for_change(
            select(ProviderProfile).where(ProviderProfile.account_id.in_(ordered))
            .order_by(ProviderProfile.account_id)
        ))
    }
    active = active_accounts(session, ordered)
    loads = provider_loads(session, ordered)
    ranked = {uuid.UUID(c["provider_id"]): c for c in candidates}
    picked: list[Pick] = []
    for provider_id in ordered:
        if len(picked) >= wanted:
            break
        profile = profiles.get(provider_id)
        if profile is None or provider_id not in active or not profile.accepting_work \
                or loads.get(provider_id, 0) >= profile.capacity \
                or (categories is not None and not categories.intersection(profile.categories or ())):
            continue
        score, components = _as_now(ranked[provider_id], loads.get(provider_id, 0), profile.capacity)
        picked.append(Pick(task.id, provider_id, len(already) + len(picked) + 1, score, components))
    at = now()
    add_offers(session, settings, picked, max(at, not_before) if not_before is not None else at)
    return len(picked)


def _as_now(candidate: dict[str, Any], load: int, capacity: int) -> tuple[float, dict[str, float] | None]:
    """A stored candidate's score and components with its availability as it is now (it was ranked when the
    task was routed, perhaps full then, with room now)."""
    components = candidate.get("components")
    if not components or capacity <= 0:
        return candidate.get("score", 0.0), components
    components = {**components, "availability": round(max(1 - load / capacity, 0.0), 4)}
    return round(sum(w * components.get(k, 0.0) for k, w in WEIGHTS.items()), 4), components


class Pick(NamedTuple):
    """An offer about to be made: to whom, at which rank, with the ranking's score and its components."""

    task_id: uuid.UUID
    provider_id: uuid.UUID
    rank: int
    score: float
    components: dict[str, float] | None = None


def add_offers(session: Session, settings: Settings, picked: list[Pick],
               at: datetime | None = None) -> list[uuid.UUID]:
    """Open offers, one per :class:`Pick`, and the jobs that draft the providers'
    proposals for them: one INSERT per table however many there are (routing writes a batch's at once).
    ``at``: when they are made (routing gives its decisions' time)."""
    if not picked:
        return []
    at = at or now()
    expires = at + timedelta(hours=settings.offer_window_hours)
    ids = [uuid.uuid4() for _ in picked]
    session.execute(insert(Offer.__table__), [
        {"id": offer_id, "task_id": pick.task_id, "provider_id": pick.provider_id, "status": OfferStatus.OPEN,
         "rank": pick.rank, "score": pick.score, "components": pick.components, "created_at": at,
         "expires_at": expires}
        for offer_id, pick in zip(ids, picked, strict=True)
    ])
    jobs.enqueue_many(session, "draft_for_offer", [(offer_id,) for offer_id in ids])
    return ids


def overbooked(session: Session, planned: dict[uuid.UUID, int]) -> set[uuid.UUID]:
    """Lock the profiles of providers about to receive ``planned[p]`` new offers, in id order (the order every
    path locks them in), and return those who can no longer take them: stopped accepting work, their account
    was deactivated, or their load changed since it was read. Callers that chose providers from an unlocked snapshot check here."""
    if not planned:
        return set()
    ids = sorted(planned)
    P = ProviderProfile
    profiles = {  # plain columns: a routing batch checks dozens of providers, ORM objects cost more
        pid: (accepting, capacity) for pid, accepting, capacity in session.execute(for_change(
            select(P.account_id, P.accepting_work, P.capacity).where(P.account_id.in_(ids))
            .where(P.account_id.in_(select(Account.id).where(Account.is_active.is_(True))))
            .order_by(P.account_id)
        ))
    }
    loads = provider_loads(session, ids)
    return {
        pid for pid in ids
        if (profile := profiles.get(pid)) is None or not profile[0]
        or loads.get(pid, 0) + planned[pid] > profile[1]
    }


def open_offers(session: Session, task_id: uuid.UUID) -> int:
    return session.scalar(
        select(func.count()).select_from(Offer).where(Offer.task_id == task_id, Offer.status == OfferStatus.OPEN)
    ) or 0


DECLINE_CODES = ("wrong_category", "too_busy", "budget_too_low", "deadline_too_short", "other")
WRONG_CATEGORY_VOTES = 2  # one provider's view is not enough to override the router


NOBODY_LEFT = "every suitable provider declined or let the offer expire"


def refill(session: Session, settings: Settings, task: Task, wanted: int = 1) -> int:
    """Re-offer a routed task after declines or expiries, to the next of the candidates its routing stored.
    When they have run out and no offer is open, the routing worker ranks the providers again
    (``reoffer_task``: providers who joined or freed up since count too); with nobody left there, the task goes
    to staff review."""
    if task.status is not TaskStatus.ROUTED:
        return 0
    decision = latest_decision(session, task.id)
    made = make_offers(session, settings, task, decision.candidates if decision else [], wanted,
                       decision.created_at if decision else None,
                       {c["slug"] for c in decision.categories} or None if decision else None)
    if made == 0 and open_offers(session, task.id) == 0:
        if decision is not None and decision.categories:
            jobs.enqueue(session, "reoffer_task", task.id, wanted)
        else:
            transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM, reason=NOBODY_LEFT)
    return made


def _own_offer(session: Session, principal: Principal, offer_id: uuid.UUID) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None or offer.provider_id != principal.account_id:
        raise NotFound("Offer not found.")
    return offer


MAX_PROPOSAL = 5000


def accept(session: Session, principal: Principal, offer_id: uuid.UUID, proposal: str | None = None,
           from_draft: bool = False) -> Offer:
    """Accept an open offer (first accept wins), optionally with the proposal the customer will read.

    ``from_draft``: the provider started from the AI draft of this offer; whether they changed it is recorded
    by comparing with the draft, so the customer-facing record says what a person wrote and what they approved.
    """
    proposal = (proposal or "").strip() or None
    if proposal is not None and len(proposal) > MAX_PROPOSAL:
        raise InvalidInput(f"The proposal is longer than {MAX_PROPOSAL} characters.",
                           errors=[{"field": "proposal", "message": f"at most {MAX_PROPOSAL} characters"}])
    offer = _own_offer(session, principal, offer_id)
    # Lock order: task first, then offers. Concurrent accepts queue on the task row instead of deadlocking.
    task = session.scalar(for_change(select(Task).where(Task.id == offer.task_id)))
    session.refresh(offer)
    if offer.status is not OfferStatus.OPEN:
        raise Conflict(f"This offer is {offer.status.value}; it can no longer be accepted.")
    if offer.expires_at <= now():
        raise Conflict("This offer has expired.")
    taken = session.execute(
        update(Offer).where(Offer.id == offer.id, Offer.status == OfferStatus.OPEN, Offer.expires_at > now())
        .values(status=OfferStatus.ACCEPTED, responded_at=now()).execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        raise Conflict("This offer is no longer open.")
    if task.status is not TaskStatus.ROUTED:
        raise Conflict(f"The task is {task.status.value}; it is not waiting for a provider any more.")
    profile = session.scalar(for_change(select(ProviderProfile)
                                        .where(ProviderProfile.account_id == principal.account_id)))
    if profile is None or active_work(session, principal.account_id) >= profile.capacity:
        raise Conflict("You are at your capacity: finish a task or raise your capacity before accepting.")
    if proposal is not None:
        draft = session.scalar(select(Draft.text).where(Draft.offer_id == offer.id)) if from_draft else None
        session.execute(update(Offer).where(Offer.id == offer.id).values(
            proposal=proposal, proposal_from_draft=draft is not None,
            proposal_edited=None if draft is None else was_edited(draft, proposal),
        ).execution_options(synchronize_session=False))
    transition(session, task, TaskStatus.ASSIGNED, actor_id=principal.account_id,
               actor_role=Role.PROVIDER.value, reason="offer accepted")
    session.execute(update(Task).where(Task.id == task.id).values(assigned_provider_id=principal.account_id)
                    .execution_options(synchronize_session=False))
    withdraw_open_offers(session, task.id, except_offer=offer.id)
    session.refresh(offer)
    session.refresh(task)
    return offer


def decline(session: Session, settings: Settings, principal: Principal, offer_id: uuid.UUID, reason: str,
            code: str = "other", suggested_category: str | None = None) -> Offer:
    """Decline an open offer. The task is re-offered to the next provider, except when providers say the task
    is in the wrong category: WRONG_CATEGORY_VOTES such declines send it to staff review, and the staff
    member's placement becomes a labelled example for the router (staff.services.route_by_hand)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Give a reason for declining.", errors=[{"field": "reason", "message": "required"}])
    if code not in DECLINE_CODES:
        raise InvalidInput(f"Unknown decline code {code!r}.",
                           errors=[{"field": "code", "message": f"one of {', '.join(DECLINE_CODES)}"}])
    if suggested_category is not None:
        if code != "wrong_category":
            raise InvalidInput("A suggested category only goes with the code wrong_category.",
                               errors=[{"field": "suggested_category", "message": "needs code wrong_category"}])
        if get_by_slug(session, suggested_category) is None:
            raise InvalidInput(f"Unknown category {suggested_category!r}.",
                               errors=[{"field": "suggested_category", "message": "unknown"}])
    offer = _own_offer(session, principal, offer_id)
    task = session.scalar(for_change(select(Task).where(Task.id == offer.task_id)))
    result = session.execute(
        update(Offer).where(Offer.id == offer.id, Offer.status == OfferStatus.OPEN)
        .values(status=OfferStatus.DECLINED, responded_at=now(), decline_reason=reason, decline_code=code,
                suggested_category=suggested_category)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        session.refresh(offer)
        raise Conflict(f"This offer is {offer.status.value}; it can no longer be declined.")
    if code == "wrong_category" and task.status is TaskStatus.ROUTED and _wrong_category_review(session, task):
        session.refresh(offer)
        return offer
    refill(session, settings, task)
    session.refresh(offer)
    return offer


def _wrong_category_review(session: Session, task: Task) -> bool:
    """Send the task to staff when enough providers said its category is wrong. True when it was sent.

    Only votes on offers made since the routing decision that gave the task its category count: they are
    about the category it has now. Votes against a category staff (or the model, when staff sent the task
    back) replaced are settled. A decision's own offers carry its time exactly, and re-offers (made on another
    host, whose clock may be behind the worker's) are dated no earlier than it, so no clock skew between hosts
    drops a vote."""
    decision = latest_decision(session, task.id)
    query = select(Offer.suggested_category).where(Offer.task_id == task.id, Offer.decline_code == "wrong_category")
    if decision is not None:
        query = query.where(Offer.created_at >= decision.created_at)
    votes = session.execute(query).scalars().all()
    if len(votes) < WRONG_CATEGORY_VOTES:
        return False
    category = session.get(Category, task.category_id) if task.category_id else None
    suggested = sorted({v for v in votes if v})
    withdraw_open_offers(session, task.id)
    transition(session, task, TaskStatus.NEEDS_REVIEW, actor_id=None, actor_role=SYSTEM,
               reason=f"{len(votes)} providers say this is not {category.name if category else 'its category'}"
                      + (f"; suggested: {', '.join(suggested)}" if suggested else ""))
    return True


def due_for_expiry(session: Session, limit: int = 500) -> list[uuid.UUID]:
    """Tasks with open offers past their window, in id order (at most ``limit``): each for :func:`expire_task`."""
    return list(session.scalars(
        select(Offer.task_id).where(Offer.status == OfferStatus.OPEN, Offer.expires_at <= now())
        .group_by(Offer.task_id).order_by(Offer.task_id).limit(limit)
    ))


def expire_task(session: Session, settings: Settings, task_id: uuid.UUID) -> int:
    """Expire the task's open offers past their window and re-offer it; returns the offers expired. Safe to run
    anywhere, any number of times.

    One task per transaction, locking the task before the profiles its re-offers lock (the order accept,
    decline and routing use). Several tasks in one transaction held the first task's providers while locking
    the next task, and deadlocked on PostgreSQL with a provider accepting an offer on that task, or with any
    transaction locking the same providers in id order. A task another transaction holds (an offer on it being
    answered, another scheduler) is skipped: the next run takes it.
    """
    task = session.scalar(for_change(select(Task).where(Task.id == task_id), skip_locked=True))
    if task is None:
        return 0
    result = session.execute(
        update(Offer).where(Offer.task_id == task_id, Offer.status == OfferStatus.OPEN, Offer.expires_at <= now())
        .values(status=OfferStatus.EXPIRED, responded_at=now()).execution_options(synchronize_session=False)
    )
    count = result.rowcount or 0
    if count:
        refill(session, settings, task, wanted=count)
    return count


VISIBLE_BRIEF = (OfferStatus.OPEN, OfferStatus.ACCEPTED)


def offer_out(session: Session, offer: Offer, slugs: dict[uuid.UUID, str] | None = None,
              drafted: set[uuid.UUID] | None = None) -> OfferOut:
    """``slugs`` and ``drafted`` (offer ids that have a draft) let a list page load them once for all rows."""
    task = offer.task
    if slugs is None:
        slugs = dict(session.execute(select(Category.id, Category.slug)).all())
    if drafted is None:
        drafted = set(session.scalars(select(Draft.offer_id).where(Draft.offer_id == offer.id)))
    has_draft = offer.id in drafted
    return OfferOut(
        id=str(offer.id), task_id=str(offer.task_id), status=offer.status.value, rank=offer.rank,
        score=float(offer.score), created_at=offer.created_at, expires_at=offer.expires_at,
        responded_at=offer.responded_at, decline_reason=offer.decline_reason, decline_code=offer.decline_code,
        suggested_category=offer.suggested_category, task_title=task.title,
        # once an offer is closed (declined, expired, withdrawn) its provider no longer sees the brief
        task_description=task.description if offer.status in VISIBLE_BRIEF else "", category=slugs.get(task.category_id),
        budget_amount=task.budget_amount, budget_currency=task.budget_currency, deadline=task.deadline,
        draft_ready=has_draft, proposal=offer.proposal, proposal_from_draft=offer.proposal_from_draft,
        proposal_edited=offer.proposal_edited,
        # the score's own components; not the fairness bookkeeping (recent_share is a share of the category's
        # offers, which would tell a provider how many others got)
        components={k: v for k, v in offer.components.items() if k in WEIGHTS} if offer.components else None,
    )


def list_offers(session: Session, principal: Principal, status: OfferStatus | None, limit: int,
                offset: int) -> OfferPage:
    query = select(Offer).where(Offer.provider_id == principal.account_id)
    if status is not None:
        query = query.where(Offer.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Offer.created_at.desc(), Offer.id).limit(limit).offset(offset)
                           .options(selectinload(Offer.task))).all()
    slugs = dict(session.execute(select(Category.id, Category.slug)).all())
    drafted = set(session.scalars(select(Draft.offer_id).where(Draft.offer_id.in_([o.id for o in rows]))))
    return OfferPage([offer_out(session, o, slugs, drafted) for o in rows], total, limit, offset)


def get_offer(session: Session, principal: Principal, offer_id: uuid.UUID) -> Offer:
    return _own_offer(session, principal, offer_id)


def get_draft(session: Session, principal: Principal, offer_id: uuid.UUID) -> Draft:
    offer = _own_offer(session, principal, offer_id)
    draft = session.scalar(select(Draft).where(Draft.offer_id == offer.id))
    if draft is None:
        raise NotFound("No draft for this offer yet: it is being written. Try again in a few seconds.")
    return draft
