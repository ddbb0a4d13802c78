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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.chart.render import RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.ngf import render_ngf_conf
from tests.e2e.nginx import NginxProcess
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
