"""The chart's Gateway API output through the front doors that speak it:

- **NGINX Gateway Fabric**: real nginx configured as NGF renders the chart's HTTPRoutes with the
  ``ExternalAuth`` filter (tests/e2e/ngf.py): fixed auth path, ``Path``/``Method`` headers;
- **path-prefix** (Envoy ext_authz HTTP as Envoy Gateway's SecurityPolicy, Cilium's Gateway API filter and
  Istio's ``envoyExtAuthzHttp`` send it): the requests are sent to authgate's endpoint exactly as that
  protocol documents them — the original method, the filter's/policy's path + the original path and query,
  ``Host``, ``Authorization`` and the listed headers, ``X-Forwarded-For`` ending in the address Envoy saw.
  The same doors on a real Envoy, configured as each controller translates the chart: test_envoy_doors.py.

One render of the Prefect values with ``gateway.enabled`` (only HTTPRoutes, no Ingress) drives both; authgate
runs with the ``--proxy`` the chart derives for the filter: ``path-prefix,nginx-gateway-fabric``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from app import sessions
from app.credentials import User
from app.session_keys import parse_session_keys
from app.sessions import Session
from tests.chart.render import RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.ngf import render_ngf_conf
from tests.e2e.nginx import NginxProcess
from tests.e2e.sign_in_http import COOKIE, NAVIGATION, SAME_ORIGIN_FETCH, sign_in
from tests.support.procs import AuthgateProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("gateway-doors")]

HOST = "prefect.example.com"
WORKER = "gateway-worker-token-0123456789abcdef"
DASHBOARDS = "gateway-dashboards-token-0123456789"
UI_USER, UI_PASSWORD = "alice", "gateway-password"
# The chart with only HTTPRoutes (the render scenario "gateway-only") and test credentials.
GATEWAY_VALUES = [
    *SCENARIOS["gateway-only"],
    *credential_values(
        {
            "worker": (WORKER, "routes=api"),
            "dashboards": (DASHBOARDS, "routes=api methods=GET,HEAD paths=/api/flows,/api/flow_runs"),
        },
        {UI_USER: UI_PASSWORD},
    ),
]
FORGERIES = {
    "x-original": {"X-Original-URL": "http://prefect.example.com/api/health", "X-Original-Method": "GET"},
    "x-forwarded": {"X-Forwarded-Uri": "/api/health", "X-Forwarded-Method": "GET"},
    "path-method": {"Path": "/api/health", "Method": "GET"},
}


@dataclass
class GatewayDoors:
    render: Render
    authgate: AuthgateProcess
    ngf: Gateway

    def envoy(
        self, method: str, target: str, headers: dict[str, str] | None = None, *, route: str = "api"
    ) -> httpx.Response:
        """What Envoy sends for a client's ``method target``: the same method to ``/auth/<route>`` + target,
        Host, the client's Authorization and listed headers, X-Forwarded-For ending in the client's address."""
        sent = {"Host": HOST, "X-Forwarded-For": "198.51.100.7", **(headers or {})}
        with httpx.Client(base_url=self.authgate.base_url, timeout=10) as client:
            return client.request(method, f"/auth/{route}{target}", headers=sent)


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[GatewayDoors]:
    workdir = tmp_path_factory.mktemp("gateway-doors")
    render = Render.of("gateway-doors", GATEWAY_VALUES)
    files = RenderedAuthgate.lay_out(render, workdir)
    assert files.proxy == "path-prefix,nginx-gateway-fabric"
    authgate = files.process(workdir / "authgate.log")
    service = render.one("Service", RELEASE)

    def translate(ref: dict[str, Any]) -> str:
        if ref["name"] == RELEASE:
            assert ref.get("namespace", "prefect") == service["metadata"]["namespace"]
            assert ref["port"] == service["spec"]["ports"][0]["port"]
            return f"127.0.0.1:{authgate.port}"
        assert (ref["name"], ref["port"]) == ("prefect-server", 4200)
        return upstream.address

    nginx: NginxProcess | None = None
    try:
        authgate.wait_ready()
        port = free_port()
        conf = render_ngf_conf(render.all("HTTPRoute"), listen_port=port, prefix=workdir / "ngf", translate=translate)
        nginx = NginxProcess((), workdir / "ngf", port=port, conf_text=conf)
        nginx.start()
        yield GatewayDoors(render, authgate, Gateway("nginx-gateway-fabric", port, upstream, host=HOST))
    finally:
        if nginx is not None:
            nginx.stop()
        authgate.stop()


def test_gateway_fabric_keeps_the_decision_table(doors: GatewayDoors) -> None:
    gateway = doors.ngf
    test_id = new_test_id()
    assert gateway.request("GET", "/api/health", {"X-Test-Id": test_id, "X-Auth-Request-User": "admin"}).status == 200
    assert gateway.request("GET", "/api/flows?limit=1", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows/x", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/runs", {**basic(UI_USER, UI_PASSWORD), "X-Test-Id": test_id}).status == 200
    records = gateway.upstream.records(test_id)
    assert [r["headers"].get("x-auth-request-user") for r in records] == [None, ["worker"], ["dashboards"], [UI_USER]]
    assert records[1]["raw_path"] == "/api/flows?limit=1"

    test_id = new_test_id()
    denied = gateway.request("POST", "/api/flows/filter", {"X-Test-Id": test_id})
    assert denied.status == 401
    assert (denied.headers.get_all("WWW-Authenticate") or [""])[0] == 'Bearer realm="prefect-api"'
    assert gateway.request("POST", "/api/flows/filter", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 403
    ui = gateway.request("GET", "/", {"X-Test-Id": test_id})
    assert ui.status == 401 and (ui.headers.get_all("WWW-Authenticate") or [""])[0].startswith('Basic realm="prefect"')
    assert gateway.request("GET", "/api/healthz", {"X-Test-Id": test_id}).status == 401
    assert gateway.upstream.records(test_id) == []


@pytest.mark.parametrize("forged", FORGERIES.values(), ids=FORGERIES.keys())
def test_gateway_fabric_ignores_what_a_client_writes(doors: GatewayDoors, forged: dict[str, str]) -> None:
    gateway = doors.ngf
    test_id = new_test_id()
    assert gateway.request("DELETE", "/api/deployments/1", {**forged, "X-Test-Id": test_id}).status == 401
    limited = gateway.request("POST", "/api/admin/settings", {**forged, **bearer(DASHBOARDS), "X-Test-Id": test_id})
    assert limited.status == 403
    assert gateway.request("GET", "/api/health#/../flows", {"X-Test-Id": test_id}).status in (400, 401)
    assert gateway.upstream.records(test_id) == []


def test_gateway_fabric_websocket_handshake(doors: GatewayDoors) -> None:
    with doors.ngf.websocket("/api/events/in", bearer(WORKER)) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    with pytest.raises(InvalidStatus) as raised:
        doors.ngf.websocket("/api/events/out", {}).close()
    assert raised.value.response.status_code == 401


def test_path_prefix_wire_format_as_the_rendered_policies_send_it(doors: GatewayDoors) -> None:
    # The path authgate is asked on is what the rendered filter (and an envoy-gateway SecurityPolicy) name.
    [rule] = doors.render.one("HTTPRoute", f"{RELEASE}-api")["spec"]["rules"]
    assert rule["filters"][0]["externalAuth"]["http"]["path"] == "/auth/api"

    health = doors.envoy("GET", "/api/health", {"X-Auth-Request-User": "admin"})
    assert health.status_code == 200
    assert health.headers["x-envoy-auth-headers-to-remove"] == "x-auth-request-user, x-auth-request-scheme"
    allowed = doors.envoy("DELETE", "/api/flows/1?force=true", bearer(WORKER))
    assert allowed.status_code == 200 and allowed.headers["x-auth-request-user"] == "worker"
    assert "x-envoy-auth-headers-to-remove" not in allowed.headers
    denied = doors.envoy("POST", "/api/flows/filter")
    assert denied.status_code == 401 and denied.headers.get_list("www-authenticate")[0] == 'Bearer realm="prefect-api"'
    assert doors.envoy("GET", "/api/flows/x", bearer(DASHBOARDS)).status_code == 200
    assert doors.envoy("POST", "/api/flows/x", bearer(DASHBOARDS)).status_code == 403
    ui = doors.envoy("GET", "/runs", {}, route="ui")
    assert ui.status_code == 401 and ui.headers["www-authenticate"].startswith('Basic realm="prefect"')
    assert doors.envoy("GET", "/runs", basic(UI_USER, UI_PASSWORD), route="ui").status_code == 200


@pytest.mark.parametrize("forged", FORGERIES.values(), ids=FORGERIES.keys())
def test_path_prefix_ignores_other_doors_headers_even_if_a_gateway_let_them_through(
    doors: GatewayDoors, forged: dict[str, str]
) -> None:
    assert doors.envoy("POST", "/api/flows/filter", forged).status_code == 401
    assert doors.envoy("POST", "/api/admin/settings", {**forged, **bearer(DASHBOARDS)}).status_code == 403


def test_gateway_fabric_with_sign_in_answers_a_browser_401_and_passes_a_session_but_never_its_refresh(
    tmp_path: Path, upstream: Upstream
) -> None:
    """``signIn.enabled`` with the filter (scenario ``sign-in-filter``) behind NGINX Gateway Fabric: NGF's
    ``auth_request`` knows only 2xx, 401 and 403, and authgate never answers it with a redirect (its
    ``nginx-gateway-fabric`` door does not pass one), so a browser opening the UI gets 401 with the UI route's
    Basic challenge - the browser's prompt, not the sign-in page - and nothing else of authgate's answer
    (no Location, no Set-Cookie, no body). The sign-in HTTPRoute has no filter: someone who opens
    ``/authgate/sign_in`` signs in, and the session cookie then passes (the filter's ``allowedHeaders`` bring
    ``Cookie`` and the ``Sec-Fetch-*`` headers to authgate). NGF hands no header of an allow to the browser,
    so the refreshed cookie never arrives: the idle expiry does not slide."""
    values = [
        *SCENARIOS["sign-in-filter"],
        *credential_values({"worker": (WORKER, "routes=api")}, {UI_USER: UI_PASSWORD}),
    ]
    render = Render.of("gateway-doors-sign-in", values)
    files = RenderedAuthgate.lay_out(render, tmp_path)
    assert files.proxy == "path-prefix,nginx-gateway-fabric"
    service = render.one("Service", RELEASE)
    with contextlib.ExitStack() as stack:
        authgate = files.process(tmp_path / "authgate.log")
        stack.callback(authgate.stop)

        def translate(ref: dict[str, Any]) -> str:
            if ref["name"] == RELEASE:
                assert ref.get("namespace") == service["metadata"]["namespace"]
                assert ref["port"] == service["spec"]["ports"][0]["port"]
                return f"127.0.0.1:{authgate.port}"
            assert (ref["name"], ref["port"]) == ("prefect-server", 4200)
            return upstream.address

        authgate.wait_ready()
        port = free_port()
        conf = render_ngf_conf(render.all("HTTPRoute"), listen_port=port, prefix=tmp_path / "ngf", translate=translate)
        assert "location = /authgate {" in conf and "location /authgate/ {" in conf
        nginx = NginxProcess((), tmp_path / "ngf", port=port, conf_text=conf)
        nginx.start()
        stack.callback(nginx.stop)
        gateway = Gateway("nginx-gateway-fabric", port, upstream, host=HOST)

        test_id = new_test_id()
        page = gateway.request("GET", "/flows/run-1", {**NAVIGATION, "X-Test-Id": test_id})
        assert page.status == 401
        assert page.headers.get_all("WWW-Authenticate") == ['Basic realm="prefect", charset="UTF-8"']
        assert page.headers.get_all("Location") is None and page.headers.get_all("Set-Cookie") is None
        assert b"<title>401 Authorization Required</title>" in page.body  # nginx's own page, not authgate's body
        api = gateway.request("GET", "/api/flows", {**SAME_ORIGIN_FETCH, "X-Test-Id": test_id})
        assert api.status == 401 and api.headers.get_all("Set-Cookie") is None
        assert gateway.upstream.records(test_id) == []

        answer, session = sign_in(
            gateway, prefix="/authgate/", user=UI_USER, password=UI_PASSWORD, rd="/flows", origin=f"http://{HOST}"
        )
        assert answer.headers["Location"] == "/flows"
        test_id = new_test_id()
        cookie = {"Cookie": session, "X-Test-Id": test_id}
        assert gateway.request("GET", "/flows", {**NAVIGATION, **cookie}).status == 200
        fetch = {**SAME_ORIGIN_FETCH, "Origin": f"http://{HOST}", **cookie}
        assert gateway.request("POST", "/api/flows/filter", fetch).status == 200
        assert gateway.request("GET", "/api/flows", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
        users = [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)]
        assert users == [[UI_USER], [UI_USER], ["worker"]]

        # A session used 40 minutes after issue (idle timeout 1h): allowed, and authgate refreshes it (its own
        # answer, asked directly, carries the cookie) - but NGF's allow carries no Set-Cookie to the browser.
        stale = f"{COOKIE}={_sealed(files, issued_ago=40 * 60)}"
        allowed = gateway.request("GET", "/flows", {**NAVIGATION, "Cookie": stale})
        assert allowed.status == 200 and allowed.headers.get_all("Set-Cookie") is None
        direct = httpx.get(
            authgate.base_url + "/auth/ui",
            headers={**NAVIGATION, "Cookie": stale, "Host": HOST, "Path": "/flows", "Method": "GET"},
            timeout=10,
        )
        assert direct.status_code == 200 and COOKIE in direct.headers.get("set-cookie", "")


def _sealed(files: RenderedAuthgate, *, issued_ago: int) -> str:
    """UI_USER's session sealed with the mounted key, issued ``issued_ago`` s ago (lifetime 12h, idle 1h)."""
    secret = {key: (files.secret.path / key).read_text() for key in ("htpasswd", "session-keys")}
    [line] = [line for line in secret["htpasswd"].splitlines() if line.startswith(f"{UI_USER}:")]
    user = User(name=UI_USER, hash=line.split(":", 1)[1], kind="")
    issued = int(time.time()) - issued_ago
    session = Session(UI_USER, "form", issued, issued + 12 * 3600, issued + 3600)
    return sessions._seal(parse_session_keys(secret["session-keys"]), session, user)
