"""MicroBatcher: concurrent callers share batches, each gets its own result or its own error. StageLimit:
never more than its limit held, first come first served, units given back however a holder ends."""

from __future__ import annotations

import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded

from models.batching import MicroBatcher, StageLimit


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


def holder(limit: StageLimit, units: int, log: list[str], name: str, release: threading.Event) -> None:
    with limit.hold(units):
        log.append(name)
        release.wait(5)


def interrupt(thread: threading.Thread) -> None:
    """Raise dramatiq's time limit in ``thread`` the way dramatiq does (PyThreadState_SetAsyncExc): it goes off
    once the thread runs Python code again, e.g. when it is woken."""
    assert ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(TimeLimitExceeded)) == 1


def test_a_leader_interrupted_while_lingering_leaves_the_batcher_usable() -> None:
    batcher = MicroBatcher(lambda items: [i * 10 for i in items], linger=30.0)  # lingers until interrupted
    errors: list[BaseException] = []

    def lingering() -> None:
        try:
            batcher.submit(1)
        except TimeLimitExceeded as exc:
            errors.append(exc)

    leader = threading.Thread(target=lingering, daemon=True)
    leader.start()
    wait_until(lambda: batcher._running)
    interrupt(leader)
    batcher._arrived.acquire()  # wake the lingering leader so that the exception goes off
    batcher._arrived.notify()
    batcher._arrived.release()
    leader.join(5)
    assert errors and not leader.is_alive()
    batcher.linger = 0.0
    results: list[int] = []
    run_callers(lambda k: results.append(batcher.submit(2)), 1, timeout=5)
    assert results == [20]


def test_the_next_leader_interrupted_as_it_is_woken_hands_the_lead_on() -> None:
    """When a batch ends, only the first waiting caller is woken to lead the next one. If its job's time limit
    went off meanwhile, it leaves; the callers behind it must still be served."""
    recorder = Recorder()
    batcher = MicroBatcher(recorder)
    results: dict[int, int | BaseException] = {}

    def caller(k: int) -> None:
        try:
            results[k] = batcher.submit(k)
        except BaseException as exc:  # what the interrupted caller sees is the point
            results[k] = exc

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in (1, 2, 3)]
    threads[0].start()
    recorder.started.wait(5)  # caller 1 leads a batch that waits for the release
    threads[1].start()
    wait_until(lambda: len(batcher._waiting) == 1)
    threads[2].start()
    wait_until(lambda: len(batcher._waiting) == 2)
    interrupt(threads[1])  # caller 2 is first in line to lead the next batch
    recorder.release.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "callers left waiting"
    assert results[1] == 10 and results[3] == 30
    assert isinstance(results[2], TimeLimitExceeded)
    assert recorder.batches == [[1], [3]]  # the interrupted caller's item was withdrawn, not run


def test_a_leader_interrupted_while_running_a_batch_fails_alone_and_the_others_run_again() -> None:
    """The leader's time limit is not the batch's failure: the other callers' items run in the next batch,
    and the leader sees its interruption raised, not returned as a result."""
    calls: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            started.set()
            release.wait(5)  # the leader's time limit goes off when it runs Python code again
            time.sleep(0.05)
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, linger=0.2)
    results: dict[int, object] = {}

    def caller(k: int) -> None:
        try:
            results[k] = batcher.submit_many([k])
        except BaseException as exc:  # what the interrupted leader sees is the point
            results[k] = exc

    leader = threading.Thread(target=caller, args=(1,), daemon=True)
    leader.start()
    wait_until(lambda: batcher._running)
    others = [threading.Thread(target=caller, args=(k,), daemon=True) for k in (2, 3)]
    for t in others:
        t.start()
    wait_until(lambda: len(batcher._waiting) == 3)
    started.wait(5)
    interrupt(leader)
    release.set()
    for t in [leader, *others]:
        t.join(5)
    assert isinstance(results[1], TimeLimitExceeded)  # raised in the leader, not handed back as an outcome
    assert results[2] == [20] and results[3] == [30]
    assert calls[0] == [1, 2, 3] and sorted(calls[1]) == [2, 3]


def test_a_stage_limit_lets_in_no_more_than_its_limit() -> None:
    limit = StageLimit(3)
    peak, inside, lock = [0], [0], threading.Lock()

    def work(units: int) -> None:
        with limit.hold(units):
            with lock:
                inside[0] += units
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.002)
            with lock:
                inside[0] -= units

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, [1, 2, 1, 3, 1, 2] * 8))
    assert peak[0] == 3 and limit.held == 0


def test_a_stage_limit_serves_requests_in_order_and_a_large_one_alone() -> None:
    limit = StageLimit(4)
    log: list[str] = []
    gates = {name: threading.Event() for name in ("first", "big", "small", "huge")}
    with ThreadPoolExecutor(4) as pool:
        pool.submit(holder, limit, 2, log, "first", gates["first"])
        wait_until(lambda: log == ["first"])
        pool.submit(holder, limit, 3, log, "big", gates["big"])  # does not fit next to "first": waits
        wait_until(lambda: len(limit._queue) == 1)
        pool.submit(holder, limit, 1, log, "small", gates["small"])  # would fit, but "big" came first
        pool.submit(holder, limit, 10, log, "huge", gates["huge"])  # more than the limit: waits to run alone
        wait_until(lambda: len(limit._queue) == 3)
        time.sleep(0.05)
        assert log == ["first"]
        gates["first"].set()
        wait_until(lambda: sorted(log) == ["big", "first", "small"])  # 3 + 1 fit together
        assert limit.held == 4
        gates["big"].set()
        time.sleep(0.05)
        assert len(log) == 3  # "huge" waits for "small" too
        gates["small"].set()
        wait_until(lambda: log[-1] == "huge")
        assert limit.held == 4  # capped at the limit
        gates["huge"].set()
    assert limit.held == 0 and not limit._queue


def test_a_holder_interrupted_while_waiting_gives_its_place_back() -> None:
    """dramatiq's time limit raises an exception in the job's thread (PyThreadState_SetAsyncExc); one that
    arrives while the job waits here must not keep units that no one will give back."""
    limit = StageLimit(2)
    log: list[str] = []
    first, second = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def interrupted() -> None:
        try:
            holder(limit, 2, log, "interrupted", threading.Event())
        except TimeoutError as exc:
            errors.append(exc)

    with ThreadPoolExecutor(3) as pool:
        pool.submit(holder, limit, 2, log, "first", first)
        wait_until(lambda: log == ["first"])
        waiting = threading.Thread(target=interrupted)
        waiting.start()
        wait_until(lambda: len(limit._queue) == 1)
        assert ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(waiting.ident), ctypes.py_object(TimeoutError)) == 1
        first.set()  # the waiter is woken, granted, and the exception arrives: the units must come back
        waiting.join(5)
        assert errors and log == ["first"]
        wait_until(lambda: limit.held == 0)
        pool.submit(holder, limit, 2, log, "second", second)
        wait_until(lambda: log == ["first", "second"])
        second.set()
    assert limit.held == 0
