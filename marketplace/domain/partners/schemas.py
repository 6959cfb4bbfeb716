"""API schemas for partners' referral views: pseudonymous, no task text, no contact data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]


class PartnerProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    # the categories the partner can assist with: routing suggests them as assisting partners on such tasks
    expertise: Annotated[list[Slug], msgspec.Meta(max_length=10)]


class PartnerProfileOut(msgspec.Struct):
    referral_code: str
    expertise: list[str]


class ReferredTask(msgspec.Struct):
    status: str
    category: str | None
    posted_at: datetime


class ReferredCustomer(msgspec.Struct):
    ref: str
    joined_at: datetime
    tasks: list[ReferredTask]


class ReferralsOut(msgspec.Struct):
    referral_code: str
    customers: list[ReferredCustomer]
    total: int
    limit: int
    offset: int
