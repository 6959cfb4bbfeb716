"""Remove contact details from task text before it reaches a model: they never help routing."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_LINK = re.compile(r"https?://\S+|www\.\S+")
_PHONE_LIKE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")


def _phone(match: re.Match[str]) -> str:
    # 9+ digits is a phone number; dates (2026-12-01) and amounts stay.
    return "[phone]" if sum(ch.isdigit() for ch in match.group()) >= 9 else match.group()


def scrub_pii(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _LINK.sub("[link]", text)
    return _PHONE_LIKE.sub(_phone, text)
