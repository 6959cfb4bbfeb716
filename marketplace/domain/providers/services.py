"""Provider profiles: what the matcher ranks on."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.orm import Session

from marketplace.db.models import ProviderProfile
from marketplace.domain.categories.services import require_active
from marketplace.domain.providers.schemas import ProviderProfileIn, ProviderProfileOut
from marketplace.errors import InvalidInput, NotFound


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        item = " ".join(item.split())
        if item and item.lower() not in {s.lower() for s in seen}:
            seen[item] = None
    return list(seen)


def get_profile(session: Session, account_id: uuid.UUID) -> ProviderProfile:
    profile = session.get(ProviderProfile, account_id)
    if profile is None:
        raise NotFound("Provider profile not found.")
    return profile


def update_profile(session: Session, account_id: uuid.UUID, data: ProviderProfileIn) -> ProviderProfile:
    profile = get_profile(session, account_id)
    slugs = _dedupe(data.categories)
    require_active(session, slugs, "categories")
    if data.hourly_rate is not None and not (data.hourly_rate.is_finite() and 0 <= data.hourly_rate <= 100_000):
        raise InvalidInput("Hourly rate must be between 0 and 100000.",
                           errors=[{"field": "hourly_rate", "message": "must be between 0 and 100000"}])
    if data.hourly_rate is not None and data.rate_currency is None:
        raise InvalidInput("Say which currency your hourly rate is in.",
                           errors=[{"field": "rate_currency", "message": "required with hourly_rate"}])
    if not data.headline.strip():
        raise InvalidInput("Headline is blank.", errors=[{"field": "headline", "message": "must not be blank"}])
    profile.headline = data.headline.strip()
    profile.description = data.description.strip()
    profile.skills = _dedupe(data.skills)
    profile.categories = slugs
    profile.languages = _dedupe(data.languages)
    profile.capacity = data.capacity
    profile.accepting_work = data.accepting_work
    profile.hourly_rate = data.hourly_rate.quantize(Decimal("0.01")) if data.hourly_rate is not None else None
    profile.rate_currency = data.rate_currency.upper() if data.hourly_rate is not None and data.rate_currency else None
    session.flush()
    return profile


def profile_out(profile: ProviderProfile) -> ProviderProfileOut:
    return ProviderProfileOut(
        account_id=str(profile.account_id), display_name=profile.account.display_name, headline=profile.headline,
        description=profile.description, skills=list(profile.skills), categories=list(profile.categories),
        languages=list(profile.languages), capacity=profile.capacity, accepting_work=profile.accepting_work,
        hourly_rate=profile.hourly_rate, rate_currency=profile.rate_currency, updated_at=profile.updated_at,
    )


def profile_text(profile: ProviderProfile) -> str:
    """What the matcher embeds for a provider."""
    return ". ".join(p for p in (profile.headline, profile.description, ", ".join(profile.skills)) if p)
