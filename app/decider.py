"""The one decision core every wire calls: HTTP (app.http) and Envoy's gRPC ext_authz (app.grpc_server).

A wire hands over what its front doors need to read the original request (the headers, the rest of the
auth path, a scope) and gets back a :class:`Verdict`; it then turns the verdict's Decision into its own
answer with :meth:`Decider.answer`. Everything in between is here, once: the allow memo, the reading of the
front doors and its cross-check, :func:`app.decision.decide` with slow hash checks off the event loop and
their bound, the metrics, the denial log and the front-door problem log. Like Envoy's ext_authz filter
with its HTTP and gRPC clients, nothing here knows which wire it is on.

Everything runs on the one event loop (the gRPC server is a ``grpc.aio`` server on uvicorn's loop), so the
counters here and in app.metrics need no lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

from app.decision import Decision, Remembered, RequestFacts, Snapshot, decide, is_canonical, route_for_path
from app.doors import FrontDoors, Reading
from app.logs import EveryInterval
from app.policy import BY_PATH, Policy, RoutePolicy
from app.sessions import read_browser
from app.state import AppState

log = logging.getLogger("authgate.decision")

UNKNOWN_ROUTE_LABEL = "_unknown"
_MAX_ANSWERS = 10_000
Answer = TypeVar("Answer")
# How a wire renders a decision: (decision, policy, route name, now) -> its answer.
Render = Callable[[Decision, Policy, str, dt.datetime], Answer]


class Verdict(NamedTuple):
    route_name: str
    decision: Decision
    snapshot: Snapshot  # the one the decision was made on; the answer is rendered from it too


def _constant(policy: Policy, decision: Decision) -> bool:
    """Whether a rendering of ``decision`` holds for the whole snapshot: unless a Cache-Control max-age is
    bounded by the token's expiry, it depends on nothing that changes."""
    return policy.decision_cache_max_age == 0 or decision.expires is None


class Decider:
    """Decides for every wire; holds what must be shared between them (the bound on waiting slow checks)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.store = state.store
        self.stats = state.metrics.decision_stats
        self.log_allows = log.isEnabledFor(logging.DEBUG)  # the level is set once, at start
        self.problem_log = EveryInterval(60.0)
        self.pending_slow_checks = 0
        # The routes with exceptions (anonymous paths, CORS preflights), which a memo hit must rule out, and
        # each one's anonymous paths as bytes, which it checks with a substring test first.
        self.exceptional = {
            name: route for name, route in state.policy.routes.items() if route.anonymous or route.cors_preflight
        }
        # The others: a remembered allow there is the answer whatever else the request says (see fast_repeat).
        # None at debug level, where every allow is decided in full to be logged with its method and path.
        self.plain_routes = frozenset(
            () if self.log_allows else (name for name in state.policy.routes if name not in self.exceptional)
        )
        # The routes that accept the session cookie (app.sessions): decided once, so that no other route's
        # request has its cookies read.
        self.session_routes = state.policy.session_routes
        self.session_cookie = state.policy.session.cookie_name.encode()
        self.anonymous_paths = {
            name: tuple({path.encode("latin-1") for _, path in route.anonymous})
            for name, route in state.policy.routes.items()
        }

    def fast_repeat(self, route_name: str, authorization: bytes, wire: str, render: Render[Answer]) -> Answer | None:
        """:meth:`recall` for the common case, with less to read: a route in :attr:`plain_routes` (no exception
        can apply, so nothing but the credential matters) and exactly one Authorization value. The wire's
        answer when the credential has a remembered allow, counted; None otherwise, and then the memo has been
        asked: the wire decides in full with :meth:`decide`."""
        started = time.perf_counter()
        snapshot = self.store.current
        if snapshot is None:
            return None
        remembered = snapshot.allows.recall(route_name, authorization)
        if remembered is None:
            return None
        answer = remembered.answers.get(wire)
        if answer is None:
            answer = self._render_remembered(remembered, route_name, snapshot, wire, render)
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
        lookup; None otherwise (then :meth:`decide` decides it in full). Synchronous, so a repeat costs the
        wire no coroutine. A request that could be one of the route's exceptions (anonymous, CORS preflight)
        is never answered from the memo, so that its answer stays exactly what ``decide`` says."""
        started = time.perf_counter()
        snapshot = self.store.current
        if snapshot is None or len(authorization) != 1 or self.log_allows:
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
            answer = self._render_remembered(remembered, route_name, snapshot, wire, render)
        self.stats.observe(remembered.label, time.perf_counter() - started)  # type: ignore[arg-type]
        return answer  # type: ignore[return-value]

    def _render_remembered(
        self, remembered: Remembered, route_name: str, snapshot: Snapshot, wire: str, render: Render[Answer]
    ) -> Answer:
        """A remembered allow's first answer on a wire, kept on the entry when it holds for the snapshot."""
        answer = self.answer(Verdict(route_name, remembered.decision, snapshot), wire, render)
        if _constant(snapshot.policy, remembered.decision):
            remembered.answers[wire] = answer
        return answer

    async def decide(
        self,
        doors: FrontDoors,
        route_name: str,
        headers: dict[bytes, bytes],
        authorization: tuple[bytes, ...],
        rest: bytes | None,
        scope: dict[str, Any],
    ) -> Verdict | None:
        """Decides one request in full (a wire asks :meth:`recall` first); None when no credentials are
        loaded yet (the wire then fails closed). A rememberable allow is remembered for :meth:`recall`.

        ``headers``: lower-case names; ``authorization``: every Authorization value received, as received;
        ``rest`` and ``scope``: what the doors read besides the headers (app.doors.base.Door.view)."""
        started = time.perf_counter()
        state = self.state
        snapshot = state.store.current
        if snapshot is None:
            state.metrics.decision_stats.count(UNKNOWN_ROUTE_LABEL, False, "not_ready", "none", 0.0)
            return None

        reading = doors.read(headers, rest, scope)
        if route_name == BY_PATH:
            # No route named: the one claiming the original path's longest prefix; none (an unclaimed,
            # ambiguous or unknown path) leaves BY_PATH, which decide() refuses (403 unclaimed_path).
            route_name = route_for_path(snapshot.policy, reading.path) or BY_PATH
        facts = RequestFacts(
            method=reading.method,
            path=reading.path,
            authorization=authorization,
            client=reading.client,
            preflight=b"origin" in headers and b"access-control-request-method" in headers,
            problem=reading.problem,
            browser=(
                read_browser(headers, self.session_cookie)
                if not authorization and route_name in self.session_routes
                else None
            ),
        )
        route_label = route_name if route_name in snapshot.policy.routes else UNKNOWN_ROUTE_LABEL
        if reading.problem is not None:
            self._report(doors, route_label, reading)
        now = state.clock()
        decision = decide(route_name, facts, snapshot, state.throttle, now, slow_ok=False)
        if decision is None:
            decision = await self._slow_decision(route_name, facts, snapshot, now)
        # Only rememberable allows get in (only on configured routes): check that first, so a denial never
        # pays for the key or the base64 round trip.
        if decision.rememberable and len(authorization) == 1 and is_canonical(authorization[0]):
            label = self.stats.cell(route_name, True, decision.reason, decision.scheme)
            snapshot.allows.remember(route_name, authorization[0], decision, label)

        state.metrics.decision_stats.count(
            route_label, decision.allowed, decision.reason, decision.scheme, time.perf_counter() - started
        )
        if not decision.allowed:
            self._log_denial(route_name, decision, facts)
        elif self.log_allows:
            log.debug(
                "allowed",
                extra={
                    "event": "decision",
                    "route": route_name,
                    "status": 200,
                    "reason": decision.reason,
                    "scheme": decision.scheme,
                    "principal": decision.principal,
                    "method": facts.method,
                    "path": facts.path,
                },
            )
        return Verdict(route_name, decision, snapshot)

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
        if _constant(policy, decision) and route_name in policy.routes and len(snapshot.answers) < _MAX_ANSWERS:
            snapshot.answers[key] = rendered
        return rendered

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

    async def _slow_decision(
        self, route_name: str, facts: RequestFacts, snapshot: Snapshot, now: dt.datetime
    ) -> Decision:
        """A decision that needs a slow hash check, in a worker thread. How many may wait is bounded, for
        both wires together, so a flood of first-time Basic guesses (say from addresses a client may choose,
        see docs/security.md) cannot queue unbounded bcrypt work: past the bound they are refused (403)
        without a check, while tokens and already verified passwords, which need none, keep passing."""
        state = self.state
        if self.pending_slow_checks >= state.policy.throttle.max_pending_slow_checks:
            return Decision(403, "slow_checks_saturated", scheme="basic")
        self.pending_slow_checks += 1
        try:
            decision = await asyncio.to_thread(decide, route_name, facts, snapshot, state.throttle, now, slow_ok=True)
        finally:
            self.pending_slow_checks -= 1
        assert decision is not None
        return decision

    def _report(self, doors: FrontDoors, route_label: str, reading: Reading) -> None:
        """Counts a request whose original method and path could not be trusted; logs it at most once a
        minute per route, kind and doors seen, naming the fix."""
        assert reading.problem is not None
        self.state.metrics.original_request_problems.labels(route=route_label, problem=reading.problem).inc()
        held_back = self.problem_log.due((doors.names, route_label, reading.problem, reading.seen))
        if held_back is None:
            return
        fields = {
            "event": "front_door",
            "route": route_label,
            "problem": reading.problem,
            "proxy": ",".join(doors.names),
            "seen": ",".join(reading.seen),
            "similar_not_logged": held_back,
        }
        if reading.problem == "missing":
            marks = "; ".join(f"{door.name}: {door.mark_names}" for door in doors.trusted)
            hint = f" (the request carries what {', '.join(reading.seen)} sets)" if reading.seen else ""
            log.error(
                "route %s: requests lack what the configured front door always sends (%s)%s: %s. Until then "
                "anonymous exceptions, CORS preflights and method/path-limited tokens are refused.",
                route_label,
                marks,
                hint,
                doors.missing_fix(reading.seen),
                extra=fields,
            )
        else:
            log.warning(
                "route %s: the front doors' accounts of the original request disagree (%s); one of them was "
                "written by the client. Anonymous exceptions and method/path-limited tokens are refused for "
                "such requests.",
                route_label,
                ", ".join(reading.seen),
                extra=fields,
            )

    @staticmethod
    def _log_denial(route_name: str, decision: Decision, facts: RequestFacts) -> None:
        log.info(
            "denied",
            extra={
                "event": "decision",
                "route": route_name,
                "status": decision.status,
                "reason": decision.reason,
                "scheme": decision.scheme,
                "principal": decision.principal,
                "method": facts.method,
                "path": facts.path,
                "client": facts.client,
            },
        )
