"""Each wire's answer to a decision, rendered once and kept with the snapshot it was made on.

A wire turns a :class:`~app.decision.Decision` into its own answer (an ASGI start message in app.http, a
CheckResponse in app.doors.envoy_grpc) with its :data:`Render` function. Rendering costs more than answering
a repeat, so an answer that holds for the whole snapshot is kept: per (wire, route, decision) in
``Snapshot.answers``, and on a remembered allow's entry for each wire (app.allow_memo.Remembered.answers),
so that a repeat renders nothing. Only an answer whose Cache-Control max-age is bounded by a token's expiry
depends on the time; it is rendered afresh each time. This is the one place that knows when a rendering
may be kept; the wires only render, the decider and the fast lane only ask.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import NamedTuple, TypeVar, cast

from app.allow_memo import Remembered
from app.decision import Decision, Snapshot
from app.policy import Policy
from app.state import AppState

MAX_ANSWERS = 10_000  # distinct (wire, route, decision) renderings kept per snapshot
Answer = TypeVar("Answer")
# How a wire renders a decision: (decision, policy, route name, now) -> its answer.
Render = Callable[[Decision, Policy, str, dt.datetime], Answer]


class Verdict(NamedTuple):
    """What the decision core hands a wire for one request (app.decider.Decider.decide)."""

    route_name: str
    decision: Decision
    snapshot: Snapshot  # the one the decision was made on; the answer is rendered from it too


def holds_for_snapshot(policy: Policy, decision: Decision) -> bool:
    """Whether a rendering of ``decision`` holds for the whole snapshot: unless a Cache-Control max-age is
    bounded by the token's expiry, it depends on nothing that changes."""
    return policy.decision_cache_max_age == 0 or decision.expires is None


class RenderedAnswers:
    """Renders through the wire's :data:`Render` and keeps what may be kept. Reads the clock of the state
    at each rendering (tests set it)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def answer(self, verdict: Verdict, wire: str, render: Render[Answer]) -> Answer:
        """The wire's answer for a verdict, rendered once per distinct decision on a configured route and
        snapshot (it depends on nothing else unless a Cache-Control max-age is bounded by a token's expiry)."""
        route_name, decision, snapshot = verdict
        key = (wire, route_name, decision)
        cached = snapshot.answers.get(key)
        if cached is not None:
            return cast(Answer, cached)
        policy = snapshot.policy
        rendered = render(decision, policy, route_name, self.state.clock())
        if holds_for_snapshot(policy, decision) and route_name in policy.routes and len(snapshot.answers) < MAX_ANSWERS:
            snapshot.answers[key] = rendered
        return rendered

    def remembered(
        self, remembered: Remembered[Decision], route_name: str, snapshot: Snapshot, wire: str, render: Render[Answer]
    ) -> Answer:
        """A remembered allow's first answer on a wire, kept on the entry when it holds for the snapshot."""
        answer = self.answer(Verdict(route_name, remembered.decision, snapshot), wire, render)
        if holds_for_snapshot(snapshot.policy, remembered.decision):
            remembered.answers[wire] = answer
        return answer
