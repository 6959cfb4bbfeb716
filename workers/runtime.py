"""What the actors run against: settings and database, set once per process (tests point it at theirs)."""

from __future__ import annotations

from marketplace.db.session import Database, get_database
from marketplace.settings import Settings, get_settings

_settings: Settings | None = None


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def settings() -> Settings:
    return _settings or get_settings()


def database() -> Database:
    return get_database(settings().database_url)
