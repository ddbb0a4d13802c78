"""The bound on slow hash checks waiting for a worker thread, one for every wire together.

Only bcrypt-like password checks are slow (app.passwords.SLOW_KINDS); the decision (app.decision.decide)
declines to do one on the event loop and the decision core hands exactly that case to this module, which
runs it in a worker thread. How many may wait is bounded, for HTTP and gRPC together, so a flood of
first-time Basic guesses (say from addresses a client may choose, see docs/security.md) cannot queue
unbounded bcrypt work: past the bound they are refused (403 ``slow_checks_saturated``) without a check,
while tokens and already verified passwords, which need none, keep passing.

Everything runs on the one event loop, so the count needs no lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from app.decision import Decision, RequestFacts, Snapshot, decide
from app.throttle import Throttle

T = TypeVar("T")


class SlowChecks:
    def __init__(self, max_pending: int, throttle: Throttle) -> None:
        self.max_pending = max_pending
        self.throttle = throttle
        self.pending = 0  # checks waiting for or running in a worker thread now

    async def run(self, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)`` in a worker thread, counted against the one bound; None (nothing run) when
        :attr:`max_pending` already wait. The decision core and the sign-in form (app.browser) share it."""
        if self.pending >= self.max_pending:
            return None
        self.pending += 1
        try:
            return await asyncio.to_thread(check, *args)
        finally:
            self.pending -= 1

    async def decide(self, route_name: str, facts: RequestFacts, snapshot: Snapshot, now: dt.datetime) -> Decision:
        """The decision of a request that needs a slow hash check, made in a worker thread, or the refusal
        when :attr:`max_pending` already wait."""
        decision = await self.run(_decide_slowly, route_name, facts, snapshot, self.throttle, now)
        return Decision(403, "slow_checks_saturated", scheme="basic") if decision is None else decision


def _decide_slowly(
    route_name: str, facts: RequestFacts, snapshot: Snapshot, throttle: Throttle, now: dt.datetime
) -> Decision:
    decision = decide(route_name, facts, snapshot, throttle, now, slow_ok=True)
    assert decision is not None
    return decision
