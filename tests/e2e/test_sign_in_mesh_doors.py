"""Sign-in through Contour and Istio, on a real Envoy configured as each controller configures it from the
chart's render with ``signIn.enabled`` — the doors test_sign_in_doors.py does not drive in Chromium.

- ``contour``: the ``sign-in-contour`` scenario (prefix ``/_auth/``): the root HTTPProxy with
  ``authorization`` (gRPC ext_authz to the ExtensionService) including the sign-in HTTPProxy at the prefix with
  ``authPolicy.disabled`` (tests/e2e/envoy_doors.py ``contour``);
- ``istio-http`` / ``istio-grpc``: the ``sign-in-istio`` scenario (with ``grpc.enabled`` for gRPC): the
  HTTPRoutes (the sign-in one to authgate's Service), the one ``action: CUSTOM`` AuthorizationPolicy leaving the
  prefix out (``notPaths``), and the extension provider the NOTES print (tests/e2e/istio.py);
- ``envoy-gateway-grpc``: the ``sign-in-envoy-gateway`` scenario with ``grpc.enabled`` (SecurityPolicies with
  ``extAuth.grpc``; the HTTP variant is test_sign_in_doors.py's Chromium flow).

authgate runs on the render's policy and Secret (its generated ``session-keys``). Raw HTTP clients send what
Chromium sends (tests/e2e/sign_in_http.py) and every status and header asserted is exact. The flow: a
navigation without a session is sent to the sign-in page on the original host; the form, fetched and posted
through the prefix's route (no ext_authz there), sets the cookie; the cookie passes a page, a same-origin
POST and a WebSocket to ``/api``; an API call without credentials gets 401, a machine's token 200. And what
each door does with the refreshed cookie of an allow past half the idle timeout (``Set-Cookie``): over gRPC
authgate puts it in ``ok_response.response_headers_to_add`` and Envoy adds it to the response, so the idle
expiry slides behind Contour, Istio's gRPC provider and Envoy Gateway's ``extAuth.grpc``; over Istio's HTTP
provider the printed ``headersToDownstreamOnAllow: [set-cookie]`` lets it through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app import sessions
from app.credentials import User
from app.session_keys import parse_session_keys
from app.sessions import Session
from tests.chart.render import RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Gateway, Upstream, bearer, new_test_id
from tests.e2e.envoy_doors import LISTENER, contour, envoy_gateway
from tests.e2e.sign_in_http import COOKIE, NAVIGATION, SAME_ORIGIN_FETCH, set_cookies, sign_in
from tests.e2e.test_istio import ADMIN, ADMIN_PASSWORD, TOKENS, WORKER, istio_gateway
from tests.support.envoy import EnvoyProcess
from tests.support.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("sign-in-mesh-doors")]

HOST = "prefect.example.com"
DOORS = ("contour", "istio-http", "istio-grpc", "envoy-gateway-grpc")


@dataclass
class MeshDoor:
    name: str
    gateway: Gateway
    secret: dict[str, str]  # the files authgate reads (htpasswd, session-keys), as mounted
    prefix: str
    # Where a navigation without a session is sent: absolute on the original host where the door tells
    # authgate the scheme and host (gRPC: attributes.request.http), else relative (Envoy passes it as it is).
    sign_in_base: str


def _envoy_door(name: str, workdir: Path, upstream: Upstream, stack: ExitStack) -> MeshDoor:
    """Contour, or Envoy Gateway with ``extAuth.grpc``: authgate with its gRPC port, Envoy as that controller
    translates the render (tests/e2e/envoy_doors.py)."""
    scenario = (
        [*SCENARIOS["sign-in-contour"]]
        if name == "contour"
        else [*SCENARIOS["sign-in-envoy-gateway"], "--set", "grpc.enabled=true"]
    )
    values = [*scenario, *credential_values(TOKENS, {ADMIN: ADMIN_PASSWORD})]
    render = Render.of(f"sign-in-mesh-{name}", values)
    files = RenderedAuthgate.lay_out(render, workdir)
    authgate = files.process(workdir / "authgate.log", grpc=True)
    stack.callback(authgate.stop)
    authgate.wait_ready()
    service = render.one("Service", RELEASE)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}

    def address(ref: Mapping[str, Any]) -> int:
        if ref["name"] == RELEASE:
            assert ref.get("namespace", service["metadata"]["namespace"]) == service["metadata"]["namespace"], ref
            assert authgate.grpc_port is not None
            return {ports["grpc"]: authgate.grpc_port, ports["http"]: authgate.port}[ref["port"]]
        assert (ref["name"], ref["port"]) == ("prefect-server", 4200), ref
        return upstream.port

    translate = contour if name == "contour" else envoy_gateway
    envoy = EnvoyProcess(translate(render, listen_port=free_port(), address=address), workdir / "envoy", name=name)
    stack.enter_context(envoy)
    gateway = Gateway(name, envoy.listener_port(LISTENER), upstream, host=HOST)
    prefix = "/_auth/" if name == "contour" else "/authgate/"
    return MeshDoor(name, gateway, _mounted(files), prefix, f"http://{HOST}{prefix}sign_in")


def _istio(kind: str, workdir: Path, upstream: Upstream, stack: ExitStack) -> MeshDoor:
    values = [*SCENARIOS["sign-in-istio"], *(["--set", "grpc.enabled=true"] if kind == "grpc" else [])]
    istio = stack.enter_context(istio_gateway(kind, workdir, upstream, values))
    base = f"http://{HOST}/authgate/sign_in" if kind == "grpc" else "/authgate/sign_in"
    return MeshDoor(f"istio-{kind}", istio.gateway, _mounted(istio.rendered), "/authgate/", base)


def _mounted(files: RenderedAuthgate) -> dict[str, str]:
    return {key: (files.secret.path / key).read_text() for key in ("htpasswd", "session-keys")}


@pytest.fixture(scope="module", params=DOORS)
def door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[MeshDoor]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(f"sign-in-{name}")
    with ExitStack() as stack:
        if name in ("contour", "envoy-gateway-grpc"):
            yield _envoy_door(name, workdir, upstream, stack)
        else:
            yield _istio(name.removeprefix("istio-"), workdir, upstream, stack)


def test_a_navigation_without_a_session_goes_to_the_sign_in_page_on_the_original_host(door: MeshDoor) -> None:
    test_id = new_test_id()
    answer = door.gateway.request("GET", "/flows/run-1?tab=logs", {**NAVIGATION, "X-Test-Id": test_id})
    assert answer.status == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}".lstrip(":/") == door.sign_in_base.lstrip(":/")
    assert parse_qs(location.query) == {"rd": ["/flows/run-1?tab=logs"]}
    assert answer.headers.get_all("WWW-Authenticate") is None  # a browser would not prompt anyway on a 302
    # An API call and a WebSocket handshake without credentials: 401, never a redirect.
    for target, headers in (("/api/flows", SAME_ORIGIN_FETCH), ("/api/events/out", {"Upgrade": "websocket"})):
        refused = door.gateway.request("GET", target, {**headers, "Connection": "Upgrade", "X-Test-Id": test_id})
        assert refused.status == 401, (target, refused.status)
        assert "Location" not in refused.headers
    assert door.gateway.upstream.records(test_id) == []


def test_a_person_signs_in_through_the_prefix_and_the_cookie_passes_pages_and_api_calls(door: MeshDoor) -> None:
    gateway = door.gateway
    answer, session = sign_in(
        gateway, prefix=door.prefix, user=ADMIN, password=ADMIN_PASSWORD, rd="/flows", origin=f"http://{HOST}"
    )
    assert answer.headers["Location"] == "/flows"
    [set_cookie] = [v for k, v in set_cookies(answer.headers).items() if k == COOKIE]
    assert "HttpOnly" in set_cookie and "Secure" in set_cookie and "Path=/" in set_cookie
    test_id = new_test_id()
    cookie = {"Cookie": session, "X-Test-Id": test_id}
    assert gateway.request("GET", "/flows", {**NAVIGATION, **cookie}).status == 200
    fetch = {**SAME_ORIGIN_FETCH, "Origin": f"http://{HOST}", **cookie}
    assert gateway.request("POST", "/api/flows/filter", fetch).status == 200
    # The UI's WebSocket to /api rides on the same cookie.
    with gateway.websocket("/api/events/out", {"Origin": f"http://{HOST}", **cookie}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    # Machines keep their tokens on the same routes.
    assert gateway.request("GET", "/api/flows", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    users = [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)]
    assert users == [[ADMIN], [ADMIN], [ADMIN], ["worker"]]
    # The same POST from another site with the cookie: refused (403), never passed.
    test_id = new_test_id()
    cross_site = {**fetch, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", "X-Test-Id": test_id}
    assert gateway.request("POST", "/api/flows/filter", cross_site).status == 403
    assert gateway.upstream.records(test_id) == []


def _sealed(door: MeshDoor, issued_ago: int, idle: int) -> str:
    """ADMIN's session sealed with the render's own key, issued ``issued_ago`` s ago, idle end ``idle`` s after."""
    secret = door.secret
    [line] = [line for line in secret["htpasswd"].splitlines() if line.startswith(f"{ADMIN}:")]
    user = User(name=ADMIN, hash=line.split(":", 1)[1], kind="")
    issued = int(time.time()) - issued_ago
    session = Session(ADMIN, "form", issued, issued + 12 * 3600, issued + idle)
    return f"{COOKIE}={sessions._seal(parse_session_keys(secret['session-keys']), session, user)}"


def test_the_refreshed_cookie_of_an_allow_reaches_the_browser(door: MeshDoor) -> None:
    """A session used 40 minutes after its last refresh (idle timeout 1h): authgate allows it and refreshes
    the cookie; each of these doors hands the refresh to the browser, so the idle expiry slides. A fresh
    session's allow carries no Set-Cookie."""
    test_id = new_test_id()
    stale = {**NAVIGATION, "Cookie": _sealed(door, 40 * 60, 3600), "X-Test-Id": test_id}
    answer = door.gateway.request("GET", "/flows", stale)
    assert answer.status == 200
    refreshed = set_cookies(answer.headers)
    assert set(refreshed) == {COOKIE}, refreshed
    assert "Max-Age=" in refreshed[COOKIE] and "HttpOnly" in refreshed[COOKIE]
    fresh = {**NAVIGATION, "Cookie": _sealed(door, 60, 3600), "X-Test-Id": test_id}
    answer = door.gateway.request("GET", "/flows", fresh)
    assert answer.status == 200
    assert answer.headers.get_all("Set-Cookie") is None
    assert [r["headers"].get("x-auth-request-user") for r in door.gateway.upstream.records(test_id)] == [[ADMIN]] * 2
