"""The chart's gRPC output: the `grpc` port and flags, Contour's ExtensionService and HTTPProxy, and each
gateway kind over gRPC; every custom resource is validated against the upstream CRDs (schema and CEL rules)
by test_gateway.py's check over all SCENARIOS, the wiring itself here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.chart.render import CHART, NAMESPACE, RELEASE, SCENARIOS, Render, helm

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

Rendered = Callable[[str], Render]
GRPC_PORT = 9001


def container(render: Render) -> dict[str, Any]:
    [found] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def flag(render: Render, name: str) -> str | None:
    args: list[str] = container(render)["args"]
    return args[args.index(name) + 1] if name in args else None


def test_grpc_is_off_by_default(rendered: Rendered) -> None:
    render = rendered("prefect")
    assert [p["name"] for p in render.one("Service")["spec"]["ports"]] == ["http", "health"]
    assert [p["name"] for p in container(render)["ports"]] == ["http", "health"]
    assert flag(render, "--grpc-port") is None
    assert render.all("ExtensionService") == [] and render.all("HTTPProxy") == []


@pytest.mark.parametrize("scenario", [s for s in sorted(SCENARIOS) if s.startswith("grpc-")])
def test_grpc_adds_an_h2c_service_port_and_the_flag(rendered: Rendered, scenario: str) -> None:
    render = rendered(scenario)
    grpc_port = next(p for p in render.one("Service")["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port == {
        "name": "grpc",
        "port": GRPC_PORT,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }
    assert {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"} in container(render)["ports"]
    assert flag(render, "--grpc-port") == str(GRPC_PORT)


def test_contour_asks_authgate_over_grpc_with_each_part_s_route(rendered: Rendered) -> None:
    render = rendered("grpc-contour")
    extension = render.one("ExtensionService", RELEASE)
    assert extension["metadata"]["namespace"] == NAMESPACE
    assert extension["spec"]["protocol"] == "h2c"
    assert extension["spec"]["services"] == [{"name": RELEASE, "port": GRPC_PORT}]
    proxy = render.one("HTTPProxy", RELEASE)
    assert proxy["metadata"]["namespace"] == "apps"
    virtualhost = proxy["spec"]["virtualhost"]
    assert virtualhost["fqdn"] == "prefect.example.com"
    assert virtualhost["tls"] == {"secretName": "prefect-tls"}  # Contour authorizes TLS virtual hosts only
    assert virtualhost["authorization"] == {
        "extensionRef": {"name": RELEASE, "namespace": NAMESPACE},
        "responseTimeout": "10s",
        "failOpen": False,
    }
    api, ui = proxy["spec"]["routes"]
    assert api["conditions"] == [{"prefix": "/api"}] and ui["conditions"] == [{"prefix": "/"}]
    assert api["authPolicy"] == {"context": {"route": "api"}} and ui["authPolicy"] == {"context": {"route": "ui"}}
    assert api["enableWebsockets"] is True and api["timeoutPolicy"] == {"response": "3600s", "idle": "3600s"}
    assert "timeoutPolicy" not in ui and "enableWebsockets" not in ui
    for route in (api, ui):
        assert route["services"] == [{"name": "prefect-server", "port": 4200}]
    # No Ingress, no default route: a CheckRequest without a route context is refused.
    assert render.all("Ingress") == [] and flag(render, "--grpc-default-route") is None
    # The NetworkPolicy lets the proxy reach the gRPC port as well.
    rule = render.one("NetworkPolicy")["spec"]["ingress"][0]  # the proxy's (the second is Prometheus')
    assert {"port": "grpc", "protocol": "TCP"} in rule["ports"]


def test_envoy_gateway_over_grpc_sends_the_route_as_a_context_extension(rendered: Rendered) -> None:
    render = rendered("grpc-envoy-gateway")
    for part in ("api", "ui"):
        ext = render.one("SecurityPolicy", f"{RELEASE}-{part}")["spec"]["extAuth"]
        assert "http" not in ext and ext["failOpen"] is False
        assert ext["grpc"] == {"backendRefs": [{"name": RELEASE, "namespace": NAMESPACE, "port": GRPC_PORT}]}
        assert ext["contextExtensions"] == [{"name": "route", "type": "Value", "value": part}]
    assert render.one("ReferenceGrant")["spec"]["from"][0]["kind"] == "SecurityPolicy"
    assert flag(render, "--grpc-default-route") is None
    assert flag(render, "--proxy") == "ingress-nginx,traefik"  # no HTTP door for the gateway


def test_the_filter_over_grpc_decides_on_its_one_route(rendered: Rendered) -> None:
    render = rendered("grpc-filter")
    [rule] = render.one("HTTPRoute", f"{RELEASE}-api")["spec"]["rules"]
    [auth] = rule["filters"]
    external = auth["externalAuth"]
    assert external["protocol"] == "GRPC" and "http" not in external
    assert external["backendRef"] == {"name": RELEASE, "namespace": NAMESPACE, "port": GRPC_PORT}
    assert "Authorization" in external["grpc"]["allowedHeaders"]
    # The filter's gRPC carries no per-route context: every check is decided on the API route.
    assert flag(render, "--grpc-default-route") == "api"
    assert render.all("HTTPRoute") == [render.one("HTTPRoute", f"{RELEASE}-api")]


def test_the_filter_over_grpc_with_both_parts_decides_by_the_claimed_path(rendered: Rendered) -> None:
    """Two parts on two routes over the filter's gRPC (no per-route context): no --grpc-default-route, so each
    check is decided on the policy route claiming its original path, which the chart requires of each part."""
    render = rendered("grpc-filter-both")
    assert flag(render, "--grpc-default-route") is None
    for part in ("api", "ui"):
        [rule] = render.one("HTTPRoute", f"{RELEASE}-{part}")["spec"]["rules"]
        [auth] = rule["filters"]
        assert auth["externalAuth"]["protocol"] == "GRPC"
    policy = yaml.safe_load(render.one("ConfigMap")["data"]["policy.yaml"])
    assert policy["routes"]["api"]["path_prefixes"] == ["/api"] and policy["routes"]["ui"]["path_prefixes"] == ["/"]


def test_istio_over_grpc_prints_one_envoy_ext_authz_grpc_provider_for_both_parts() -> None:
    """Istio's gRPC provider sends no route context: no --grpc-default-route, each part's route claims its
    path (the chart no longer refuses two parts over gRPC)."""
    result = helm(
        "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *SCENARIOS["grpc-istio"]
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    providers = yaml.safe_load(notes.split("  meshConfig:\n", 1)[1].split("\n\n", 1)[0])["extensionProviders"]
    assert providers == [
        {
            "name": RELEASE,
            "envoyExtAuthzGrpc": {
                "service": f"{RELEASE}.{NAMESPACE}.svc.cluster.local",
                "port": GRPC_PORT,
                "timeout": "10s",
            },
        }
    ]
    assert 'context_extensions "route", else the policy route claiming the original path' in notes


def test_istio_over_grpc_decides_both_parts_by_path(rendered: Rendered) -> None:
    render = rendered("grpc-istio")
    assert flag(render, "--grpc-default-route") is None
    [policy] = render.all("AuthorizationPolicy")
    assert policy["spec"]["provider"] == {"name": RELEASE}
    assert len(render.all("HTTPRoute")) == 2
