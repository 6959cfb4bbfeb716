"""Draft proposals for offers, written by a worker with the local drafter and shown only to the offer's provider."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marketplace.db.models import Account, Category, Draft, Offer, ProviderProfile, Task
from models import Drafter, DraftInput, ProviderInput


def draft_for_offer(session: Session, drafter: Drafter, offer_id: uuid.UUID) -> str:
    """Write the draft for an offer once. Idempotent: an offer that has a draft is left alone."""
    if session.scalar(select(Draft.id).where(Draft.offer_id == offer_id)) is not None:
        return "exists"
    offer = session.get(Offer, offer_id)
    if offer is None:
        return "missing"
    task = session.get(Task, offer.task_id)
    customer = session.get(Account, task.customer_id)
    if customer is not None and customer.ai_processing_objection:
        return "objection"
    provider = session.get(Account, offer.provider_id)
    profile = session.get(ProviderProfile, offer.provider_id)
    category = session.get(Category, task.category_id) if task.category_id else None
    result = drafter.compose(
        DraftInput(
            title=task.title, description=task.description,
            category_name=category.name if category else None,
            playbook=tuple(category.playbook) if category else (),
            questions=tuple(category.questions) if category else (),
            budget_amount=task.budget_amount, budget_currency=task.budget_currency, deadline=task.deadline,
        ),
        ProviderInput(
            display_name=provider.display_name, headline=profile.headline if profile else "",
            skills=tuple(profile.skills) if profile else (), hourly_rate=profile.hourly_rate if profile else None,
        ),
    )
    try:
        with session.begin_nested():
            session.add(Draft(offer_id=offer.id, text=result.text, engine=result.engine, model_id=result.model_id))
    except IntegrityError:  # a concurrent run wrote it first
        return "exists"
    return "drafted"
