"""The broker the actors are declared on: stub (in-process) or Redis, from RELAY_BROKER."""

from __future__ import annotations

from marketplace.jobs import get_broker
from workers import runtime

broker = get_broker(runtime.settings())
