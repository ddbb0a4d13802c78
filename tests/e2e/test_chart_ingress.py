"""The chart's own output, exercised end to end: real nginx + real authgate + the recording upstream.

The Prefect example values are rendered with the real helm; everything below comes from that render,
never from hand-written configuration:

- nginx's configuration from the rendered Ingress objects (host, path, path type, ``auth-url``,
  ``auth-response-headers``, ``proxy-read-timeout``/``proxy-send-timeout``) through tests/e2e/nginx.py;
- authgate's credentials from the rendered Secret (laid out the way kubelet mounts it) and its policy
  from the rendered ConfigMap, its ``--proxy``/``--log-level`` from the Deployment's args;
- the ``helm test`` pod's script, run here against that authgate.

The only translation is the address: the in-cluster ``auth-url`` is checked to name the chart's Service
(name, namespace, port) and then pointed at the authgate process on loopback; the backend Service at
the recording upstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus

from tests.chart.render import PREFECT_VALUES, RELEASE, Render
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.e2e.nginx import IngressSpec, NginxProcess, to_loopback
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess

pytestmark = [pytest.mark.e2e, pytest.mark.helm]

HOST = "prefect.example.com"  # the example values' host, sent as Host to nginx
WORKER_TOKEN = "chart-e2e-worker-token-0123456789abcdef"
UI_USER, UI_PASSWORD = "alice", "chart-e2e-password"
AUTH_PREFIX = "nginx.ingress.kubernetes.io/"


def _sha1_htpasswd(user: str, password: str) -> str:
    return f"{user}:{{SHA}}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def ingress_specs(render: Render, *, authgate_port: int, backend: str) -> list[IngressSpec]:
    """The rendered Ingresses as the harness's IngressSpecs, after checking they target the chart's Service."""
    service = render.one("Service")
    service_host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    service_port = service["spec"]["ports"][0]["port"]
    specs = []
    for ingress in render.all("Ingress"):
        annotations: dict[str, str] = ingress["metadata"]["annotations"]
        auth_url = annotations[AUTH_PREFIX + "auth-url"]
        parts = urlsplit(auth_url)
        assert (parts.scheme, parts.hostname, parts.port) == ("http", service_host, service_port), auth_url
        assert not any("snippet" in key for key in annotations)
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": "prefect-server", "port": {"number": 4200}}
                specs.append(
                    IngressSpec(
                        name=ingress["metadata"]["name"],
                        host=rule["host"],
                        path=path["path"],
                        path_type=path["pathType"],
                        backend=backend,
                        auth_url=to_loopback(auth_url, authgate_port),
                        auth_response_headers=tuple(
                            h.strip()
                            for h in annotations.get(AUTH_PREFIX + "auth-response-headers", "").split(",")
                            if h
                        ),
                        proxy_read_timeout=int(annotations.get(AUTH_PREFIX + "proxy-read-timeout", 60)),
                        proxy_send_timeout=int(annotations.get(AUTH_PREFIX + "proxy-send-timeout", 60)),
                    )
                )
    return specs


def arg_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@dataclass
class ChartStack:
    render: Render
    gateway: Gateway
    nginx: NginxProcess
    authgate: AuthgateProcess
    workdir: Path


@pytest.fixture(scope="module")
def chart_stack(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[ChartStack]:
    workdir = tmp_path_factory.mktemp("chart-e2e")
    render = Render.of(
        "prefect-e2e",
        [
            "-f",
            str(PREFECT_VALUES),
            "--set-json",
            "secret.tokens="
            + json.dumps([f"worker sha256:{hashlib.sha256(WORKER_TOKEN.encode()).hexdigest()} routes=api"]),
            "--set-json",
            "secret.htpasswd=" + json.dumps([_sha1_htpasswd(UI_USER, UI_PASSWORD)]),
        ],
    )
    secret = render.one("Secret", RELEASE)["stringData"]
    secret_dir = KubeletSecretDir(workdir / "secret")
    secret_dir.write({"tokens": secret["tokens"], "htpasswd": secret["htpasswd"]})
    policy = workdir / "policy.yaml"
    policy.write_text(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    authgate = AuthgateProcess(
        secret_dir.path,
        workdir / "authgate.log",
        config=policy,
        proxy=arg_value(container["args"], "--proxy"),
        log_level=arg_value(container["args"], "--log-level"),
    )
    nginx: NginxProcess | None = None
    try:
        authgate.wait_ready()
        nginx = NginxProcess(
            ingress_specs(render, authgate_port=authgate.port, backend=upstream.address), workdir / "nginx"
        )
        nginx.start()
        yield ChartStack(render, Gateway("nginx", nginx.port, upstream, host=HOST), nginx, authgate, workdir)
    finally:
        if nginx is not None:
            nginx.stop()
        authgate.stop()


def test_the_rendered_ingresses_became_nginx_locations(chart_stack: ChartStack) -> None:
    conf = chart_stack.nginx.conf_text
    assert f"server_name {HOST};" in conf
    assert "location = /api {" in conf and "location /api/ {" in conf and "location / {" in conf
    assert "/auth/api;" in conf and "/auth/ui;" in conf
    assert conf.count("proxy_read_timeout                      3600s;") == 2  # location = /api and /api/
    assert conf.count("proxy_read_timeout                      60s;") == 1  # the UI keeps the default


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


def test_ui_challenges_with_basic_and_accepts_the_htpasswd_user(chart_stack: ChartStack) -> None:
    test_id = new_test_id()
    answer = chart_stack.gateway.request("GET", "/", {"X-Test-Id": test_id})
    assert answer.status == 401
    challenges = answer.headers.get_all("WWW-Authenticate") or []
    assert any(c.startswith('Basic realm="prefect"') for c in challenges), challenges
    assert not any(c.startswith("Bearer") for c in challenges)
    assert chart_stack.gateway.upstream.records(test_id) == []
    # A token is not a browser credential: the UI route accepts Basic only.
    assert chart_stack.gateway.request("GET", "/", bearer(WORKER_TOKEN)).status == 401
    answer = chart_stack.gateway.request("GET", "/flows", {**basic(UI_USER, UI_PASSWORD), "X-Test-Id": test_id})
    assert answer.status == 200
    [record] = chart_stack.gateway.upstream.records(test_id)
    assert record["headers"]["x-auth-request-user"] == [UI_USER]


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
