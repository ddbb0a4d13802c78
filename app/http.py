"""HTTP wiring: one Litestar app for health, metrics and the lifespan; the decision endpoint is raw ASGI (no
request parsing, no body, headers read from one dict) because it sits on the hot path of every request."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.handlers import asgi
from litestar.types import Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.decision import Decision, RequestFacts, Snapshot, decide, is_canonical, response_headers
from app.doors import Reading, front_doors
from app.health import Heartbeat
from app.logs import EveryInterval
from app.metrics import Metrics
from app.policy import Policy, RoutePolicy, load_policy
from app.reload import DirectoryWatcher, Reloader, SnapshotStore
from app.settings import Settings
from app.shared_throttle import SharedThrottle, make_throttle
from app.throttle import Throttle

log = logging.getLogger("authgate.decision")

_AUTH_PREFIX = b"/auth/"
_MAX_ANSWERS = 10_000
_NOT_READY_HEADERS = [(b"cache-control", b"no-store"), (b"retry-after", b"1"), (b"content-length", b"0")]
_UNKNOWN_ROUTE_LABEL = "_unknown"
_WS_CLOSE: Any = {"type": "websocket.close", "code": 1008}
_EMPTY_BODY: Any = {"type": "http.response.body", "body": b"", "more_body": False}


@dataclass
class AppState:
    """Everything the app owns at run time."""

    settings: Settings
    policy: Policy
    store: SnapshotStore
    metrics: Metrics
    throttle: Throttle
    reloader: Reloader
    heartbeats: list[Heartbeat] = field(default_factory=list)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


class DecisionEndpoint:
    """The raw ASGI app behind ``/auth/{route}`` (and ``/auth/{route}/{original path}`` for Envoy)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.doors = front_doors(state.settings.proxy)
        self.log_allows = log.isEnabledFor(logging.DEBUG)  # the level is set once, at start
        self.problem_log = EveryInterval(60.0)
        # Each route's anonymous paths as bytes: a memo hit checks them with a substring test first.
        self.anonymous_paths = {
            name: tuple({path.encode("latin-1") for _, path in route.anonymous})
            for name, route in state.policy.routes.items()
        }
        self.pending_slow_checks = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send(_WS_CLOSE)
            return
        started = time.perf_counter()
        state = self.state
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if not raw_path.startswith(_AUTH_PREFIX):
            raw_path = _AUTH_PREFIX + raw_path.lstrip(b"/")
        route_bytes, slash, rest = raw_path[len(_AUTH_PREFIX) :].partition(b"/")
        route_name = route_bytes.decode("latin-1")

        snapshot = state.store.current
        if snapshot is None:
            await self._send(send, 503, _NOT_READY_HEADERS)
            state.metrics.decision_stats.count(_UNKNOWN_ROUTE_LABEL, False, "not_ready", "none", 0.0)
            return

        # The headers as a dict, built in C; only the names this proxy kind sets are read from it. A repeated
        # name (rare) means another pass, so that two Authorization headers are seen as two, never one.
        raw_headers = scope["headers"]
        headers: dict[bytes, bytes] = dict(raw_headers)
        authorization: tuple[bytes, ...]
        if len(headers) == len(raw_headers):
            value = headers.get(b"authorization")
            authorization = () if value is None else (value,)
        else:
            authorization = tuple(value for name, value in raw_headers if name == b"authorization")
        original_path = rest if slash else None

        # A repeat of a remembered allow: answered after one keyed hash and a dict lookup, unless this
        # request could be one of the route's exceptions (anonymous, CORS preflight), which are decided
        # in full so that their answer stays exactly what `decide` says.
        route = snapshot.policy.routes.get(route_name)
        memo_key = None
        if route is not None and len(authorization) == 1 and not self.log_allows:
            memo_key = snapshot.allows.key(route_name, authorization[0])
            remembered = snapshot.allows.recall(memo_key)
            if remembered is not None and not self._may_be_exception(route, headers, original_path, scope):
                await send({"type": "http.response.start", "status": 200, "headers": remembered.headers})
                await send(_EMPTY_BODY)
                state.metrics.decision_stats.count(
                    route_name, True, "allowed", remembered.decision.scheme, time.perf_counter() - started
                )
                return

        reading = self.doors.read(headers, original_path, scope)
        method, path = reading.method, reading.path
        facts = RequestFacts(
            method=method,
            path=path,
            authorization=authorization,
            client=reading.client,
            preflight=b"origin" in headers and b"access-control-request-method" in headers,
            problem=reading.problem,
        )
        if reading.problem is not None:
            self._report(route_name if route is not None else _UNKNOWN_ROUTE_LABEL, reading)
        now = state.clock()
        decision = decide(route_name, facts, snapshot, state.throttle, now, slow_ok=False)
        if decision is None:
            decision = await self._slow_decision(route_name, facts, snapshot, now)
        headers_out = self._headers(snapshot, route_name, decision, now)
        await self._send(send, decision.status, headers_out)
        if (
            memo_key is not None
            and (snapshot.policy.decision_cache_max_age == 0 or decision.expires is None)
            and is_canonical(authorization[0])
        ):
            snapshot.allows.remember(memo_key, decision, headers_out)

        state.metrics.decision_stats.count(
            route_name if route is not None else _UNKNOWN_ROUTE_LABEL,
            decision.allowed,
            decision.reason,
            decision.scheme,
            time.perf_counter() - started,
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
                    "method": method,
                    "path": path,
                },
            )

    def _may_be_exception(
        self, route: RoutePolicy, headers: dict[bytes, bytes], original_path: bytes | None, scope: dict[str, Any]
    ) -> bool:
        if route.cors_preflight and b"origin" in headers and b"access-control-request-method" in headers:
            return True
        if route.anonymous:
            paths = self.anonymous_paths[route.name]
            if not self.doors.could_be(headers, original_path, paths):
                return False
            reading = self.doors.read(headers, original_path, scope)
            return (reading.method, reading.path) in route.anonymous
        return False

    async def _slow_decision(
        self, route_name: str, facts: RequestFacts, snapshot: Snapshot, now: dt.datetime
    ) -> Decision:
        """A decision that needs a slow hash check, in a worker thread. How many may wait is bounded, so a
        flood of first-time Basic guesses (say from addresses a client may choose, see docs/security.md)
        cannot queue unbounded bcrypt work: past the bound they are refused (403) without a check, while
        tokens and already verified passwords, which need none, keep passing."""
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

    def _report(self, route_label: str, reading: Reading) -> None:
        """Counts a request whose original method and path could not be trusted; logs it at most once a
        minute per route, kind and doors seen, naming the fix."""
        assert reading.problem is not None
        self.state.metrics.original_request_problems.labels(route=route_label, problem=reading.problem).inc()
        held_back = self.problem_log.due((route_label, reading.problem, reading.seen))
        if held_back is None:
            return
        configured = ",".join(self.doors.names)
        fields = {
            "event": "front_door",
            "route": route_label,
            "problem": reading.problem,
            "proxy": configured,
            "seen": ",".join(reading.seen),
            "similar_not_logged": held_back,
        }
        if reading.problem == "missing":
            marks = "; ".join(f"{door.name}: {door.mark_names}" for door in self.doors.trusted)
            hint = f" (the request carries what {', '.join(reading.seen)} sets)" if reading.seen else ""
            fix = ",".join(reading.seen) if reading.seen else "the proxy that calls authgate"
            log.error(
                "route %s: requests lack what the configured front door always sends (%s)%s: authgate is "
                "behind a proxy it is not configured for. Fix: --proxy %s (chart: config.proxy). Until then "
                "anonymous exceptions, CORS preflights and method/path-limited tokens are refused.",
                route_label,
                marks,
                hint,
                fix,
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

    def _headers(
        self, snapshot: Snapshot, route_name: str, decision: Decision, now: dt.datetime
    ) -> list[tuple[bytes, bytes]]:
        """The answer's headers, built once per distinct decision on a configured route and snapshot (they
        depend on nothing else unless a Cache-Control max-age is bounded by a token's expiry)."""
        key = (route_name, decision)
        headers = snapshot.answers.get(key)
        if headers is None:
            headers = [*response_headers(decision, snapshot.policy, route_name, now), (b"content-length", b"0")]
            if decision.allowed:
                for door in self.doors.trusted:
                    headers[-1:-1] = door.allow_headers(decision.principal is not None)
            constant = snapshot.policy.decision_cache_max_age == 0 or decision.expires is None
            if constant and route_name in snapshot.policy.routes and len(snapshot.answers) < _MAX_ANSWERS:
                snapshot.answers[key] = headers
        return headers

    @staticmethod
    async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(_EMPTY_BODY)

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


class FastPathApp:
    """The ASGI app uvicorn serves: ``/auth/...`` goes straight to the decision endpoint, everything else
    (health, metrics, lifespan) to Litestar. Skipping Litestar's router on the hot path is worth about a
    third of the decision's cost; the Litestar mount of the same endpoint stays for in-process tests."""

    def __init__(self, endpoint: DecisionEndpoint, app: Litestar) -> None:
        self.endpoint = endpoint
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/auth/"):
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)  # type: ignore[arg-type]


def build_state(settings: Settings, policy: Policy | None = None, metrics: Metrics | None = None) -> AppState:
    policy = policy if policy is not None else load_policy(settings.config)
    store = SnapshotStore()
    metrics = metrics if metrics is not None else Metrics()
    return AppState(
        settings=settings,
        policy=policy,
        store=store,
        metrics=metrics,
        throttle=make_throttle(policy.throttle, metrics),
        reloader=Reloader(policy, store, metrics),
    )


def create_app(settings: Settings, state: AppState | None = None) -> Litestar:
    """The Litestar app. Loads the policy now (a bad one fails the start); credentials load in the lifespan."""
    state = state if state is not None else build_state(settings)
    endpoint = DecisionEndpoint(state)

    @asgi("/auth", is_mount=True, copy_scope=False)
    async def auth(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)  # type: ignore[arg-type]

    @get("/healthz", media_type=MediaType.TEXT, sync_to_thread=False)
    def healthz() -> Response[str]:
        stale = [hb for hb in state.heartbeats if not hb.is_alive()]
        if stale:
            detail = "; ".join(f"{hb.name}: no progress for {hb.age():.0f}s ({hb.detail})" for hb in stale)
            return Response(f"unhealthy: {detail}\n", status_code=503)
        return Response("ok\n")

    @get("/readyz", media_type=MediaType.TEXT, sync_to_thread=False)
    def readyz() -> Response[str]:
        if state.store.current is None:
            return Response("no credentials loaded yet\n", status_code=503)
        return Response("ready\n")

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        counts = state.throttle.banned_counts()
        for kind, count in counts.items():
            state.metrics.throttled.labels(kind=kind).set(count)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        watcher = start_credential_source(state)
        task = asyncio.create_task(watcher.run(), name="credential-source")
        shared = state.throttle if isinstance(state.throttle, SharedThrottle) else None
        if shared is not None:
            await shared.start()  # returns at once: decisions never wait for Redis
        try:
            yield
        finally:
            if shared is not None:
                await shared.stop()
            watcher.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app = Litestar(
        route_handlers=[auth, healthz, readyz, metrics], lifespan=[lifespan], openapi_config=None, logging_config=None
    )
    app.state.authgate = state
    app.state.decision_endpoint = endpoint
    return app


def create_asgi(settings: Settings) -> FastPathApp:
    """What ``authgate serve`` runs: the Litestar app behind the hot-path shortcut."""
    app = create_app(settings)
    return FastPathApp(app.state.decision_endpoint, app)


def start_credential_source(state: AppState) -> Any:
    """The loop that keeps credentials current: the mounted directory (default) or a Secret watch."""
    settings = state.settings
    if settings.watch_secret is not None:
        # imported only in watch mode: it pulls in the Kubernetes client
        from app.secret_watch import SecretWatcher, recommended_max_age

        watch_timeout, backoff_max = 60, 30.0
        heartbeat = Heartbeat("secret-watch", max_age=recommended_max_age(watch_timeout, backoff_max))
        state.heartbeats.append(heartbeat)
        namespace, name = settings.watch_secret
        return SecretWatcher(
            namespace,
            name,
            state.reloader.apply,
            heartbeat,
            watch_timeout_seconds=watch_timeout,
            backoff_max=backoff_max,
        )
    heartbeat = Heartbeat("secret-directory-watch", max_age=30.0)
    state.heartbeats.append(heartbeat)
    return DirectoryWatcher(settings.secret_dir, state.reloader, heartbeat)
