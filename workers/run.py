"""Entry point for worker processes: `dramatiq workers.run` (Redis mode, any number of machines)."""

from marketplace.app import configure_logging
from workers import actors  # noqa: F401  (registers the actors on the broker)

configure_logging()
