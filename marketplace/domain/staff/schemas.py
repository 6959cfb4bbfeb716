"""API schemas for staff tools."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from marketplace.domain.tasks.schemas import CategoryScore, MessageOut


class ReviewItem(msgspec.Struct):
    id: str
    title: str
    description: str
    created_at: datetime
    reason: str
    candidates: list[CategoryScore]
    requested_category: CategoryScore | None = None  # what the customer chose when posting
    question: str | None = None  # a drafted clarifying question for staff to send (edit first if needed)
    messages: list[MessageOut] = []  # what staff and the customer wrote about this task so far


class ReviewQueue(msgspec.Struct):
    items: list[ReviewItem]
    total: int
    limit: int
    offset: int


class RouteIn(msgspec.Struct, forbid_unknown_fields=True):
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class OverrideIn(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    reason: Annotated[str, msgspec.Meta(min_length=3, max_length=2000)]
