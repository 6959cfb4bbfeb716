"""Remove contact details from task text before it reaches a model: they never help routing."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_LINK = re.compile(r"https?://\S+|www\.\S+")
_PHONE_LIKE = re.compile(r"(?<!\w)\+?\(?\d[\d\s().-]{7,}\d(?!\w)")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}")


def _phone(match: re.Match[str]) -> str:
    # 9+ digits is a phone number; a run that contains a date (2026-12-01 14:00) is left alone.
    text = match.group()
    if sum(ch.isdigit() for ch in text) < 9 or _DATE.search(text):
        return text
    return "[phone]"


def scrub_pii(text: str) -> str:
    text = _EMAIL.sub("[email]", text)
    text = _LINK.sub("[link]", text)
    return _PHONE_LIKE.sub(_phone, text)
