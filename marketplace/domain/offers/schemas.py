"""API schemas for offers and drafts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec


class OfferOut(msgspec.Struct):
    id: str
    task_id: str
    status: str
    rank: int
    score: float
    created_at: datetime
    expires_at: datetime
    responded_at: datetime | None
    decline_reason: str | None
    task_title: str
    task_description: str
    category: str | None
    budget_amount: Decimal | None
    budget_currency: str | None
    deadline: datetime | None
    draft_ready: bool


class OfferPage(msgspec.Struct):
    items: list[OfferOut]
    total: int
    limit: int
    offset: int


class DeclineIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class DraftOut(msgspec.Struct):
    offer_id: str
    text: str
    engine: str
    model_id: str
    created_at: datetime
