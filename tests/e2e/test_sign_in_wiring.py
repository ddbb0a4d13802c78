"""The chart's sign-in wiring for ingress-nginx, in a real browser, with a stand-in for authgate's answers.

The Prefect example values with ``signIn.enabled`` are rendered with the real helm and served by real nginx
exactly as ingress-nginx v1.15 renders those Ingresses (tests/e2e/nginx.py: ``auth-signin`` as
``error_page 401`` to a named location answering 302, ``auth-always-set-cookie``), over HTTPS with a
self-signed certificate. What authgate would answer is played by the recording upstream: its
``/__status/401`` refuses every auth subrequest, and the sign-in Ingress's backend serves its stand-in page.
So this proves the wiring alone: a browser opening the UI lands on ``<prefix>sign_in`` with the page it
asked for in ``rd`` (a same-host path), and an API call still gets 401. The whole sign-in, with authgate
itself, is test_sign_in_doors.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.chart.render import PREFECT_VALUES, SCENARIOS, Render
from tests.e2e.chart import nginx_ingress_specs, traefik_routes
from tests.e2e.conftest import Upstream, new_test_id
from tests.e2e.envoy_doors import LISTENER, envoy_gateway
from tests.e2e.nginx import NginxProcess
from tests.e2e.traefik import TraefikProcess
from tests.support.browser import Browser, self_signed_certificate
from tests.support.envoy import EnvoyProcess
from tests.support.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.helm]

HOST = "prefect.example.com"
# The chart's gateway.headersToAuth with signIn.enabled (tests/chart/test_sign_in.py).
SIGN_IN_GATEWAY_HEADERS = [
    "Authorization",
    "X-Forwarded-For",
    "Origin",
    "Access-Control-Request-Method",
    "Cookie",
    "Accept",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Site",
]


def test_ingress_nginx_sends_a_browser_to_the_sign_in_page_and_an_api_call_gets_401(
    upstream: Upstream, tmp_path: Path
) -> None:
    render = Render.of("sign-in-wiring", ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=true"])
    specs = nginx_ingress_specs(render, authgate_port=upstream.port, backend=upstream.address)
    # Every auth subrequest is refused (401), as authgate refuses a browser without a session.
    refuse = f"http://{upstream.address}/__status/401"
    specs = [dataclasses.replace(s, auth_url=refuse) if s.auth_url else s for s in specs]
    assert {(s.name, s.path) for s in specs} == {
        ("authgate-api", "/api"),
        ("authgate-ui", "/"),
        ("authgate-sign-in", "/authgate"),
    }
    tls = self_signed_certificate(tmp_path / "tls", [HOST])
    with NginxProcess(specs, tmp_path / "nginx", tls=tls) as nginx:
        assert "error_page 401 = @" in nginx.conf_text
        assert "return 302 https://$http_host/authgate/sign_in?rd=$escaped_request_uri;" in nginx.conf_text
        assert "add_header          Set-Cookie $auth_cookie always;" in nginx.conf_text
        origin = f"https://{HOST}:{nginx.port}"
        with Browser(tmp_path, resolve={HOST: "127.0.0.1"}) as browser:
            page = browser.page()
            response = page.goto(f"{origin}/flows/run-1?tab=logs")
            assert response is not None and response.status == 200
            url = urlsplit(page.url)
            assert (url.scheme, url.netloc, url.path) == ("https", f"{HOST}:{nginx.port}", "/authgate/sign_in")
            assert parse_qs(url.query) == {"rd": ["/flows/run-1?tab=logs"]}
            # The sign-in Ingress reached its backend (here the stand-in page) without any auth subrequest.
            assert page.inner_text("#path") == "/authgate/sign_in?rd=%2Fflows%2Frun-1%3Ftab%3Dlogs"
        # An API call is never redirected: the API Ingress has no auth-signin.
        test_id = new_test_id()
        answer = httpx.get(
            f"{nginx.base_url}/api/flows",
            headers={"Host": HOST, "Accept": "text/html", "X-Test-Id": test_id},
            verify=False,  # the test's own self-signed certificate
        )
        assert answer.status_code == 401
        assert "location" not in answer.headers
        # Only the refusing auth subrequest arrived; the application never saw the call.
        assert [r["raw_path"] for r in upstream.records(test_id)] == ["/__status/401"]


def test_traefik_passes_a_redirect_of_authgate_and_serves_the_prefix_without_auth(
    upstream: Upstream, tmp_path: Path
) -> None:
    """``ingress.provider: traefik``: a denial's status and ``Location`` reach the browser as authgate sent
    them (a 302 here), and the sign-in Ingress reaches authgate's Service with no ForwardAuth."""
    render = Render.of("sign-in-wiring-traefik", [*SCENARIOS["sign-in-traefik"], "--set", "ingress.host=localhost"])
    routes = traefik_routes(render, authgate_port=upstream.port, backend=upstream.address)
    assert {(r.name, r.path_prefix, r.auth_cookies) for r in routes} == {
        ("authgate-api", "/api", ("__Host-authgate",)),
        ("authgate-ui", "/", ("__Host-authgate",)),
        ("authgate-sign-in", "/authgate", ()),
    }
    redirect = f"http://{upstream.address}/__status/302"
    routes = [dataclasses.replace(r, auth_address=redirect) if r.auth_address else r for r in routes]
    with TraefikProcess(routes, tmp_path / "traefik") as traefik:
        test_id = new_test_id()
        headers = {"Host": "localhost", "Accept": "text/html", "X-Test-Id": test_id}
        answer = httpx.get(traefik.base_url + "/flows", headers=headers)
        assert answer.status_code == 302
        assert answer.headers["location"] == "http://elsewhere.test/"  # the stand-in's, passed as it is
        answer = httpx.get(traefik.base_url + "/authgate/sign_in?rd=%2Fflows", headers=headers)
        assert answer.status_code == 200
        assert [r["raw_path"] for r in upstream.records(test_id)] == ["/__status/302", "/authgate/sign_in?rd=%2Fflows"]


def test_envoy_gateway_sends_the_sign_in_headers_passes_a_redirect_and_serves_the_prefix_without_auth(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Envoy as Envoy Gateway translates the render: ``headersToExtAuth`` brings the browser's ``Cookie``,
    ``Accept``, ``Sec-Fetch-*`` and ``Origin`` to the auth service, a denial's ``Location`` reaches the client,
    and the sign-in HTTPRoute has no ext_authz."""
    headers_to_auth = [*SIGN_IN_GATEWAY_HEADERS, "X-Test-Id"]  # X-Test-Id: to find the auth request here
    render = Render.of(
        "sign-in-wiring-envoy",
        [*SCENARIOS["sign-in-envoy-gateway"], "--set-json", f"gateway.headersToAuth={json.dumps(headers_to_auth)}"],
    )
    config = envoy_gateway(render, listen_port=free_port(), address=lambda ref: upstream.port)
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for http_filter in chain["filters"][0]["typed_config"]["http_filters"]:
                service = http_filter.get("typed_config", {}).get("http_service")
                if service is not None:
                    service["path_prefix"] = "/__status/302"  # every check is a redirect
    with EnvoyProcess(config, tmp_path / "envoy", name="envoy-gateway") as envoy:
        test_id = new_test_id()
        browser_headers = {
            "Host": "prefect.example.com",
            "Accept": "text/html",
            "Cookie": "__Host-authgate=sealed",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Site": "none",
            "Origin": "https://prefect.example.com",
            "X-Test-Id": test_id,
        }
        answer = httpx.get(envoy.url(LISTENER) + "/flows?tab=logs", headers=browser_headers)
        assert answer.status_code == 302
        assert answer.headers["location"] == "http://elsewhere.test/"
        [check] = upstream.records(test_id)
        assert check["raw_path"] == "/__status/302/flows?tab=logs"  # the query too: authgate's rd can keep it
        for name in ("cookie", "accept", "sec-fetch-mode", "sec-fetch-site", "origin"):
            assert check["headers"][name] == [browser_headers[name.title()]]
        answer = httpx.get(envoy.url(LISTENER) + "/authgate/sign_in?rd=%2Fflows", headers=browser_headers)
        assert answer.status_code == 200
        assert [r["raw_path"] for r in upstream.records(test_id)][1:] == ["/authgate/sign_in?rd=%2Fflows"]


def test_traefik_resolves_a_relative_location_against_the_auth_address(upstream: Upstream, tmp_path: Path) -> None:
    """Seen here with Traefik 3.7: ForwardAuth sets the client's ``Location`` from Go's ``Response.Location()``,
    which resolves a relative one against the auth request's URL. A relative ``/authgate/sign_in?...`` from
    authgate reaches the browser as ``http://<authgate's address>/authgate/sign_in?...`` (in a cluster, the
    Service's in-cluster name): behind Traefik authgate must answer an absolute URL on the original host."""
    render = Render.of("sign-in-wiring-traefik-rel", [*SCENARIOS["sign-in-traefik"], "--set", "ingress.host=localhost"])
    relative = f"http://{upstream.address}/__status/302?location=%2Fauthgate%2Fsign_in%3Frd%3D%252Fflows"
    routes = [
        dataclasses.replace(r, auth_address=relative) if r.auth_address else r
        for r in traefik_routes(render, authgate_port=upstream.port, backend=upstream.address)
    ]
    with TraefikProcess(routes, tmp_path / "traefik") as traefik:
        answer = httpx.get(traefik.base_url + "/flows", headers={"Host": "localhost", "Accept": "text/html"})
        assert answer.status_code == 302
        assert answer.headers["location"] == f"http://{upstream.address}/authgate/sign_in?rd=%2Fflows"


REFRESHED = "__Host-authgate=refreshed; Secure; HttpOnly; SameSite=Lax; Path=/"
OTHER = "other=1; Path=/"


def _allow_with_cookies(upstream: Upstream) -> str:
    """A stand-in auth URL that allows (200) and sets the refreshed session cookie and another one."""
    query = urlencode([("set_cookie", REFRESHED), ("set_cookie", OTHER)])
    return f"http://{upstream.address}/__status/200?{query}"


def test_ingress_nginx_passes_the_refreshed_session_cookie_on_allowed_requests(
    upstream: Upstream, tmp_path: Path
) -> None:
    """``auth-always-set-cookie``: the auth answer's ``Set-Cookie`` reaches the browser with the application's
    answer, so authgate's refreshed cookie slides the idle expiry (on the UI and on the API Ingress)."""
    render = Render.of("sign-in-wiring-cookie", ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=true"])
    specs = nginx_ingress_specs(render, authgate_port=upstream.port, backend=upstream.address)
    specs = [dataclasses.replace(s, auth_url=_allow_with_cookies(upstream)) if s.auth_url else s for s in specs]
    with NginxProcess(specs, tmp_path / "nginx") as nginx:
        for path in ("/flows", "/api/flows"):
            answer = httpx.get(nginx.base_url + path, headers={"Host": HOST})
            assert answer.status_code == 200
            # $upstream_http_set_cookie is the auth answer's first Set-Cookie before nginx 1.23 (Debian 12's
            # 1.22), all of them joined into one header after: authgate sends one, the session cookie.
            assert answer.headers.get_list("set-cookie")[0].startswith(REFRESHED)


def test_traefik_copies_only_the_session_cookie_of_an_allow(upstream: Upstream, tmp_path: Path) -> None:
    """``addAuthCookiesToResponse: [__Host-authgate]``: the refreshed session cookie reaches the browser, no
    other cookie of the auth answer does."""
    render = Render.of(
        "sign-in-wiring-traefik-cookie", [*SCENARIOS["sign-in-traefik"], "--set", "ingress.host=localhost"]
    )
    routes = [
        dataclasses.replace(r, auth_address=_allow_with_cookies(upstream)) if r.auth_address else r
        for r in traefik_routes(render, authgate_port=upstream.port, backend=upstream.address)
    ]
    with TraefikProcess(routes, tmp_path / "traefik") as traefik:
        for path in ("/flows", "/api/flows"):
            answer = httpx.get(traefik.base_url + path, headers={"Host": "localhost"})
            assert answer.status_code == 200
            # Traefik writes the cookie anew (Go's http.Cookie): the same cookie, its attributes in its own order.
            [cookie] = answer.headers.get_list("set-cookie")
            assert _cookie_parts(cookie) == _cookie_parts(REFRESHED)


def _cookie_parts(header: str) -> tuple[str, frozenset[str]]:
    value, *attributes = (part.strip() for part in header.split(";"))
    return value, frozenset(attributes)
