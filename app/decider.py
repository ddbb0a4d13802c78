"""The one decision core every wire calls: HTTP (app.http) and Envoy's gRPC ext_authz (app.grpc_server).

A wire hands over what its front doors need to read the original request (the headers, the rest of the
auth path, a scope) and gets back a :class:`~app.answers.Verdict`; it then turns the verdict's Decision into
its own answer with :attr:`Decider.answer`. Like Envoy's ext_authz filter with its HTTP and gRPC clients,
nothing here knows which wire it is on.

:class:`Decider` is the orchestration: the reading of the front doors and its cross-check,
:func:`app.decision.decide`, the metrics. Each other job has a module of its own, built here once and
shared by both wires: the allow memo's lookup (app.fast_lane, over app.allow_memo), the wires' rendered
answers (app.answers), the bound on slow hash checks off the event loop (app.slow_checks) and the decision
log (app.decision_log).

Everything runs on the one event loop (the gRPC server is a ``grpc.aio`` server on the same loop), so the
counters here and in app.metrics need no lock.
"""

from __future__ import annotations

import time
from typing import Any

from app.answers import Answer, Render, RenderedAnswers, Verdict, holds_for_snapshot
from app.decision import (
    BEARER_THROTTLED,
    UNKNOWN_TOKEN,
    Decision,
    RequestFacts,
    Snapshot,
    decide,
    is_canonical,
    is_unknown_bearer,
    refuse_unknown_token,
    route_for_path,
)
from app.decision_log import DecisionLog
from app.doors import FrontDoors, Reading
from app.fast_lane import FastLane
from app.policy import BY_PATH
from app.sessions import read_browser
from app.slow_checks import SlowChecks
from app.state import AppState

UNKNOWN_ROUTE_LABEL = "_unknown"


class Decider:
    """Decides for every wire. The wires call four things: :attr:`fast_repeat` and :attr:`recall` (a repeat
    of a remembered allow, app.fast_lane), :meth:`decide` (in full) and :attr:`answer` (the verdict as the
    wire's answer, app.answers). Three of them are the hot path and are the helpers' own methods, bound here
    once, so that a wire reaches them without a call in between.

    Each credential kind (static bearer tokens and Basic passwords, JWTs in app.jwt_bearer, session cookies in
    app.sessions) is a module of its own asked by :func:`app.decision.decide`, with the throttle, memo, metrics
    and logs around it as they are; the one thing a kind needs here is what to read of the request (for
    sessions: the cookie, and only on the routes that accept it)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.stats = state.metrics.decision_stats
        decision_log = DecisionLog()
        answers = RenderedAnswers(state)
        self.fast_lane = FastLane(state, answers, every_allow_decided=decision_log.allows)
        self.slow_checks = SlowChecks(state.policy.throttle.max_pending_slow_checks, state.throttle)
        self.decision_log = decision_log
        self.log_allows = decision_log.allows
        # The routes of the fast lane: the HTTP wire looks their exact paths up first (app.http), the gRPC wire
        # the CheckRequest's route context extension (app.grpc_server).
        self.plain_routes = self.fast_lane.plain_routes
        # The routes with anonymous paths or CORS preflights, where more than the credential can matter.
        self.exceptional = self.fast_lane.exceptional
        self.fast_repeat = self.fast_lane.repeat
        self.recall = self.fast_lane.recall
        self.answer = answers.answer
        self._slow_decision = self.slow_checks.decide
        self._log_denial = decision_log.denials.denied if decision_log.denials is not None else None
        self._log_allow = decision_log.allowed
        # The routes that accept the session cookie (app.sessions): decided once, so that no other route's
        # request has its cookies read.
        self.session_routes = state.policy.session_routes
        self.session_cookie = state.policy.session.cookie_name.encode()
        # What a guess's two denials resolve to, per (wire, route) on the current snapshot: the metrics cell
        # and the rendered answer of unknown_token and of throttled (refuse_guess). Emptied when the snapshot
        # changes, so it holds at most the current snapshot's routes, on each wire.
        self._guess_snapshot: Snapshot | None = None
        self._guesses: dict[tuple[str, str], tuple[tuple[list[int], Any], tuple[list[int], Any]]] = {}

    @property
    def pending_slow_checks(self) -> int:
        """Slow checks waiting now, both wires together (app.slow_checks)."""
        return self.slow_checks.pending

    @pending_slow_checks.setter
    def pending_slow_checks(self, pending: int) -> None:
        self.slow_checks.pending = pending

    def refuse_guess(
        self,
        doors: FrontDoors,
        route_name: str,
        headers: dict[bytes, bytes],
        authorization: bytes,
        scope: dict[str, Any],
        wire: str,
        render: Render[Answer],
    ) -> Answer | None:
        """The wire's answer to a Bearer token that is no credential (a guess: what a credential-stuffing flood
        sends) on a plain route (no exceptions, one Authorization value, the exact ``/auth/<route>`` path:
        app.http's fast lane, after the allow memo missed), decided as :meth:`decide` decides it: the doors
        read (for the client address, and any front-door problem counted), the failure counted by the
        throttle, the metrics and the denial log. Synchronous, like :attr:`recall`: a guess costs the wire no
        coroutine. None for anything else, which the wire then decides in full (a known token pays one digest
        lookup more here)."""
        started = time.perf_counter()
        state = self.state
        snapshot = state.store.current
        if snapshot is None:
            return None
        route = snapshot.policy.routes.get(route_name)
        if route is None or not is_unknown_bearer(route, authorization, snapshot):
            return None
        reading = doors.read(headers, None, scope)
        if reading.problem is not None:
            self._front_door_problem(doors, route_name, reading)
        decision = refuse_unknown_token(state.throttle, reading.client)
        if snapshot is not self._guess_snapshot:
            self._guess_snapshot, self._guesses = snapshot, {}
        resolved = self._guesses.get((wire, route_name))
        if resolved is None:
            resolved = self._guesses[(wire, route_name)] = (
                self._resolve_guess(UNKNOWN_TOKEN, route_name, snapshot, wire, render),
                self._resolve_guess(BEARER_THROTTLED, route_name, snapshot, wire, render),
            )
        cell, answer = resolved[decision is BEARER_THROTTLED]
        self.stats.observe(cell, time.perf_counter() - started)
        if self._log_denial is not None:
            self._log_denial(route_name, route_name, decision, reading)
        return answer if answer is not None else self.answer(Verdict(route_name, decision, snapshot), wire, render)

    def _front_door_problem(self, doors: FrontDoors, route_label: str, reading: Reading) -> None:
        """A reading with a problem: counted every time, logged at most once a minute (app.decision_log)."""
        assert reading.problem is not None
        self.state.metrics.original_request_problems.labels(route=route_label, problem=reading.problem).inc()
        self.decision_log.front_door_problem(doors, route_label, reading)

    def _resolve_guess(
        self, decision: Decision, route_name: str, snapshot: Snapshot, wire: str, render: Render[Answer]
    ) -> tuple[list[int], Answer | None]:
        """A guess's denial on a route: its metrics cell, and its answer on the wire when that holds for the
        snapshot (None: rendered per request by :attr:`answer`)."""
        cell = self.stats.cell(route_name, False, decision.reason, decision.scheme)
        if not holds_for_snapshot(snapshot.policy, decision):
            return cell, None
        return cell, self.answer(Verdict(route_name, decision, snapshot), wire, render)

    async def decide(
        self,
        doors: FrontDoors,
        route_name: str,
        headers: dict[bytes, bytes],
        authorization: tuple[bytes, ...],
        rest: bytes | None,
        scope: dict[str, Any],
    ) -> Verdict | None:
        """Decides one request in full (a wire asks :attr:`recall` first); None when no credentials are
        loaded yet (the wire then fails closed). A rememberable allow is remembered for :attr:`recall`.

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
        route = snapshot.policy.routes.get(route_name)
        route_label = route_name if route is not None else UNKNOWN_ROUTE_LABEL
        if reading.problem is not None:
            self._front_door_problem(doors, route_label, reading)
        # The commonest denial (a Bearer token that is no credential: a guess) without building the request's
        # facts, on a route where nothing but the credential can matter (app.decision.is_unknown_bearer).
        if (
            route is not None
            and len(authorization) == 1
            and route_name not in self.exceptional
            and is_unknown_bearer(route, authorization[0], snapshot)
        ):
            decision = refuse_unknown_token(state.throttle, reading.client)
        else:
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
            now = state.clock()
            decided = decide(route_name, facts, snapshot, state.throttle, now, slow_ok=False)
            if decided is None:
                decided = await self._slow_decision(route_name, facts, snapshot, now)
            decision = decided
            # Only rememberable allows get in (only on configured routes): check that first, so a denial never
            # pays for the key or the base64 round trip.
            if decision.rememberable and len(authorization) == 1 and is_canonical(authorization[0]):
                label = self.stats.cell(route_name, True, decision.reason, decision.scheme)
                snapshot.allows.remember(route_name, authorization[0], decision, label)

        self.stats.count(route_label, decision.allowed, decision.reason, decision.scheme, time.perf_counter() - started)
        if not decision.allowed:
            if self._log_denial is not None:
                self._log_denial(route_label, route_name, decision, reading)
        elif self.log_allows:
            self._log_allow(route_name, decision, reading)
        return Verdict(route_name, decision, snapshot)
