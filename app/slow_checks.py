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

from app.decision import Decision, RequestFacts, Snapshot, decide
from app.throttle import Throttle


class SlowChecks:
    def __init__(self, max_pending: int, throttle: Throttle) -> None:
        self.max_pending = max_pending
        self.throttle = throttle
        self.pending = 0  # checks waiting for or running in a worker thread now

    async def decide(self, route_name: str, facts: RequestFacts, snapshot: Snapshot, now: dt.datetime) -> Decision:
        """The decision of a request that needs a slow hash check, made in a worker thread, or the refusal
        when :attr:`max_pending` already wait."""
        if self.pending >= self.max_pending:
            return Decision(403, "slow_checks_saturated", scheme="basic")
        self.pending += 1
        try:
            decision = await asyncio.to_thread(decide, route_name, facts, snapshot, self.throttle, now, slow_ok=True)
        finally:
            self.pending -= 1
        assert decision is not None
        return decision
