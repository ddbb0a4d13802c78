"""The chart's own output, exercised end to end: real nginx + real authgate + the recording upstream.

The Prefect example values are rendered with the real helm; everything below comes from that render,
never from hand-written configuration:

- nginx's configuration from the rendered Ingress objects (host, path, path type, ``auth-url``,
  ``auth-response-headers``, ``proxy-read-timeout``/``proxy-send-timeout``; the example turning sign-in on,
  ``auth-signin``, ``auth-always-set-cookie`` and the sign-in Ingress to authgate) through tests/e2e/nginx.py;
- authgate's credentials from the rendered Secret (laid out the way kubelet mounts it) and its policy
  from the rendered ConfigMap, its ``--proxy``/``--log-level`` from the Deployment's args;
- the ``helm test`` pod's script, run here against that authgate.

The only translation is the address: the in-cluster ``auth-url`` is checked to name the chart's Service
(name, namespace, port) and then pointed at the authgate process on loopback; the backend Service at
the recording upstream.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.chart.render import PREFECT_VALUES, RELEASE, Render
from tests.e2e.chart import RenderedAuthgate, credential_values, nginx_ingress_specs
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.nginx import IngressSpec, NginxProcess, render_nginx_conf, to_loopback
from tests.e2e.sign_in_http import NAVIGATION, SAME_ORIGIN_FETCH, sign_in
from tests.support.procs import AuthgateProcess

pytestmark = [pytest.mark.e2e, pytest.mark.helm]

HOST = "prefect.example.com"  # the example values' host, sent as Host to nginx
HEADERS_HOST = "headers.example.com"  # a harness-only Ingress: keepalive with auth-response-headers
WORKER_TOKEN = "chart-e2e-worker-token-0123456789abcdef"
UI_USER, UI_PASSWORD = "alice", "chart-e2e-password"
AUTH_PREFIX = "nginx.ingress.kubernetes.io/"


def ingress_specs(render: Render, *, authgate_port: int, backend: str) -> list[IngressSpec]:
    """The rendered Ingresses as the harness's IngressSpecs (tests/e2e/chart.py), after checking that none
    uses a snippet and that each sends its path to the application or, the sign-in Ingress, to authgate."""
    for ingress in render.all("Ingress"):
        annotations: dict[str, str] = ingress["metadata"].get("annotations") or {}
        assert not any("snippet" in key for key in annotations)
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                if path["backend"]["service"] == {"name": "prefect-server", "port": {"number": 4200}}:
                    assert AUTH_PREFIX + "auth-url" in annotations  # the application is never served without auth
                else:
                    assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}, path
    return nginx_ingress_specs(render, authgate_port=authgate_port, backend=backend)


@dataclass
class ChartStack:
    render: Render
    gateway: Gateway
    nginx: NginxProcess
    authgate: AuthgateProcess
    workdir: Path


@contextmanager
def run_chart(
    workdir: Path, upstream: Upstream, extra_values: list[str], *, use_http2: bool = True, more_specs: int = 0
) -> Iterator[ChartStack]:
    """authgate and nginx from a render of the Prefect example values plus ``extra_values``; nginx runs
    with the controller's ``use-http2`` as given. ``more_specs`` > 0 adds a harness-only Ingress (host
    ``headers.example.com``, ``/api`` with ``auth-response-headers`` and that many keepalive connections)."""
    render = Render.of(
        "prefect-e2e",
        [
            "-f",
            str(PREFECT_VALUES),
            *extra_values,
            *credential_values({"worker": (WORKER_TOKEN, "routes=api")}, {UI_USER: UI_PASSWORD}),
        ],
    )
    authgate = RenderedAuthgate.lay_out(render, workdir).process(workdir / "authgate.log")
    nginx: NginxProcess | None = None
    try:
        authgate.wait_ready()
        specs = ingress_specs(render, authgate_port=authgate.port, backend=upstream.address)
        if more_specs:
            specs.append(
                replace(
                    next(s for s in specs if s.path == "/api"),
                    name="headers",
                    host=HEADERS_HOST,
                    auth_response_headers=("X-Auth-Request-User",),
                    auth_keepalive=more_specs,
                )
            )
        nginx = NginxProcess(specs, workdir / "nginx", use_http2=use_http2)
        nginx.start()
        yield ChartStack(render, Gateway("nginx", nginx.port, upstream, host=HOST), nginx, authgate, workdir)
    finally:
        if nginx is not None:
            nginx.stop()
        authgate.stop()


@pytest.fixture(scope="module")
def chart_stack(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[ChartStack]:
    with run_chart(tmp_path_factory.mktemp("chart-e2e"), upstream, []) as stack:
        yield stack


@pytest.fixture(scope="module")
def keepalive_stack(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[ChartStack]:
    """The chart with ``ingress.authKeepalive`` on (and, as it requires, no auth-response-headers), behind a
    controller configured with ``use-http2: "false"`` - the only setting under which the annotations apply."""
    values = ["--set", "ingress.authKeepalive=32", "--set-json", "ingress.authResponseHeaders=[]"]
    with run_chart(tmp_path_factory.mktemp("chart-e2e-ka"), upstream, values, use_http2=False, more_specs=8) as stack:
        yield stack


@pytest.fixture(scope="module")
def cache_stack(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[ChartStack]:
    """The chart with ``ingress.authCache`` on: nginx's decision cache and authgate's matching bound."""
    values = ["--set", "ingress.authCache.enabled=true", "--set", "ingress.authCache.seconds=30"]
    with run_chart(tmp_path_factory.mktemp("chart-e2e-cache"), upstream, values) as stack:
        yield stack


def decisions(stack: ChartStack) -> float:
    """Decisions authgate made so far: every auth subrequest nginx did not answer from its cache."""
    text = httpx.get(stack.authgate.base_url + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^authgate_decisions_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def test_auth_cache_answers_repeated_allows_from_nginx_and_never_an_anonymous_one(cache_stack: ChartStack) -> None:
    gateway = cache_stack.gateway
    assert "proxy_cache_valid 200 30s;" in cache_stack.nginx.conf_text
    assert gateway.request("GET", "/api/flows", bearer(WORKER_TOKEN)).status == 200  # fills the cache
    before = decisions(cache_stack)
    for method in ("GET", "POST", "DELETE"):
        assert gateway.request(method, "/api/flows", bearer(WORKER_TOKEN)).status == 200
    assert decisions(cache_stack) == before, "repeats of a cacheable allow must not reach authgate"
    # The anonymous health check is allowed every time, cached never: the key holds no method and no path.
    for _ in range(2):
        assert gateway.request("GET", "/api/health").status == 200
    assert gateway.request("GET", "/api/flows").status == 401
    assert gateway.request("GET", "/api/flows", bearer("not-a-token-0123456789abcdef")).status == 401


def peer_ports(port: int) -> set[int]:
    """Client-side ports of every TCP connection to 127.0.0.1:``port`` the kernel still knows, closed ones
    included (TIME_WAIT lasts 60 s): one per connection nginx opened to authgate."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = (int(field.split(":")[1], 16) for field in line.split()[1:3])
        if local == port and remote != 0:
            ports.add(remote)
        elif remote == port:
            ports.add(local)
    return ports


def auth_connections_for(stack: ChartStack, requests: int) -> int:
    """How many new connections to authgate ``requests`` allowed API requests through nginx opened."""
    before = peer_ports(stack.authgate.port)
    for _ in range(requests):
        assert stack.gateway.request("GET", "/api/flows", bearer(WORKER_TOKEN)).status == 200
    return len(peer_ports(stack.authgate.port) - before)


def test_auth_keepalive_reuses_connections_to_authgate_and_keeps_the_decisions(
    keepalive_stack: ChartStack, chart_stack: ChartStack
) -> None:
    conf = keepalive_stack.nginx.conf_text
    assert "keepalive 32;" in conf and "keepalive_requests 1000;" in conf and "keepalive_timeout 8s;" in conf
    assert conf.count("access_by_lua_file") == 4  # location = /api and /api/, here and on HEADERS_HOST
    # Without keepalive (the chart's default), every auth subrequest is a new connection (Connection: close).
    assert auth_connections_for(chart_stack, 20) >= 20
    # With it, nginx's one worker reuses its idle connection to authgate.
    assert auth_connections_for(keepalive_stack, 20) <= 2

    gateway = keepalive_stack.gateway
    test_id = new_test_id()
    assert gateway.request("GET", "/api/flows", {**bearer(WORKER_TOKEN), "X-Test-Id": test_id}).status == 200
    assert [r["raw_path"] for r in gateway.upstream.records(test_id)] == ["/api/flows"]
    denied = gateway.request("GET", "/api/flows", {"X-Test-Id": test_id})
    assert denied.status == 401
    # The controller's Lua path passes the status only: authgate's challenge does not reach the client.
    assert denied.headers.get_all("WWW-Authenticate") is None
    token = base64.b64decode(keepalive_stack.render.one("Secret", f"{RELEASE}-test-token")["data"]["token"]).decode()
    assert gateway.request("GET", "/api/flows", {**bearer(token), "X-Test-Id": test_id}).status == 403
    assert len(gateway.upstream.records(test_id)) == 1
    # The UI Ingress never gets keepalive from the chart: its redirect to the sign-in page still works.
    redirect = gateway.request("GET", "/", NAVIGATION)
    assert redirect.status == 302
    assert redirect.headers["Location"] == f"https://{HOST}/authgate/sign_in?rd=%2F"


def test_auth_keepalive_with_auth_response_headers_fails_every_allowed_request(keepalive_stack: ChartStack) -> None:
    """Why the chart refuses ``authKeepalive`` together with ``authResponseHeaders``."""
    headers_host = Gateway("nginx", keepalive_stack.nginx.port, keepalive_stack.gateway.upstream, host=HEADERS_HOST)
    test_id = new_test_id()
    assert headers_host.request("GET", "/api/flows", {**bearer(WORKER_TOKEN), "X-Test-Id": test_id}).status == 500
    assert headers_host.upstream.records(test_id) == []
    assert 'variable "authheader1" not found for writing' in keepalive_stack.nginx.error_log().lower()


def test_auth_keepalive_is_ignored_under_the_controllers_default_use_http2(tmp_path: Path) -> None:
    spec = IngressSpec(host=HOST, path="/api", backend="127.0.0.1:9", auth_url="http://127.0.0.1:9/auth/api")
    spec = replace(spec, auth_keepalive=32)
    default = render_nginx_conf([spec], listen_port=1, prefix=tmp_path)
    assert "upstream prefect" not in default and "access_by_lua" not in default and "auth_request " in default
    http1 = render_nginx_conf([spec], listen_port=1, prefix=tmp_path, use_http2=False)
    assert http1.count("upstream prefect.example.com-external-auth-") == 2
    assert 'proxy_set_header            Connection              "";' in http1 and "auth_request " not in http1


def test_the_rendered_ingresses_became_nginx_locations(chart_stack: ChartStack) -> None:
    conf = chart_stack.nginx.conf_text
    assert f"server_name {HOST};" in conf
    assert "location = /api {" in conf and "location /api/ {" in conf and "location / {" in conf
    assert "/auth/api;" in conf and "/auth/ui;" in conf
    # The sign-in Ingress (the example turns sign-in on): authgate's own pages, on the same host.
    assert "location = /authgate {" in conf and "location /authgate/ {" in conf
    assert conf.count("proxy_read_timeout                      3600s;") == 2  # location = /api and /api/
    assert conf.count("proxy_read_timeout                      60s;") == 3  # the UI and the sign-in pages


def test_api_accepts_the_bearer_token_and_passes_the_user(chart_stack: ChartStack) -> None:
    test_id = new_test_id()
    answer = chart_stack.gateway.request(
        "GET", "/api/flows", {**bearer(WORKER_TOKEN), "X-Test-Id": test_id, "X-Auth-Request-User": "mallory"}
    )
    assert answer.status == 200
    [record] = chart_stack.gateway.upstream.records(test_id)
    assert record["raw_path"] == "/api/flows"
    assert record["headers"]["x-auth-request-user"] == ["worker"]


def test_api_refuses_a_request_without_credentials(chart_stack: ChartStack) -> None:
    test_id = new_test_id()
    answer = chart_stack.gateway.request("POST", "/api/flow_runs/filter", {"X-Test-Id": test_id})
    assert answer.status == 401
    assert 'Bearer realm="prefect-api"' in " ".join(answer.headers.get_all("WWW-Authenticate") or [])
    assert chart_stack.gateway.upstream.records(test_id) == []


def test_api_health_is_anonymous_and_a_forged_user_is_dropped(chart_stack: ChartStack) -> None:
    test_id = new_test_id()
    answer = chart_stack.gateway.request("GET", "/api/health", {"X-Test-Id": test_id, "X-Auth-Request-User": "mallory"})
    assert answer.status == 200
    [record] = chart_stack.gateway.upstream.records(test_id)
    assert "x-auth-request-user" not in record["headers"]


def test_ui_sends_a_browser_without_a_session_to_the_sign_in_page(chart_stack: ChartStack) -> None:
    """The example turns sign-in on: authgate's 401 on the UI Ingress becomes ingress-nginx's redirect to the
    sign-in page (auth-signin), for a navigation and for anything else without a credential on the UI, and
    nothing reaches Prefect; the browser never gets the 401 that would make it prompt for Basic."""
    test_id = new_test_id()
    for headers in (NAVIGATION, {}, bearer(WORKER_TOKEN)):  # a token is not a browser credential
        answer = chart_stack.gateway.request("GET", "/flows/run-1?tab=logs", {**headers, "X-Test-Id": test_id})
        assert answer.status == 302
        assert answer.headers["Location"] == f"https://{HOST}/authgate/sign_in?rd=%2Fflows%2Frun-1%3Ftab%3Dlogs"
        # (nginx keeps authgate's Basic challenge on the 302; a browser prompts only on a 401, so none shows.)
    assert chart_stack.gateway.upstream.records(test_id) == []


def test_a_person_signs_in_and_the_session_passes_the_ui_and_its_api_calls(chart_stack: ChartStack) -> None:
    gateway = chart_stack.gateway
    signed_in, session = sign_in(
        gateway, prefix="/authgate/", user=UI_USER, password=UI_PASSWORD, rd="/flows", origin=f"http://{HOST}"
    )
    assert signed_in.headers["Location"] == "/flows"
    test_id = new_test_id()
    cookie = {"Cookie": session, "X-Test-Id": test_id}
    assert gateway.request("GET", "/flows", {**NAVIGATION, **cookie}).status == 200
    # The UI's same-origin fetch (a POST) and its WebSocket to /api ride on the same cookie.
    origin = {"Origin": f"http://{HOST}"}
    assert gateway.request("POST", "/api/flows/filter", {**SAME_ORIGIN_FETCH, **origin, **cookie}).status == 200
    with gateway.websocket("/api/events/out", {**origin, **cookie}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    users = [r["headers"].get("x-auth-request-user") for r in gateway.upstream.records(test_id)]
    assert users == [[UI_USER]] * 3
    # Basic keeps working on the UI route for anyone who sends it (scripts, sign-in turned off).
    assert gateway.request("GET", "/flows", basic(UI_USER, UI_PASSWORD)).status == 200
    # A cookie not sealed by this authgate is no session: the navigation goes to the sign-in page.
    forged = {"Cookie": "__Host-authgate=" + "A" * 80}
    assert gateway.request("GET", "/flows", {**NAVIGATION, **forged}).status == 302
    assert gateway.request("GET", "/api/flows", {**SAME_ORIGIN_FETCH, **forged}).status == 401


def test_api_websocket_handshake_with_the_token(chart_stack: ChartStack) -> None:
    test_id = new_test_id()
    with chart_stack.gateway.websocket("/api/events/in", {**bearer(WORKER_TOKEN), "X-Test-Id": test_id}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    with pytest.raises(InvalidStatus) as raised:
        chart_stack.gateway.websocket("/api/events/out", {"X-Test-Id": new_test_id()}).close()
    assert raised.value.response.status_code == 401


def test_the_helm_test_pod_script_passes_against_this_authgate(chart_stack: ChartStack) -> None:
    """The chart's `helm test` check (anonymous 401, test token 200), run as the pod would run it."""
    pod: dict[str, Any] = chart_stack.render.one("Pod", f"{RELEASE}-test-auth")
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python3", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    in_cluster = urlsplit(env["AUTH_URL"])
    assert in_cluster.hostname == RELEASE and in_cluster.path == "/auth/api"
    token = base64.b64decode(chart_stack.render.one("Secret", f"{RELEASE}-test-token")["data"]["token"])
    token_file = chart_stack.workdir / "test-token"
    token_file.write_bytes(token)
    result = subprocess.run(
        [sys.executable, "-c", container["args"][0]],
        env={"AUTH_URL": to_loopback(env["AUTH_URL"], chart_stack.authgate.port), "TOKEN_FILE": str(token_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anonymous -> 401" in result.stdout and "test token -> 200" in result.stdout
    # The test token is good for nothing else, e.g. the API itself.
    assert chart_stack.gateway.request("GET", "/api/flows", bearer(token.decode())).status == 403
