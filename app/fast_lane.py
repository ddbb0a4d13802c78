"""Answering a request that repeats a remembered allow, before it is decided: the lookup in the allow memo
(app.allow_memo) and the rules for when its answer may stand.

A remembered allow holds for its credential on its route whatever the method and path are
(``Decision.rememberable``), except where the route has exceptions of its own: an anonymous path or a CORS
preflight is answered its own way, so on such a route the request is read first and a possible exception
is decided in full. A route with neither is *plain*: there nothing but the credential matters, and both wires
look a repeat up before they read anything else (:meth:`FastLane.repeat`: app.http from the exact path,
app.grpc_server from the CheckRequest's route context extension).

It is kept apart from the decision core (app.decider) because it is the hot path: every attribute it needs
is bound once here, and the wires call its two lookups directly, without a call in between.
"""

from __future__ import annotations

import time
from typing import Any

from app.answers import Answer, Render, RenderedAnswers
from app.decision import route_for_path
from app.doors import FrontDoors, Reading
from app.policy import BY_PATH, RoutePolicy
from app.state import AppState


class FastLane:
    """``every_allow_decided``: allows are logged (at debug level), each with its method and path, so none is
    answered from the memo."""

    def __init__(self, state: AppState, answers: RenderedAnswers, every_allow_decided: bool) -> None:
        self.store = state.store
        self.stats = state.metrics.decision_stats
        self.every_allow_decided = every_allow_decided
        self.render_remembered = answers.remembered
        routes = state.policy.routes
        # The routes with exceptions (anonymous paths, CORS preflights), which a memo hit must rule out, and
        # each one's anonymous paths as bytes, which it checks with a substring test first.
        self.exceptional = {name: route for name, route in routes.items() if route.anonymous or route.cors_preflight}
        # The others: a remembered allow there is the answer whatever else the request says (see repeat()).
        # None when every allow is decided in full.
        self.plain_routes = frozenset(
            () if every_allow_decided else (name for name in routes if name not in self.exceptional)
        )
        self.anonymous_paths = {
            name: tuple({path.encode("latin-1") for _, path in route.anonymous}) for name, route in routes.items()
        }

    def repeat(self, route_name: str, authorization: bytes, wire: str, render: Render[Answer]) -> Answer | None:
        """:meth:`recall` for the common case, with less to read: a route in :attr:`plain_routes` (no exception
        can apply, so nothing but the credential matters) and exactly one Authorization value. The wire's
        answer when the credential has a remembered allow, counted; None otherwise, and then the memo has been
        asked: the wire decides in full (app.decider.Decider.decide)."""
        started = time.perf_counter()
        snapshot = self.store.current
        if snapshot is None:
            return None
        remembered = snapshot.allows.recall(route_name, authorization)
        if remembered is None:
            return None
        answer = remembered.answers.get(wire)
        if answer is None:
            answer = self.render_remembered(remembered, route_name, snapshot, wire, render)
        self.stats.observe(remembered.label, time.perf_counter() - started)  # type: ignore[arg-type]
        return answer  # type: ignore[return-value]  # (not cast(): a call, on the hot path)

    def recall(
        self,
        doors: FrontDoors,
        route_name: str,
        headers: dict[bytes, bytes],
        authorization: tuple[bytes, ...],
        rest: bytes | None,
        scope: dict[str, Any],
        wire: str,
        render: Render[Answer],
    ) -> Answer | None:
        """The wire's answer when this request repeats a remembered allow, after one keyed hash and a dict
        lookup; None otherwise (then app.decider.Decider.decide decides it in full). Synchronous, so a repeat
        costs the wire no coroutine. A request that could be one of the route's exceptions (anonymous, CORS
        preflight) is never answered from the memo, so that its answer stays exactly what ``decide`` says."""
        started = time.perf_counter()
        snapshot = self.store.current
        if snapshot is None or len(authorization) != 1 or self.every_allow_decided:
            return None
        if route_name == BY_PATH:
            # The route is the original path's: read it (the reading is needed anyway), then as below.
            reading = doors.read(headers, rest, scope)
            resolved = route_for_path(snapshot.policy, reading.path)
            if resolved is None:
                return None
            remembered = snapshot.allows.recall(resolved, authorization[0])
            if remembered is None:
                return None
            route = self.exceptional.get(resolved)
            if route is not None and self._is_exception(route, headers, reading):
                return None
            route_name = resolved
        else:
            remembered = snapshot.allows.recall(route_name, authorization[0])
            if remembered is None:
                return None
            route = self.exceptional.get(route_name)
            if route is not None and self._may_be_exception(doors, route, headers, rest, scope):
                return None
        answer = remembered.answers.get(wire)
        if answer is None:
            answer = self.render_remembered(remembered, route_name, snapshot, wire, render)
        self.stats.observe(remembered.label, time.perf_counter() - started)  # type: ignore[arg-type]
        return answer  # type: ignore[return-value]

    @staticmethod
    def _is_exception(route: RoutePolicy, headers: dict[bytes, bytes], reading: Reading) -> bool:
        """Whether a request already read could be one of the route's exceptions (as decide() tells them)."""
        if route.cors_preflight and b"origin" in headers and b"access-control-request-method" in headers:
            return True
        return (reading.method, reading.path) in route.anonymous

    def _may_be_exception(
        self,
        doors: FrontDoors,
        route: RoutePolicy,
        headers: dict[bytes, bytes],
        rest: bytes | None,
        scope: dict[str, Any],
    ) -> bool:
        if route.cors_preflight and b"origin" in headers and b"access-control-request-method" in headers:
            return True
        if route.anonymous:
            if not doors.could_be(headers, rest, scope, self.anonymous_paths[route.name]):
                return False
            reading = doors.read(headers, rest, scope)
            return (reading.method, reading.path) in route.anonymous
        return False
