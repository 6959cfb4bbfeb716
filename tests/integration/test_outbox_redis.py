"""The outbox's Redis path: a batch of jobs goes to Redis in one round trip, stored exactly as dramatiq's own
``enqueue`` stores a message, so any dramatiq worker consumes it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from marketplace import jobs
from marketplace.settings import Settings

REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL")
pytestmark = [pytest.mark.redis, pytest.mark.skipif(not REDIS_URL, reason="RELAY_TEST_REDIS_URL not set")]


@pytest.fixture
def broker() -> Iterator[dramatiq.Broker]:
    namespace = f"relay-test-{uuid.uuid4().hex[:8]}"
    broker = jobs._redis_broker(Settings(broker="redis", redis_url=REDIS_URL, redis_namespace=namespace,
                                         secret_key="x"))
    yield broker
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*"))
    if keys:
        client.delete(*keys)
    broker.close()


def _stored(broker: dramatiq.Broker, queue: str) -> list[dramatiq.Message]:
    client = redis.Redis.from_url(REDIS_URL)
    ids = [i.decode() for i in client.lrange(f"{broker.namespace}:{queue}", 0, -1)]
    raw = client.hgetall(f"{broker.namespace}:{queue}.msgs")
    return [dramatiq.Message.decode(raw[i.encode()]) for i in ids]


def _message(args: list[str]) -> dramatiq.Message:
    return dramatiq.Message(queue_name="drafting", actor_name="draft_for_offer", args=tuple(args), kwargs={},
                            options={}, message_id=str(uuid.uuid4()))


def count_round_trips(broker: dramatiq.Broker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the number of commands in each pipeline the broker's client sends, one entry a round trip."""
    round_trips: list[int] = []
    pipeline = broker.client.pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: round_trips.append(len(pipe.command_stack)) or execute(*a, **k)
        return pipe

    monkeypatch.setattr(broker.client, "pipeline", counting_pipeline)
    return round_trips


def test_a_batch_of_jobs_is_stored_like_single_enqueues(broker: dramatiq.Broker) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    broker.enqueue(_message(["single"]))
    single = _stored(broker, "drafting")
    client.delete(f"{broker.namespace}:drafting", f"{broker.namespace}:drafting.msgs")

    batch = [_message([f"offer-{k}"]) for k in range(5)]
    broker.enqueue_many(batch)
    stored = _stored(broker, "drafting")
    assert [m.message_id for m in stored] == [m.message_id for m in batch], "in order, each exactly once"
    assert [m.args for m in stored] == [(f"offer-{k}",) for k in range(5)]
    for m in stored:
        assert m.actor_name == "draft_for_offer" and m.queue_name == "drafting"
        assert set(m.options) == set(single[0].options), "the same bookkeeping as dramatiq's own enqueue"
    assert len({m.options["redis_message_id"] for m in stored}) == 5


def test_dispatch_sends_a_units_jobs_together_and_marks_them(broker: dramatiq.Broker, db, settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "get_broker", lambda _settings: broker)
    monkeypatch.setattr(jobs, "can_deliver", lambda _settings: True)
    # As after any earlier send: on a Redis that never ran the dispatch script (a fresh server, this test run
    # first) the first pipeline loads it and goes again, which the lost-scripts test below covers.
    broker.client.script_load(broker.scripts["dispatch"].script)
    round_trips = count_round_trips(broker, monkeypatch)
    with db.session() as session:
        # (jobs that travel one message each: draft_for_offer jobs would go as one grouped message)
        queued = jobs.enqueue_many(session, "draft_clarifying_question", [(uuid.uuid4(),) for _ in range(7)])
    with db.session() as session:
        assert jobs.dispatch(session, queued, settings) == 7
    assert round_trips == [7], "one round trip for the whole unit of work"
    assert sorted(m.message_id for m in _stored(broker, "drafting")) == sorted(str(j.id) for j in queued)
    with db.session() as session:
        assert jobs.relay_pending(session, settings) == 0, "every row is marked dispatched"


def test_acks_of_jobs_finishing_together_share_round_trips_and_clear_the_messages(
    broker: dramatiq.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    client = redis.Redis.from_url(REDIS_URL)
    sent = [_message([f"offer-{k}"]) for k in range(40)]
    broker.enqueue_many(sent)
    consumer = broker.consume("drafting", prefetch=40, timeout=100)
    fetched = [m for m in (next(consumer) for _ in range(41)) if m is not None]
    assert sorted(m.message_id for m in fetched) == sorted(m.message_id for m in sent)
    unacked = f"{broker.namespace}:__acks__.{broker.broker_id}.drafting"
    assert client.scard(unacked) == 40

    round_trips = count_round_trips(broker, monkeypatch)
    start = threading.Barrier(len(fetched))

    def finish(message: dramatiq.Message) -> None:  # as a worker thread does once its job is done
        start.wait()
        consumer.ack(message)

    threads = [threading.Thread(target=finish, args=(m,)) for m in fetched]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(round_trips) == 40 and len(round_trips) < 40, "every ack sent, several to a round trip"
    assert client.scard(unacked) == 0 and client.hlen(f"{broker.namespace}:drafting.msgs") == 0
    assert consumer.outstanding_message_count == 0
    consumer.close()


def test_batched_sends_and_acks_still_work_after_redis_lost_its_scripts(broker: dramatiq.Broker) -> None:
    """After a Redis restart the dispatch script is gone; the pipelines load it again instead of failing."""
    client = redis.Redis.from_url(REDIS_URL)
    client.script_flush()
    sent = [_message([f"offer-{k}"]) for k in range(3)]
    broker.enqueue_many(sent)
    assert [m.message_id for m in _stored(broker, "drafting")] == [m.message_id for m in sent]

    consumer = broker.consume("drafting", prefetch=3, timeout=100)
    fetched = [m for m in (next(consumer) for _ in range(4)) if m is not None]
    client.script_flush()
    for message in fetched:
        consumer.ack(message)
    assert client.hlen(f"{broker.namespace}:drafting.msgs") == 0
    consumer.close()


def test_an_idle_queue_is_polled_often_so_a_new_job_starts_at_once(
    broker: dramatiq.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dramatiq's consumer sleeps longer after every empty fetch, up to the worker timeout (1 s): a task posted to
    an idle worker waited up to a second before routing began. Ours never sleeps more than IDLE_POLL_MS."""
    import dramatiq.brokers.redis as dramatiq_redis

    sleeps: list[float] = []
    monkeypatch.setattr(dramatiq_redis.time, "sleep", sleeps.append)  # record each back-off, do not wait
    ours = broker.consume("drafting", prefetch=4, timeout=1000)  # dramatiq's default worker timeout
    assert [next(ours) for _ in range(12)] == [None] * 12
    assert max(sleeps) <= jobs.IDLE_POLL_MS / 1000
    sleeps.clear()
    theirs = dramatiq_redis._RedisConsumer(broker, "drafting", 4, 1000)
    assert [next(theirs) for _ in range(12)] == [None] * 12
    assert max(sleeps) >= 0.5  # what the stock consumer would have done

    message = _message(["offer-1"])
    broker.enqueue_many([message])
    fetched = next(ours)  # found on the next poll
    assert fetched is not None and fetched.message_id == message.message_id
    ours.ack(fetched)
    ours.close()
    theirs.close()
