"""Micro-batching for concurrent callers: whoever arrives while a batch runs goes together in the next one.

There is no batching thread. The first caller that finds nothing running becomes the leader: it takes every
waiting item (up to ``max_size``), runs them as one batch on its own thread and hands each waiting caller its
own result. Callers that arrive meanwhile wait; when the batch ends one of them leads the next. Under load
batches grow by themselves; a lone caller runs at once (after ``linger`` seconds, if set, to let others join).

``StageLimit`` bounds how much work waits between two such stages.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T, wake: threading.Condition) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False
        # Each caller waits on its own condition (shared by its items): when a batch ends, only its callers
        # and the next leader are woken, not every waiting thread (a worker has dozens waiting; waking all of
        # them for every batch cost a few per cent of its CPU, bench/README.md).
        self.wake = wake


class MicroBatcher(Generic[T, R]):
    """``run(items)`` returns one result per item, in order; a result that is an exception is raised in that
    item's caller only. If ``run`` itself raises an ``Exception``, every caller of the batch gets it; any other
    ``BaseException`` (an interruption of the leader's thread) is raised in the leader only, and the other
    callers' items are run again in the next batch."""

    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]], max_size: int | None = None,
                 linger: float = 0.0) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._run = run
        self.max_size = max_size
        self.linger = linger
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the leader lingers on this
        self._waiting: list[_Slot[T, R]] = []
        self._running = False

    def submit(self, item: T) -> R:
        (outcome,) = self.submit_many([item])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_many(self, items: Sequence[T]) -> list[R | BaseException]:
        """Submit several items at once (they go in as few batches as ``max_size`` allows, with other callers'
        items where there is room) and wait for all of them. Returns one outcome per item, in order: its
        result, or the exception raised for it."""
        wake = threading.Condition(self._lock)
        slots: list[_Slot[T, R]] = [_Slot(item, wake) for item in items]
        with self._lock:
            self._waiting.extend(slots)
            self._arrived.notify()
        leading = False  # this caller set _running and has not yet reset it
        try:
            while True:
                with self._lock:
                    while self._running and not all(s.done for s in slots):
                        wake.wait()
                    if all(s.done for s in slots):
                        return [s.error if s.error is not None else s.result for s in slots]  # type: ignore[misc]
                    leading = self._running = True  # in this order: an interruption between leaves no stale flag
                    batch = self._take(slots)
                try:
                    self._execute(batch, wake)
                finally:
                    with self._lock:
                        self._running = leading = False
                        for condition in {id(s.wake): s.wake for s in batch}.values():
                            condition.notify()
                        if self._waiting:  # the next batch's leader
                            self._waiting[0].wake.notify()
        except BaseException:
            # An exception raised into this thread while it waited, lingered or led (dramatiq's time limit
            # does that; it is not the batch's failure): withdraw this caller's items that no batch has taken,
            # and if nobody leads now, wake the next caller to, or the others would wait for good.
            with self._lock:
                mine = {id(s) for s in slots}
                self._waiting = [s for s in self._waiting if id(s) not in mine]
                if leading:
                    self._running = False
                if not self._running and self._waiting:
                    self._waiting[0].wake.notify()
            raise

    def _take(self, slots: list[_Slot[T, R]]) -> list[_Slot[T, R]]:
        """Under the lock, as the leader: linger, then take the next batch out of the waiting items."""
        if self.linger > 0:
            deadline = time.monotonic() + self.linger
            while not self._full() and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
        # The leader's own items always go in its batch, first; then other callers' in arrival order.
        size = len(self._waiting) if self.max_size is None else self.max_size
        own = [s for s in slots if not s.done][:size]
        taken = {id(s) for s in own}
        others = [s for s in self._waiting if id(s) not in taken]
        batch = own + others[: size - len(own)]
        taken.update(id(s) for s in batch)
        self._waiting = [s for s in self._waiting if id(s) not in taken]
        return batch

    def _full(self) -> bool:
        return self.max_size is not None and len(self._waiting) >= self.max_size

    def _execute(self, batch: list[_Slot[T, R]], leader: threading.Condition) -> None:
        try:
            results = self._run([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} items returned {len(results)} results")
        except Exception as exc:  # every caller in the batch sees the failure
            for s in batch:
                s.error, s.done = exc, True
            return
        except BaseException:
            # Not the batch's failure but the leader's own interruption (dramatiq's time limit, a shutdown):
            # raised in the leader only; the other callers' items go back to the head of the queue, for the
            # next leader to run again (the callers of a batch must accept that: routing and encoding do).
            with self._lock:
                self._waiting[:0] = [s for s in batch if s.wake is not leader]
            raise
        for s, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                s.error = result
            else:
                s.result = result
            s.done = True

    @staticmethod
    def _outcome(slot: _Slot[T, R]) -> R:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]


class _Waiter:
    __slots__ = ("granted", "units", "wake")

    def __init__(self, units: int, wake: threading.Condition) -> None:
        self.units, self.wake, self.granted = units, wake, False


class StageLimit:
    """At most ``limit`` units of work between two stages of a pipeline (items encoded ahead of the stage
    that writes them, say). ``hold(n)`` waits until ``n`` more units fit, first come first served, so a large
    request is not passed over forever by small ones; a request above ``limit`` waits for everything else to
    leave and then runs alone. Units are given back when the ``with`` block ends, however it ends: an
    exception raised into a waiting thread (dramatiq's time limit does that) withdraws its request."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._held = 0
        self._queue: deque[_Waiter] = deque()

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self, units: int) -> Iterator[None]:
        units = max(0, min(units, self.limit))
        self._acquire(units)
        try:
            yield
        finally:
            with self._lock:
                self._held -= units
                self._grant()

    def _acquire(self, units: int) -> None:
        with self._lock:
            if not self._queue and self._held + units <= self.limit:
                self._held += units
                return
            waiter = _Waiter(units, threading.Condition(self._lock))
            self._queue.append(waiter)
            try:
                while not waiter.granted:
                    waiter.wake.wait()
            except BaseException:
                if waiter.granted:  # granted just as the exception arrived: give the units back
                    self._held -= units
                else:
                    self._queue.remove(waiter)
                self._grant()  # whoever it was holding up
                raise

    def _grant(self) -> None:
        """Under the lock: let in the waiters at the head of the queue that now fit."""
        while self._queue and self._held + self._queue[0].units <= self.limit:
            waiter = self._queue.popleft()
            self._held += waiter.units
            waiter.granted = True
            waiter.wake.notify()
