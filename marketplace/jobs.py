"""Background jobs, by name: the transactional outbox and the dramatiq broker it relays to.

The marketplace never imports actor modules. A service calls :func:`enqueue`, which writes an outbox row in
the caller's transaction; once that transaction commits the rows are sent to the broker. If the process dies
between commit and send, :func:`relay_pending` (run by the scheduler) sends them later. A job can therefore
arrive twice, never zero times, and never before the rows it refers to exist: actors are idempotent.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import OutboxMessage
from marketplace.settings import Settings
from models.batching import MicroBatcher

log = structlog.get_logger(__name__)

# Actor name -> queue. Workers declare actors with exactly these names and queues.
JOBS: dict[str, str] = {
    "route_task": "routing",
    "route_tasks": "routing",  # several route_task jobs sent at once, as one message (GROUPED)
    "draft_for_offer": "drafting",
    "draft_for_offers": "drafting",  # several draft_for_offer jobs sent at once (GROUPED)
    "reoffer_task": "routing",  # a routed task whose stored candidates ran out: ranked again among everyone
    "draft_clarifying_question": "drafting",  # for staff to send when routing could not place a task
    "refit_router": "training",  # minutes of CPU: its own queue so it never delays routing
}
QUEUES = sorted(set(JOBS.values()))
# Jobs of these actors that are sent together travel as messages of the batch actor, up to the given number
# per message, whose one argument is the list of the jobs' arguments. A routing worker batches concurrent jobs
# anyway; dramatiq's own work per message (fetch, middleware, ack: ~0.3 ms of CPU) was a fifth of what routing
# a task costs (bench/README.md). A routing batch makes a couple of offers per task, each with a draft job:
# sent in eights, the drafts of a batch of 64 tasks are ~19 messages instead of ~150 (a generative draft takes
# a few seconds, so a message of eight stays well inside its time limit). Outbox rows stay one per job.
GROUPED: dict[str, tuple[str, int]] = {
    "route_task": ("route_tasks", 32),
    "draft_for_offer": ("draft_for_offers", 8),
}
# dramatiq's Redis consumer finds an empty queue, sleeps, and doubles the sleep up to the worker timeout (1 s by
# default): a task posted to an idle worker waited 0.5 - 1 s before its routing began, up to a third of the
# time a burst of 1,200 took to route (bench.pipeline). Polling an idle queue every 50 ms costs Redis one short
# script call per queue and worker process that often.
IDLE_POLL_MS = 50

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
                broker: dramatiq.Broker = _redis_broker(settings)
            else:
                from dramatiq.brokers.stub import StubBroker

                broker = StubBroker()
            for queue in QUEUES:
                broker.declare_queue(queue)
            dramatiq.set_broker(broker)
            _broker, _broker_key = broker, key
        return _broker


def _redis_broker(settings: Settings) -> dramatiq.Broker:
    import redis
    from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
    from dramatiq.common import current_millis
    from dramatiq.errors import ConnectionClosed

    def dispatch_pipelined(broker: RedisBroker, command: str, calls: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run dramatiq's ``dispatch`` script once per ``(queue, extra args)`` in ``calls``, all in one round
        trip, with the arguments ``RedisBroker`` itself passes (dramatiq is pinned). EVALSHA directly: a
        redis-py ``Script`` in a pipeline first asks Redis whether the script exists, one more round trip per
        pipeline. If Redis lost its scripts (a restart), none of the calls ran: load it and send them again."""
        script = broker.scripts["dispatch"]
        for attempt in range(2):
            pipe = broker.client.pipeline(transaction=False)
            for queue_name, extra in calls:
                pipe.evalsha(script.sha, 1, broker.namespace, command, current_millis(), queue_name,
                             broker.broker_id, broker.heartbeat_timeout, broker.dead_message_ttl,
                             broker._should_do_maintenance(command), broker._max_unpack_size(), *extra)
            try:
                pipe.execute()
                return
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                broker.client.script_load(script.script)

    class BatchedAckConsumer(_RedisConsumer):
        """dramatiq's Redis consumer, except that

        - worker threads finishing at the same moment send their acks in one round trip. A routing worker
          finishes a batch's dozens of jobs at once; one round trip each was 7 % of its CPU (bench/README.md).
          Each ack still completes before its thread moves on, with the same ``dispatch`` script call as
          ``_RedisConsumer.ack`` (dramatiq is pinned);
        - an idle queue is polled at least every IDLE_POLL_MS instead of every worker timeout (1 s)."""

        def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
            super().__init__(broker, queue_name, prefetch, min(timeout, IDLE_POLL_MS))
            self._acks: MicroBatcher[str, None] = MicroBatcher(self._ack_many)

        def _ack_many(self, redis_ids: list[str]) -> list[None]:
            dispatch_pipelined(self.broker, "ack", [(self.queue_name, (redis_id,)) for redis_id in redis_ids])
            return [None] * len(redis_ids)

        def ack(self, message: dramatiq.Message) -> None:
            try:
                # the current queue, which differs from message.queue_name for a delayed message
                self._acks.submit(message.options["redis_message_id"])
            except redis.ConnectionError as e:
                raise ConnectionClosed(e) from None
            finally:
                self.queued_message_ids.discard(message.message_id)

    class PipelinedRedisBroker(RedisBroker):
        """dramatiq's Redis broker, plus :meth:`enqueue_many`: many messages in one round trip to Redis.

        A routing batch enqueues about a hundred draft jobs; one round trip each kept the routing worker
        waiting on Redis for a third of its time (bench/README.md). Each message goes through the same
        ``dispatch`` script call, with the same arguments, as ``RedisBroker.enqueue`` (dramatiq is pinned;
        tests/e2e runs this against a real Redis and worker)."""

        @property
        def consumer_class(self) -> type[_RedisConsumer]:
            return BatchedAckConsumer

        def enqueue_many(self, messages: Sequence[dramatiq.Message]) -> None:
            copies = []
            for message in messages:
                message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
                self.emit_before("enqueue", message, None)
                copies.append(message)
            dispatch_pipelined(self, "enqueue", [
                (m.queue_name, (m.options["redis_message_id"], m.encode())) for m in copies
            ])
            for message in copies:
                self.emit_after("enqueue", message, None)

    return PipelinedRedisBroker(url=settings.redis_url, namespace=settings.redis_namespace)


def attach_stub_consumer() -> None:
    """Called by the in-process worker: from now on, jobs sent to the stub broker in this process run."""
    global _stub_consumer
    _stub_consumer = True


def can_deliver(settings: Settings) -> bool:
    # A stub broker only delivers inside the process that runs the in-process worker. Anywhere else
    # (the CLI loading demo data, a test without a worker) jobs stay in the outbox until that process
    # relays them.
    return settings.broker == "redis" or _stub_consumer


@dataclass(frozen=True, slots=True)
class Job:
    """An outbox row as the dispatcher needs it (written with one INSERT, never loaded as an ORM object)."""

    id: uuid.UUID
    actor_name: str
    queue_name: str
    args: list[str]


def enqueue(session: Session, actor_name: str, *args: Any) -> Job:
    """Record a job in the caller's transaction; it is sent after commit."""
    return enqueue_many(session, actor_name, [args])[0]


def enqueue_many(session: Session, actor_name: str, calls: Iterable[Sequence[Any]]) -> list[Job]:
    """Record one job per argument tuple in ``calls``, all in one INSERT, in the caller's transaction."""
    if actor_name not in JOBS:
        raise ValueError(f"unknown job {actor_name!r}")
    queued = [Job(uuid.uuid4(), actor_name, JOBS[actor_name], [str(a) for a in args]) for args in calls]
    if queued:
        at = now()
        session.execute(insert(OutboxMessage.__table__), [
            {"id": j.id, "actor_name": j.actor_name, "queue_name": j.queue_name, "args": j.args,
             "created_at": at, "attempts": 0}
            for j in queued
        ])
        session.info.setdefault("outbox", []).extend(queued)
    return queued


def _message(row: Job | OutboxMessage) -> dramatiq.Message:
    return dramatiq.Message(queue_name=row.queue_name, actor_name=row.actor_name, args=tuple(row.args),
                            kwargs={}, options={}, message_id=str(row.id))


def _messages(rows: Sequence[Job | OutboxMessage]) -> list[dramatiq.Message]:
    """One message per row, except rows of a GROUPED actor when there are several: those go in groups."""
    messages, grouped = [], defaultdict(list)
    for row in rows:
        if row.actor_name in GROUPED and len(row.args) == 1:
            grouped[row.actor_name].append(row)
        else:
            messages.append(_message(row))
    for actor_name, group_rows in grouped.items():
        if len(group_rows) == 1:  # alone: sent as it is
            messages.append(_message(group_rows[0]))
            continue
        batch_actor, size = GROUPED[actor_name]
        for k in range(0, len(group_rows), size):
            messages.append(dramatiq.Message(
                queue_name=JOBS[batch_actor], actor_name=batch_actor,
                args=([row.args[0] for row in group_rows[k:k + size]],), kwargs={}, options={},
                message_id=str(uuid.uuid4())))
    return messages


def _send(broker: dramatiq.Broker, rows: Sequence[Job | OutboxMessage]) -> None:
    """Send jobs to the broker (in one round trip where it can). Raises if any may not have been sent."""
    messages = _messages(rows)
    if hasattr(broker, "enqueue_many"):
        broker.enqueue_many(messages)
    else:
        for message in messages:
            broker.enqueue(message)


def dispatch(session: Session, rows: Sequence[Job | OutboxMessage], settings: Settings) -> int:
    """Send committed outbox rows and mark them dispatched. If sending fails, the rows stay pending for the
    relay (some may have been sent already and will be sent again: a job may arrive twice, never zero
    times)."""
    if not can_deliver(settings) or not rows:
        return 0
    ids = [row.id for row in rows]
    try:
        _send(get_broker(settings), rows)
    except Exception:  # broker down: the relay retries
        log.warning("outbox.send_failed", jobs=len(rows), actors=sorted({r.actor_name for r in rows}),
                    exc_info=True)
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                        .values(attempts=OutboxMessage.attempts + 1))
        return 0
    session.execute(
        update(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.dispatched_at.is_(None))
        .values(dispatched_at=now(), attempts=OutboxMessage.attempts + 1)
    )
    return len(ids)


def take_pending(session: Session) -> list[Job]:
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


def dispatch_after_commit(db: Any, rows: Sequence[Job | OutboxMessage], settings: Settings) -> None:
    """Send what a committed unit of work enqueued. Never raises: the change is already saved, and rows
    that could not be sent stay pending for the relay.

    Units of work committing at the same moment (concurrent API requests, say) are sent together: one round
    trip to the broker, one transaction marking the rows dispatched, and their routing jobs grouped into
    route_tasks messages (GROUPED). A lone unit of work is sent at once."""
    if not rows:
        return
    key = (db.url, settings.broker, settings.redis_url, settings.redis_namespace)
    with _dispatchers_lock:
        batcher = _dispatchers.get(key)
        if batcher is None:
            batcher = _dispatchers[key] = MicroBatcher(_dispatch_together)
    batcher.submit_many([(db, settings, row) for row in rows])


def _dispatch_together(items: list[tuple[Any, Settings, Job | OutboxMessage]]) -> list[None]:
    db, settings, _ = items[0]  # all alike: same database and broker (the key of their batcher)
    rows = [row for _, _, row in items]
    try:
        with db.session() as session:
            dispatch(session, rows, settings)
    except Exception:
        log.warning("outbox.dispatch_failed", rows=len(rows), exc_info=True)
    return [None] * len(rows)


_dispatchers: dict[tuple[Any, ...], MicroBatcher[tuple[Any, Settings, Job | OutboxMessage], None]] = {}
_dispatchers_lock = threading.Lock()


def purge_dispatched(session: Session, older_than: timedelta) -> int:
    return session.execute(
        delete(OutboxMessage).where(OutboxMessage.dispatched_at < now() - older_than)
    ).rowcount or 0
