"""bench/turns.py: the cases of a run take turns, one at a time, round-robin, and the first failure stops all."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from bench import turns
from bench.turns import Turns


def _case(name: str, steps: int, trace: list[str], running: list[int]) -> Callable[[], str]:
    def job() -> str:
        for step in range(steps):
            running.append(1)
            assert len(running) == 1, "two cases ran at once"
            trace.append(f"{name}{step}")
            running.pop()
            if step < steps - 1:
                turns.pass_turn()
        return name

    return job


def test_cases_take_turns_one_step_each_until_each_is_done() -> None:
    trace: list[str] = []
    running: list[int] = []
    jobs = [_case("a", 3, trace, running), _case("b", 1, trace, running), _case("c", 2, trace, running)]
    assert Turns().run(jobs) == ["a", "b", "c"]
    assert trace == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_a_lone_case_keeps_the_turn() -> None:
    trace: list[str] = []
    assert Turns().run([_case("a", 3, trace, [])]) == ["a"]
    assert trace == ["a0", "a1", "a2"]


def test_the_first_failure_stops_every_case_and_is_raised() -> None:
    trace: list[str] = []

    def failing() -> None:
        trace.append("b0")
        turns.pass_turn()
        raise ValueError("b broke in its second turn")

    jobs = [_case("a", 4, trace, []), failing, _case("c", 4, trace, [])]
    with pytest.raises(ValueError, match="second turn"):
        Turns().run(jobs)
    # b failed in its second turn, right after a's: c, whose turn came next, and a ran no further step.
    assert trace == ["a0", "b0", "c0", "a1"]
    assert not [t for t in threading.enumerate() if t.name.startswith("case-")], "a case's thread outlived the run"


def test_outside_a_run_passing_the_turn_does_nothing() -> None:
    turns.pass_turn()  # returns at once: a case run case by case, or a test calling bench/measure.py
