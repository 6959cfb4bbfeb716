"""API schemas for offers and drafts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

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
    decline_code: str | None
    suggested_category: str | None
    task_title: str
    task_description: str
    category: str | None
    budget_amount: Decimal | None
    budget_currency: str | None
    deadline: datetime | None
    draft_ready: bool
    proposal: str | None = None  # what the provider sent with their acceptance
    proposal_from_draft: bool | None = None
    proposal_edited: bool | None = None
    # Why this provider was chosen: the components of ``score`` (routing.matcher.WEIGHTS), as ranked when the
    # offer was made. None for offers made before components were recorded.
    components: dict[str, float] | None = None


class OfferPage(msgspec.Struct):
    items: list[OfferOut]
    total: int
    limit: int
    offset: int


class AcceptIn(msgspec.Struct, forbid_unknown_fields=True):
    # The proposal the customer reads; from_draft: the provider started from this offer's AI draft.
    proposal: Annotated[str, msgspec.Meta(max_length=5000)] | None = None
    from_draft: bool = False


DeclineCode = Literal["wrong_category", "too_busy", "budget_too_low", "deadline_too_short", "other"]


class DeclineIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    # "wrong_category": the task is not what its category says; suggested_category (a slug) is optional
    code: DeclineCode = "other"
    suggested_category: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None


class DraftOut(msgspec.Struct):
    offer_id: str
    text: str
    engine: str
    model_id: str
    created_at: datetime
