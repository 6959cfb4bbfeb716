"""Entry point for worker processes: `dramatiq workers.run` (Redis mode, any number of machines)."""

from marketplace.app import configure_logging
from workers import runtime

if runtime.settings().broker != "redis":
    # A separate worker process on the in-memory stub broker would consume nothing, silently.
    raise SystemExit("workers.run needs RELAY_BROKER=redis; with the stub broker the API runs its own worker")

from workers import actors  # noqa: F401  (registers the actors on the broker)
from workers.broker import broker
from workers.upkeep import RoutingUpkeepMiddleware

broker.add_middleware(RoutingUpkeepMiddleware())

configure_logging()
