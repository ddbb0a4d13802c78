"""The gRPC wire: ``envoy.service.auth.v3.Authorization/Check`` (app.doors.envoy_grpc) and the standard
``grpc.health.v1.Health``, no reflection, on ``--grpc-port``.

It is a ``grpc.aio`` server on uvicorn's own event loop (uvloop), started and stopped in the app's lifespan:
one process, one loop, so HTTP and gRPC share the snapshot, policy, throttle, metrics, allow memo and the
bound on waiting slow checks through one :class:`app.decider.Decider` without a lock or a second thread of
decisions (grpc.aio runs on uvloop: tests/integration/test_grpc.py drives the real ``authgate serve``).

Capacity: no RPC can take a Check's. grpcio's ``maximum_concurrent_rpcs`` counts every RPC from the moment its
headers arrive, so health ``Watch`` streams (which never end) or streams that never send their message could
fill it and have Envoy refuse everyone; it is not used. Instead each kind has its own bound: at most
``--max-connections`` Checks in progress (counted from their request message, so nothing but a Check can take
that room), at most :data:`MAX_WATCHES` Watch streams (both refused beyond with ``RESOURCE_EXHAUSTED``, at
once), and at most :data:`STREAMS_PER_CONNECTION` streams open on one HTTP/2 connection (the server's
``SETTINGS_MAX_CONCURRENT_STREAMS``, which Envoy's HTTP/2 pool honours: it uses another connection beyond
it; streams a client opens beyond it anyway are reset with REFUSED_STREAM). Watch streams end,
with a last ``NOT_SERVING``, as soon as the server starts to stop, so they never hold up a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.message import DecodeError
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from app.decider import Decider
from app.doors.envoy_grpc import (
    ENVOY_GRPC,
    GRPC_DOORS,
    ROUTE_KEY,
    WIRE,
    check_response_bytes,
    question,
    redirect_response,
    with_response_cookie,
)
from app.logs import EveryInterval
from app.sessions import set_cookie, sign_in_location
from app.state import AppState

log = logging.getLogger("authgate.grpc")

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
HEALTH_SERVICE = "grpc.health.v1.Health"
LIVENESS = "liveness"  # the health service name a liveness probe asks for
# Room for what Envoy adds to the client's headers in a CheckRequest (addresses, TLS session, metadata).
CHECK_REQUEST_OVERHEAD = 64 * 1024
GRACE_SECONDS = 5.0  # like uvicorn's graceful shutdown
WATCH_INTERVAL = 1.0  # seconds between two looks at the state for a health Watch
# Health Watch streams open at once. Probes (kubelet, Envoy's health checks) use the unary Check; a Watch is a
# gRPC client's own health checking, one per channel: a few at most.
MAX_WATCHES = 16
# Streams one HTTP/2 connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS). grpcio's default is no limit.
STREAMS_PER_CONNECTION = 256

_SERVING = HealthCheckResponse.SERVING
_NOT_SERVING = HealthCheckResponse.NOT_SERVING
_SERVICE_UNKNOWN = HealthCheckResponse.SERVICE_UNKNOWN
Context = grpc.aio.ServicerContext[Any, Any]


def _check_request(data: bytes) -> CheckRequest | None:
    """Bytes that are no CheckRequest are answered INVALID_ARGUMENT by the handler, not grpcio's INTERNAL."""
    try:
        return CheckRequest.FromString(data)
    except DecodeError:
        return None


class _Refusals:
    """One warning per bound per minute when RPCs are refused for capacity, with how many were not logged."""

    def __init__(self) -> None:
        self.log = EveryInterval(60.0)

    def report(self, what: str, bound: int) -> None:
        held_back = self.log.due(what)
        if held_back is not None:
            log.warning(
                "gRPC: refused %s (RESOURCE_EXHAUSTED): %d at once is the bound",
                what,
                bound,
                extra={"event": "grpc_capacity", "refused": what, "bound": bound, "similar_not_logged": held_back},
            )


class AuthorizationService:
    """``Check``: the CheckRequest into the decision core, its verdict into a CheckResponse (serialized: the
    method has no serializer of grpcio's, and answers are kept per snapshot as the bytes sent).

    Its fast lane, like the HTTP wire's (app.http): on a route in ``Decider.plain_routes`` (no exception can
    apply there, so nothing but the credential matters) with exactly one Authorization value, the remembered
    allow is looked up from the route's context extension and that one header, without reading the rest of
    the CheckRequest into the core's shape (``question``, most of authgate's own cost of a Check)."""

    def __init__(self, state: AppState, decider: Decider, refusals: _Refusals | None = None) -> None:
        self.decider = decider
        self.default_route = state.settings.grpc_default_route
        self.max_in_progress = state.settings.limits.max_connections
        self.in_progress = 0
        self.refusals = refusals or _Refusals()
        self.plain_routes = decider.plain_routes
        self.fast_repeat = decider.fast_repeat

    async def check(self, data: bytes, context: Context) -> bytes:
        if self.in_progress >= self.max_in_progress:
            # Only Checks count here, from their request message on: no other RPC can take this room.
            self.refusals.report("a Check", self.max_in_progress)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many checks in progress")
        self.in_progress += 1
        try:
            request = _check_request(data)  # the whole message is parsed (and its UTF-8 checked) on every path
            if request is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an envoy.service.auth.v3.CheckRequest")
            attributes = request.attributes
            # question()'s route, without its default BY_PATH: that one is never a plain route.
            route = attributes.context_extensions.get(ROUTE_KEY) or self.default_route
            recalled = False
            if route in self.plain_routes:
                value = attributes.request.http.headers.get("authorization")
                # Exactly one Authorization value, as question() would find them: the name occurs once in the
                # whole message in any ASCII case, so no other key of http.headers or http.header_map is one
                # (a key whose str.lower() is "authorization" is ASCII: no other character lowers into it).
                if value is not None and data.lower().count(b"authorization") == 1:
                    answer = self.fast_repeat(route, value.encode(), WIRE, check_response_bytes)
                    if answer is not None:
                        return answer
                    recalled = True  # the memo was asked for this very (route, credential): decide in full
            route, headers, authorization, scope = question(request, self.default_route)
            decider = self.decider
            if not recalled:
                remembered = decider.recall(
                    GRPC_DOORS, route, headers, authorization, None, scope, WIRE, check_response_bytes
                )
                if remembered is not None:
                    return remembered
            verdict = await decider.decide(GRPC_DOORS, route, headers, authorization, None, scope)
            if verdict is None:
                # An RPC error, not a denial: Envoy fails closed on it unless told to fail open
                # (failure_mode_allow), exactly as it treats the HTTP wire's 503.
                await context.abort(grpc.StatusCode.UNAVAILABLE, "no credentials loaded yet")
            if verdict.decision.sign_in:
                # A browser's page load without a session: Envoy sends the denial's 302 to the browser.
                target = ENVOY_GRPC.raw_target(headers, None, scope)
                origin = ENVOY_GRPC.origin(headers, scope)
                location = sign_in_location(verdict.snapshot.policy.session, target, origin)
                redirect: bytes = redirect_response(location).SerializeToString()
                return redirect
            answer = decider.answer(verdict, WIRE, check_response_bytes)
            if verdict.decision.set_cookie is not None:
                # A session allow with a refreshed cookie: Envoy adds it to the response to the browser.
                session = verdict.snapshot.policy.session
                answer = with_response_cookie(
                    answer, set_cookie(session, verdict.decision.set_cookie, session.lifetime_seconds)
                )
            return answer
        finally:
            self.in_progress -= 1


class HealthService:
    """``grpc.health.v1.Health``, computed from the state at each call (never a status someone must remember
    to set): ``""`` and the Authorization service are SERVING once credentials are loaded (readiness);
    ``liveness`` is SERVING while every loop that must stay alive still beats (like ``/healthz``).

    At most :data:`MAX_WATCHES` Watch streams at once; :meth:`close` ends them all."""

    def __init__(self, state: AppState, refusals: _Refusals | None = None) -> None:
        self.state = state
        self.watching = 0
        self.closing = asyncio.Event()
        self.refusals = refusals or _Refusals()

    def close(self) -> None:
        """The server is stopping: every Watch sends NOT_SERVING and ends, and new ones end at once."""
        self.closing.set()

    def status(self, service: str) -> HealthCheckResponse.ServingStatus | None:
        if service in ("", AUTHORIZATION_SERVICE):
            return _SERVING if self.state.not_ready() is None else _NOT_SERVING
        if service == LIVENESS:
            return _SERVING if self.state.unhealthy() is None else _NOT_SERVING
        return None

    async def check(self, request: HealthCheckRequest, context: Context) -> HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return HealthCheckResponse(status=status)

    async def watch(self, request: HealthCheckRequest, context: Context) -> AsyncIterator[HealthCheckResponse]:
        """Sends the status now and at every change (looked at once a second) until the client goes away or
        the server stops (then NOT_SERVING, and the stream ends with OK)."""
        if self.watching >= MAX_WATCHES:
            self.refusals.report("a health Watch", MAX_WATCHES)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many health watches open")
        self.watching += 1
        try:
            last = None
            while not self.closing.is_set():
                status = self.status(request.service)
                current = _SERVICE_UNKNOWN if status is None else status
                if current != last:
                    yield HealthCheckResponse(status=current)
                    last = current
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), WATCH_INTERVAL)
            if last != _NOT_SERVING:
                yield HealthCheckResponse(status=_NOT_SERVING)
        finally:
            self.watching -= 1


def build_server(state: AppState, decider: Decider, health: HealthService | None = None) -> tuple[grpc.aio.Server, int]:
    """The server with both services (``health``: the health service to serve, so its owner can
    :meth:`~HealthService.close` it), bound to ``--host``:``--grpc-port`` (port 0: a free one, for tests);
    returns it and the bound port. Must be called on the running event loop."""
    settings = state.settings
    limits = settings.limits
    # No maximum_concurrent_rpcs: it counts every RPC alike (see the module's docstring); each service
    # bounds its own, so a Check always has room.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_head_bytes + CHECK_REQUEST_OVERHEAD),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
            ("grpc.so_reuseport", 0),  # a port in use fails the start instead of being shared
        ],
    )
    refusals = _Refusals()
    authorization = AuthorizationService(state, decider, refusals)
    # Bytes in, bytes out: the handler parses the request itself (so that its fast lane can also look at the
    # bytes) and answers the serialized CheckResponse the core keeps per snapshot.
    check: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Check": grpc.unary_unary_rpc_method_handler(authorization.check)
    }
    health = health if health is not None else HealthService(state, refusals)
    health_methods = {
        "Check": grpc.unary_unary_rpc_method_handler(
            health.check,
            request_deserializer=HealthCheckRequest.FromString,
            response_serializer=HealthCheckResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            health.watch,
            request_deserializer=HealthCheckRequest.FromString,
            response_serializer=HealthCheckResponse.SerializeToString,
        ),
    }
    for service, methods in ((AUTHORIZATION_SERVICE, check), (HEALTH_SERVICE, health_methods)):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        server.add_registered_method_handlers(service, methods)
    host = settings.host
    address = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        log.error(
            "--grpc-port: cannot listen on %s (in use, or not an address of this host)",
            address,
            extra={"event": "start", "result": "error", "grpc_port": settings.grpc_port},
        )
        raise
    return server, port


@contextlib.asynccontextmanager
async def serving_grpc(state: AppState, decider: Decider) -> AsyncIterator[grpc.aio.Server]:
    """Runs the gRPC server for the duration of the block; stops it gracefully (in-flight checks finish,
    new ones are refused, connections get GOAWAY, health Watch streams end at once) when the block ends."""
    health = HealthService(state)
    server, port = build_server(state, decider, health)
    await server.start()
    log.info("gRPC listening", extra={"event": "start", "grpc_port": port, "host": state.settings.host})
    try:
        yield server
    finally:
        health.close()  # before stop(): a Watch never ends by itself, and would hold the whole grace period
        await server.stop(GRACE_SECONDS)
