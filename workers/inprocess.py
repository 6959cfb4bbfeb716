"""The in-process worker and scheduler that run inside the API when RELAY_BROKER=stub (the `make run` default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dramatiq
from litestar import Litestar

from marketplace.settings import Settings
from workers import runtime
from workers.upkeep import RoutingUpkeep, start_upkeep


class InProcessWorker:
    def __init__(self, settings: Settings) -> None:
        runtime.configure(settings)
        from marketplace.jobs import JOBS, QUEUES, attach_stub_consumer
        from workers import actors  # noqa: F401  (declares actors on the stub broker)
        from workers.broker import broker
        from workers.scheduler import Scheduler

        attach_stub_consumer()
        self.broker = broker
        # Drafting has a worker of its own: a generative draft takes seconds of CPU, and routing (what a
        # customer waits for) must not queue behind a batch of them.
        drafting = {JOBS["draft_for_offer"]}
        self.workers = [
            dramatiq.Worker(broker, worker_threads=settings.worker_threads, worker_timeout=100,
                            queues={q for q in QUEUES if q not in drafting}),
            dramatiq.Worker(broker, worker_threads=1, worker_timeout=100, queues=drafting),
        ]
        self.scheduler = Scheduler(settings.scheduler_interval_s)
        self.upkeep: RoutingUpkeep | None = None

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self.scheduler.start()
        self.upkeep = start_upkeep()

    def stop(self) -> None:
        if self.upkeep is not None:
            self.upkeep.stop()
        self.scheduler.stop()
        for worker in self.workers:
            worker.stop()
        # dramatiq registers each Worker as broker middleware and never unregisters it; an app that is
        # started again in the same process (tests) would otherwise stack dead workers on the broker.
        self.broker.middleware[:] = [m for m in self.broker.middleware
                                     if getattr(m, "worker", None) not in self.workers]

    def drain(self) -> None:
        """Wait until every queued job, and every job those jobs enqueued, has run."""
        from marketplace.jobs import QUEUES

        while any(self.broker.queues[q].unfinished_tasks for q in QUEUES):
            for queue in QUEUES:
                self.broker.join(queue, fail_fast=True)
        for worker in self.workers:
            worker.join()


def lifespan_for(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def inprocess_worker(app: Litestar) -> AsyncIterator[None]:
        worker = InProcessWorker(settings)
        app.state.worker = worker
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    return inprocess_worker
