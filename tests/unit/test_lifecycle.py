"""Task state machine table: terminal states, cancellation, no skipped steps, and no dead ends."""

from __future__ import annotations

from marketplace.db.models import TaskStatus as S
from marketplace.domain.tasks.lifecycle import ALLOWED, TERMINAL


def reachable(start: S) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in ALLOWED[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_every_status_is_a_key() -> None:
    assert set(ALLOWED) == set(S)


def test_completed_and_cancelled_are_the_only_terminal_states() -> None:
    assert {S.COMPLETED, S.CANCELLED} == TERMINAL
    assert ALLOWED[S.COMPLETED] == ALLOWED[S.CANCELLED] == frozenset()


def test_every_open_status_can_be_cancelled_except_delivered() -> None:
    cancellable = {s for s in S if S.CANCELLED in ALLOWED[s]}
    assert cancellable == set(S) - TERMINAL - {S.DELIVERED}
    # Delivered work is accepted or sent back for changes, not silently cancelled.
    assert ALLOWED[S.DELIVERED] == {S.COMPLETED, S.IN_PROGRESS}


def test_no_skipped_steps_and_no_self_loops() -> None:
    assert S.ASSIGNED not in ALLOWED[S.SUBMITTED]
    assert S.ROUTED not in ALLOWED[S.SUBMITTED]
    assert S.COMPLETED not in ALLOWED[S.IN_PROGRESS]  # only through delivery
    assert all(s not in nxt for s, nxt in ALLOWED.items())


def test_every_status_is_reachable_and_no_open_status_is_a_dead_end() -> None:
    assert reachable(S.SUBMITTED) == set(S)
    for s in set(S) - TERMINAL:
        assert S.COMPLETED in reachable(s), s
