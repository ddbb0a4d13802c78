"""Gateway API output: HTTPRoutes and their auth wiring for each ``gateway.externalAuth`` kind, validated
against the upstream CRDs in tests/chart/upstream-crds (schema and CEL rules, tests/chart/crds.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.chart.crds import STANDARD_HTTPROUTES, is_custom, validate
from tests.chart.render import RELEASE, SCENARIOS, Render

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

Rendered = Callable[[str], Render]
KINDS = ("filter", "envoy-gateway", "istio")
SERVICE_PORT = 8080


def proxy_arg(render: Render) -> str:
    [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args[args.index("--proxy") + 1]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_custom_resource_is_valid_against_the_upstream_crds(rendered: Rendered, scenario: str) -> None:
    custom = [o for o in rendered(scenario).objects if is_custom(o)]
    for obj in custom:
        problems = validate(obj)
        assert problems == [], f"{obj['kind']} {obj['metadata']['name']}:\n" + "\n".join(map(str, problems))
    if scenario.startswith("gateway"):
        assert {o["kind"] for o in custom} >= {"HTTPRoute"}


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """The check above can fail: unknown fields, a missing port, a protocol without its block."""
    bad: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "x"},
        "spec": {
            "rules": [
                {
                    "backendRefs": [{"name": "svc"}],
                    "filters": [
                        {"type": "ExternalAuth", "externalAuth": {"protocol": "GRPC", "backendRef": {"name": "a"}}}
                    ],
                    "timeout": "10s",
                }
            ]
        },
    }
    messages = " | ".join(map(str, validate(bad)))
    assert "'timeout' was unexpected" in messages
    assert "Must have port for Service reference" in messages
    assert "grpc must be specified when protocol is set to 'GRPC'" in messages
    # OpenAPI v3.0's boolean exclusiveMaximum: 65536 itself is refused, 65535 is not.
    extension: dict[str, Any] = {
        "apiVersion": "projectcontour.io/v1alpha1",
        "kind": "ExtensionService",
        "metadata": {"name": "x"},
        "spec": {"services": [{"name": "authgate", "port": 65536}]},
    }
    assert [p.path for p in validate(extension)] == ["spec/services/0/port"]
    extension["spec"]["services"][0]["port"] = 65535
    assert validate(extension) == []


def test_the_filter_needs_the_experimental_channel(rendered: Rendered) -> None:
    filter_route = rendered("gateway-filter").one("HTTPRoute", f"{RELEASE}-api")
    assert validate(filter_route, (STANDARD_HTTPROUTES,)) != []
    plain_route = rendered("gateway-envoy-gateway").one("HTTPRoute", f"{RELEASE}-api")
    assert validate(plain_route, (STANDARD_HTTPROUTES,)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_httproutes_serve_both_parts_with_long_lived_api_requests(rendered: Rendered, kind: str) -> None:
    render = rendered(f"gateway-{kind}")
    api, ui = render.one("HTTPRoute", f"{RELEASE}-api"), render.one("HTTPRoute", f"{RELEASE}-ui")
    for route, path in ((api, "/api"), (ui, "/")):
        assert route["metadata"]["namespace"] == "apps"
        assert route["spec"]["parentRefs"] == [{"name": "edge", "namespace": "gateway-system", "sectionName": "https"}]
        assert route["spec"]["hostnames"] == ["prefect.example.com"]
        [rule] = route["spec"]["rules"]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": path}}]
        assert rule["backendRefs"] == [{"name": "prefect-server", "port": 4200}]
    assert api["spec"]["rules"][0]["timeouts"] == {"request": "3600s"}  # WebSockets: at least an hour
    assert "timeouts" not in ui["spec"]["rules"][0]


def test_filter_wiring_reaches_authgate_on_each_route(rendered: Rendered) -> None:
    render = rendered("gateway-filter")
    service = render.one("Service", RELEASE)
    assert service["spec"]["ports"][0]["port"] == SERVICE_PORT
    for part in ("api", "ui"):
        [rule] = render.one("HTTPRoute", f"{RELEASE}-{part}")["spec"]["rules"]
        [auth] = rule["filters"]
        assert auth["type"] == "ExternalAuth"
        external = auth["externalAuth"]
        assert external["protocol"] == "HTTP"
        assert external["backendRef"] == {"name": RELEASE, "namespace": "prefect", "port": SERVICE_PORT}
        assert external["http"]["path"] == f"/auth/{part}"
        assert {"Authorization", "X-Forwarded-For"} <= set(external["http"]["allowedHeaders"])
        assert external["http"]["allowedResponseHeaders"] == ["X-Auth-Request-User", "X-Auth-Request-Scheme"]
    grant = render.one("ReferenceGrant")
    assert grant["metadata"]["namespace"] == "prefect"
    assert grant["spec"]["from"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "apps"}]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": RELEASE}]
    assert proxy_arg(render) == "ingress-nginx,traefik,path-prefix,nginx-gateway-fabric"


def test_envoy_gateway_wiring_fails_closed_and_copies_identity(rendered: Rendered) -> None:
    render = rendered("gateway-envoy-gateway")
    for part in ("api", "ui"):
        policy = render.one("SecurityPolicy", f"{RELEASE}-{part}")
        assert policy["metadata"]["namespace"] == "apps"
        assert policy["spec"]["targetRefs"] == [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": f"{RELEASE}-{part}"}
        ]
        ext = policy["spec"]["extAuth"]
        assert ext["failOpen"] is False and ext["timeout"] == "10s"
        assert "X-Forwarded-For" in ext["headersToExtAuth"]
        assert ext["http"]["backendRefs"] == [{"name": RELEASE, "namespace": "prefect", "port": SERVICE_PORT}]
        assert ext["http"]["path"] == f"/auth/{part}"
        assert ext["http"]["headersToBackend"] == ["X-Auth-Request-User", "X-Auth-Request-Scheme"]
        assert "filters" not in render.one("HTTPRoute", f"{RELEASE}-{part}")["spec"]["rules"][0]
    assert render.one("ReferenceGrant")["spec"]["from"][0]["kind"] == "SecurityPolicy"
    assert proxy_arg(render) == "ingress-nginx,traefik,path-prefix"


def test_istio_is_one_custom_policy_naming_one_provider_per_gateway(rendered: Rendered) -> None:
    """Istio <= 1.29 allows one CUSTOM provider per workload, 1.30 more only behind a flag that is off by
    default: one provider for every part, and the policy's routes claim the parts' paths."""
    render = rendered("gateway-istio")
    [policy] = render.all("AuthorizationPolicy")
    assert policy["metadata"] == {**policy["metadata"], "name": f"{RELEASE}-edge", "namespace": "gateway-system"}
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": RELEASE}
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]
    [rule] = policy["spec"]["rules"]
    assert [to["operation"]["paths"] for to in rule["to"]] == [["/api", "/api/*"], ["/*"]]
    assert all(to["operation"]["hosts"] == ["prefect.example.com"] for to in rule["to"])
    claims = yaml.safe_load(render.one("ConfigMap")["data"]["policy.yaml"])["routes"]
    assert (claims["api"]["path_prefixes"], claims["ui"]["path_prefixes"]) == (["/api"], ["/"])
    assert render.all("ReferenceGrant") == []


def test_istio_notes_print_the_one_provider_a_chart_cannot_set() -> None:
    from tests.chart.render import CHART, NAMESPACE, helm

    result = helm(
        "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *SCENARIOS["gateway-istio"]
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "ACTION NEEDED (Istio)" in notes
    providers = yaml.safe_load(notes.split("  meshConfig:\n", 1)[1].split("\n\n", 1)[0])["extensionProviders"]
    assert providers == [
        {
            "name": RELEASE,
            "envoyExtAuthzHttp": {
                "service": f"{RELEASE}.{NAMESPACE}.svc.cluster.local",
                "port": SERVICE_PORT,
                "pathPrefix": "/auth/~",
                "includeRequestHeadersInCheck": [
                    "authorization",
                    "x-forwarded-for",
                    "origin",
                    "access-control-request-method",
                ],
                "headersToUpstreamOnAllow": ["x-auth-request-user", "x-auth-request-scheme"],
                "headersToDownstreamOnDeny": ["www-authenticate"],
                "statusOnError": "503",
                "timeout": "10s",
            },
        }
    ]


def test_gateway_only_derives_the_door_and_needs_no_grant(rendered: Rendered) -> None:
    render = rendered("gateway-only")
    assert render.all("Ingress") == [] and render.all("ReferenceGrant") == []
    assert {r["metadata"]["namespace"] for r in render.all("HTTPRoute")} == {"prefect"}
    assert proxy_arg(render) == "path-prefix,nginx-gateway-fabric"
    assert proxy_arg(rendered("defaults")) == "ingress-nginx,traefik"
    assert proxy_arg(rendered("prefect")) == "ingress-nginx,traefik"
