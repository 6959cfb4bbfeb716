"""Actors: take ids, load fresh rows, call one marketplace service, commit once. Safe to run twice."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import structlog
import threadpoolctl

from marketplace.db.session import unit_of_work
from marketplace.domain.offers.drafting import (
    clarifying_question_inputs,
    offer_draft_inputs,
    save_clarifying_question,
    save_offer_draft,
)
from marketplace.domain.routing.engine import RECENT_TEXTS, NoTaxonomy, RefitPlan, get_engine
from marketplace.domain.routing.services import encode_ahead, reoffer, routing_texts
from marketplace.domain.routing.services import route_tasks as route_service
from marketplace.jobs import GROUPED, JOBS
from models import Drafter
from models.batching import MicroBatcher, StageLimit
from models.drafter import DraftResult
from workers import runtime
from workers.broker import broker  # noqa: F401  (declares the broker before the actors)

log = structlog.get_logger(__name__)
# The encoder already keeps every core busy with its own single-threaded lanes (models.onnx_backend). A
# routing batch's matrix products (Router.decide_many) are large enough for OpenBLAS to start its thread
# pool, whose threads then spin for the cores: measured +40 % CPU per routed task (bench/README.md).
threadpoolctl.threadpool_limits(1, user_api="blas")
_drafters: dict[str, Drafter] = {}


def drafter() -> Drafter:
    engine = runtime.settings().draft_engine
    if engine not in _drafters:
        _drafters[engine] = Drafter(engine)  # type: ignore[arg-type]
    return _drafters[engine]
RETRY = {"max_retries": 5, "min_backoff": 500, "max_backoff": 30_000, "time_limit": 120_000}


def _route(task_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    settings, engine = runtime.settings(), get_engine()
    # The model first, outside the write transaction: fitting one for a new taxonomy takes seconds, and on
    # SQLite the transaction would hold the database's write lock all that time.
    try:
        with runtime.database().session(readonly=True) as session:
            router = engine.router(session, tuning=settings.router_tuning)
    except NoTaxonomy:  # only tasks staff placed by hand can be routed
        router = None
    with unit_of_work(runtime.database(), settings) as session:
        outcomes = route_service(session, settings, engine, task_ids, router=router)
    # One line per batch: at a few hundred tasks a second, a line per task costs the worker noticeably.
    log.info("route_batch.done", tasks=len(task_ids), **Counter(outcomes.values()))
    return outcomes


def route_batch(task_ids: list[uuid.UUID]) -> list[str | Exception]:
    """Route the tasks of concurrent route_task jobs together. If the batch fails as a whole, each task is
    routed on its own, so one bad task fails only its own job (which dramatiq retries)."""
    try:
        outcomes = _route(task_ids)
        return [outcomes[t] for t in task_ids]
    except Exception as exc:
        if len(task_ids) == 1:
            return [exc]
        log.warning("route_batch.failed", tasks=len(task_ids), error=repr(exc))
    results: list[str | Exception] = []
    for task_id in task_ids:
        try:
            results.append(_route([task_id])[task_id])
        except Exception as exc:
            results.append(exc)
    return results


def encode_batch(texts: list[str]) -> list[None]:
    """Encode the texts of concurrent jobs' tasks in one call (the vectors wait in the engine for the write
    stage). Only a matter of speed: a failure here is logged and routing encodes what it needs itself."""
    try:
        encode_ahead(get_engine(), texts)
    except Exception as exc:
        log.warning("route_task.encode_failed", texts=len(texts), error=repr(exc))
    return [None] * len(texts)


def _prepare(task_ids: list[uuid.UUID]) -> int:
    """Encode a job's tasks before their write transaction, in the encoding stage, while the previous batch
    is written. The tasks are read here, on the job's own thread, so that the encoding stage does nothing
    but run the encoder: its lanes never wait for a query. Returns the number of texts handed to it."""
    try:
        with runtime.database().session(readonly=True) as session:
            texts = routing_texts(session, task_ids)
            get_engine().refresh_providers(session)  # new or edited profiles encoded outside the write lock
    except Exception as exc:
        log.warning("route_task.prepare_failed", tasks=len(task_ids), error=repr(exc))
        return 0
    _encoded.submit_many(texts)
    return len(texts)


# Worker threads running routing jobs hand their tasks to whichever of them is running a batch; a batch is as
# large as the jobs that arrived meanwhile (at most the stage's size), plus those arriving within ROUTE_LINGER
# s. A write batch of 64 instead of 32 halves the transactions, commits and statements per task: worker CPU
# per task -10 %. Encoder calls of 128 texts cost 3 % less CPU per text than calls of 64 (6 alternating
# rounds); on the Intel Xeon with AMX calls of 256 gave pipeline ratios of 0.655 - 0.679 against 0.632 - 0.641
# for 128 and 0.645 - 0.663 for 512 (alternating runs, bench/README.md). A call pads its own runs (calls of
# 128 task texts carried 3.4 % padding, one call over 3,000 0.3 %); larger calls leave one core idle longer
# while the last batch is written.
ENCODE_BATCH = 256
ROUTE_BATCH = 64
ROUTE_LINGER = 0.003
# Two stages, each one batch at a time: while one batch is written, the next one is being encoded.
_encoded: MicroBatcher[str, None] = MicroBatcher(encode_batch, max_size=ENCODE_BATCH, linger=ROUTE_LINGER)
_routes: MicroBatcher[uuid.UUID, str] = MicroBatcher(route_batch, max_size=ROUTE_BATCH, linger=ROUTE_LINGER)
# Tasks between the encode stage and the end of their write batch. Their vectors wait in the engine's cache of
# recent vectors (RECENT_TEXTS of them); an encode stage further ahead than that would have its oldest vectors
# evicted before the write stage got to them, and the write stage then encodes them again, a batch at a time,
# inside its transaction. A backlog of 15,000 tasks (96 threads, 32 tasks a message: 3,072 encoded ahead) was
# encoded twice and routed at half the rate of a burst of 3,000 (bench/README.md). A quarter of the cache: a
# task leaves one vector, but when the routing model changes (a tuned one takes over) the batches in between
# encode theirs again in the new model's space. 512 tasks are still two encoder calls and eight write batches.
ENCODE_AHEAD = RECENT_TEXTS // 4
_ahead = StageLimit(ENCODE_AHEAD)


@dramatiq.actor(actor_name="route_task", queue_name=JOBS["route_task"], **RETRY)
def route_task(task_id: str) -> None:
    tid = uuid.UUID(task_id)
    with _ahead.hold(1):
        _prepare([tid])
        outcome = _routes.submit(tid)
    log.debug("route_task.done", task_id=task_id, outcome=outcome)


class GroupedJobFailed(Exception):
    """Some of the jobs sent together as one message (marketplace.jobs.GROUPED) failed; the message is retried,
    and the jobs done meanwhile are skipped then (routing and drafting are idempotent)."""


def _raise_failed(what: str, keys: list[str], outcomes: list[Any]) -> None:
    """Raise GroupedJobFailed if any of ``outcomes`` (one per key) is an exception."""
    failed = [(k, o) for k, o in zip(keys, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise GroupedJobFailed(f"{len(failed)} of {len(keys)} {what} failed, first {failed[0][0]}: "
                               f"{failed[0][1]!r}") from failed[0][1]


@dramatiq.actor(actor_name="route_tasks", queue_name=JOBS["route_tasks"], **RETRY)
def route_tasks(task_ids: list[str]) -> None:
    """Several route_task jobs sent together (marketplace.jobs.GROUPED): their tasks join the same batches
    as single jobs' tasks do."""
    ids = [uuid.UUID(t) for t in task_ids]
    with _ahead.hold(len(ids)):
        _prepare(ids)
        outcomes = _routes.submit_many(ids)
    _raise_failed("routings", task_ids, outcomes)


def _draft(key: uuid.UUID, inputs_of: Callable[[Any, uuid.UUID], tuple[Any, ...] | str],
           write: Callable[..., DraftResult], save: Callable[[Any, uuid.UUID, DraftResult], str]) -> str:
    """Read a draft's inputs in a read-only session, write it with no transaction open (seconds with the
    generative model; on SQLite a write transaction would lock every other writer out meanwhile), then store it
    in a short unit of work. Returns the outcome, or why there was nothing to draft."""
    with runtime.database().session(readonly=True) as session:
        inputs = inputs_of(session, key)
    if isinstance(inputs, str):
        return inputs
    result = write(*inputs)
    with unit_of_work(runtime.database(), runtime.settings()) as session:
        return save(session, key, result)


@dramatiq.actor(actor_name="reoffer_task", queue_name=JOBS["reoffer_task"], **RETRY)
def reoffer_task(task_id: str, wanted: str = "1") -> None:
    """Rank the providers again for a routed task whose stored candidates ran out (offers.services.refill)."""
    settings, engine = runtime.settings(), get_engine()
    # As _route does: the routing model (whose encoder's space providers are ranked in), the provider snapshot
    # (hours old by now) and the task's vector are read and computed before the write transaction, which on
    # SQLite holds the database's write lock.
    with runtime.database().session(readonly=True) as session:
        try:
            encoder = engine.router(session, tuning=settings.router_tuning)[0].encoder
        except NoTaxonomy:  # the taxonomy was emptied since: rank where routing last did
            encoder = engine.ranking_encoder()
        engine.encode(encoder, routing_texts(session, [uuid.UUID(task_id)], routed=True))
        engine.refresh_providers(session, encoder)
    with unit_of_work(runtime.database(), settings) as session:
        outcome = reoffer(session, settings, engine, uuid.UUID(task_id), int(wanted), encoder)
    log.info("reoffer_task.done", task_id=task_id, outcome=outcome)


@dramatiq.actor(actor_name="draft_for_offer", queue_name=JOBS["draft_for_offer"], **RETRY)
def draft_for_offer(offer_id: str) -> None:
    outcome = _draft(uuid.UUID(offer_id), offer_draft_inputs, drafter().draft, save_offer_draft)
    log.info("draft_for_offer.done", offer_id=offer_id, outcome=outcome)


# its drafts run one after another: each gets the time limit a draft_for_offer message has
@dramatiq.actor(actor_name="draft_for_offers", queue_name=JOBS["draft_for_offers"],
                **{**RETRY, "time_limit": RETRY["time_limit"] * GROUPED["draft_for_offer"][1]})
def draft_for_offers(offer_ids: list[str]) -> None:
    """Several draft_for_offer jobs sent together: each offer is drafted and saved on its own, so one failure
    neither loses nor repeats the others' drafts."""
    outcomes: list[Exception | None] = []
    for offer_id in offer_ids:
        try:
            draft_for_offer.fn(offer_id)
            outcomes.append(None)
        except Exception as exc:
            log.warning("draft_for_offer.failed", offer_id=offer_id, error=repr(exc))
            outcomes.append(exc)
    _raise_failed("drafts", offer_ids, outcomes)


@dramatiq.actor(actor_name="draft_clarifying_question", queue_name=JOBS["draft_clarifying_question"], **RETRY)
def draft_clarifying_question(task_id: str) -> None:
    outcome = _draft(uuid.UUID(task_id), clarifying_question_inputs, drafter().clarifying_question,
                     save_clarifying_question)
    log.info("draft_clarifying_question.done", task_id=task_id, outcome=outcome)


@dramatiq.actor(actor_name="refit_router", queue_name=JOBS["refit_router"], max_retries=1, time_limit=3_600_000)
def refit_router() -> None:
    """Fit and save the tuned routing model for the current taxonomy (no-op when it exists)."""
    engine = get_engine()

    def read_plan() -> RefitPlan | None:
        with runtime.database().session(readonly=True) as session:  # read the examples, then let go of the DB
            return engine.refit_plan(session)

    def read_current() -> Path:
        with runtime.database().session(readonly=True) as session:
            return engine.current_tuned_path(session)

    outcome = engine.refit(read_plan, read_current)
    log.info("refit_router.done", outcome=outcome)

