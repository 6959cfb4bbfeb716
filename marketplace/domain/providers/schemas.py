"""API schemas for provider profiles."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

Skill = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
Language = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{3}$")]


class ProviderProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    headline: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    description: Annotated[str, msgspec.Meta(max_length=4000)]
    skills: Annotated[list[Skill], msgspec.Meta(max_length=30)]
    categories: Annotated[list[Slug], msgspec.Meta(max_length=5)]
    languages: Annotated[list[Language], msgspec.Meta(max_length=10)]
    capacity: Annotated[int, msgspec.Meta(ge=0, le=20)]
    accepting_work: bool
    hourly_rate: Decimal | None = None  # 0 to 100000, checked by the service (msgspec has no Decimal bounds)
    rate_currency: Currency | None = None  # ISO 4217 code of hourly_rate; required with it


class ProviderProfileOut(msgspec.Struct):
    account_id: str
    display_name: str
    headline: str
    description: str
    skills: list[str]
    categories: list[str]
    languages: list[str]
    capacity: int
    accepting_work: bool
    hourly_rate: Decimal | None
    rate_currency: str | None
    updated_at: datetime
