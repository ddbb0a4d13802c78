"""The chart's own Ingresses behind both doors they meet today, and authgate behind a door it was not
configured for: no header a client adds ever changes a decision (the hardening issue, both directions).

Everything comes from one render of the Prefect example values (sign-in on, as shipped) with the real helm:

- **nginx** as ingress-nginx renders those Ingresses (tests/e2e/nginx.py);
- **Traefik** set up exactly as its ``kubernetesIngressNGINX`` provider translates them: per Ingress path a
  router ``Host && PathPrefix`` with a ForwardAuth middleware whose ``address`` is the ``auth-url`` and whose
  ``authResponseHeaders`` are ``auth-response-headers`` split at commas (traefik
  ``pkg/provider/kubernetes/ingress-nginx``: ``ForwardAuth{Address: authURL, AuthResponseHeaders: ...}``;
  ``trustForwardHeader`` stays false); the sign-in Ingress a router to authgate without auth. Traefik 3.7
  makes ``auth-signin`` a redirect of authgate's *401* (``pkg/middlewares/ingressnginx/snippet``), which a
  file-provider ForwardAuth cannot express; this harness leaves it out, so the navigations here are answered
  by authgate's own 302, which Traefik passes as it is on either path (docs/proxies.md);
- five authgate processes on the rendered Secret and policy: ``--proxy`` as the chart renders it (the
  default, ``ingress-nginx,traefik``), and each other door alone. Each has its own
  host on both proxies (``<mode>.example.com``), so one nginx and one Traefik serve every combination.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import pytest

from tests.chart.render import PREFECT_VALUES, Render
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.nginx import NginxProcess, to_loopback
from tests.e2e.sign_in_http import NAVIGATION, SAME_ORIGIN_FETCH, sign_in
from tests.e2e.test_chart_ingress import AUTH_PREFIX, ingress_specs
from tests.e2e.traefik import TraefikProcess, TraefikRoute
from tests.support.procs import AuthgateProcess

# One worker runs the whole module against one set of processes (scripts/test.sh uses --dist loadgroup).
pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("front-doors")]

WORKER = "front-doors-worker-token-0123456789abcdef"
DASHBOARDS = "front-doors-dashboards-token-0123456789"  # methods=GET,HEAD paths=/api/flows,/api/flow_runs
UI_USER, UI_PASSWORD = "alice", "front-doors-password"
MODES = ("chart", "ingress-nginx", "traefik", "path-prefix", "nginx-gateway-fabric")
DOORS = ("nginx", "traefik")
# Which --proxy each door's own headers satisfy (the chart default believes both).
MATCHED = {("chart", "nginx"), ("chart", "traefik"), ("ingress-nginx", "nginx"), ("traefik", "traefik")}

CREDENTIALS = credential_values(
    {
        "worker": (WORKER, "routes=api"),
        "dashboards": (DASHBOARDS, "routes=api methods=GET,HEAD paths=/api/flows,/api/flow_runs"),
    },
    {UI_USER: UI_PASSWORD},
)
FORGED_NGINX = {"X-Original-URL": "https://prefect.example.com/api/health", "X-Original-Method": "GET"}
FORGED_TRAEFIK = {"X-Forwarded-Uri": "/api/health", "X-Forwarded-Method": "GET"}
FORGED_GATEWAY_FABRIC = {"Path": "/api/health", "Method": "GET"}
FORGERIES = {
    "x-original": FORGED_NGINX,
    "x-forwarded": FORGED_TRAEFIK,
    "path-method": FORGED_GATEWAY_FABRIC,
    "all": {**FORGED_NGINX, **FORGED_TRAEFIK, **FORGED_GATEWAY_FABRIC},
}


def host(mode: str) -> str:
    return f"{mode}.example.com"


def traefik_routes(render: Render, *, authgate_port: int, backend: str, mode: str) -> list[TraefikRoute]:
    """What Traefik's ingress-nginx provider makes of the rendered Ingresses, on ``mode``'s host. The sign-in
    Ingress (no ``auth-url``, authgate's Service as its backend) becomes a router to authgate without auth."""
    routes = []
    for ingress in render.all("Ingress"):
        annotations: dict[str, str] = ingress["metadata"].get("annotations") or {}
        auth_url = annotations.get(AUTH_PREFIX + "auth-url")
        response_headers = annotations.get(AUTH_PREFIX + "auth-response-headers", "")
        for rule in ingress["spec"]["rules"]:
            for number, path in enumerate(rule["http"]["paths"]):
                assert path["pathType"] == "Prefix"
                to_authgate = path["backend"]["service"]["name"] == render.one("Service")["metadata"]["name"]
                assert to_authgate == (auth_url is None), ingress["metadata"]["name"]
                routes.append(
                    TraefikRoute(
                        name=f"{mode}-{ingress['metadata']['name']}-{number}",
                        host=host(mode),
                        path_prefix=path["path"],
                        backend=f"127.0.0.1:{authgate_port}" if to_authgate else backend,
                        auth_address=None if auth_url is None else to_loopback(auth_url, authgate_port),
                        auth_response_headers=tuple(response_headers.split(",")) if auth_url else (),
                    )
                )
    return sorted(routes, key=lambda r: -len(r.path_prefix))


@dataclass
class FrontDoors:
    gateways: dict[str, dict[str, Gateway]]  # door -> mode -> gateway
    authgates: dict[str, AuthgateProcess]

    def gateway(self, door: str, mode: str) -> Gateway:
        return self.gateways[door][mode]

    def problems(self, mode: str, problem: str) -> float:
        text = httpx.get(self.authgates[mode].base_url + "/metrics", timeout=5).text
        total = 0.0
        for match in re.finditer(r"authgate_original_request_problems_total\{([^}]*)\} (\S+)", text):
            if f'problem="{problem}"' in match.group(1):
                total += float(match.group(2))
        return total


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[FrontDoors]:
    workdir = tmp_path_factory.mktemp("front-doors")
    render = Render.of("front-doors", ["-f", str(PREFECT_VALUES), *CREDENTIALS])
    files = RenderedAuthgate.lay_out(render, workdir)
    assert files.proxy == "ingress-nginx,traefik"

    authgates: dict[str, AuthgateProcess] = {}
    nginx: NginxProcess | None = None
    traefik: TraefikProcess | None = None
    try:
        for mode in MODES:
            authgates[mode] = files.process(workdir / f"authgate-{mode}.log", proxy=None if mode == "chart" else mode)
        for authgate in authgates.values():
            authgate.wait_ready()
        specs = [
            replace(spec, host=host(mode))
            for mode in MODES
            for spec in ingress_specs(render, authgate_port=authgates[mode].port, backend=upstream.address)
        ]
        nginx = NginxProcess(specs, workdir / "nginx")
        nginx.start()
        routes = [
            route
            for mode in MODES
            for route in traefik_routes(render, authgate_port=authgates[mode].port, backend=upstream.address, mode=mode)
        ]
        traefik = TraefikProcess(routes, workdir / "traefik")
        traefik.start()
        ports = {"nginx": nginx.port, "traefik": traefik.port}
        gateways = {
            door: {mode: Gateway(door, ports[door], upstream, host=host(mode)) for mode in MODES} for door in DOORS
        }
        yield FrontDoors(gateways, authgates)
    finally:
        if traefik is not None:
            traefik.stop()
        if nginx is not None:
            nginx.stop()
        for authgate in authgates.values():
            authgate.stop()


@pytest.mark.parametrize("door", DOORS)
def test_the_chart_defaults_keep_the_decision_table_behind_either_door(doors: FrontDoors, door: str) -> None:
    gateway = doors.gateway(door, "chart")
    test_id = new_test_id()
    health = gateway.request("GET", "/api/health", {"X-Test-Id": test_id, "X-Auth-Request-User": "admin"})
    assert health.status == 200
    [record] = gateway.upstream.records(test_id)
    assert "x-auth-request-user" not in record["headers"]

    test_id = new_test_id()
    assert gateway.request("GET", "/api/ready", {"X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows/abc", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/flows", {**basic(UI_USER, UI_PASSWORD), "X-Test-Id": test_id}).status == 200
    users = [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)]
    assert users == [None, ["worker"], ["dashboards"], [UI_USER]]

    test_id = new_test_id()
    assert gateway.request("POST", "/api/flows/filter", {"X-Test-Id": test_id}).status == 401
    assert gateway.request("POST", "/api/flows/filter", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 403
    assert gateway.request("GET", "/api/healthz", {"X-Test-Id": test_id}).status == 401
    # The example turns sign-in on: a browser opening the UI goes to the sign-in page (ingress-nginx:
    # auth-signin; Traefik: authgate's own redirect, which ForwardAuth passes as it is).
    ui = gateway.request("GET", "/", {**NAVIGATION, "X-Test-Id": test_id})
    assert ui.status == 302
    assert ui.headers["Location"] == SIGN_IN_LOCATION[door].format(host=host("chart"), rd="%2F")
    assert gateway.upstream.records(test_id) == []
    # Normal traffic through the door the chart expects raises no alarm.
    assert doors.problems("chart", "missing") == 0


# Where each door sends a browser without a session: ingress-nginx builds auth-signin's URL (https://$host...);
# behind Traefik authgate answers the navigation itself, absolute on the host and scheme Traefik wrote.
SIGN_IN_LOCATION = {
    "nginx": "https://{host}/authgate/sign_in?rd={rd}",
    "traefik": "http://{host}/authgate/sign_in?rd={rd}",
}


@pytest.mark.parametrize("door", DOORS)
def test_a_person_signs_in_behind_either_door_and_machines_keep_their_tokens(doors: FrontDoors, door: str) -> None:
    """The Prefect example's sign-in behind ingress-nginx and behind Traefik's ingress-nginx provider (the same
    Ingresses): the navigation goes to the sign-in page, the form posted through the sign-in Ingress sets the
    cookie, the cookie passes the UI and its same-origin API calls; an API call without credentials stays a
    401 (the API Ingress has no auth-signin) and tokens keep working on the same routes."""
    gateway = doors.gateway(door, "chart")
    test_id = new_test_id()
    first = gateway.request("GET", "/flows/run-1?tab=logs", {**NAVIGATION, "X-Test-Id": test_id})
    assert first.status == 302
    rd = "%2Fflows%2Frun-1%3Ftab%3Dlogs"
    assert first.headers["Location"] == SIGN_IN_LOCATION[door].format(host=host("chart"), rd=rd)
    scheme = first.headers["Location"].split(":", 1)[0]
    origin = f"{scheme}://{host('chart')}"
    answer, session = sign_in(
        gateway, prefix="/authgate/", user=UI_USER, password=UI_PASSWORD, rd="/flows/run-1?tab=logs", origin=origin
    )
    assert answer.headers["Location"] == "/flows/run-1?tab=logs"
    cookie = {"Cookie": session, "X-Test-Id": test_id}
    assert gateway.request("GET", "/flows/run-1?tab=logs", {**NAVIGATION, **cookie}).status == 200
    fetch = {**SAME_ORIGIN_FETCH, "Origin": origin, **cookie}
    assert gateway.request("POST", "/api/flows/filter", fetch).status == 200
    assert gateway.request("POST", "/api/flows/filter", {**SAME_ORIGIN_FETCH, "X-Test-Id": test_id}).status == 401
    assert gateway.request("GET", "/api/flows", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    users = [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)]
    assert users == [[UI_USER], [UI_USER], ["worker"]]


FORGED_IDENTITY = {"X-Auth-Request-User": "admin", "X-Auth-Request-Scheme": "forged"}


@pytest.mark.parametrize("door", DOORS)
def test_no_identity_header_a_client_writes_reaches_the_application(doors: FrontDoors, door: str) -> None:
    """Every identity header authgate writes is in the chart's default authResponseHeaders, so each door
    replaces a client's copy on an identified allow and drops it on an anonymous one (nginx: an empty value
    removes the header; Traefik: it deletes each listed header, then copies the answer's)."""
    gateway = doors.gateway(door, "chart")
    test_id = new_test_id()
    for credential in (bearer(WORKER), basic(UI_USER, UI_PASSWORD), {}):
        path = "/api/flows" if credential else "/api/health"
        assert gateway.request("GET", path, {**credential, **FORGED_IDENTITY, "X-Test-Id": test_id}).status == 200
    identities = [
        {name: record["headers"].get(name) for name in ("x-auth-request-user", "x-auth-request-scheme")}
        for record in gateway.upstream.records(test_id)
    ]
    assert identities == [
        {"x-auth-request-user": ["worker"], "x-auth-request-scheme": ["bearer"]},
        {"x-auth-request-user": [UI_USER], "x-auth-request-scheme": ["basic"]},
        {"x-auth-request-user": None, "x-auth-request-scheme": None},
    ]


@pytest.mark.parametrize("forgery", FORGERIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("door", DOORS)
def test_no_forged_original_request_header_changes_a_decision(
    doors: FrontDoors, door: str, mode: str, forgery: str
) -> None:
    """The attacks of the hardening issue, for every --proxy setting behind either door: no credential
    (or a GET-only token) plus headers claiming `GET /api/health` never reach the application."""
    gateway = doors.gateway(door, mode)
    forged = FORGERIES[forgery]
    test_id = new_test_id()
    answers = [
        gateway.request("POST", "/api/flows/filter", {**forged, "X-Test-Id": test_id}),
        gateway.request("DELETE", "/api/deployments/1", {**forged, "X-Test-Id": test_id}),
        gateway.request("POST", "/api/admin/settings", {**forged, **bearer(DASHBOARDS), "X-Test-Id": test_id}),
        gateway.request(
            "POST",
            "/api/admin/settings",
            {
                **forged,
                **bearer(DASHBOARDS),
                "X-Forwarded-Uri": "/api/flows",
                "X-Original-URL": "https://prefect.example.com/api/flows",
                "X-Test-Id": test_id,
            },
        ),
    ]
    assert gateway.upstream.records(test_id) == []
    assert [a.status for a in answers] == [401, 401, 403, 403]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("door", DOORS)
def test_a_raw_hash_in_the_target_never_passes_as_the_anonymous_path(doors: FrontDoors, door: str, mode: str) -> None:
    gateway = doors.gateway(door, mode)
    test_id = new_test_id()
    for target in ("/api/health#/../flows", "/api/health#", "/api/health;x", "/api/health%23/../flows"):
        answer = gateway.request("GET", target, {"X-Test-Id": test_id})
        assert answer.status in (400, 401), (target, answer.status)
    assert gateway.upstream.records(test_id) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("door", DOORS)
def test_a_door_authgate_was_not_configured_for_is_loud_and_fails_closed(
    doors: FrontDoors, door: str, mode: str
) -> None:
    gateway = doors.gateway(door, mode)
    before = doors.problems(mode, "missing")
    test_id = new_test_id()
    health = gateway.request("GET", "/api/health", {"X-Test-Id": test_id})
    limited = gateway.request("GET", "/api/flows", {**bearer(DASHBOARDS), "X-Test-Id": test_id})
    unlimited = gateway.request("GET", "/api/flows", {**bearer(WORKER), "X-Test-Id": test_id})
    after = doors.problems(mode, "missing")
    if (mode, door) in MATCHED:
        assert (health.status, limited.status, unlimited.status) == (200, 200, 200)
        assert after == before
        return
    # Behind the wrong door: what depends on the original request is refused, never allowed; credentials
    # without method/path limits still work; every such request is counted, and the log names the fix.
    assert (health.status, limited.status, unlimited.status) == (401, 403, 200)
    # (the unlimited token's repeat is answered from the allow memo, which needs no original request)
    assert after >= before + 2
    log_text = doors.authgates[mode].output()
    fix = "traefik" if door == "traefik" else "ingress-nginx"
    assert f"Fix: --proxy {fix}" in log_text, log_text[-2000:]
    assert [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)] == [["worker"]]


def test_nothing_of_a_credential_reaches_the_logs(doors: FrontDoors) -> None:
    for mode, authgate in doors.authgates.items():
        text = authgate.output()
        for secret in (WORKER, DASHBOARDS, UI_PASSWORD):
            assert secret not in text, (mode, secret)
