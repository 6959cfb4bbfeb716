"""A small in-memory cache for customers' words: bounded in size *and* in age.

Routing keeps task texts (and their vectors) for the few seconds between a worker's encode stage and its write
stage, and the API keeps the PII-scrubbed text of a task it just suggested a category for. A plain LRU cache
would keep the last texts of a quiet process for days, in memory that no erasure request reaches (it runs in
another process); here every entry is dropped ``max_age`` seconds after it was stored, whether or not the
cache is used again: a janitor thread per process (started when the first item is stored) sweeps every cache
of this kind.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_caches: weakref.WeakSet[RecentItems[object, object]] = weakref.WeakSet()
_janitor: threading.Thread | None = None
_janitor_lock = threading.Lock()
_registered = threading.Event()  # wakes the janitor to look at a new cache's max_age


def _sweep_forever() -> None:
    """Every quarter of the shortest max_age among the live caches, drop their expired items."""
    while True:
        ages = [cache.max_age for cache in list(_caches)]
        _registered.wait(max(0.05, min(ages) / 4) if ages else 60.0)
        _registered.clear()
        for cache in list(_caches):
            try:
                cache.purge()
            except Exception:  # a cache with a broken clock must not stop the sweeping of the others
                log.exception("recent_items.purge_failed")


def _register(cache: RecentItems[object, object]) -> None:
    with _janitor_lock:
        _caches.add(cache)
    _registered.set()  # the janitor (started by the first put) looks at the new max_age


def _ensure_janitor() -> None:
    global _janitor
    if _janitor is not None:
        return
    with _janitor_lock:
        if _janitor is None:
            _janitor = threading.Thread(target=_sweep_forever, name="recent-items-janitor", daemon=True)
            _janitor.start()


def _after_fork_in_child() -> None:
    """A forked process (dramatiq's worker processes) has no janitor thread: the next put starts one. Locks
    another thread held at the fork would never be released in the child: every one is made anew."""
    global _janitor, _janitor_lock, _registered
    _janitor, _janitor_lock, _registered = None, threading.Lock(), threading.Event()
    for cache in list(_caches):
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RecentItems(Generic[K, V]):
    """Thread-safe. Holds at most ``size`` items (the oldest stored goes first), none longer than ``max_age``
    seconds after it was stored (reading an item does not make it younger)."""

    def __init__(self, size: int, max_age: float, clock: Callable[[], float] = time.monotonic,
                 sweep: bool = True) -> None:
        """``sweep``: let the process's janitor thread drop expired items (tests with a fake ``clock`` call
        :meth:`purge` themselves)."""
        if size < 1 or max_age <= 0:
            raise ValueError("size must be at least 1 and max_age positive")
        self.size = size
        self._max_age = max_age
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()  # in the order they were stored
        self._lock = threading.Lock()
        self._sweep = sweep
        if sweep:
            _register(self)  # type: ignore[arg-type]

    @property
    def max_age(self) -> float:
        return self._max_age

    @max_age.setter
    def max_age(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("max_age must be positive")
        self._max_age = seconds
        _registered.set()  # the janitor sweeps at the new pace at once

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            stored, value = found
            if self._clock() - stored >= self.max_age:
                del self._items[key]
                return None
            return value

    def put(self, key: K, value: V) -> None:
        if self._sweep and _janitor is None:  # started on first use (also in a forked process)
            _ensure_janitor()
        with self._lock:
            self._items.pop(key, None)  # stored again: it is young again, and last to go
            self._items[key] = (self._clock(), value)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def purge(self) -> int:
        """Drop the expired items; returns how many."""
        with self._lock:
            cutoff = self._clock() - self.max_age
            dropped = 0
            while self._items:
                stored, _ = next(iter(self._items.values()))
                if stored > cutoff:
                    break
                self._items.popitem(last=False)
                dropped += 1
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]


def cached_recently(size: int, max_age: float) -> Callable[[Callable[..., V]], Callable[..., V]]:
    """Like ``functools.lru_cache`` for a function of hashable positional arguments, with :class:`RecentItems`
    (bounded in age as well as size). The wrapper's ``cache`` attribute is the RecentItems."""

    def decorate(fn: Callable[..., V]) -> Callable[..., V]:
        cache: RecentItems[tuple[object, ...], V] = RecentItems(size, max_age)

        def wrapper(*args: object) -> V:
            hit = cache.get(args)
            if hit is not None:
                return hit
            value = fn(*args)
            cache.put(args, value)
            return value

        functools.update_wrapper(wrapper, fn)
        wrapper.cache = cache  # type: ignore[attr-defined]
        return wrapper

    return decorate
