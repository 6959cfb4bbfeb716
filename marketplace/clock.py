"""The one place the app reads the time, so tests can move it with time-machine."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
