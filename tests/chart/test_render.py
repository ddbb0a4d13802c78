"""The rendered chart: what each object says, for the defaults and the documented scenarios."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from app.policy import parse_policy
from tests.chart.render import CHART, NAMESPACE, PREFECT_VALUES, RELEASE, SCENARIOS, Render, helm
from tests.support.procs import REPO_ROOT

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

Rendered = Callable[[str], Render]
AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
SERVICE_URL = f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:8080"


def walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every map entry, at any depth."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from walk(value, f"{path}[{i}]")


def container(render: Render) -> dict[str, Any]:
    [c] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def pod_spec(render: Render) -> dict[str, Any]:
    return render.one("Deployment")["spec"]["template"]["spec"]


def test_deployment_runs_authgate_serve_with_the_mounted_secret_and_policy(rendered: Rendered) -> None:
    r = rendered("defaults")
    c = container(r)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert c["image"] == f"ghcr.io/authgate/authgate:{app_version}"
    assert c["args"] == [
        "serve",
        "--secret-dir",
        "/etc/authgate/secret",
        "--config",
        "/etc/authgate/policy/policy.yaml",
        "--proxy",
        "ingress-nginx,traefik",
        "--log-level",
        "info",
        "--health-port",
        "8081",
    ]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
    ]
    # The probes on the health listener, where a flood of the decision port cannot starve them.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
    assert mounts["secret"] == {"name": "secret", "mountPath": "/etc/authgate/secret", "readOnly": True}
    assert volumes["secret"]["secret"]["secretName"] == r.one("Secret", RELEASE)["metadata"]["name"]
    assert mounts["policy"]["mountPath"] == "/etc/authgate/policy"
    assert volumes["policy"]["configMap"]["name"] == r.one("ConfigMap")["metadata"]["name"]
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_two_replicas_spread_across_nodes_with_a_disruption_budget(rendered: Rendered) -> None:
    r = rendered("defaults")
    deployment = r.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    [spread] = pod_spec(r)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_no_disruption_budget_for_a_single_pod() -> None:
    single = Render.of("single", ["--set", "replicaCount=1"])
    assert "PodDisruptionBudget" not in single.kinds()
    assert single.one("Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_restricted_security_context(rendered: Rendered, scenario: str) -> None:
    r = rendered(scenario)
    pods = [pod_spec(r)] + [p["spec"] for p in r.all("Pod")]
    for spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in sc


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_subpath_mount_anywhere(rendered: Rendered, scenario: str) -> None:
    keys = [(path, key) for path, key, _ in walk(rendered(scenario).objects) if key in ("subPath", "subPathExpr")]
    assert keys == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_only_the_policy_is_checksummed(rendered: Rendered, scenario: str) -> None:
    r = rendered(scenario)
    annotations = r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    checksums = {k for k in annotations if k.startswith("checksum/")}
    assert checksums == {"checksum/policy"}
    configmap = template_text(r, "configmap.yaml")
    assert annotations["checksum/policy"] == hashlib.sha256(configmap.encode()).hexdigest()


def template_text(r: Render, source: str) -> str:
    """The exact text helm rendered for one template file (what `include ... | sha256sum` hashes)."""
    marker = f"# Source: authgate/templates/{source}\n"
    start = r.text.index(marker) + len(marker)
    end = r.text.find("\n---", start)
    return r.text[start : end if end >= 0 else None]


def test_a_secret_change_leaves_the_pods_alone_and_a_policy_change_rolls_them() -> None:
    base = Render.of("base", [])
    more_tokens = Render.of(
        "tokens",
        [
            "--set-json",
            'secret.tokens=["ci sha256:' + "a" * 64 + ' routes=api"]',
            "--set-json",
            'secret.htpasswd=["bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]',
        ],
    )
    other_policy = Render.of("policy", ["--set", "config.policy.routes.ui.realm=elsewhere"])
    template_of = lambda r: r.one("Deployment")["spec"]["template"]  # noqa: E731
    assert "ci sha256:" + "a" * 64 in more_tokens.one("Secret", RELEASE)["stringData"]["tokens"]
    assert template_of(more_tokens) == template_of(base)
    assert template_of(other_policy) != template_of(base)


def test_the_health_port_follows_its_value_and_prometheus_may_be_left_out(rendered: Rendered) -> None:
    r = Render.of("health-port", ["--set", "health.port=9100", "--set", "networkPolicy.enabled=true"])
    c = container(r)
    assert c["args"][c["args"].index("--health-port") + 1] == "9100"
    assert {"name": "health", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
    assert {"name": "health", "port": 9100, "targetPort": "health", "protocol": "TCP"} in r.one("Service")["spec"][
        "ports"
    ]
    assert [rule["ports"] for rule in r.one("NetworkPolicy")["spec"]["ingress"]] == [
        [{"port": "http", "protocol": "TCP"}],
        [{"port": "health", "protocol": "TCP"}],
    ]
    no_scrape = Render.of(
        "no-prometheus", ["--set", "networkPolicy.enabled=true", "--set", "networkPolicy.prometheus.enabled=false"]
    )
    [rule] = no_scrape.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]  # nobody but kubelet reaches the health port


def test_default_policy_is_the_prefect_example(rendered: Rendered) -> None:
    policy = yaml.safe_load(rendered("defaults").one("ConfigMap")["data"]["policy.yaml"])
    assert policy == yaml.safe_load((REPO_ROOT / "examples" / "policy-prefect.yaml").read_text())


def test_service_and_serviceaccount(rendered: Rendered) -> None:
    r = rendered("defaults")
    service = r.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "health", "port": 8081, "targetPort": "health", "protocol": "TCP"},
    ]
    assert service["spec"]["selector"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert pod_spec(r)["automountServiceAccountToken"] is False
    assert pod_spec(r)["serviceAccountName"] == r.one("ServiceAccount")["metadata"]["name"]
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & r.kinds()


def test_secret_holds_the_values_lines(rendered: Rendered) -> None:
    secret = rendered("prefect").one("Secret", RELEASE)
    values = yaml.safe_load(PREFECT_VALUES.read_text())
    tokens = secret["stringData"]["tokens"].splitlines()
    htpasswd = secret["stringData"]["htpasswd"].splitlines()
    for line in values["secret"]["tokens"]:
        assert line in tokens
    for line in values["secret"]["htpasswd"]:
        assert line in htpasswd


def test_existing_secret_is_mounted_and_not_created(rendered: Rendered) -> None:
    r = rendered("existing-secret")
    assert [s["metadata"]["name"] for s in r.all("Secret")] == []
    volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
    assert volumes["secret"]["secret"]["secretName"] == "prefect-auth"
    test_pod = r.one("Pod")
    assert "volumes" not in test_pod["spec"]  # no test token of ours in someone else's Secret


def test_helm_test_token_matches_its_digest_in_the_secret(rendered: Rendered) -> None:
    r = rendered("defaults")
    token = __import__("base64").b64decode(r.one("Secret", f"{RELEASE}-test-token")["data"]["token"]).decode()
    line = next(x for x in r.one("Secret", RELEASE)["stringData"]["tokens"].splitlines() if x.startswith("helm-test "))
    assert line == (
        f"helm-test sha256:{hashlib.sha256(token.encode()).hexdigest()} "
        "routes=api methods=GET paths=/authgate-helm-test"
    )
    pod = r.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == f"{RELEASE}-test-token"
    # The Service must never pick the test pod.
    selector = r.one("Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


def ingresses(r: Render) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in r.all("Ingress")}


def test_prefect_ingresses_point_auth_url_at_the_service_route(rendered: Rendered) -> None:
    r = rendered("prefect")
    service = r.one("Service")
    url = (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:"
        f"{service['spec']['ports'][0]['port']}"
    )
    assert url == SERVICE_URL
    ing = ingresses(r)
    # The example turns sign-in on: a third Ingress serves authgate's own pages on the same host, unprotected.
    assert set(ing) == {"api-ingress", "ui-ingress", "sign-in-ingress"}
    api, ui, sign_in = ing["api-ingress"], ing["ui-ingress"], ing["sign-in-ingress"]
    assert api["metadata"]["annotations"][AUTH_URL] == f"{url}/auth/api"
    assert ui["metadata"]["annotations"][AUTH_URL] == f"{url}/auth/ui"
    # Only the UI sends a browser to the sign-in page; the API answers its callers' 401 as is.
    signin = "nginx.ingress.kubernetes.io/auth-signin"
    assert ui["metadata"]["annotations"][signin] == "https://$host/authgate/sign_in?rd=$escaped_request_uri"
    assert signin not in api["metadata"]["annotations"]
    assert AUTH_URL not in (sign_in["metadata"].get("annotations") or {})
    [sign_in_rule] = sign_in["spec"]["rules"]
    assert sign_in_rule["host"] == "prefect.example.com"
    assert sign_in_rule["http"]["paths"] == [
        {
            "path": "/authgate",
            "pathType": "Prefix",
            "backend": {"service": {"name": RELEASE, "port": {"name": "http"}}},
        }
    ]
    policy_routes = yaml.safe_load(r.one("ConfigMap")["data"]["policy.yaml"])["routes"]
    # People: the session first on the UI; the UI's calls to /api: the session after the machines' schemes.
    assert policy_routes["ui"]["schemes"] == ["session", "basic"]
    assert policy_routes["api"]["schemes"] == ["bearer", "basic", "session"]
    for o in (api, ui):
        assert (
            o["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-response-headers"]
            == "X-Auth-Request-User,X-Auth-Request-Scheme"
        )
        assert o["spec"]["ingressClassName"] == "nginx"
        [rule] = o["spec"]["rules"]
        assert rule["host"] == "prefect.example.com"
        [path] = rule["http"]["paths"]
        assert path["backend"] == {"service": {"name": "prefect-server", "port": {"number": 4200}}}
        assert o["spec"]["tls"] == [{"hosts": ["prefect.example.com"], "secretName": "prefect-tls"}]
    assert api["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/api"
    assert ui["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"


def test_websocket_timeouts_on_the_api_ingress_only(rendered: Rendered) -> None:
    ing = ingresses(rendered("prefect"))
    api = ing["api-ingress"]["metadata"]["annotations"]
    ui = ing["ui-ingress"]["metadata"]["annotations"]
    assert api["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert api["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert not any("timeout" in k for k in ui)


KEEPALIVE = ("auth-keepalive", "auth-keepalive-requests", "auth-keepalive-timeout")


def keepalive_annotations(ingress: dict[str, Any]) -> dict[str, str]:
    annotations = ingress["metadata"].get("annotations") or {}
    return {
        k: annotations[f"nginx.ingress.kubernetes.io/{k}"]
        for k in KEEPALIVE
        if f"nginx.ingress.kubernetes.io/{k}" in annotations
    }


def test_auth_keepalive_is_off_by_default(rendered: Rendered) -> None:
    # ingress-nginx ignores it on default controllers (use-http2) and breaks allows where it applies
    # with auth-response-headers set: docs/proxies.md, "Keepalive to authgate".
    for ingress in ingresses(rendered("prefect")).values():
        assert keepalive_annotations(ingress) == {}
        assert not any("keepalive" in k for k in ingress["metadata"].get("annotations") or {})


def test_auth_keepalive_on_the_api_ingress_only(rendered: Rendered) -> None:
    ing = ingresses(rendered("keepalive"))
    assert keepalive_annotations(ing["api-ingress"]) == {
        "auth-keepalive": "32",
        "auth-keepalive-requests": "500",
        "auth-keepalive-timeout": "50",
    }
    # The Lua path drops authgate's WWW-Authenticate: the UI's browser prompt would never appear.
    assert keepalive_annotations(ing["ui-ingress"]) == {}
    assert "nginx.ingress.kubernetes.io/auth-response-headers" not in ing["api-ingress"]["metadata"]["annotations"]


def test_auth_keepalive_zero_renders_nothing() -> None:
    r = Render.of("keepalive-zero", [*SCENARIOS["keepalive"], "--set", "ingress.authKeepalive=0"])
    for ingress in ingresses(r).values():
        assert not any("keepalive" in k for k in ingress["metadata"]["annotations"])


def test_auth_keepalive_not_rendered_for_traefik() -> None:
    r = Render.of("traefik-keepalive", [*SCENARIOS["traefik"], "--set", "ingress.authKeepalive=32"])
    assert len(r.all("Ingress")) == 2
    for o in r.objects:
        assert not any("keepalive" in k for k in o["metadata"].get("annotations") or {})
    assert all("keepalive" not in json.dumps(m["spec"]).lower() for m in r.all("Middleware"))


CACHE_KEYS = ("nginx.ingress.kubernetes.io/auth-cache-key", "nginx.ingress.kubernetes.io/auth-cache-duration")


def policy(render: Render) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    return loaded


def test_auth_cache_is_off_by_default(rendered: Rendered) -> None:
    for ingress in ingresses(rendered("prefect")).values():
        assert not any(key in (ingress["metadata"].get("annotations") or {}) for key in CACHE_KEYS)
    assert "decision_cache" not in policy(rendered("prefect"))


def test_auth_cache_keys_on_the_credential_and_sets_authgates_bound_to_the_same_seconds(rendered: Rendered) -> None:
    r = rendered("auth-cache")
    for ingress in ingresses(r).values():
        annotations = ingress["metadata"]["annotations"]
        assert annotations[CACHE_KEYS[0]] == "$remote_user$http_authorization"
        assert annotations[CACHE_KEYS[1]] == "200 30s"  # only allows, never longer than authgate's max-age
    assert policy(r)["decision_cache"] == {"max_age_seconds": 30}
    assert policy(r)["routes"] == policy(rendered("prefect-without-sign-in"))["routes"]


def test_the_server_is_the_images_default_unless_set(rendered: Rendered) -> None:
    assert "--server" not in container(rendered("defaults"))["args"]
    args = container(rendered("auth-cache"))["args"]
    assert args[args.index("--server") + 1] == "uvicorn"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_snippet_annotations(rendered: Rendered, scenario: str) -> None:
    for o in rendered(scenario).objects:
        for key in o["metadata"].get("annotations") or {}:
            assert "snippet" not in key


def test_separate_hosts(rendered: Rendered) -> None:
    ing = ingresses(rendered("separate-hosts"))
    assert ing["api-ingress"]["spec"]["rules"][0]["host"] == "api.prefect.example.com"
    assert ing["ui-ingress"]["spec"]["rules"][0]["host"] == "ui.prefect.example.com"
    assert ing["api-ingress"]["spec"]["tls"] == [{"hosts": ["api.prefect.example.com"], "secretName": "api-tls"}]
    assert ing["ui-ingress"]["spec"]["tls"] == [{"hosts": ["ui.prefect.example.com"], "secretName": "ui-tls"}]
    assert ing["api-ingress"]["metadata"]["annotations"][AUTH_URL] == f"{SERVICE_URL}/auth/api"


def test_traefik_middlewares_instead_of_nginx_annotations(rendered: Rendered) -> None:
    r = rendered("traefik")
    middlewares = {m["metadata"]["name"]: m for m in r.all("Middleware")}
    assert set(middlewares) == {f"{RELEASE}-api", f"{RELEASE}-ui"}
    for key in ("api", "ui"):
        m = middlewares[f"{RELEASE}-{key}"]
        assert m["apiVersion"] == "traefik.io/v1alpha1"
        assert m["spec"]["forwardAuth"] == {
            "address": f"{SERVICE_URL}/auth/{key}",
            "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Scheme"],
        }
        ingress = ingresses(r)[f"{key}-ingress"]
        annotations = ingress["metadata"]["annotations"]
        assert annotations == {
            "traefik.ingress.kubernetes.io/router.middlewares": f"{NAMESPACE}-{RELEASE}-{key}@kubernetescrd"
        }
        assert ingress["spec"]["ingressClassName"] == "traefik"
    assert container(r)["args"][container(r)["args"].index("--proxy") + 1] == "traefik"


def test_hpa_servicemonitor_networkpolicy_dashboard(rendered: Rendered) -> None:
    r = rendered("extras")
    deployment = r.one("Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert hpa["spec"]["minReplicas"] == 2 and "PodDisruptionBudget" in r.kinds()

    monitor = r.one("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "health"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= r.one("Service")["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    policy = r.one("NetworkPolicy")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # The decision port for the ingress controller and the helm test pod; the health port for Prometheus.
    rule, scrape = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = rule["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    } in peers
    assert scrape == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"port": "health", "protocol": "TCP"}],
    }
    test_peer = next(p for p in peers if "namespaceSelector" not in p)
    assert test_peer["podSelector"]["matchLabels"].items() <= r.one("Pod")["metadata"]["labels"].items()
    assert len(peers) == 2  # nothing else gets in


def test_dashboard_shows_decisions_denials_latency_reloads(rendered: Rendered) -> None:
    dashboard_cm = next(c for c in rendered("extras").all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard"))
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["authgate.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    documented = set(re.findall(r"`(authgate_[a-z_]+)`", (REPO_ROOT / "docs" / "configuration.md").read_text()))
    used = {re.sub(r"_bucket$", "", m) for m in re.findall(r"authgate_[a-z_]+", exprs)}
    assert used <= documented, used - documented
    assert "sum by (reason)" in exprs and 'result="deny"' in exprs
    assert "histogram_quantile(0.99" in exprs and "authgate_decision_duration_seconds_bucket" in exprs
    assert "authgate_reloads_total" in exprs and "authgate_decisions_total" in exprs


def test_watch_mode_rbac_and_token_automount(rendered: Rendered) -> None:
    r = rendered("watch")
    args = container(r)["args"]
    assert args[:3] == ["serve", "--watch-secret", f"{NAMESPACE}/prefect-auth"]
    assert "--secret-dir" not in args
    assert pod_spec(r)["automountServiceAccountToken"] is True
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is True
    roles = {o["metadata"]["name"]: o for o in r.all("Role")}
    watch = roles[f"{RELEASE}-watch-secret"]
    assert watch["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["prefect-auth"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    operator = roles[f"{RELEASE}-operator"]
    assert operator["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["prefect-auth"], "verbs": ["get", "patch"]}
    ]
    bindings = {o["metadata"]["name"]: o for o in r.all("RoleBinding")}
    assert bindings[f"{RELEASE}-watch-secret"]["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
    ]
    assert bindings[f"{RELEASE}-watch-secret"]["roleRef"]["name"] == f"{RELEASE}-watch-secret"
    assert bindings[f"{RELEASE}-operator"]["subjects"][0]["name"] == "platform-admins"
    assert not {"ClusterRole", "ClusterRoleBinding"} & r.kinds()


def test_the_shared_throttle_is_off_by_default(rendered: Rendered) -> None:
    r = rendered("defaults")
    policy = yaml.safe_load(r.one("ConfigMap")["data"]["policy.yaml"])
    assert "throttle" not in policy
    assert "env" not in container(r)
    assert {v["name"] for v in pod_spec(r)["volumes"]} == {"secret", "policy", "tmp"}


def test_the_shared_throttle_goes_into_the_policy_with_its_password_and_ca_from_secrets(rendered: Rendered) -> None:
    r = rendered("redis")
    text = r.one("ConfigMap")["data"]["policy.yaml"]
    settings = parse_policy(yaml.safe_load(text), "policy.yaml").throttle  # what authgate itself will read
    assert settings.max_failures_per_user == 5  # config.policy.throttle keeps its own keys
    redis = settings.redis
    assert redis is not None
    assert redis.url == "rediss://redis-master.redis.svc.cluster.local:6380/0"
    assert (redis.key_prefix, redis.timeout_seconds) == ("authgate:", 0.5)
    assert redis.password_env == "AUTHGATE_REDIS_PASSWORD" and redis.password_file is None
    assert redis.tls_ca_file == "/etc/authgate/redis-tls/ca.crt"
    c = container(r)
    assert c["env"] == [
        {
            "name": "AUTHGATE_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
        },
        {"name": "TZ", "value": "UTC"},
    ]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
    assert mounts["redis-tls"] == {"name": "redis-tls", "mountPath": "/etc/authgate/redis-tls", "readOnly": True}
    assert volumes["redis-tls"]["secret"]["secretName"] == "redis-ca"
    assert "redis-auth" not in text and "redis-ca" not in text  # the policy names a variable and a path only


def test_a_plain_redis_url_without_password_renders_only_the_url() -> None:
    r = Render.of("redis-plain", ["--set", "throttle.redis.url=redis://redis.redis.svc:6379/2"])
    policy = yaml.safe_load(r.one("ConfigMap")["data"]["policy.yaml"])
    assert policy["throttle"] == {
        "redis": {"url": "redis://redis.redis.svc:6379/2", "key_prefix": "authgate:", "timeout_seconds": 0.5}
    }
    assert "env" not in container(r) and "redis-tls" not in {v["name"] for v in pod_spec(r)["volumes"]}


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "b" * 64
    r = Render.of("digest", ["--set", f"image.digest={digest}", "--set", "image.tag=9.9.9"])
    assert container(r)["image"] == f"ghcr.io/authgate/authgate@{digest}"


def test_notes_say_how_to_make_a_token_and_try_it() -> None:
    # `helm template` does not print NOTES; `helm install --dry-run=client` does, without a cluster.
    notes = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "-f", str(PREFECT_VALUES)
    ).stdout
    notes = notes[notes.index("NOTES:") :]
    assert "authgate new-token" in notes
    assert "curl" in notes and "Authorization: Bearer $TOKEN" in notes
    assert "helm test authgate" in notes
    assert "https://prefect.example.com/api" in notes


def test_the_kubernetes_jwt_issuer_gets_the_pods_token_and_only_issuer_discovery(rendered: Rendered) -> None:
    r = rendered("jwt-kubernetes")
    assert pod_spec(r)["automountServiceAccountToken"] is True
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is True
    bindings = {b["roleRef"]["name"]: b for b in r.all("ClusterRoleBinding")}
    assert set(bindings) == {"system:service-account-issuer-discovery", "system:auth-delegator"}
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert "Role" not in r.kinds()  # no Secret access comes with it
    policy = parse_policy(yaml.safe_load(r.one("ConfigMap")["data"]["policy.yaml"]), "chart")
    (issuer,) = policy.routes["api"].jwt_issuers
    assert (issuer.source, issuer.audiences, issuer.token_review) == ("kubernetes", frozenset({"authgate"}), True)
    # off by default: no token, no binding
    assert pod_spec(rendered("prefect"))["automountServiceAccountToken"] is False
    assert not rendered("prefect").all("ClusterRoleBinding")
