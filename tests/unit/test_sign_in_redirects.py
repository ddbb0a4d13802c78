"""A browser's page load without a session, through each front door: a redirect to the sign-in page where the
door passes one to the browser (Traefik, Envoy over HTTP and gRPC), the 401 where only 401 works (ingress-nginx,
which redirects it itself with auth-signin; NGINX Gateway Fabric); and the refreshed cookie of a sliding session
on an allow, over HTTP and gRPC."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from litestar.testing import AsyncTestClient

from app.grpc_server import build_server
from app.policy import parse_policy
from app.service import create_app
from app.settings import Settings
from app.state import AppState, build_state
from tests.support.envoy_grpc import envoy_check

pytestmark = pytest.mark.anyio
KEYS = base64.urlsafe_b64encode(b"K" * 32).decode()
NAVIGATE = {"sec-fetch-mode": "navigate", "sec-fetch-site": "none", "accept": "text/html"}
TRAEFIK = {
    "x-forwarded-method": "GET",
    "x-forwarded-uri": "/ui/flows?tab=runs",
    "x-forwarded-host": "prefect.example.com",
    "x-forwarded-proto": "https",
    "x-forwarded-for": "192.0.2.7",
}
INGRESS_NGINX = {"x-original-url": "https://prefect.example.com/ui/flows?tab=runs", "x-original-method": "GET"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_state(tmp_path: Path, proxy: tuple[str, ...] = ("ingress-nginx", "traefik"), **sign_in: object) -> AppState:
    policy = parse_policy({"routes": {"ui": {"schemes": ["session", "basic"]}}, "sign_in": sign_in}, "t")
    settings = Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", proxy=proxy, grpc_port=0)  # type: ignore[arg-type]
    state = build_state(settings, policy=policy)
    assert state.reloader.apply({"htpasswd": b"alice:{SHA}x\n", "session-keys": KEYS.encode()}, "t")
    return state


async def ask(state: AppState, path: str, headers: dict[str, str]):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        return await client.get(path, headers=headers, follow_redirects=False)


async def test_traefik_gets_a_redirect_with_the_page_asked_for(tmp_path):
    answer = await ask(make_state(tmp_path), "/auth/ui", {**TRAEFIK, **NAVIGATE})
    assert answer.status_code == 302
    # Absolute on the original host (Traefik resolves a relative Location against authgate's own address).
    assert answer.headers["location"] == "https://prefect.example.com/authgate/sign_in?rd=%2Fui%2Fflows%3Ftab%3Druns"
    assert answer.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in answer.headers


async def test_an_expired_or_rotated_out_session_is_sent_to_sign_in_too(tmp_path):
    answer = await ask(make_state(tmp_path), "/auth/ui", {**TRAEFIK, **NAVIGATE, "cookie": "__Host-authgate=stale"})
    assert answer.status_code == 302
    assert answer.headers["location"].startswith("https://prefect.example.com/authgate/sign_in?rd=")
    fetch = {**TRAEFIK, "sec-fetch-mode": "cors", "cookie": "__Host-authgate=stale"}
    assert (await ask(make_state(tmp_path), "/auth/ui", fetch)).status_code == 401


async def test_traefik_redirect_follows_its_own_marks_or_stays_relative(tmp_path):
    state = make_state(tmp_path, proxy=("traefik",))
    plain = {**TRAEFIK, **NAVIGATE, "x-forwarded-proto": "http", "x-forwarded-host": "localhost:8080"}
    answer = await ask(state, "/auth/ui", plain)
    assert answer.headers["location"] == "http://localhost:8080/authgate/sign_in?rd=%2Fui%2Fflows%3Ftab%3Druns"
    # A host Traefik would never write (userinfo, a path, a second value) or no host: the relative form.
    for host in ("evil.example@prefect.example.com", "evil.example/x", "a.example, b.example", ""):
        answer = await ask(state, "/auth/ui", {**TRAEFIK, **NAVIGATE, "x-forwarded-host": host})
        assert answer.headers["location"] == "/authgate/sign_in?rd=%2Fui%2Fflows%3Ftab%3Druns", host
    answer = await ask(state, "/auth/ui", {**TRAEFIK, **NAVIGATE, "x-forwarded-proto": "javascript"})
    assert answer.headers["location"].startswith("/authgate/sign_in?rd=")


async def test_path_prefix_envoy_gets_a_redirect(tmp_path):
    state = make_state(tmp_path, proxy=("path-prefix",))
    answer = await ask(state, "/auth/ui/ui/flows", NAVIGATE)
    assert (answer.status_code, answer.headers["location"]) == (302, "/authgate/sign_in?rd=%2Fui%2Fflows")
    # The original query is kept in rd; Envoy vouches for no scheme, so the Location stays relative (Envoy
    # passes it unchanged), whatever Host and X-Forwarded-Proto say.
    answer = await ask(state, "/auth/ui/ui/flows?tab=runs&x=%2F", {**NAVIGATE, "x-forwarded-proto": "http"})
    assert answer.headers["location"] == "/authgate/sign_in?rd=%2Fui%2Fflows%3Ftab%3Druns%26x%3D%252F"


@pytest.mark.parametrize(
    ("proxy", "headers"),
    [
        (("ingress-nginx", "traefik"), INGRESS_NGINX),
        (("ingress-nginx",), INGRESS_NGINX),
        (("nginx-gateway-fabric",), {"path": "/ui/flows", "method": "GET"}),
    ],
    ids=["ingress-nginx-by-default", "ingress-nginx", "nginx-gateway-fabric"],
)
async def test_nginx_doors_get_the_401(tmp_path, proxy, headers):
    answer = await ask(make_state(tmp_path, proxy=proxy), "/auth/ui", {**headers, **NAVIGATE})
    assert answer.status_code == 401 and "location" not in answer.headers
    assert answer.headers["www-authenticate"].startswith("Basic")  # as today


async def test_no_redirect_for_what_is_no_page_load(tmp_path):
    state = make_state(tmp_path)
    fetch = await ask(state, "/auth/ui", {**TRAEFIK, "sec-fetch-mode": "cors", "sec-fetch-site": "same-origin"})
    assert (fetch.status_code, "location" in fetch.headers) == (401, False)
    assert fetch.headers["www-authenticate"].startswith("Basic")  # an API call: the route's challenges, as today
    upgrade = await ask(state, "/auth/ui", {**TRAEFIK, "sec-fetch-mode": "websocket", "upgrade": "websocket"})
    assert (upgrade.status_code, "location" in upgrade.headers) == (401, False)
    post = await ask(state, "/auth/ui", {**TRAEFIK, **NAVIGATE, "x-forwarded-method": "POST"})
    assert (post.status_code, "location" in post.headers) == (401, False)
    script = await ask(state, "/auth/ui", TRAEFIK)
    assert script.status_code == 401 and script.headers["www-authenticate"].startswith("Basic")


async def test_envoy_grpc_gets_a_redirect(tmp_path):
    state = make_state(tmp_path)
    app = create_app(state.settings, state)
    async with AsyncTestClient(app):
        server, port = build_server(state, app.state.decider)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = AuthorizationStub(channel)
                response = await stub.Check(envoy_check(path="/ui/flows?tab=runs", headers=NAVIGATE, route="ui"))
                fetch = await stub.Check(envoy_check(path="/ui/x", headers={"sec-fetch-mode": "cors"}, route="ui"))
        finally:
            await server.stop(None)
    denied = response.denied_response
    assert (response.status.code, denied.status.code) == (16, 302)
    headers = {h.header.key: h.header.value for h in denied.headers}
    # Absolute on the host and scheme of Envoy's own attributes.request.http fields.
    assert headers["location"] == "https://prefect.example.com/authgate/sign_in?rd=%2Fui%2Fflows%3Ftab%3Druns"
    assert fetch.denied_response.status.code == 401
    assert [h for h in fetch.denied_response.headers if h.header.key == "www-authenticate"]  # as today


def sliding_cookie(state: AppState, issued_ago: int) -> str:
    """A session of alice's issued ``issued_ago`` seconds before the state's clock."""
    from app import sessions

    snapshot = state.store.current
    assert snapshot is not None
    now = state.clock().timestamp()
    value, _ = sessions.issue(
        snapshot.credentials, snapshot.credentials.users["alice"], now - issued_ago, state.policy.session
    )
    return value


async def test_a_session_past_half_its_idle_timeout_gets_a_refreshed_cookie_on_the_allow(tmp_path):
    state = make_state(tmp_path, lifetime="2h", idle_timeout="10m")
    fresh, old = sliding_cookie(state, 60), sliding_cookie(state, 400)
    first = await ask(state, "/auth/ui", {**TRAEFIK, "cookie": f"__Host-authgate={fresh}"})
    assert first.status_code == 200 and "set-cookie" not in first.headers
    answer = await ask(state, "/auth/ui", {**TRAEFIK, "cookie": f"__Host-authgate={old}"})
    assert answer.status_code == 200 and answer.headers["x-auth-request-user"] == "alice"
    line = answer.headers["set-cookie"]
    assert line.startswith("__Host-authgate=") and line.split(";", 1)[0] != f"__Host-authgate={old}"
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax"):
        assert attribute in line
    again = await ask(state, "/auth/ui", {**TRAEFIK, "cookie": line.split(";", 1)[0]})
    assert again.status_code == 200 and "set-cookie" not in again.headers  # the new idle end is fresh

    app = create_app(state.settings, state)
    async with AsyncTestClient(app):
        server, port = build_server(state, app.state.decider)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = AuthorizationStub(channel)
                headers = {"cookie": f"__Host-authgate={old}"}
                response = await stub.Check(envoy_check(path="/ui/x", headers=headers, route="ui"))
                plain = await stub.Check(
                    envoy_check(path="/ui/x", headers={"cookie": f"__Host-authgate={fresh}"}, route="ui")
                )
        finally:
            await server.stop(None)
    assert response.status.code == 0
    added = [h.header.value for h in response.ok_response.response_headers_to_add if h.header.key == "set-cookie"]
    assert len(added) == 1 and added[0].startswith("__Host-authgate=")
    assert plain.status.code == 0 and not plain.ok_response.response_headers_to_add
