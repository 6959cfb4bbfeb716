"""API schemas for partners' referral views: pseudonymous, no task text, no contact data."""

from __future__ import annotations

from datetime import datetime

import msgspec


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
