"""MicroBatcher: concurrent callers share batches, each gets its own result or its own error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from models.batching import MicroBatcher


class Recorder:
    """A batch function that blocks until released, so the test decides who is waiting when."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.active = 0
        self.overlapped = False

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.active += 1
        self.overlapped |= self.active > 1
        self.batches.append(list(items))
        self.started.set()
        self.release.wait(5)
        self.active -= 1
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def run_callers(caller, n: int, timeout: float = 30.0) -> None:
    """Run ``caller(0) .. caller(n - 1)`` on their own threads; fail if any is still waiting after ``timeout``
    (a lost wake-up would hang a worker thread for good)."""
    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "callers left waiting"


def test_callers_arriving_during_a_batch_go_together_in_the_next_one_up_to_max_size() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_size=3)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(batcher.submit, 1)
        run.started.wait(5)  # a lone caller does not wait for company
        rest = [pool.submit(batcher.submit, i) for i in range(2, 8)]
        wait_until(lambda: len(batcher._waiting) == 6)
        run.release.set()
        assert first.result(5) == 10
        assert [f.result(5) for f in rest] == [i * 10 for i in range(2, 8)]
    assert run.batches[0] == [1]
    assert [len(b) for b in run.batches[1:]] == [3, 3]
    assert sorted(i for b in run.batches for i in b) == list(range(1, 8))
    assert not run.overlapped


def test_an_item_error_reaches_only_its_caller_and_a_batch_error_reaches_all() -> None:
    run = Recorder()
    run.release.set()
    batcher = MicroBatcher(run)
    with pytest.raises(ValueError, match="bad -1"):
        batcher.submit(-1)
    assert batcher.submit(4) == 40

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("database down")

    failing = MicroBatcher(broken)
    with pytest.raises(RuntimeError, match="database down"):
        failing.submit(1)
    short = MicroBatcher(lambda items: [])
    with pytest.raises(RuntimeError, match="returned 0 results"):
        short.submit(1)


def test_linger_lets_callers_that_arrive_just_after_the_first_join_its_batch() -> None:
    run = Recorder()
    run.release.set()
    batcher = MicroBatcher(run, max_size=4, linger=2.0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(4)]
        assert sorted(f.result(5) for f in futures) == [0, 10, 20, 30]
    # four arrivals fill the batch, so the leader stops lingering long before 2 s
    assert len(run.batches) == 1 and sorted(run.batches[0]) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        MicroBatcher(run, max_size=0)


def test_many_callers_in_small_batches_all_finish_with_their_own_results() -> None:
    """Only a batch's callers and the next leader are woken when a batch ends: no caller may be left waiting
    (a lost wake-up would hang a worker thread for good)."""
    active = 0
    overlapped = False
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        nonlocal active, overlapped
        with lock:
            active += 1
            overlapped |= active > 1
        time.sleep(0.0005)
        with lock:
            active -= 1
        return [i * 3 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_size=4)
    results: dict[int, int] = {}

    def caller(first: int) -> None:
        for i in range(first, 2_000, 40):
            results[i] = batcher.submit(i)

    run_callers(caller, 40)
    assert results == {i: i * 3 for i in range(2_000)}
    assert not overlapped


def test_a_caller_submitting_several_items_gets_each_outcome_and_shares_batches_with_others() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_size=3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        lone = pool.submit(batcher.submit, 100)
        run.started.wait(5)
        many = pool.submit(batcher.submit_many, [1, -2, 3, 4, 5])  # more than one batch holds
        wait_until(lambda: len(batcher._waiting) == 5)
        other = pool.submit(batcher.submit, 6)
        wait_until(lambda: len(batcher._waiting) == 6)
        run.release.set()
        assert lone.result(5) == 1000
        outcomes = many.result(5)
        assert other.result(5) == 60
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [10, "bad -2", 30, 40, 50]
    # the leader's own items first, then the other caller's item where there is room
    assert run.batches[1:] == [[1, -2, 3], [4, 5, 6]]
    assert batcher.submit_many([]) == []


def test_callers_of_several_items_in_small_batches_all_finish() -> None:
    def run(items: list[int]) -> list[int]:
        time.sleep(0.0002)
        return [i + 1 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_size=5)
    results: dict[int, list[int | BaseException]] = {}

    def caller(n: int) -> None:
        for k in range(50):
            items = list(range(n * 1000 + k * 10, n * 1000 + k * 10 + 1 + (n + k) % 9))
            results[n * 1000 + k * 10] = batcher.submit_many(items)

    run_callers(caller, 12)
    assert len(results) == 600
    assert all(outcomes == [first + i + 1 for i in range(len(outcomes))] for first, outcomes in results.items())
