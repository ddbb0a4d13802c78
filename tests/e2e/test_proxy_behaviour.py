"""What each real proxy sends to an auth service and does with its answer — independent of authgate.

A stand-in auth service (the recording upstream's ``/__status/CODE``) answers a fixed status, so these tests
pin down the proxy side of the contract that docs/proxies.md tabulates: which headers arrive at the auth
service, which status the client gets for each auth status, and what reaches the upstream.

The proxies: nginx as ingress-nginx renders ``auth-url``, Traefik's ForwardAuth, and a real Envoy 1.40 with
its HTTP ext_authz filter (envoyproxy/envoy ``source/extensions/filters/http/ext_authz/ext_authz.cc``,
``source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc``) set up as Envoy Gateway sets up a
SecurityPolicy's ``extAuth.http`` (envoyproxy/gateway ``internal/xds/translator/extauth.go``: one filter per
route, ``path_prefix``, exact case-insensitive ``allowed_headers`` — here ``Authorization``,
``X-Forwarded-For`` and the tests' own ``X-Test-Id`` tag — and ``allowed_upstream_headers``
``X-Auth-Request-User``, ``failure_mode_allow: false``, ``use_remote_address``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import Gateway, Upstream, bearer, new_test_id
from tests.e2e.nginx import IngressSpec, NginxProcess
from tests.e2e.traefik import TraefikProcess, TraefikRoute
from tests.e2e.upstream import STATUS_PREFIX
from tests.support.envoy import (
    EXT_AUTHZ_PER_ROUTE,
    EnvoyProcess,
    bootstrap,
    cluster,
    ext_authz_filter,
    http_listener,
    virtual_host,
)
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

STATUSES = [200, 204, 301, 302, 400, 401, 403, 404, 429, 500, 503]
# status the client gets, per proxy, for each status of the auth service (the table in docs/proxies.md)
EXPECTED = {
    "nginx": {
        200: 200,
        204: 200,
        301: 500,
        302: 500,
        400: 500,
        401: 401,
        403: 403,
        404: 500,
        429: 500,
        500: 500,
        503: 500,
    },
    "traefik": {
        200: 200,
        204: 200,
        301: 301,
        302: 302,
        400: 400,
        401: 401,
        403: 403,
        404: 404,
        429: 429,
        500: 500,
        503: 503,
    },
    # only 200 allows (a 204 is a denial answered 204); a 5xx is an error: 403 (status_on_error's default)
    "envoy": {
        200: 200,
        204: 204,
        301: 301,
        302: 302,
        400: 400,
        401: 401,
        403: 403,
        404: 404,
        429: 429,
        500: 403,
        503: 403,
    },
}
HOST = "behaviour.test"
PROXIES = ["nginx", "traefik", "envoy"]
ENVOY_TO_AUTH = ("Authorization", "X-Forwarded-For", "X-Test-Id")


def envoy_config(listen_port: int, upstream_port: int, auth: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """Envoy with one route per entry of ``auth`` (``prefix -> (auth port, path_prefix)``), each asking the auth
    service at that port with that ``path_prefix`` before forwarding to the upstream."""
    filters, routes, clusters = [], [], [cluster("upstream", upstream_port)]
    for number, (prefix, (port, path_prefix)) in enumerate(sorted(auth.items(), key=lambda kv: -len(kv[0]))):
        name = f"envoy.filters.http.ext_authz/{number}"
        clusters.append(cluster(f"auth-{number}", port))
        config = {
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "allowed_headers": {"patterns": [{"exact": h, "ignore_case": True} for h in ENVOY_TO_AUTH]},
            "http_service": {
                "server_uri": {"uri": f"http://auth{path_prefix}", "cluster": f"auth-{number}", "timeout": "10s"},
                "path_prefix": path_prefix,
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": "X-Auth-Request-User", "ignore_case": True}]}
                },
            },
        }
        filters.append({**ext_authz_filter(config, name=name), "disabled": True})
        enable = {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "config": {"@type": EXT_AUTHZ_PER_ROUTE, "check_settings": {}},
        }
        match = {"prefix": "/"} if prefix == "/" else {"path_separated_prefix": prefix}
        routes.append(
            {
                "match": match,
                "route": {"cluster": "upstream", "upgrade_configs": [{"upgrade_type": "websocket"}]},
                "typed_per_filter_config": {name: enable},
            }
        )
    listener = http_listener(
        "web", listen_port, [virtual_host("behaviour", ["*"], routes)], filters, hcm_extra={"use_remote_address": True}
    )
    return bootstrap(listeners=[listener], clusters=clusters)


@pytest.fixture(scope="module")
def fake_auth_gateways(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[dict[str, Gateway]]:
    """nginx and Traefik with one route per status, ``/sCODE``, whose auth service answers CODE; plus
    ``/recorded`` whose auth service is the recorder itself (answers 200)."""
    workdir = tmp_path_factory.mktemp("behaviour")
    auth = f"http://127.0.0.1:{upstream.port}"
    specs = [
        IngressSpec(
            host=HOST,
            path=f"/s{code}",
            path_type="Exact",
            backend=upstream.address,
            auth_url=f"{auth}{STATUS_PREFIX}{code}",
            auth_response_headers=("X-Auth-Request-User",),
            name=f"status-{code}",
        )
        for code in STATUSES
    ]
    specs.append(
        IngressSpec(
            host=HOST,
            path="/recorded",
            backend=upstream.address,
            auth_url=f"{auth}/auth/api",
            auth_response_headers=("X-Auth-Request-User",),
            name="recorded",
        )
    )
    routes = [
        TraefikRoute(
            name=f"s{code}",
            host=HOST,
            path_prefix=f"/s{code}",
            backend=upstream.address,
            auth_address=f"{auth}{STATUS_PREFIX}{code}",
            auth_response_headers=("X-Auth-Request-User",),
        )
        for code in STATUSES
    ]
    routes.append(
        TraefikRoute(
            name="recorded",
            host=HOST,
            path_prefix="/recorded",
            backend=upstream.address,
            auth_address=f"{auth}/auth/api",
            auth_response_headers=("X-Auth-Request-User",),
        )
    )
    envoy_port = free_port()
    envoy_auth = {f"/s{code}": (upstream.port, f"{STATUS_PREFIX}{code}") for code in STATUSES}
    envoy_auth["/recorded"] = (upstream.port, "/auth/api")
    with (
        NginxProcess(specs, workdir / "nginx") as nginx,
        TraefikProcess(routes, workdir / "traefik") as traefik,
        EnvoyProcess(envoy_config(envoy_port, upstream.port, envoy_auth), workdir / "envoy"),
    ):
        yield {
            "nginx": Gateway("nginx", nginx.port, upstream, host=HOST),
            "traefik": Gateway("traefik", traefik.port, upstream, host=HOST),
            "envoy": Gateway("envoy", envoy_port, upstream, host=HOST),
        }


@pytest.fixture(params=PROXIES)
def proxy(request: pytest.FixtureRequest, fake_auth_gateways: dict[str, Gateway]) -> Gateway:
    return fake_auth_gateways[request.param]


def _auth_and_upstream(proxy: Gateway, test_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = proxy.upstream.records(test_id)
    auth = [r for r in records if r["raw_path"].startswith(("/auth/", STATUS_PREFIX))]
    return auth, [r for r in records if r not in auth]


@pytest.mark.parametrize("code", STATUSES)
def test_status_mapping(proxy: Gateway, code: int) -> None:
    test_id = new_test_id()
    answer = proxy.request("GET", f"/s{code}", {"X-Test-Id": test_id, "X-Auth-Request-User": "forged"})
    assert answer.status == EXPECTED[proxy.name][code]
    auth, upstream = _auth_and_upstream(proxy, test_id)
    assert len(auth) == 1
    if (code == 200) if proxy.name == "envoy" else (200 <= code < 300):
        [record] = upstream
        # authResponseHeaders / auth-response-headers: the auth answer's value replaces the client's
        assert record["headers"]["x-auth-request-user"] == ["fake-user"]
        return
    assert upstream == []
    challenge = answer.headers.get_all("WWW-Authenticate")
    if proxy.name == "nginx":
        # nginx: only a 401 carries the challenge; the auth body never reaches the client
        assert challenge == (['Test realm="fake"'] if code == 401 else None)
        assert b"auth-body-leak" not in answer.body
    elif proxy.name == "envoy":
        # Envoy: a denial's status, headers and body go to the client; an error (5xx) is its own bare 403
        if code >= 500:
            assert challenge is None and b"auth-body-leak" not in answer.body
        else:
            assert challenge == ['Test realm="fake"']
            assert answer.body == (b"" if code == 204 else b"auth-body-leak")
    else:
        # Traefik: the auth answer (status, headers, body) goes to the client as is
        assert challenge == ['Test realm="fake"']
        assert answer.body == b"auth-body-leak"


def test_what_the_auth_service_receives(proxy: Gateway) -> None:
    test_id = new_test_id()
    answer = proxy.request(
        "POST",
        "/recorded/x/../y?q=1&r=%2F",
        {
            "X-Test-Id": test_id,
            "Authorization": "Bearer abc",
            "Cookie": "c=1",
            "Content-Type": "text/plain",
            "X-Forwarded-Uri": "/forged",
            "X-Forwarded-Proto": "forged",
            "X-Original-URL": "http://forged/",
            "X-Forwarded-Method": "FORGED",
            "X-Forwarded-Host": "forged.test",
        },
        body=b"body",
    )
    assert answer.status == 200
    auth, _ = _auth_and_upstream(proxy, test_id)
    [record] = auth
    h = {k: v[0] for k, v in record["headers"].items() if len(v) == 1}
    assert h["authorization"] == "Bearer abc"
    assert "content-length" not in h or h["content-length"] == "0"
    if proxy.name == "envoy":
        # the original method to path_prefix + the raw original target; only the allowed headers (and Host,
        # Content-Length) besides Envoy's own: no client header names another request
        assert record["method"] == "POST"
        assert record["raw_path"] == "/auth/api/recorded/x/../y?q=1&r=%2F"
        assert h["host"] == HOST
        assert set(h) <= {
            "host",
            "content-length",
            "authorization",
            "x-test-id",
            "x-forwarded-for",
            "x-envoy-internal",
            "x-envoy-expected-rq-timeout-ms",
        }
        # use_remote_address: Envoy's own address for the peer (for a loopback peer, the host's address)
        assert len(h["x-forwarded-for"].split(",")) == 1
        return
    assert record["method"] == "GET"
    assert record["raw_path"] == "/auth/api"  # nothing of the original request is appended
    assert h["cookie"] == "c=1"
    if proxy.name == "nginx":
        assert h["host"] == "127.0.0.1"
        assert h["x-original-url"] == f"http://{HOST}/recorded/x/../y?q=1&r=%2F"  # raw, client forgery replaced
        assert h["x-original-method"] == "POST"
        assert h["x-sent-from"] == "nginx-ingress-controller"
        assert h["x-real-ip"] == "127.0.0.1"
        assert h["x-forwarded-for"] == "127.0.0.1"
        assert h["x-auth-request-redirect"] == "/recorded/x/../y?q=1&r=%2F"
        assert h["connection"] == "close"
        assert len(h["x-request-id"]) == 32
        assert "x-forwarded-proto" not in h
        # forged headers nginx does not set pass straight through: authgate must not trust them
        assert h["x-forwarded-uri"] == "/forged"
        assert h["x-forwarded-method"] == "FORGED"
        assert h["x-forwarded-host"] == "forged.test"
    else:
        # Traefik overwrites every X-Forwarded-* (trustForwardHeader: false)
        assert h["x-forwarded-method"] == "POST"
        assert h["x-forwarded-uri"].startswith("/recorded/")
        assert h["x-forwarded-uri"].endswith("?q=1&r=%2F")
        assert h["x-forwarded-host"] == HOST
        assert h["x-forwarded-proto"] == "http"
        assert h["x-forwarded-for"] == "127.0.0.1"
        assert h["x-original-url"] == "http://forged/"  # passes through: authgate --proxy traefik ignores it


def test_websocket_handshake_reaches_auth_without_upgrade(proxy: Gateway) -> None:
    test_id = new_test_id()
    with proxy.websocket("/recorded/ws", {**bearer("abc"), "X-Test-Id": test_id}) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    auth, upstream = _auth_and_upstream(proxy, test_id)
    [record] = auth
    assert record["method"] == "GET"
    assert "upgrade" not in record["headers"]
    assert record["headers"]["authorization"] == ["Bearer abc"]
    if proxy.name == "envoy":
        assert record["raw_path"] == "/auth/api/recorded/ws"  # only the allowed headers, no WebSocket key
        assert "sec-websocket-key" not in record["headers"]
    else:
        assert "sec-websocket-key" in record["headers"]
    [handshake] = upstream
    assert handshake["kind"] == "websocket"
    assert handshake["headers"]["upgrade"] == ["websocket"]


def test_websocket_denied_handshake_status(proxy: Gateway) -> None:
    with pytest.raises(InvalidStatus) as raised:
        proxy.websocket("/s403").close()
    assert raised.value.response.status_code == 403


@pytest.fixture
def dead_auth_gateways(tmp_path: Path, upstream: Upstream) -> Iterator[dict[str, Gateway]]:
    """Every proxy pointing at a port where nothing listens."""
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}/auth/api"
    spec = IngressSpec(host=HOST, path="/", backend=upstream.address, auth_url=dead)
    route = TraefikRoute(name="dead", host=HOST, path_prefix="/", backend=upstream.address, auth_address=dead)
    envoy_port = free_port()
    with (
        NginxProcess([spec], tmp_path / "nginx") as nginx,
        TraefikProcess([route], tmp_path / "traefik") as traefik,
        EnvoyProcess(envoy_config(envoy_port, upstream.port, {"/": (dead_port, "/auth/api")}), tmp_path / "envoy"),
    ):
        yield {
            "nginx": Gateway("nginx", nginx.port, upstream, host=HOST),
            "traefik": Gateway("traefik", traefik.port, upstream, host=HOST),
            "envoy": Gateway("envoy", envoy_port, upstream, host=HOST),
        }


def test_unreachable_auth_service_fails_closed(dead_auth_gateways: dict[str, Gateway]) -> None:
    assert set(dead_auth_gateways) == set(PROXIES)
    for gateway in dead_auth_gateways.values():
        test_id = new_test_id()
        answer = gateway.request("GET", "/api/flows", {**bearer("abc"), "X-Test-Id": test_id})
        # nginx and Traefik: 500; Envoy: 403 (status_on_error's default, failure_mode_allow false)
        assert answer.status == (403 if gateway.name == "envoy" else 500), gateway.name
        assert gateway.upstream.records(test_id) == []
