"""API schemas for tasks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{3}$")]


class Money(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal  # > 0 and <= 10,000,000, checked by the service (msgspec has no Decimal bounds)
    currency: Currency


class TaskIn(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(min_length=3, max_length=200)]
    description: Annotated[str, msgspec.Meta(min_length=10, max_length=10_000)]
    budget: Money | None = None
    deadline: datetime | None = None
    # A category slug the customer chooses. Customers who object to AI processing choose here, and staff place
    # the task with this choice in front of them; for everyone else the router decides.
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=60)] | None = None


class CreatedOut(msgspec.Struct):
    id: str
    status: str


class CategoryScore(msgspec.Struct):
    slug: str
    score: float | None
    name: str | None = None


class ProviderCandidateOut(msgspec.Struct):
    """A provider as the matcher ranked them for a task, with what their score is made of (staff only)."""

    provider_id: str
    name: str | None
    score: float
    components: dict[str, float]
    offer: str | None = None  # the status of this provider's offer for the task, if they got one


class PartnerSuggestionOut(msgspec.Struct):
    """An assisting partner routing suggested for a task, with what their score is made of (staff only)."""

    partner_id: str
    name: str | None  # None once the account is gone
    active: bool  # False once the account was closed: no longer one to ask
    score: float
    components: dict[str, float]


class RoutingOut(msgspec.Struct):
    decision: str | None  # routed | needs_review | None while routing is pending
    categories: list[CategoryScore]
    explanation: str
    evidence: dict[str, object] = {}
    decided_at: datetime | None = None
    # staff only: the ranked providers of the latest decision, best first (None for everyone else)
    providers: list[ProviderCandidateOut] | None = None
    # staff only: the assisting partners the latest decision suggested, best first (None for everyone else)
    partners: list[PartnerSuggestionOut] | None = None


class TransitionOut(msgspec.Struct):
    from_status: str | None
    to_status: str
    actor_role: str
    reason: str
    at: datetime


class ProviderRef(msgspec.Struct):
    id: str
    display_name: str


class ProposalOut(msgspec.Struct):
    text: str
    from_draft: bool  # the provider started from our AI draft (and approved it, edited or not)
    edited: bool | None


class MessageOut(msgspec.Struct):
    author_role: str  # customer | staff
    body: str
    created_at: datetime
    from_draft: bool = False  # staff started from Relay's drafted question


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]
    from_draft: bool = False  # staff: the text started as the drafted clarifying question


class TaskOut(msgspec.Struct):
    id: str
    title: str
    description: str
    status: str
    created_at: datetime
    budget: Money | None
    deadline: datetime | None
    routing: RoutingOut
    assigned_provider: ProviderRef | None
    offered_to: int
    transitions: list[TransitionOut]
    rating: int | None = None  # stars the customer gave the provider, once the task is completed and rated
    proposal: ProposalOut | None = None  # what the assigned provider sent on accepting
    messages: list[MessageOut] = []  # between the customer and Relay's staff (not shown to providers)


class TaskSummary(msgspec.Struct):
    id: str
    title: str
    status: str
    category: str | None
    created_at: datetime


class Page(msgspec.Struct):
    items: list[TaskSummary]
    total: int
    limit: int
    offset: int


class RatingIn(msgspec.Struct, forbid_unknown_fields=True):
    stars: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class RatingOut(msgspec.Struct):
    task_id: str
    provider_id: str
    stars: int
    comment: str | None
    created_at: datetime


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
