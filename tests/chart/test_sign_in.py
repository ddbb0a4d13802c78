"""``signIn.enabled``: the policy, the session keys and each front door's wiring of the sign-in page.

The custom resources of the ``sign-in-*`` scenarios are validated against the upstream CRDs with every other
scenario (test_gateway.py), and their objects against Kubernetes' schemas (test_generated.py)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import CHART, NAMESPACE, PREFECT_VALUES, RELEASE, SCENARIOS, Render, helm, template
from tests.kube.fake_apiserver import FakeApiServer, write_kubeconfig
from tests.support.browser import self_signed_certificate

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

Rendered = Callable[[str], Render]
NGINX = "nginx.ingress.kubernetes.io/"
SET_TITLE_AND_DURATIONS = (
    "--set",
    "signIn.title=Prefect",
    "--set",
    "signIn.lifetime=8h",
    "--set",
    "signIn.idleTimeout=30m",
)
EXISTING_SECRET = (
    *("--set", "secret.create=false", "--set", "secret.existingSecret=mine", "--set", "tests.enabled=false"),
    *("--set-json", "secret.tokens=[]", "--set-json", "secret.htpasswd=[]"),
)
SIGN_IN_HEADERS = ["Cookie", "Accept", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Origin"]


def policy(render: Render) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    return loaded


def session_keys(render: Render) -> list[str]:
    text: str = render.one("Secret", RELEASE)["stringData"]["session-keys"]
    return [line for line in text.splitlines() if line.strip()]


def test_off_by_default_nothing_of_sign_in_is_rendered(rendered: Rendered) -> None:
    for scenario in ("defaults", "prefect-without-sign-in", "traefik", "gateway-envoy-gateway", "grpc-contour"):
        r = rendered(scenario)
        loaded = policy(r)
        assert "sign_in" not in loaded
        assert all("session" not in route["schemes"] for route in loaded["routes"].values())
        assert "session-keys" not in r.one("Secret", RELEASE)["stringData"]
        assert "sign-in" not in r.text
        assert "auth-signin" not in r.text and "auth-always-set-cookie" not in r.text


def test_policy_takes_session_on_both_routes_and_the_sign_in_block(rendered: Rendered) -> None:
    loaded = policy(rendered("sign-in"))
    # The UI route offers the session first (a navigation without one goes to the sign-in page); the API
    # route keeps the machines' schemes first and takes the session for the UI's own calls and sockets.
    assert loaded["routes"]["ui"]["schemes"] == ["session", "basic"]
    assert loaded["routes"]["api"]["schemes"] == ["bearer", "basic", "session"]
    assert loaded["sign_in"] == {"prefix": "/authgate/", "lifetime": "12h", "idle_timeout": "1h"}


def test_title_and_durations_reach_the_policy() -> None:
    r = Render.of(
        "sign-in-title",
        [*SCENARIOS["sign-in"], *SET_TITLE_AND_DURATIONS],
    )
    assert policy(r)["sign_in"] == {"prefix": "/authgate/", "lifetime": "8h", "idle_timeout": "30m", "title": "Prefect"}


def authgate_check(render: Render, workdir: Path, drop: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``authgate check`` on the render's policy and Secret, laid out as the pod mounts them (without
    the Secret's ``drop`` key)."""
    secret_dir = workdir / "secret"
    secret_dir.mkdir()
    for key, value in render.one("Secret", RELEASE)["stringData"].items():
        if key != drop:
            (secret_dir / key).write_text(value)
    config = workdir / "policy.yaml"
    config.write_text(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    command = [sys.executable, "-m", "app", "check", "--secret-dir", str(secret_dir), "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("scenario", ["sign-in", "sign-in-traefik", "sign-in-envoy-gateway", "sign-in-contour"])
def test_authgate_check_loads_the_rendered_policy_and_secret(rendered: Rendered, scenario: str, tmp_path: Path) -> None:
    r = rendered(scenario)
    checked = authgate_check(r, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "route ui: schemes=session,basic" in checked.stdout
    assert "route api: schemes=bearer,basic,session" in checked.stdout
    assert "session keys: 1 (the first, line 1, seals; every one opens)" in checked.stdout
    [key] = session_keys(r)
    assert key not in checked.stdout + checked.stderr  # names and counts, never a key


def test_authgate_check_refuses_the_render_without_its_session_keys(rendered: Rendered, tmp_path: Path) -> None:
    checked = authgate_check(rendered("sign-in"), tmp_path, drop="session-keys")
    assert checked.returncode != 0
    assert "session-keys" in checked.stderr + checked.stdout


def test_a_generated_session_key_is_url_safe_base64_of_32_bytes(rendered: Rendered) -> None:
    [key] = session_keys(rendered("sign-in"))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", key), key
    assert len(base64.urlsafe_b64decode(key)) == 32
    # Without an installed Secret to read back (helm template has no cluster), each render generates anew.
    assert session_keys(Render.of("sign-in-again", SCENARIOS["sign-in"])) != [key]


def test_given_session_keys_are_used_in_order() -> None:
    keys = [base64.urlsafe_b64encode(bytes([i]) * 32).decode() for i in (1, 2)]
    r = Render.of("sign-in-keys", [*SCENARIOS["sign-in"], "--set-json", f"signIn.sessionKeys={json.dumps(keys)}"])
    assert session_keys(r) == keys


def test_upgrades_keep_the_installed_session_keys(tmp_path: Path) -> None:
    """What ``helm upgrade`` renders: the real helm with a cluster to ``lookup`` in (``--dry-run=server``
    against the fake API server of tests/kube, holding the Secret an earlier install made) reads the installed
    key back, on every render: the Prefect example (sign-in on, no keys given) keeps everyone signed in."""
    installed = base64.urlsafe_b64encode(bytes(range(32))).decode()
    plain = Render.of("sign-in-installed-kinds", ["-f", str(PREFECT_VALUES)])
    helm_owned = (
        {"app.kubernetes.io/managed-by": "Helm"},
        {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE},
    )
    tls = self_signed_certificate(tmp_path / "tls", ["127.0.0.1", "localhost"])
    with FakeApiServer(tls=tls) as cluster:
        cluster.discovery_kinds = {(o["apiVersion"], o["kind"]) for o in plain.objects}
        files = {"tokens": b"", "htpasswd": b"", "session-keys": installed.encode() + b"\n"}
        cluster.put_secret(NAMESPACE, RELEASE, files, labels=helm_owned[0], annotations=helm_owned[1])
        # The helm-test token an install made, read back the same way: the whole Secret renders the same.
        test_token = {"token": b"installed-test-token-0123456789abcdef0123"}
        cluster.put_secret(
            NAMESPACE, f"{RELEASE}-test-token", test_token, labels=helm_owned[0], annotations=helm_owned[1]
        )
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url, insecure=True)
        server = ["--dry-run=server", "--disable-openapi-validation", "--kubeconfig", str(kubeconfig)]
        renders = [Render.of(f"sign-in-upgrade-{i}", ["-f", str(PREFECT_VALUES), *server]) for i in (1, 2)]
        assert ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}") in cluster.requests.log
    for r in renders:
        assert session_keys(r) == [installed]
    assert renders[0].one("Secret", RELEASE) == renders[1].one("Secret", RELEASE)


def test_ingress_nginx_redirects_the_ui_to_the_sign_in_page_and_passes_cookies(rendered: Rendered) -> None:
    r = rendered("sign-in")
    ui = r.one("Ingress", f"{RELEASE}-ui")["metadata"]["annotations"]
    api = r.one("Ingress", f"{RELEASE}-api")["metadata"]["annotations"]
    # rd is given, so ingress-nginx uses the URL as it is (no rd=<absolute URL> appended); a same-host path.
    assert ui[NGINX + "auth-signin"] == "https://$host/authgate/sign_in?rd=$escaped_request_uri"
    assert NGINX + "auth-signin" not in api  # API calls and sockets get 401, never a redirect
    assert ui[NGINX + "auth-always-set-cookie"] == api[NGINX + "auth-always-set-cookie"] == "true"


def test_ingress_nginx_serves_the_prefix_from_authgate_without_auth(rendered: Rendered) -> None:
    r = rendered("sign-in")
    sign_in = r.one("Ingress", f"{RELEASE}-sign-in")
    assert sign_in["metadata"]["namespace"] == NAMESPACE  # beside authgate's Service
    assert not any(key.startswith(NGINX + "auth-") for key in sign_in["metadata"].get("annotations") or {})
    assert sign_in["spec"]["ingressClassName"] == "nginx"
    assert sign_in["spec"]["tls"] == [{"hosts": ["prefect.example.com"], "secretName": "prefect-tls"}]
    [rule] = sign_in["spec"]["rules"]
    assert rule["host"] == "prefect.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/authgate",
            "pathType": "Prefix",
            "backend": {"service": {"name": RELEASE, "port": {"name": "http"}}},
        }
    ]


def test_traefik_middlewares_copy_the_session_cookie_and_the_prefix_has_none(rendered: Rendered) -> None:
    r = rendered("sign-in-traefik")
    for key in ("api", "ui"):
        forward_auth = r.one("Middleware", f"{RELEASE}-{key}")["spec"]["forwardAuth"]
        assert forward_auth["addAuthCookiesToResponse"] == ["__Host-authgate"]
    sign_in = r.one("Ingress", f"{RELEASE}-sign-in")
    assert sign_in["spec"]["ingressClassName"] == "traefik"
    assert "traefik.ingress.kubernetes.io/router.middlewares" not in (sign_in["metadata"].get("annotations") or {})


def test_a_policy_cookie_name_is_the_one_traefik_copies() -> None:
    r = Render.of(
        "sign-in-traefik-cookie",
        [*SCENARIOS["sign-in-traefik"], "--set", "config.policy.sign_in.cookie_name=__Host-prefect"],
    )
    assert r.one("Middleware", f"{RELEASE}-ui")["spec"]["forwardAuth"]["addAuthCookiesToResponse"] == ["__Host-prefect"]
    assert policy(r)["sign_in"]["cookie_name"] == "__Host-prefect"


@pytest.mark.parametrize("kind", ["filter", "envoy-gateway"])
def test_gateways_send_the_sign_in_headers_and_route_the_prefix_without_auth(rendered: Rendered, kind: str) -> None:
    r = rendered(f"sign-in-{kind}")
    if kind == "envoy-gateway":
        lists = [p["spec"]["extAuth"]["headersToExtAuth"] for p in r.all("SecurityPolicy")]
        targets = {p["spec"]["targetRefs"][0]["name"] for p in r.all("SecurityPolicy")}
        assert targets == {f"{RELEASE}-api", f"{RELEASE}-ui"}
    else:
        lists = [
            f["externalAuth"]["http"]["allowedHeaders"]
            for route in r.all("HTTPRoute")
            for rule in route["spec"]["rules"]
            for f in rule.get("filters", [])
        ]
    assert len(lists) == 2
    for headers in lists:
        assert headers == ["Authorization", "X-Forwarded-For", "Origin", "Access-Control-Request-Method"] + [
            h for h in SIGN_IN_HEADERS if h != "Origin"
        ]
    sign_in = r.one("HTTPRoute", f"{RELEASE}-sign-in")
    assert sign_in["metadata"]["namespace"] == "apps"
    [rule] = sign_in["spec"]["rules"]
    assert "filters" not in rule
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/authgate"}}]
    assert rule["backendRefs"] == [{"name": RELEASE, "namespace": NAMESPACE, "port": 8080}]
    grant = r.one("ReferenceGrant")["spec"]
    assert {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "apps"} in grant["from"]


def test_istio_leaves_the_prefix_out_and_notes_name_the_headers(rendered: Rendered) -> None:
    r = rendered("sign-in-istio")
    [policy_] = r.all("AuthorizationPolicy")
    [operation] = [to["operation"] for to in policy_["spec"]["rules"][0]["to"] if "/*" in to["operation"]["paths"]]
    assert operation["notPaths"] == ["/authgate/*"]
    notes = helm(
        "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *SCENARIOS["sign-in-istio"]
    ).stdout
    assert (
        "includeRequestHeadersInCheck: [authorization, x-forwarded-for, origin, access-control-request-method, "
        "cookie, accept, sec-fetch-mode, sec-fetch-site]" in notes
    )
    assert "headersToDownstreamOnDeny: [www-authenticate, location, set-cookie, cache-control]" in notes
    assert "headersToDownstreamOnAllow: [set-cookie]" in notes


def test_contour_includes_the_prefix_from_authgates_namespace_without_auth(rendered: Rendered) -> None:
    r = rendered("sign-in-contour")
    root = r.one("HTTPProxy", RELEASE)
    assert root["spec"]["includes"] == [
        {"name": f"{RELEASE}-sign-in", "namespace": NAMESPACE, "conditions": [{"prefix": "/_auth"}]}
    ]
    child = r.one("HTTPProxy", f"{RELEASE}-sign-in")
    assert child["metadata"]["namespace"] == NAMESPACE and "virtualhost" not in child["spec"]
    assert child["spec"]["routes"] == [
        {
            "conditions": [{"prefix": "/"}],
            "authPolicy": {"disabled": True},
            "services": [{"name": RELEASE, "port": 8080}],
        }
    ]
    assert policy(r)["sign_in"]["prefix"] == "/_auth/"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("signIn.prefix", "/authgate"),
        ("signIn.prefix", "authgate/"),
        ("signIn.prefix", "//evil/"),
        ("signIn.lifetime", "forever"),
        ("signIn.sessionKeys[0]", "not-a-key"),
    ],
)
def test_bad_sign_in_values_are_refused(setting: str, value: str) -> None:
    result = template([*SCENARIOS["sign-in"], "--set", f"{setting}={value}"], check=False)
    assert result.returncode != 0
    assert setting.split("[")[0].split(".")[-1] in result.stderr


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["--set", "config.policy.sign_in.prefix=/login/"], "config.policy.sign_in.prefix"),
        (["--set", "ingress.ui.enabled=false"], "no UI part"),
        (
            [*EXISTING_SECRET, "--set-json", 'signIn.sessionKeys=["' + "A" * 43 + '="]'],
            "signIn.sessionKeys",
        ),
    ],
)
def test_contradictory_sign_in_values_fail_naming_the_keys(settings: list[str], named: str) -> None:
    result = template([*SCENARIOS["sign-in"], *settings], check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
