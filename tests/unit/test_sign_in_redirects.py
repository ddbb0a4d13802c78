"""A browser's page load without a session, through each front door: a redirect to the sign-in page where the
door passes one to the browser (Traefik, Envoy over HTTP and gRPC), the 401 where only 401 works (ingress-nginx,
which redirects it itself with auth-signin; NGINX Gateway Fabric), and never a Basic prompt."""

from __future__ import annotations

import base64
import urllib.parse
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
KEYS = "k1 " + base64.b64encode(b"K" * 32).decode()
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


def make_state(tmp_path: Path, proxy: tuple[str, ...] = ("ingress-nginx", "traefik"), **session: object) -> AppState:
    policy = parse_policy({"routes": {"ui": {"schemes": ["session", "basic"]}}, "session": session}, "t")
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
    assert answer.headers["location"] == "/authgate/sign-in?rd=%2Fui%2Fflows%3Ftab%3Druns"
    assert answer.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in answer.headers


async def test_an_expired_or_rotated_out_session_is_sent_to_sign_in_too(tmp_path):
    answer = await ask(
        make_state(tmp_path), "/auth/ui", {**TRAEFIK, **NAVIGATE, "cookie": "__Host-authgate-session=stale"}
    )
    assert answer.status_code == 302 and answer.headers["location"].startswith("/authgate/sign-in?rd=")
    fetch = {**TRAEFIK, "sec-fetch-mode": "cors", "cookie": "__Host-authgate-session=stale"}
    assert (await ask(make_state(tmp_path), "/auth/ui", fetch)).status_code == 401


async def test_a_sign_in_page_on_another_host_gets_the_whole_url(tmp_path):
    state = make_state(tmp_path, sign_in_url="https://auth.example.com/authgate/sign-in")
    answer = await ask(state, "/auth/ui", {**TRAEFIK, **NAVIGATE})
    location = urllib.parse.urlsplit(answer.headers["location"])
    assert (location.netloc, location.path) == ("auth.example.com", "/authgate/sign-in")
    assert urllib.parse.parse_qs(location.query) == {"rd": ["https://prefect.example.com/ui/flows?tab=runs"]}


async def test_path_prefix_envoy_gets_a_redirect(tmp_path):
    state = make_state(tmp_path, proxy=("path-prefix",))
    answer = await ask(state, "/auth/ui/ui/flows", NAVIGATE)
    assert (answer.status_code, answer.headers["location"]) == (302, "/authgate/sign-in?rd=%2Fui%2Fflows")


@pytest.mark.parametrize(
    ("proxy", "headers"),
    [
        (("ingress-nginx", "traefik"), INGRESS_NGINX),
        (("ingress-nginx",), INGRESS_NGINX),
        (("nginx-gateway-fabric",), {"path": "/ui/flows", "method": "GET"}),
    ],
    ids=["ingress-nginx-by-default", "ingress-nginx", "nginx-gateway-fabric"],
)
async def test_nginx_doors_get_a_401_without_a_challenge(tmp_path, proxy, headers):
    answer = await ask(make_state(tmp_path, proxy=proxy), "/auth/ui", {**headers, **NAVIGATE})
    assert answer.status_code == 401
    assert "location" not in answer.headers and "www-authenticate" not in answer.headers


async def test_no_redirect_for_what_is_no_page_load(tmp_path):
    state = make_state(tmp_path)
    fetch = await ask(state, "/auth/ui", {**TRAEFIK, "sec-fetch-mode": "cors", "sec-fetch-site": "same-origin"})
    assert (fetch.status_code, "location" in fetch.headers) == (401, False)
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
    assert headers["location"] == "/authgate/sign-in?rd=%2Fui%2Fflows%3Ftab%3Druns"
    assert fetch.denied_response.status.code == 401
    assert not [h for h in fetch.denied_response.headers if h.header.key == "www-authenticate"]
