"""RecentItems: the cache that keeps customers' words in a process's memory for seconds, not days."""

from __future__ import annotations

import threading

import pytest

from marketplace.domain.routing.recent import RecentItems, cached_recently
from tests.conftest import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_item_is_gone_once_it_is_older_than_max_age_even_if_it_was_read_meanwhile() -> None:
    clock = Clock()
    cache: RecentItems[str, str] = RecentItems(10, max_age=60, clock=clock, sweep=False)
    cache.put("a", "text a")
    clock.now += 30
    assert cache.get("a") == "text a"  # reading does not make it younger
    cache.put("b", "text b")
    clock.now += 30
    assert cache.get("a") is None and "a" not in cache
    assert cache.get("b") == "text b"


def test_purge_drops_every_expired_item_without_reading_them() -> None:
    clock = Clock()
    cache: RecentItems[int, int] = RecentItems(100, max_age=10, clock=clock, sweep=False)
    for i in range(5):
        cache.put(i, i)
        clock.now += 3  # stored at 0, 3, 6, 9, 12; now 15
    assert cache.purge() == 2  # the ones stored at 0 and 3 are 15 and 12 seconds old
    assert len(cache) == 3 and sorted(k for k in range(5) if k in cache) == [2, 3, 4]


def test_the_oldest_stored_item_goes_first_when_full_and_storing_again_renews_an_item() -> None:
    clock = Clock()
    cache: RecentItems[str, int] = RecentItems(2, max_age=60, clock=clock, sweep=False)
    cache.put("a", 1)
    clock.now += 1
    cache.put("b", 2)
    clock.now += 1
    cache.put("a", 3)  # "a" again: now the youngest
    cache.put("c", 4)
    assert "b" not in cache and cache.get("a") == 3 and cache.get("c") == 4
    clock.now += 59.5  # "a" was stored again 59.5 s ago, not 61.5
    assert cache.get("a") == 3


def test_the_janitor_empties_a_cache_nobody_touches_again() -> None:
    cache: RecentItems[str, str] = RecentItems(10, max_age=0.2)
    cache.put("customer words", "vector")
    assert len(cache) == 1
    assert wait_until(lambda: len(cache) == 0), "the expired item was never swept"


def test_cached_recently_calls_the_function_again_after_max_age() -> None:
    calls: list[str] = []

    @cached_recently(size=8, max_age=0.2)
    def scrub(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert scrub("call me") == scrub("call me") == "CALL ME"
    assert calls == ["call me"]
    assert scrub.__name__ == "scrub"
    assert wait_until(lambda: len(scrub.cache) == 0)  # type: ignore[attr-defined]
    assert scrub("call me") == "CALL ME" and calls == ["call me", "call me"]


def test_concurrent_readers_and_writers_never_see_more_than_size_items() -> None:
    cache: RecentItems[int, int] = RecentItems(50, max_age=60, sweep=False)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                cache.put(offset + i, i)
                cache.get(offset + i // 2)
                assert len(cache) <= 50
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 50


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        RecentItems(0, 10)
    with pytest.raises(ValueError):
        RecentItems(10, 0)


_BEFORE_FORK: RecentItems[str, str] = RecentItems(10, max_age=0.2)


def _sweeps_in_child() -> None:
    _BEFORE_FORK.put("words typed in the child", "vector")
    raise SystemExit(0 if wait_until(lambda: len(_BEFORE_FORK) == 0) else 1)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_worker_process_sweeps_its_own_caches() -> None:
    """dramatiq forks its worker processes from a parent that imported the routing code: the caches exist
    before the fork, the janitor thread does not survive it."""
    import multiprocessing

    _BEFORE_FORK.put("in the parent", "vector")  # the parent's janitor runs
    child = multiprocessing.get_context("fork").Process(target=_sweeps_in_child)
    child.start()
    child.join(30)
    assert child.exitcode == 0, "the child's cache was never swept"
