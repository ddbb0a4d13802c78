"""Cases taking turns: one round of each case in turn, so every case's rounds are spread over the whole run.

A shared host's noise comes and goes over minutes. Run case by case, a case measured in a noisy few minutes
reads low in every one of its rounds, and the median cannot tell. Taking turns, each case's rounds are
spread from the run's start to its end, so one noisy stretch costs each case one round, which the median
drops.

Each case runs in a thread of its own, exactly as it would alone, but only the thread holding the turn runs:
``pass_turn()`` (called by bench/measure.py after every round) hands the turn to the next case still running
and waits for it to come back. Nothing runs concurrently, so no measurement shares the machine with
another. Outside ``Turns.run`` (a run case by case, a test), ``pass_turn()`` does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

_local = threading.local()


class Aborted(RuntimeError):
    """Raised in a case waiting for its turn when another case failed: the run stops at the first failure."""


class Turns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running: list[int] = []  # job indices still running, in turn order
        self._holder: int | None = None
        self._failed: BaseException | None = None

    def run(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Runs ``jobs`` taking turns, the first first; returns their results in order, or raises the first
        failure once every job has stopped."""
        results: list[Any] = [None] * len(jobs)
        self._running = list(range(len(jobs)))
        self._holder = 0 if jobs else None

        def body(index: int) -> None:
            _local.turns, _local.index = self, index
            try:
                self._wait_for_turn(index)
                results[index] = jobs[index]()
            except BaseException as exc:  # handed to the caller below
                with self._cond:
                    if self._failed is None and not isinstance(exc, Aborted):
                        self._failed = exc
            finally:
                self._leave(index)

        threads = [threading.Thread(target=body, args=(i,), name=f"case-{i}", daemon=True) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._failed is not None:
            raise self._failed
        return results

    def _wait_for_turn(self, index: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._holder == index or self._failed is not None)
            if self._failed is not None:
                raise Aborted("another case failed")

    def _next_after(self, index: int) -> int | None:
        """The next running job after ``index`` in turn order (``index`` itself when it is the only one)."""
        later = [i for i in self._running if i > index]
        return later[0] if later else (self._running[0] if self._running else None)

    def _pass(self, index: int) -> None:
        with self._cond:
            self._holder = self._next_after(index)
            self._cond.notify_all()

    def _leave(self, index: int) -> None:
        with self._cond:
            self._running.remove(index)
            if self._holder == index:
                self._holder = self._next_after(index)
            self._cond.notify_all()

    def pass_turn(self, index: int) -> None:
        self._pass(index)
        self._wait_for_turn(index)


def pass_turn() -> None:
    """Hands the turn to the next case and waits for it to come back; nothing outside ``Turns.run``."""
    turns: Turns | None = getattr(_local, "turns", None)
    if turns is not None:
        turns.pass_turn(_local.index)
