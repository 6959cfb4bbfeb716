"""Background jobs, by name: the transactional outbox and the dramatiq broker it relays to.

The marketplace never imports actor modules. A service calls :func:`enqueue`, which writes an outbox row in
the caller's transaction; once that transaction commits the rows are sent to the broker. If the process dies
between commit and send, :func:`relay_pending` (run by the scheduler) sends them later. A job can therefore
arrive twice, never zero times, and never before the rows it refers to exist: actors are idempotent.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import OutboxMessage
from marketplace.settings import Settings

log = structlog.get_logger(__name__)

# Actor name -> queue. Workers declare actors with exactly these names and queues.
JOBS: dict[str, str] = {
    "route_task": "routing",
    "draft_for_offer": "drafting",
    "refit_router": "training",  # minutes of CPU: its own queue so it never delays routing
}
QUEUES = sorted(set(JOBS.values()))

_broker_lock = threading.Lock()
_stub_consumer = False
_broker: dramatiq.Broker | None = None
_broker_key: tuple[str, str, str] | None = None


def get_broker(settings: Settings) -> dramatiq.Broker:
    """The process-wide broker for these settings (set as dramatiq's global broker)."""
    global _broker, _broker_key
    key = (settings.broker, settings.redis_url, settings.redis_namespace)
    with _broker_lock:
        if _broker is None or _broker_key != key:
            if settings.broker == "redis":
                from dramatiq.brokers.redis import RedisBroker

                broker: dramatiq.Broker = RedisBroker(url=settings.redis_url, namespace=settings.redis_namespace)
            else:
                from dramatiq.brokers.stub import StubBroker

                broker = StubBroker()
            for queue in QUEUES:
                broker.declare_queue(queue)
            dramatiq.set_broker(broker)
            _broker, _broker_key = broker, key
        return _broker


def attach_stub_consumer() -> None:
    """Called by the in-process worker: from now on, jobs sent to the stub broker in this process run."""
    global _stub_consumer
    _stub_consumer = True


def can_deliver(settings: Settings) -> bool:
    # A stub broker only delivers inside the process that runs the in-process worker. Anywhere else
    # (the CLI loading demo data, a test without a worker) jobs stay in the outbox until that process
    # relays them.
    return settings.broker == "redis" or _stub_consumer


def enqueue(session: Session, actor_name: str, *args: Any) -> OutboxMessage:
    """Record a job in the caller's transaction; it is sent after commit."""
    if actor_name not in JOBS:
        raise ValueError(f"unknown job {actor_name!r}")
    row = OutboxMessage(actor_name=actor_name, queue_name=JOBS[actor_name], args=[str(a) for a in args])
    session.add(row)
    session.info.setdefault("outbox", []).append(row)
    return row


def _send(broker: dramatiq.Broker, row: OutboxMessage) -> None:
    message = dramatiq.Message(
        queue_name=row.queue_name,
        actor_name=row.actor_name,
        args=tuple(row.args),
        kwargs={},
        options={},
        message_id=str(row.id),
    )
    broker.enqueue(message)


def dispatch(session: Session, rows: list[OutboxMessage], settings: Settings) -> int:
    """Send committed outbox rows and mark them dispatched. Failures stay pending for the relay."""
    if not can_deliver(settings):
        return 0
    broker = get_broker(settings)
    sent: list[Any] = []
    failed: list[Any] = []
    for row in rows:
        try:
            _send(broker, row)
        except Exception:  # broker down: the relay retries
            log.warning("outbox.send_failed", outbox_id=str(row.id), actor=row.actor_name, exc_info=True)
            failed.append(row.id)
            continue
        sent.append(row.id)
    if failed:
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(failed))
                        .values(attempts=OutboxMessage.attempts + 1))
    if sent:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(sent), OutboxMessage.dispatched_at.is_(None))
            .values(dispatched_at=now(), attempts=OutboxMessage.attempts + 1)
        )
    return len(sent)


def take_pending(session: Session) -> list[OutboxMessage]:
    """Rows this session enqueued; call after a successful commit."""
    return session.info.pop("outbox", [])


def relay_pending(session: Session, settings: Settings, limit: int = 500) -> int:
    """Send rows that were committed but never dispatched (crash or broker outage).

    Rows are claimed with SKIP LOCKED, so several schedulers relay disjoint rows instead of all sending all.
    """
    if not can_deliver(settings):
        return 0
    rows = list(
        session.scalars(
            select(OutboxMessage).where(OutboxMessage.dispatched_at.is_(None))
            .order_by(OutboxMessage.created_at).limit(limit).with_for_update(skip_locked=True)
        )
    )
    return dispatch(session, rows, settings)


def dispatch_after_commit(db: Any, rows: list[OutboxMessage], settings: Settings) -> None:
    """Send what a committed unit of work enqueued. Never raises: the change is already saved, and rows
    that could not be sent stay pending for the relay."""
    if not rows:
        return
    try:
        with db.session() as session:
            dispatch(session, rows, settings)
    except Exception:
        log.warning("outbox.dispatch_failed", rows=len(rows), exc_info=True)


def purge_dispatched(session: Session, older_than: timedelta) -> int:
    return session.execute(
        delete(OutboxMessage).where(OutboxMessage.dispatched_at < now() - older_than)
    ).rowcount or 0
