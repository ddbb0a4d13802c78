"""The gRPC wire in-process, next to the HTTP wire of the same app: one decision core (app.decider), so one
allow memo, one bound on waiting slow checks, one set of metrics — whichever wire a request came on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from unittest import mock

import bcrypt
import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub
from litestar.testing import AsyncTestClient

from app import decision as decision_module
from app.credentials import token_digest
from app.decider import Decider
from app.doors.envoy_grpc import question as grpc_question
from app.grpc_server import GRACE_SECONDS, MAX_WATCHES, build_server, serving_grpc
from app.policy import parse_policy
from app.service import create_app
from app.settings import RequestLimits, Settings
from app.state import AppState, build_state
from tests.support.envoy_grpc import Answer, envoy_check
from tests.support.procs import free_port

TOKEN = "in-process-token-0123456789"
TOKENS = {"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}
NGINX = {"X-Original-URL": "http://h/api/flows", "X-Original-Method": "GET", "X-Real-IP": "10.1.2.3"}
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Wires:
    def __init__(self, state: AppState, http: AsyncTestClient, stub: AuthorizationStub, health: HealthStub) -> None:
        self.state, self.http, self.stub, self.health = state, http, stub, health
        self.decider = http.app.state.decider

    async def check(self, **kwargs: object) -> Answer:
        return Answer.of(await self.stub.Check(envoy_check(**kwargs)))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving_wires(state: AppState) -> AsyncIterator[Wires]:
    """The HTTP wire in process and the gRPC wire on a free port, over one app of ``state``."""
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as http:
        server, port = build_server(state, app.state.decider)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Wires(state, http, AuthorizationStub(channel), HealthStub(channel))
        finally:
            await server.stop(None)


@pytest.fixture
async def wires(tmp_path: Path) -> AsyncIterator[Wires]:
    policy = parse_policy(
        {"routes": {"api": {"schemes": ["bearer", "basic"]}}, "throttle": {"max_pending_slow_checks": 2}}, "t"
    )
    state = build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", grpc_port=0), policy=policy)
    async with serving_wires(state) as wires:
        yield wires


async def test_one_allow_memo_whichever_wire_asks(wires):
    assert wires.state.reloader.apply(TOKENS, "test")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert (await wires.http.get("/auth/api", headers={**NGINX, "Authorization": f"Bearer {TOKEN}"})).status_code == 200
    snapshot = wires.state.store.current
    assert len(snapshot.allows) == 1
    assert (await wires.check(headers=bearer)).upstream == {
        "x-auth-request-user": "ci",
        "x-auth-request-scheme": "bearer",
    }
    assert len(snapshot.allows) == 1  # the same entry answered the gRPC repeat
    # Each wire renders the remembered decision its own way, once per snapshot.
    assert {key[0] for key in snapshot.answers} == {"http", "envoy-grpc"}
    registry = wires.state.metrics.registry
    labels = {"route": "api", "result": "allow", "reason": "allowed", "scheme": "bearer"}
    assert registry.get_sample_value("authgate_decisions_total", labels) == 2


async def test_one_bound_on_waiting_slow_checks_for_both_wires(wires):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert wires.state.reloader.apply({"htpasswd": f"alice:{hashed}\n".encode()}, "test")
    basic = {"authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    wires.decider.pending_slow_checks = 2  # two checks already waiting, say from HTTP
    assert await wires.check(headers=basic) == Answer(7, 403, {}, (), ())
    wires.decider.pending_slow_checks = 1
    assert (await wires.check(headers=basic)).upstream["x-auth-request-user"] == "alice"
    assert wires.decider.pending_slow_checks == 1
    labels = {"route": "api", "result": "deny", "reason": "slow_checks_saturated", "scheme": "basic"}
    assert wires.state.metrics.registry.get_sample_value("authgate_decisions_total", labels) == 1


async def test_health_watch_follows_the_state(wires):
    assert (await wires.health.Check(HealthCheckRequest())).status == HealthCheckResponse.NOT_SERVING
    stream = wires.health.Watch(HealthCheckRequest(service="envoy.service.auth.v3.Authorization"))
    assert (await stream.read()).status == HealthCheckResponse.NOT_SERVING
    assert wires.state.reloader.apply(TOKENS, "test")
    assert (await stream.read()).status == HealthCheckResponse.SERVING
    stream.cancel()
    unknown = wires.health.Watch(HealthCheckRequest(service="nope"))
    assert (await unknown.read()).status == HealthCheckResponse.SERVICE_UNKNOWN
    unknown.cancel()


async def test_not_ready_is_an_rpc_error_and_counted(wires):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wires.check(headers={"authorization": f"Bearer {TOKEN}"})
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    labels = {"route": "_unknown", "result": "deny", "reason": "not_ready", "scheme": "none"}
    assert wires.state.metrics.registry.get_sample_value("authgate_decisions_total", labels) == 1


@pytest.fixture
async def one_check_at_a_time(tmp_path: Path) -> AsyncIterator[Wires]:
    """The wires of an app whose ``--max-connections`` is 1, so one Check in progress fills the gRPC bound."""
    policy = parse_policy({"routes": {"api": {"schemes": ["bearer", "basic"]}}}, "t")
    limits = RequestLimits(max_connections=1)
    state = build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", grpc_port=0, limits=limits), policy)
    async with serving_wires(state) as wires:
        yield wires


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_more_checks_in_progress_than_max_connections_are_refused_and_only_checks_count(one_check_at_a_time):
    """A Check waiting for its slow hash check is in progress; a second one finds the bound (1) full and is
    refused at once. Health RPCs, a held Watch stream included, neither count nor are refused."""
    wires = one_check_at_a_time
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert wires.state.reloader.apply({**TOKENS, "htpasswd": f"alice:{hashed}\n".encode()}, "test")
    watch = wires.health.Watch(HealthCheckRequest())
    assert (await watch.read()).status == HealthCheckResponse.SERVING
    release = threading.Event()
    real_verify = decision_module.verify_hash

    def held_verify(*args: Any) -> bool:  # the real check, held until the test lets it go
        release.wait(timeout=30)
        return real_verify(*args)

    bearer = {"authorization": f"Bearer {TOKEN}"}
    with mock.patch.object(decision_module, "verify_hash", held_verify):
        slow = asyncio.ensure_future(
            wires.check(headers={"authorization": "Basic " + base64.b64encode(b"alice:pw").decode()})
        )
        try:
            await wait_until(lambda: wires.decider.pending_slow_checks == 1, "the first check to be in progress")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await wires.check(headers=bearer)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await wires.health.Check(HealthCheckRequest())).status == HealthCheckResponse.SERVING
        finally:
            release.set()
        assert (await slow).upstream["x-auth-request-user"] == "alice"
    assert (await wires.check(headers=bearer)).upstream["x-auth-request-user"] == "ci"
    watch.cancel()


async def test_watch_streams_are_bounded_and_a_cancelled_one_frees_its_place(wires, caplog):
    assert wires.state.reloader.apply(TOKENS, "test")
    watches = [wires.health.Watch(HealthCheckRequest()) for _ in range(MAX_WATCHES)]
    for watch in watches:
        assert (await watch.read()).status == HealthCheckResponse.SERVING
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await wires.health.Watch(HealthCheckRequest()).read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Refusals are logged once a minute per bound, not once each.
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "grpc_capacity"]
    assert [(r.levelname, r.getMessage()) for r in warnings] == [
        ("WARNING", f"gRPC: refused a health Watch (RESOURCE_EXHAUSTED): {MAX_WATCHES} at once is the bound")
    ]
    assert (await wires.check(headers={"authorization": f"Bearer {TOKEN}"})).upstream["x-auth-request-user"] == "ci"

    watches.pop().cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:  # the server learns of the cancel asynchronously
        again = wires.health.Watch(HealthCheckRequest())
        try:
            assert (await again.read()).status == HealthCheckResponse.SERVING
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert loop.time() < deadline, "a cancelled Watch never freed its place"
            await asyncio.sleep(0.05)
    for watch in [*watches, again]:
        watch.cancel()


async def test_watch_streams_end_with_not_serving_as_the_server_stops(tmp_path: Path):
    """A Watch never ends by itself; stopping the server ends it at once (NOT_SERVING, then OK) instead of
    holding the shutdown for the whole grace period and then cancelling it."""
    port = free_port()
    policy = parse_policy({"routes": {"api": {}}}, "t")
    state = build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", grpc_port=port), policy)
    assert state.reloader.apply(TOKENS, "test")
    serving = serving_grpc(state, Decider(state))
    await serving.__aenter__()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            watch = HealthStub(channel).Watch(HealthCheckRequest())
            assert (await watch.read()).status == HealthCheckResponse.SERVING
        finally:
            started = time.monotonic()
            await serving.__aexit__(None, None, None)
            stopped_in = time.monotonic() - started
        assert (await watch.read()).status == HealthCheckResponse.NOT_SERVING
        assert await watch.read() is grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK
    assert stopped_in < GRACE_SECONDS


async def test_a_check_without_route_context_is_decided_by_its_path_and_shares_the_memo(tmp_path):
    """No context_extensions route and no --grpc-default-route: the route claiming the CheckRequest's own
    path decides (Istio's envoyExtAuthzGrpc); its allow answers the same credential on /auth/~ too."""
    policy = parse_policy(
        {"routes": {"api": {"path_prefixes": ["/api"]}, "ui": {"schemes": ["basic"], "path_prefixes": ["/ui"]}}}, "t"
    )
    state = build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", grpc_port=0), policy=policy)
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as http:
        server, port = build_server(state, app.state.decider)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                wires = Wires(state, http, AuthorizationStub(channel), HealthStub(channel))
                assert state.reloader.apply(TOKENS, "test")
                bearer = {"authorization": f"Bearer {TOKEN}"}
                api = await wires.check(path="/api/flows?limit=1", headers=bearer, route=None)
                assert api.upstream == {"x-auth-request-user": "ci", "x-auth-request-scheme": "bearer"}
                ui = await wires.check(path="/ui/flows", headers=bearer, route=None)
                assert (ui.http_status, ui.challenges) == (401, ('Basic realm="authgate", charset="UTF-8"',))
                for path in ("/other", "/api%2F..%2Fui", "//api/flows"):
                    assert (await wires.check(path=path, headers=bearer, route=None)).http_status == 403, path
                nginx = {**NGINX, "Authorization": f"Bearer {TOKEN}"}
                assert (await http.get("/auth/~", headers=nginx)).status_code == 200
                assert len(state.store.current.allows) == 1  # one remembered allow, route api, both wires
        finally:
            await server.stop(None)


async def test_a_repeat_takes_the_fast_lane_and_answers_exactly_as_decided(wires):
    """A remembered allow on a plain route with one Authorization header: answered from the route's context
    extension and that header (app.grpc_server's fast lane), the CheckRequest never read into the core's
    shape, with the very answer and count of the full path."""
    assert wires.state.reloader.apply(TOKENS, "test")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    with mock.patch("app.grpc_server.question", wraps=grpc_question) as read_in_full:
        first = await wires.check(headers=bearer)
        assert read_in_full.call_count == 1  # decided in full, then remembered
        assert await wires.check(headers=bearer) == first
        assert await wires.check(path="/api/other", headers=bearer) == first
        assert read_in_full.call_count == 1  # both repeats from the fast lane
    assert first.upstream == {"x-auth-request-user": "ci", "x-auth-request-scheme": "bearer"}
    labels = {"route": "api", "result": "allow", "reason": "allowed", "scheme": "bearer"}
    assert wires.state.metrics.registry.get_sample_value("authgate_decisions_total", labels) == 3


BEARER = f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("request_kwargs", "more_headers", "allowed"),
    [
        # A second Authorization header (a name differing in case, as a client other than Envoy could send):
        # two values, one malformed request, never the memo's allow.
        ({"headers": {"authorization": BEARER}}, {"Authorization": BEARER}, False),
        ({"headers": {"authorization": BEARER}}, {"AUTHORIZATION": "Bearer other"}, False),
        # A second one in http.header_map (Envoy's encode_raw_headers).
        ({"raw_headers": [("authorization", BEARER.encode()), ("Authorization", b"Bearer x")]}, {}, False),
        # The one header in http.header_map only, or the name elsewhere in the message: read in full, then
        # answered from the memo by the general lookup.
        ({"raw_headers": [("authorization", BEARER.encode())]}, {}, True),
        ({"headers": {"authorization": BEARER, "x-note": "see Authorization"}}, {}, True),
        # No route context and no default route: the route is the path's, read in full (here none claims it).
        ({"headers": {"authorization": BEARER}, "route": None, "path": "/api/flows"}, {}, False),
        # A route the policy does not have: no fast lane, and refused.
        ({"headers": {"authorization": BEARER}, "route": "nope"}, {}, False),
    ],
)
async def test_the_fast_lane_leaves_anything_unusual_to_the_full_path(wires, request_kwargs, more_headers, allowed):
    assert wires.state.reloader.apply(TOKENS, "test")
    assert (await wires.check(headers={"authorization": BEARER})).http_status == 200  # remembered
    request = envoy_check(**request_kwargs)
    request.attributes.request.http.headers.update(more_headers)  # as sent, not lower-cased
    with mock.patch("app.grpc_server.question", wraps=grpc_question) as read_in_full:
        answer = Answer.of(await wires.stub.Check(request))
        assert read_in_full.call_count == 1
    assert (answer.http_status == 200) == allowed, answer
