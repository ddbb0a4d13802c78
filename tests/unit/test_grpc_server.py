"""The gRPC wire in-process, next to the HTTP wire of the same app: one decision core (app.decider), so one
allow memo, one bound on waiting slow checks, one set of metrics — whichever wire a request came on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub
from litestar.testing import AsyncTestClient

from app.credentials import token_digest
from app.grpc_server import build_server
from app.policy import parse_policy
from app.service import create_app
from app.settings import Settings
from app.state import AppState, build_state
from tests.support.envoy_grpc import Answer, envoy_check

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


@pytest.fixture
async def wires(tmp_path: Path) -> AsyncIterator[Wires]:
    policy = parse_policy(
        {"routes": {"api": {"schemes": ["bearer", "basic"]}}, "throttle": {"max_pending_slow_checks": 2}}, "t"
    )
    state = build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", grpc_port=0), policy=policy)
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as http:
        server, port = build_server(state, app.state.decider)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Wires(state, http, AuthorizationStub(channel), HealthStub(channel))
        finally:
            await server.stop(None)


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
    import base64

    import bcrypt

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
