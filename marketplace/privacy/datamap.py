"""The data map: every stored column is tagged with a data category and, if personal, a retention rule.

Columns are declared with :func:`data` so the tag travels with the schema; ``tests/unit/test_datamap.py``
fails when a column is added without one. Later privacy work (export, deletion, retention purge) reads
the same tags instead of keeping its own list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import mapped_column


class DataCategory(enum.StrEnum):
    OPERATIONAL = "operational"  # not about a person: statuses, counters, configuration
    IDENTITY = "identity"  # names, display names
    CONTACT = "contact"  # email addresses
    CREDENTIAL = "credential"  # password hashes, token hashes
    PROFILE = "profile"  # what a provider or partner publishes about themselves
    USER_CONTENT = "user_content"  # what a customer or provider writes: task text, drafts, reasons
    FINANCIAL = "financial"  # budgets, rates, commissions
    ACTIVITY = "activity"  # when someone did what: timestamps of their actions, transitions
    SECURITY = "security"  # login failures, network addresses
    AI_OUTPUT = "ai_output"  # what our local models derived from user content
    PARTY = "party"  # a reference to the account that owns a row or acted in it


PERSONAL = frozenset(DataCategory) - {DataCategory.OPERATIONAL}


@dataclass(frozen=True, slots=True)
class RetentionRule:
    name: str
    description: str
    # How long after the anchor event the data may be kept; None = for as long as the anchor lives.
    keep_for: timedelta | None
    anchor: str


RETENTION_RULES: dict[str, RetentionRule] = {
    rule.name: rule
    for rule in (
        RetentionRule(
            "account_lifetime",
            "Kept while the account exists; erased when the account is deleted.",
            None,
            "account",
        ),
        RetentionRule(
            "task_lifetime",
            "Kept while the task is open and for 2 years after it ends (disputes, invoicing); "
            "erased earlier when the customer deletes the task or the account.",
            timedelta(days=730),
            "task_end",
        ),
        RetentionRule(
            "financial_records",
            "Kept 7 years after the transaction for accounting obligations, then erased.",
            timedelta(days=7 * 365),
            "transaction",
        ),
        RetentionRule(
            "session",
            "Kept until the token expires or is revoked, then erased after 30 days.",
            timedelta(days=30),
            "token_end",
        ),
        RetentionRule(
            "security_log",
            "Kept 90 days to detect and stop abuse, then erased.",
            timedelta(days=90),
            "event",
        ),
        RetentionRule(
            "offer_lifetime",
            "Kept while the task it belongs to is kept.",
            timedelta(days=730),
            "task_end",
        ),
    )
}


def data(category: DataCategory, retention: str | None = None, *args: Any, **kwargs: Any) -> Any:
    """``mapped_column`` that records the column's data category and retention rule in ``info``."""
    if category in PERSONAL and retention not in RETENTION_RULES:
        raise ValueError(f"personal column ({category}) needs a known retention rule, got {retention!r}")
    info = dict(kwargs.pop("info", {}))
    info["data_category"] = category
    if retention is not None:
        info["retention"] = retention
    return mapped_column(*args, info=info, **kwargs)
