"""API schemas for accounts and sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=256)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class SignupIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    role: Literal["customer", "provider", "partner"]
    display_name: DisplayName
    referral_code: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class AccountOut(msgspec.Struct):
    id: str
    email: str
    role: str
    display_name: str
    created_at: datetime
    ai_processing_objection: bool = False
    referral_code: str | None = None
    referred_by_partner: bool | None = None


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class SessionOut(msgspec.Struct):
    token: str
    expires_at: datetime
    account: AccountOut


class PrivacyPreferencesIn(msgspec.Struct, forbid_unknown_fields=True):
    ai_processing_objection: bool
