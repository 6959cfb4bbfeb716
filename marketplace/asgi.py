"""The ASGI app that `make run` and the API containers serve (uvicorn marketplace.asgi:app)."""

from __future__ import annotations

import importlib

from litestar import Litestar

from marketplace.app import create_app
from marketplace.settings import Settings, get_settings


def build(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    lifespans = []
    if settings.broker == "stub" and settings.run_inprocess_worker:
        # Looked up by name, like every job: the marketplace does not import worker code.
        lifespans.append(importlib.import_module("workers.inprocess").lifespan_for(settings))
    return create_app(settings, lifespans=lifespans)


app = build()
