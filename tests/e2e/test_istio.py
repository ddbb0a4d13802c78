"""Istio, end to end on a real Envoy configured as a default istiod configures a Gateway (tests/e2e/istio.py):
the chart's Istio objects (HTTPRoutes, the one ``action: CUSTOM`` AuthorizationPolicy) and the one extension
provider its NOTES print — ``envoyExtAuthzHttp`` (``pathPrefix: /auth/~``) or, with ``grpc.enabled``,
``envoyExtAuthzGrpc`` — in front of authgate started from the same render (its policy, Secret and arguments).

Every request names no route: authgate decides it on the policy route claiming its original path (``api``
claims ``/api``, ``ui`` ``/``). Shown on both providers: valid credentials reach the upstream with their
identity, every row of the decision table, forged original-request and identity headers, a WebSocket
upgrade, rotation (the Secret swapped the way kubelet swaps it), and failing closed with authgate down. And
why one provider: the chart's earlier two providers get ``403 RBAC: access denied`` on this same Envoy.

Mirrors istio/istio ``pilot/pkg/security/authz/builder/builder.go``, ``builder/extauthz.go`` and
``pilot/pkg/security/authz/model/generator.go`` (see tests/e2e/istio.py for what each part takes from them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.chart.render import CHART, NAMESPACE, RELEASE, SCENARIOS, Render, helm
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Answer, Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.istio import (
    cluster_name,
    custom_filters,
    gateway_listener,
    provider_cluster,
    providers_from_notes,
)
from tests.support.envoy import EnvoyProcess, bootstrap, cluster
from tests.support.procs import AuthgateProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

HOST = "prefect.example.com"  # the chart's ingress.host in the Prefect values: the HTTPRoutes' hostname
WORKER = "istio-worker-token-0123456789abcdef"  # any route
READER = "istio-reader-token-0123456789abcdef"  # GET /api/flows only
ROTATED = "istio-rotated-token-0123456789abcdef"  # added by the rotation
ADMIN, ADMIN_PASSWORD = "admin", "istio-admin-password"
TOKENS = {"worker": (WORKER, ""), "reader": (READER, "routes=api methods=GET paths=/api/flows")}
KINDS = ("http", "grpc")
API_CHALLENGES = ['Bearer realm="prefect-api"', 'Basic realm="prefect-api", charset="UTF-8"']
UI_CHALLENGE = ['Basic realm="prefect", charset="UTF-8"']
IDENTITY = ("x-auth-request-user", "x-auth-request-scheme")


def render_istio(kind: str, values: Sequence[str] = ()) -> tuple[Render, str]:
    """The chart's Istio render (``gateway-istio`` / ``grpc-istio``, both parts; ``values`` instead when given)
    with the test credentials, and its NOTES."""
    args = list(values) or [*SCENARIOS[f"{'gateway' if kind == 'http' else 'grpc'}-istio"]]
    args += credential_values(TOKENS, {ADMIN: ADMIN_PASSWORD})
    notes = helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *args).stdout
    return Render.of(f"istio-{kind}", args), notes.split("NOTES:", 1)[1]


@dataclass
class IstioGateway:
    kind: str
    gateway: Gateway
    authgate: AuthgateProcess
    rendered: RenderedAuthgate
    envoy: EnvoyProcess
    provider: dict[str, Any]

    def request(self, method: str, target: str, headers: Mapping[str, str] | None = None) -> Answer:
        return self.gateway.request(method, target, headers)

    def upstream_identity(self) -> tuple[str, ...]:
        """The identity headers authgate's allow sets upstream through this provider: over HTTP, those the
        provider's ``headersToUpstreamOnAllow`` lets Envoy copy; over gRPC, all (``ok_response.headers``)."""
        spec = self.provider.get("envoyExtAuthzHttp")
        return tuple(h for h in IDENTITY if spec is None or h in spec["headersToUpstreamOnAllow"])


def envoy_for(
    render: Render,
    providers: Sequence[Mapping[str, Any]],
    policies: Sequence[Mapping[str, Any]],
    backends: Mapping[str, int],
    upstream: Upstream,
    workdir: Path,
    *,
    multiple_custom_providers: bool = False,
    authgate_http_port: int | None = None,
) -> EnvoyProcess:
    """The Gateway's Envoy (not yet ready): ``backends`` maps each provider name to authgate's local port; a
    route to authgate's own Service (the sign-in HTTPRoute) goes to ``authgate_http_port``."""
    [app] = {
        (b["name"], b["port"])
        for r in render.all("HTTPRoute")
        for rule in r["spec"]["rules"]
        for b in rule["backendRefs"]
        if b["name"] != RELEASE
    }
    upstream_cluster = cluster_name(f"{app[0]}.apps.svc.cluster.local", app[1])
    clusters = [cluster(upstream_cluster, upstream.port)]

    def route_cluster(backend: Mapping[str, Any]) -> str:
        if backend["name"] != RELEASE:
            return upstream_cluster
        assert authgate_http_port is not None and backend.get("namespace") == NAMESPACE, backend
        name = cluster_name(f"{RELEASE}.{NAMESPACE}.svc.cluster.local", backend["port"])
        if all(c["name"] != name for c in clusters):
            clusters.append(cluster(name, authgate_http_port))
        return name

    filters = custom_filters(policies, providers, multiple_custom_providers=multiple_custom_providers)
    listener = gateway_listener("gateway", free_port(), [HOST], render.all("HTTPRoute"), filters, route_cluster)
    # Providers naming one Service share its outbound cluster.
    for provider in providers:
        built = provider_cluster(provider, backends[provider["name"]])
        if all(c["name"] != built["name"] for c in clusters):
            clusters.append(built)
    return EnvoyProcess(bootstrap(listeners=[listener], clusters=clusters), workdir)


@contextlib.contextmanager
def istio_gateway(kind: str, workdir: Path, upstream: Upstream, values: Sequence[str] = ()) -> Iterator[IstioGateway]:
    render, notes = render_istio(kind, values)
    [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    # No route in the request and none by default: every check is decided by the original path.
    assert "--grpc-default-route" not in container["args"]
    rendered = RenderedAuthgate.lay_out(render, workdir)
    authgate = AuthgateProcess(
        rendered.secret.path,
        workdir / "authgate.log",
        config=rendered.policy,
        proxy=rendered.proxy,
        log_level=rendered.log_level,
        server=rendered.server,
        grpc=kind == "grpc",
    )
    try:
        authgate.wait_ready()
        [provider] = providers_from_notes(notes)
        port = authgate.grpc_port if kind == "grpc" else authgate.port
        assert port is not None
        policies = render.all("AuthorizationPolicy")
        backends = {provider["name"]: port}
        with envoy_for(
            render, [provider], policies, backends, upstream, workdir / "envoy", authgate_http_port=authgate.port
        ) as envoy:
            gateway = Gateway(f"istio-{kind}", envoy.listener_port("gateway"), upstream, host=HOST)
            yield IstioGateway(kind, gateway, authgate, rendered, envoy, provider)
    finally:
        authgate.stop()


@pytest.fixture(scope="module", params=KINDS)
def istio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[IstioGateway]:
    with istio_gateway(request.param, tmp_path_factory.mktemp(f"istio-{request.param}"), upstream) as stack:
        yield stack


def tagged(headers: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    test_id = new_test_id()
    return test_id, {**(headers or {}), "X-Test-Id": test_id}


def test_valid_credentials_reach_the_upstream_through_the_one_provider(istio: IstioGateway) -> None:
    """A valid Bearer on /api and valid Basic on / (the answer a default istiod gave two providers: 403)."""
    checks_before = istio.envoy.stat("http.gateway.ext_authz.ok")
    for target, headers, user in [
        ("/api/flows", bearer(WORKER), "worker"),
        ("/", basic(ADMIN, ADMIN_PASSWORD), ADMIN),
    ]:
        test_id, sent = tagged(headers)
        answer = istio.request("GET", target, sent)
        assert answer.status == 200, (target, answer.status, answer.body)
        [record] = istio.gateway.upstream.records(test_id)
        assert record["raw_path"] == target
        assert record["headers"]["x-auth-request-user"] == [user]
    # Both were decided by authgate through ext_authz, not let through by anything else.
    assert istio.envoy.stat("http.gateway.ext_authz.ok") == checks_before + 2


# (method, target, headers, status, WWW-Authenticate values, user upstream: None = anonymous allow)
TABLE: list[tuple[str, str, dict[str, str], int, list[str], str | None]] = [
    ("GET", "/api/flows", bearer(WORKER), 200, [], "worker"),
    ("POST", "/api/flows/filter", basic(ADMIN, ADMIN_PASSWORD), 200, [], ADMIN),
    ("GET", "/flow-runs", basic(ADMIN, ADMIN_PASSWORD), 200, [], ADMIN),
    ("GET", "/api/flows", {}, 401, API_CHALLENGES, None),
    ("GET", "/", {}, 401, UI_CHALLENGE, None),
    ("GET", "/flow-runs", bearer(WORKER), 401, UI_CHALLENGE, None),  # the UI route takes Basic only
    ("GET", "/api/health", {}, 200, [], None),
    ("GET", "/api/health?verbose=1", {}, 200, [], None),
    ("POST", "/api/health", {}, 401, API_CHALLENGES, None),
    ("GET", "/api/health/x", {}, 401, API_CHALLENGES, None),
    (
        "GET",
        "/api/flows",
        bearer("istio-unknown-token-0123456789abcdef"),
        401,
        ['Bearer realm="prefect-api", error="invalid_token"', API_CHALLENGES[1]],
        None,
    ),
    ("GET", "/api/flows", basic(ADMIN, "wrong"), 401, API_CHALLENGES, None),
    ("GET", "/api/flows", {"Authorization": "Digest username=x"}, 401, API_CHALLENGES, None),
    ("GET", "/api/flows?limit=1", bearer(READER), 200, [], "reader"),
    ("POST", "/api/flows", bearer(READER), 403, [], None),
    ("GET", "/api/deployments", bearer(READER), 403, [], None),
    # Paths another reader could take for another one select no route at all (403), whatever the credential.
    ("GET", "/api/flows/..%2F..%2Fadmin", bearer(WORKER), 403, [], None),
    ("GET", "/flows/..%2F..%2Fapi%2Fadmin", basic(ADMIN, ADMIN_PASSWORD), 403, [], None),
    ("GET", "//api/flows", bearer(WORKER), 403, [], None),
    ("GET", "/api;v=1/flows", bearer(WORKER), 403, [], None),
]


def _who(headers: Mapping[str, str]) -> str:
    names = {
        bearer(WORKER)["Authorization"]: "worker",
        bearer(READER)["Authorization"]: "reader",
        basic(ADMIN, ADMIN_PASSWORD)["Authorization"]: "admin",
    }
    value = headers.get("Authorization")
    return "anonymous" if value is None else names.get(value, "bad-credential")


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "challenges", "user"),
    TABLE,
    ids=[f"{row[0]} {row[1]} {_who(row[2])}" for row in TABLE],
)
def test_the_decision_table(
    istio: IstioGateway,
    method: str,
    target: str,
    headers: dict[str, str],
    status: int,
    challenges: list[str],
    user: str | None,
) -> None:
    test_id, sent = tagged(headers)
    answer = istio.request(method, target, sent)
    assert answer.status == status, answer.body
    assert answer.headers.get_all("www-authenticate", []) == challenges
    records = istio.gateway.upstream.records(test_id)
    if status != 200:
        assert records == []
        return
    [record] = records
    assert (record["method"], record["raw_path"]) == (method, target)
    assert record["headers"].get("x-auth-request-user") == (None if user is None else [user])


def test_forged_original_request_headers_decide_nothing(istio: IstioGateway) -> None:
    """A client's own X-Original-*/X-Forwarded-* naming the anonymous health path: over HTTP Envoy does not
    even send them (not in includeRequestHeadersInCheck): 401; over gRPC they reach authgate among the
    client's headers, contradict the CheckRequest's own path, so the path is unknown and no route is
    chosen: 403. Either way nothing reaches the upstream."""
    forged = {
        "X-Original-URL": f"https://{HOST}/api/health",
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": "/api/health",
        "X-Forwarded-Method": "GET",
        "Path": "/api/health",
        "Method": "GET",
    }
    test_id, sent = tagged(forged)
    answer = istio.request("POST", "/api/admin/settings", sent)
    assert answer.status == {"http": 401, "grpc": 403}[istio.kind]
    assert istio.gateway.upstream.records(test_id) == []


def test_a_client_s_own_identity_headers_never_reach_the_upstream(istio: IstioGateway) -> None:
    forged = {"X-Auth-Request-User": "root", "X-Auth-Request-Scheme": "basic"}
    # An anonymous allow: authgate asks Envoy to remove both.
    test_id, sent = tagged(forged)
    assert istio.request("GET", "/api/health", sent).status == 200
    [record] = istio.gateway.upstream.records(test_id)
    assert not set(IDENTITY) & set(record["headers"])
    # An identified allow: authgate's values replace the client's (those the provider copies upstream).
    test_id, sent = tagged({**forged, **bearer(WORKER)})
    assert istio.request("GET", "/api/flows", sent).status == 200
    [record] = istio.gateway.upstream.records(test_id)
    expected = {"x-auth-request-user": ["worker"], "x-auth-request-scheme": ["bearer"]}
    for name in istio.upstream_identity():
        assert record["headers"][name] == expected[name]


def test_a_websocket_upgrade_on_events_in(istio: IstioGateway) -> None:
    test_id, sent = tagged(bearer(WORKER))
    with istio.gateway.websocket("/api/events/in", sent) as socket:
        socket.send("headers")
        handshake = json.loads(socket.recv(timeout=10))
    assert handshake["kind"] == "websocket" and handshake["raw_path"] == "/api/events/in"
    assert handshake["headers"]["x-auth-request-user"] == ["worker"]
    test_id, sent = tagged()
    with pytest.raises(InvalidStatus) as refused:
        istio.gateway.websocket("/api/events/in", sent)
    assert refused.value.response.status_code == 401
    assert istio.gateway.upstream.records(test_id) == []


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_then_authgate_down_fails_closed(kind: str, tmp_path: Path, upstream: Upstream) -> None:
    with istio_gateway(kind, tmp_path, upstream) as istio:
        assert istio.request("GET", "/api/flows", bearer(WORKER)).status == 200
        assert istio.request("GET", "/api/flows", bearer(ROTATED)).status == 401
        # kubelet swaps the Secret: the worker's token replaced by a new one.
        digest = hashlib.sha256(ROTATED.encode()).hexdigest()
        tokens = istio.rendered.secret.path.joinpath("tokens").read_text()
        rotated = "".join(
            f"rotated sha256:{digest}\n" if line.startswith("worker ") else line + "\n" for line in tokens.splitlines()
        )
        htpasswd = istio.rendered.secret.path.joinpath("htpasswd").read_text()
        istio.rendered.secret.write({"tokens": rotated, "htpasswd": htpasswd})
        wait_for(
            lambda: istio.request("GET", "/api/flows", bearer(ROTATED)).status == 200,
            timeout=20,
            what="the rotated token to be accepted through Envoy",
        )
        assert istio.request("GET", "/api/flows", bearer(WORKER)).status == 401

        istio.authgate.stop()
        # HTTP: the provider's statusOnError (503); gRPC: Envoy's default for an unreachable service (403).
        refused = {"http": 503, "grpc": 403}[kind]
        for method, target, headers in [
            ("GET", "/api/flows", bearer(ROTATED)),
            ("GET", "/api/health", {}),
            ("GET", "/", basic(ADMIN, ADMIN_PASSWORD)),
        ]:
            test_id, sent = tagged(headers)
            assert istio.request(method, target, sent).status == refused, target
            assert upstream.records(test_id) == []


def two_providers_as_the_chart_rendered_them(
    namespace: str, service: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chart's earlier Istio wiring: an AuthorizationPolicy and a provider per part."""
    policies, providers = [], []
    for part, paths, not_paths in [("api", ["/api", "/api/*"], []), ("ui", ["/*"], ["/api", "/api/*"])]:
        operation: dict[str, Any] = {"hosts": [HOST], "paths": paths}
        if not_paths:
            operation["notPaths"] = not_paths
        policies.append(
            {
                "metadata": {"name": f"{RELEASE}-{part}-edge", "namespace": namespace},
                "spec": {
                    "action": "CUSTOM",
                    "provider": {"name": f"{RELEASE}-{part}"},
                    "rules": [{"to": [{"operation": operation}]}],
                },
            }
        )
        providers.append(
            {
                "name": f"{RELEASE}-{part}",
                "envoyExtAuthzHttp": {
                    "service": service,
                    "port": 8080,
                    "pathPrefix": f"/auth/{part}",
                    "includeRequestHeadersInCheck": ["authorization", "x-forwarded-for"],
                    "headersToUpstreamOnAllow": ["x-auth-request-user"],
                    "headersToDownstreamOnDeny": ["www-authenticate"],
                    "statusOnError": "503",
                },
            }
        )
    return policies, providers


@pytest.mark.parametrize("multiple_custom_providers", [False, True], ids=["istiod-default", "flag-on"])
def test_why_one_provider_two_are_denied_by_a_default_istiod(
    multiple_custom_providers: bool, tmp_path: Path, upstream: Upstream
) -> None:
    """The chart's earlier two providers on one Gateway: a default istiod (and any Istio <= 1.29) installs
    enforcing deny rules instead of ext_authz, so valid credentials get ``403 RBAC: access denied``; only
    Istio 1.30 with PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS=true lets them through."""
    render, _ = render_istio("http")
    rendered = RenderedAuthgate.lay_out(render, tmp_path)
    authgate = AuthgateProcess(
        rendered.secret.path, tmp_path / "authgate.log", config=rendered.policy, proxy="path-prefix"
    )
    try:
        authgate.wait_ready()
        policies, providers = two_providers_as_the_chart_rendered_them(
            "gateway-system", f"{RELEASE}.{NAMESPACE}.svc.cluster.local"
        )
        backends = {p["name"]: authgate.port for p in providers}
        with envoy_for(
            render,
            providers,
            policies,
            backends,
            upstream,
            tmp_path / "envoy",
            multiple_custom_providers=multiple_custom_providers,
        ) as envoy:
            gateway = Gateway("istio-two-providers", envoy.listener_port("gateway"), upstream, host=HOST)
            for target, headers in [("/api/flows", bearer(WORKER)), ("/", basic(ADMIN, ADMIN_PASSWORD))]:
                test_id, sent = tagged(headers)
                answer = gateway.request("GET", target, sent)
                if multiple_custom_providers:
                    assert answer.status == 200
                else:
                    assert (answer.status, answer.body) == (403, b"RBAC: access denied")
                    assert upstream.records(test_id) == []
    finally:
        authgate.stop()
