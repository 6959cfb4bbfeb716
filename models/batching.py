"""Micro-batching for concurrent callers: whoever arrives while a batch runs goes together in the next one.

There is no batching thread. The first caller that finds nothing running becomes the leader: it takes every
waiting item (up to ``max_size``), runs them as one batch on its own thread and hands each waiting caller its
own result. Callers that arrive meanwhile wait; when the batch ends one of them leads the next. Under load
batches grow by themselves; a lone caller runs at once (after ``linger`` seconds, if set, to let others join).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "result", "error", "done", "wake")

    def __init__(self, item: T, lock: threading.Lock) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False
        # Each caller waits on its own condition: when a batch ends, only its callers and the next leader are
        # woken, not every waiting thread (a worker has dozens waiting; waking all of them for every batch
        # cost a few per cent of its CPU, bench/README.md).
        self.wake = threading.Condition(lock)


class MicroBatcher(Generic[T, R]):
    """``run(items)`` returns one result per item, in order; a result that is an exception is raised in that
    item's caller only. If ``run`` itself raises, every caller of the batch gets the exception."""

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
        slot: _Slot[T, R] = _Slot(item, self._lock)
        with self._lock:
            self._waiting.append(slot)
            self._arrived.notify()
            while not slot.done and self._running:
                slot.wake.wait()
            if slot.done:
                return self._outcome(slot)
            self._running = True
            if self.linger > 0:
                deadline = time.monotonic() + self.linger
                while not self._full() and (left := deadline - time.monotonic()) > 0:
                    self._arrived.wait(left)
            self._waiting.remove(slot)  # the leader's own item always goes in its batch
            size = len(self._waiting) + 1 if self.max_size is None else self.max_size
            batch, self._waiting = [slot, *self._waiting[: size - 1]], self._waiting[size - 1 :]
        try:
            self._execute(batch)
        finally:
            with self._lock:
                self._running = False
                for s in batch:
                    s.wake.notify()
                if self._waiting:  # the next batch's leader
                    self._waiting[0].wake.notify()
        return self._outcome(slot)

    def _full(self) -> bool:
        return self.max_size is not None and len(self._waiting) >= self.max_size

    def _execute(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._run([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} items returned {len(results)} results")
        except BaseException as exc:  # every caller in the batch sees the failure
            for s in batch:
                s.error, s.done = exc, True
            return
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
