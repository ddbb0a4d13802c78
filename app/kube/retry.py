"""When the Secret watch asks the API server again: its retry policy, apart from the loop that asks.

Plain state and arithmetic, told what happened (a list, a working watch, a 410, an error answer, an
unreachable server) and answering with how long to wait, so it is testable without a server; the clock
and the jitter can be given. The policy itself, as ``app.kube.watch`` documents it:

- failures back off exponentially (capped, jittered so replicas do not reconnect in lockstep);
- a refused connection, and a 403 within ``rbac_grace`` seconds of the API answering again, retry
  quickly instead (every ``quick_retry`` seconds, jittered): the API server is restarting, not
  overloaded, and a restarted one refuses everything until its RBAC caches are loaded. That 403 is
  logged once per window;
- a 410 Gone relists at once; only a 410 on the very watch a relist just started waits, for a delay that
  grows with that streak alone;
- every successful list and every sign of a working watch starts the backoff over, so an earlier outage
  never slows the recovery from the next one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Retry:
    """One failed attempt: how long to wait, its number among the failures in a row, what its log line adds."""

    delay: float
    attempt: int
    note: str = ""
    level: int = logging.WARNING


class RetryPolicy:
    """The backoff, the 410 streak and the RBAC-loading window of one watch; see the module docstring."""

    def __init__(
        self,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        quick_retry: float = 1.0,
        rbac_grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._quick_retry = quick_retry
        self._rbac_grace = rbac_grace
        self._clock = clock
        self._jitter = jitter
        self.failures = 0  # failed attempts in a row, for the log
        self._backoff_step = 0  # the exponent of the exponential backoff
        self._gone_streak = 0  # 410s in a row on the watch started right after a list
        self._fresh_list = False  # the current watch started from the list just made
        self._answered_at: float | None = None  # when the API answered again after being unreachable
        self._rbac_wait_logged = False

    # --- progress -----------------------------------------------------------------------------------

    def answered(self) -> None:
        """The API server sent an HTTP answer: starts the RBAC grace window if it was unreachable."""
        if self._answered_at is None:
            self._answered_at = self._clock()
            self._rbac_wait_logged = False

    def listed(self) -> int:
        """A list succeeded: the next watch starts from it. Returns the failures it ends (see ``progressed``)."""
        self.answered()
        failures = self.progressed()
        self._fresh_list = True
        return failures

    def watched(self) -> int:
        """The watch works (an event, a bookmark, a clean end): no 410 streak either. Returns the failures it ends."""
        failures = self.progressed()
        self._gone_streak = 0
        self._fresh_list = False
        return failures

    def progressed(self) -> int:
        """The backoff starts over; returns the failed attempts before, so a recovery can be said once."""
        failures, self.failures = self.failures, 0
        self._backoff_step = 0
        return failures

    # --- failures -----------------------------------------------------------------------------------

    def gone(self) -> Retry | None:
        """A 410 Gone: None to relist at once, a Retry only on the very watch a relist just started.

        That repeat (a list answered from a cache behind the watch's) would otherwise loop without pause.
        Its delay grows with the streak alone, never with failures from an earlier outage.
        """
        self.answered()
        self._gone_streak = self._gone_streak + 1 if self._fresh_list else 0
        self._fresh_list = False
        if self._gone_streak == 0:
            return None
        return self._retry(self._exponential_delay(self._gone_streak - 1))

    def refused(self, status: int | None) -> Retry:
        """An HTTP error answer. A 403 right after the API came back is retried quickly, logged once."""
        self._fresh_list = False
        self.answered()
        assert self._answered_at is not None
        since = self._clock() - self._answered_at
        if status != 403 or since >= self._rbac_grace:
            return self.backoff()
        delay = self._quick_delay()
        if self._rbac_wait_logged:
            return self._retry(delay, level=logging.DEBUG)
        self._rbac_wait_logged = True
        return self._retry(
            delay,
            note=f" (the API server answered {since:.1f}s ago and may still be loading its RBAC rules: "
            f"retried every {min(self._quick_retry, self._backoff_max):.1f}s at most for "
            f"{self._rbac_grace:.0f}s, logged once)",
        )

    def unreachable(self, connection_refused: bool) -> Retry:
        """No HTTP answer: a refused connection means the API server is (re)starting, cheap to ask again soon."""
        self._fresh_list = False
        self._answered_at = None
        return self._retry(self._quick_delay()) if connection_refused else self.backoff()

    def failed(self) -> Retry:
        """Anything else (a bug, a malformed answer): the exponential backoff."""
        self._fresh_list = False
        return self.backoff()

    def backoff(self) -> Retry:
        delay = self._exponential_delay(self._backoff_step)
        self._backoff_step += 1
        return self._retry(delay)

    # --- delays -------------------------------------------------------------------------------------

    def _retry(self, delay: float, note: str = "", level: int = logging.WARNING) -> Retry:
        self.failures += 1
        return Retry(delay, self.failures, note, level)

    def _exponential_delay(self, step: int) -> float:
        """Capped exponential backoff with jitter, so many replicas do not reconnect in lockstep."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(step, 30))
        return self._jitter(ceiling / 2, ceiling)

    def _quick_delay(self) -> float:
        ceiling = min(self._quick_retry, self._backoff_max)
        return self._jitter(ceiling / 2, ceiling)
