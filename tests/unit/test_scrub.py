"""scrub_pii: contact details are removed from task text; dates, amounts and short numbers are kept."""

from __future__ import annotations

import pytest

from routing.scrub import scrub_pii


@pytest.mark.parametrize(("text", "expected"), [
    ("Write to jane.doe+jobs@mail.example.co.uk today", "Write to [email] today"),
    ("Brief at https://example.com/brief?id=7 and www.example.org/x", "Brief at [link] and [link]"),
    ("Call 0612345678 please", "Call [phone] please"),
    ("Call 555-123-4567 please", "Call [phone] please"),
    ("Call 06 12 34 56 78 please", "Call [phone] please"),
    ("Call +44 20 7946 0958 please", "Call [phone] please"),
    ("Call +31612345678", "Call [phone]"),
    ("Call 123 456 789", "Call [phone]"),  # nine digits is enough
    ("call (555) 123-4567", "call [phone]"),  # the area code's bracket goes too
])
def test_contact_details_are_replaced(text: str, expected: str) -> None:
    assert scrub_pii(text) == expected


@pytest.mark.parametrize("text", [
    "Deadline 2026-12-01, please.",
    "Budget $1,500 for the logo",
    "Budget 2500 EUR",
    "3 pages, 12 photos, order 12345678",  # eight digits is not a phone number
    "Meet on 01.12.2026",
    "deadline 2026-12-01 14:00",  # a date followed by a time is not a phone number
    "between 01.12.2026 12.12.2026",
])
def test_dates_amounts_and_short_numbers_stay(text: str) -> None:
    assert scrub_pii(text) == text


def test_mixed_text_keeps_what_is_not_contact() -> None:
    out = scrub_pii("Logo by 2026-12-01 for $1,500; mail me at a@b.io or call +1 415 555 0100.")
    assert out == "Logo by 2026-12-01 for $1,500; mail me at [email] or call [phone]."
