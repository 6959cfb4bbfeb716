"""One settings object, read from RELAY_* environment variables, with defaults that need no configuration."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

VAR_DIR = Path(os.environ.get("RELAY_VAR_DIR", "var"))


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RELAY_{name}", default)


def _secret_key() -> str:
    """An explicit RELAY_SECRET_KEY wins; otherwise one is generated once and kept in var/."""
    if key := os.environ.get("RELAY_SECRET_KEY"):
        return key
    path = VAR_DIR / "secret.key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(default_factory=lambda: _env("DATABASE_URL", f"sqlite:///{VAR_DIR}/relay.db"))
    broker: str = field(default_factory=lambda: _env("BROKER", "stub"))  # stub | redis
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_namespace: str = field(default_factory=lambda: _env("REDIS_NAMESPACE", "relay"))
    secret_key: str = field(default_factory=_secret_key)
    offers_per_task: int = field(default_factory=lambda: int(_env("OFFERS_PER_TASK", "3")))
    offer_window_hours: float = field(default_factory=lambda: float(_env("OFFER_WINDOW_HOURS", "24")))
    token_ttl_hours: float = field(default_factory=lambda: float(_env("TOKEN_TTL_HOURS", "720")))
    login_max_failures: int = field(default_factory=lambda: int(_env("LOGIN_MAX_FAILURES", "5")))
    login_window_minutes: int = field(default_factory=lambda: int(_env("LOGIN_WINDOW_MINUTES", "15")))
    worker_threads: int = field(default_factory=lambda: int(_env("WORKER_THREADS", "2")))
    scheduler_interval_s: float = field(default_factory=lambda: float(_env("SCHEDULER_INTERVAL_S", "30")))
    # The in-process worker and scheduler run inside the API only with the stub broker.
    run_inprocess_worker: bool = field(
        default_factory=lambda: _env("INPROCESS_WORKER", "auto") in {"auto", "1", "true"}
    )
    # Seconds between rounds of a routing worker's upkeep thread (workers.upkeep: routing model and provider
    # snapshot kept ready between batches); 0: no such thread, routing batches do that work themselves.
    routing_upkeep_s: float = field(default_factory=lambda: float(_env("ROUTING_UPKEEP_S", "2")))
    # Fine-tune the encoder's top layers per taxonomy version (the refit_router job); off: frozen head only.
    router_tuning: bool = field(default_factory=lambda: _env("ROUTER_TUNING", "1") in {"1", "true"})
    debug: bool = field(default_factory=lambda: _env("DEBUG", "0") in {"1", "true"})
    # Drafts: "auto" rewrites the composer's opening with the local SmolLM2 model when it is installed,
    # "generative" requires it, "composer" never runs it (fast and deterministic; the tests' default).
    draft_engine: str = field(default_factory=lambda: _env("DRAFT_ENGINE", "auto"))
    # The portal's cookies carry Secure: browsers keep them on https and on http://127.0.0.1 / localhost.
    # Only a deployment reached over plain http on another host name would need RELAY_COOKIE_SECURE=0.
    cookie_secure: bool = field(default_factory=lambda: _env("COOKIE_SECURE", "1") in {"1", "true"})
    # `make run` sets it: the sign-in page lists the demo accounts (fictional people, a shared demo password).
    demo: bool = field(default_factory=lambda: _env("DEMO", "0") in {"1", "true"})

    def __post_init__(self) -> None:
        if self.broker not in {"stub", "redis"}:
            raise ValueError(f"RELAY_BROKER must be 'stub' or 'redis', not {self.broker!r}")
        if self.offers_per_task < 1:
            raise ValueError("RELAY_OFFERS_PER_TASK must be at least 1")
        if self.draft_engine not in {"auto", "generative", "composer"}:
            raise ValueError(f"RELAY_DRAFT_ENGINE must be auto, generative or composer, not {self.draft_engine!r}")
        if not self.routing_upkeep_s >= 0:  # (NaN too)
            raise ValueError("RELAY_ROUTING_UPKEEP_S must be 0 (off) or a positive number of seconds")
        if self.offer_window_hours <= 0:
            raise ValueError("RELAY_OFFER_WINDOW_HOURS must be positive")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
