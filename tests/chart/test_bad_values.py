"""Values that cannot work fail at install, with a message that names the keys (schema or `fail`)."""

from __future__ import annotations

import pytest

from tests.chart.render import PREFECT_VALUES, template

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

PREFECT = ["-f", str(PREFECT_VALUES)]
GATEWAY = [*PREFECT, "--set", "gateway.enabled=true", "--set-json", 'gateway.parentRefs=[{"name":"g"}]']
WITH_INGRESS = ["--set", "ingress.api.enabled=true", "--set", "ingress.backend.serviceName=prefect-server"]

CASES = {
    "no secret source": (["--set", "secret.create=false"], "no Secret source"),
    "existing secret and create": (
        ["--set", "secret.existingSecret=mine"],
        'secret.existingSecret ("mine") and secret.create=true contradict',
    ),
    "lines without create": (
        [
            "--set",
            "secret.create=false",
            "--set",
            "secret.existingSecret=mine",
            "--set-json",
            'secret.tokens=["a sha256:' + "0" * 64 + '"]',
        ],
        "only used with secret.create=true",
    ),
    "plain token": (
        ["--set-json", 'secret.tokens=["ci plain-token-0123456789abcdef routes=api"]'],
        "secret.tokens[0] (ci): the secret is a plain token",
    ),
    "plain-text password": (
        ["--set-json", 'secret.htpasswd=["alice:password"]'],
        "secret.htpasswd[0]: the hash must be bcrypt",
    ),
    "ingress without host": (WITH_INGRESS, "ingress.api.enabled=true but it has no host"),
    "ingress without backend": (
        ["--set", "ingress.ui.enabled=true", "--set", "ingress.host=p.example.com"],
        "ingress.backend.serviceName",
    ),
    "ingress route not in policy": (
        [*PREFECT, "--set", "ingress.api.route=admin"],
        'ingress.api.route="admin" is not a route of config.policy.routes (api, ui)',
    ),
    "api and ui on the same path": ([*PREFECT, "--set", "ingress.api.path=/"], "both serve prefect.example.com/"),
    "traefik provider, nginx headers": (
        [*PREFECT, "--set", "ingress.provider=traefik", "--set", "config.proxy=ingress-nginx"],
        "set config.proxy=traefik",
    ),
    "nginx provider, traefik headers": (
        [*PREFECT, "--set", "config.proxy=traefik"],
        "set config.proxy=ingress-nginx,traefik",
    ),
    "auth cache with traefik": (
        [
            *PREFECT,
            "--set",
            "ingress.provider=traefik",
            "--set",
            "config.proxy=traefik",
            "--set",
            "ingress.authCache.enabled=true",
        ],
        "Traefik's ForwardAuth has no cache: set ingress.authCache.enabled=false",
    ),
    "auth cache against the policy's own bound": (
        [
            *PREFECT,
            "--set",
            "ingress.authCache.enabled=true",
            "--set",
            "config.policy.decision_cache.max_age_seconds=5",
        ],
        "config.policy.decision_cache.max_age_seconds (5) and ingress.authCache.seconds (60) contradict",
    ),
    "server unknown": ([*PREFECT, "--set", "config.server=hypercorn"], "/config/server"),
    "gateway without parentRefs": ([*PREFECT, "--set", "gateway.enabled=true"], "gateway.parentRefs is empty"),
    "gateway filter, ingress-only proxy": (
        [
            *GATEWAY,
            "--set",
            "config.proxy=ingress-nginx\\,traefik",
        ],
        "gateway.externalAuth=filter needs config.proxy to include path-prefix",
    ),
    "gateway envoy-gateway, gateway fabric proxy": (
        [
            *GATEWAY,
            "--set",
            "gateway.externalAuth=envoy-gateway",
            "--set",
            "config.proxy=ingress-nginx\\,nginx-gateway-fabric",
        ],
        "config.proxy must include path-prefix",
    ),
    "gateway route not in policy": (
        [
            *GATEWAY,
            "--set",
            "gateway.api.route=admin",
        ],
        'gateway.api.route="admin" is not a route',
    ),
    "unknown proxy door": ([*PREFECT, "--set", "config.proxy=haproxy"], "/config/proxy"),
    "grpc on the http port": (["--set", "grpc.enabled=true", "--set", "grpc.port=8080"], "grpc.port=8080 is the"),
    "health on the http port": (["--set", "health.port=8080"], "health.port=8080 is the container's HTTP port"),
    "health on the grpc port": (
        ["--set", "grpc.enabled=true", "--set", "health.port=9001"],
        "health.port=9001 is also grpc.port",
    ),
    "health port out of range": (["--set", "health.port=0"], "/health/port"),
    "grpc default route not in policy": (
        ["--set", "grpc.enabled=true", "--set", "grpc.defaultRoute=admin"],
        'grpc.defaultRoute="admin" is not a route of config.policy.routes (api, ui)',
    ),
    "grpc default route without grpc": (["--set", "grpc.defaultRoute=api"], "grpc.enabled=false"),
    "gateway filter over grpc, a part's path no route claims": (
        [*GATEWAY, "--set", "grpc.enabled=true", "--set", "gateway.ui.path=/prefect"],
        "gateway.externalAuth=filter: the filter's gRPC carries no per-route context, and the policy route claiming"
        " the original path decides: config.policy.routes.ui.path_prefixes must include gateway.ui.path (/prefect)",
    ),
    "gateway filter over grpc with two routes and a default route": (
        [*GATEWAY, "--set", "grpc.enabled=true", "--set", "grpc.defaultRoute=api"],
        "grpc.defaultRoute=api would decide every check on one route, but the enabled gateway parts use api,ui",
    ),
    "gateway istio, a part's path no route claims": (
        [*GATEWAY, "--set", "gateway.externalAuth=istio", "--set", "gateway.api.path=/prefect-api"],
        "config.policy.routes.api.path_prefixes must include gateway.api.path (/prefect-api), got [/api]",
    ),
    "gateway istio, a route claiming nothing": (
        [*GATEWAY, "--set", "gateway.externalAuth=istio", "--set-json", "config.policy.routes.ui.path_prefixes=[]"],
        "config.policy.routes.ui.path_prefixes must include gateway.ui.path (/), got []",
    ),
    "contour without grpc": ([*PREFECT, "--set", "contour.enabled=true"], "Contour asks authorization services only"),
    "contour without tls": (
        [*PREFECT, "--set", "contour.enabled=true", "--set", "grpc.enabled=true", "--set", "ingress.tls.secretName="],
        "Contour applies authorization only to TLS virtual hosts",
    ),
    "contour without host": (
        ["--set", "contour.enabled=true", "--set", "grpc.enabled=true"],
        "contour.enabled=true needs ingress.host",
    ),
    "contour route not in policy": (
        [*PREFECT, "--set", "contour.enabled=true", "--set", "grpc.enabled=true", "--set", "contour.ui.route=web"],
        'contour.ui.route="web" is not a route',
    ),
    "contour api and ui on one path": (
        [*PREFECT, "--set", "contour.enabled=true", "--set", "grpc.enabled=true", "--set", "contour.api.path=/"],
        "contour.api and contour.ui both serve /",
    ),
    "contour bad timeout": (["--set", "contour.authTimeout=10 seconds"], "/contour/authTimeout"),
    "auth keepalive with auth response headers": (
        [*PREFECT, "--set", "ingress.authKeepalive=32"],
        "ingress.authKeepalive=32 needs ingress.authResponseHeaders: []",
    ),
    "auth response headers naming one identity header of two": (
        [*PREFECT, "--set-json", 'ingress.authResponseHeaders=["X-Auth-Request-User"]'],
        "ingress.authResponseHeaders lists X-Auth-Request-User but not X-Auth-Request-Scheme",
    ),
    "auth response headers naming no identity header": (
        ["--set-json", 'ingress.authResponseHeaders=["X-Request-Id"]'],
        "ingress.authResponseHeaders lists X-Request-Id but not X-Auth-Request-User",
    ),
    "auth keepalive timeout past authgate's idle timeout": (
        ["--set", "ingress.authKeepaliveTimeout=75"],
        "/ingress/authKeepaliveTimeout",
    ),
    "operator role on a chart-owned secret": (
        ["--set", "rbac.operator.create=true"],
        "use secret.create=false with secret.existingSecret",
    ),
    "pdb min and max": (["--set", "podDisruptionBudget.maxUnavailable=1"], "set either minAvailable or maxUnavailable"),
    "hpa min above max": (
        [
            "--set",
            "autoscaling.enabled=true",
            "--set",
            "autoscaling.minReplicas=5",
            "--set",
            "autoscaling.maxReplicas=3",
        ],
        "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (3)",
    ),
    "test route not in policy": (["--set", "tests.route=nope"], 'tests.route="nope" is not a route'),
    "redis in both the policy and the values": (
        [
            "--set",
            "throttle.redis.url=redis://r:6379",
            "--set-json",
            'config.policy.throttle={"redis":{"url":"redis://other"}}',
        ],
        "throttle.redis.url and config.policy.throttle.redis both set the shared throttle",
    ),
    "redis for a throttle that is off": (
        ["--set", "throttle.redis.url=redis://r:6379", "--set", "config.policy.throttle.enabled=false"],
        "config.policy.throttle.enabled=false turns off",
    ),
    "redis password secret without a url": (
        ["--set", "throttle.redis.existingSecret=redis-auth"],
        "throttle.redis.url is empty",
    ),
    "redis ca without tls": (
        ["--set", "throttle.redis.url=redis://r:6379", "--set", "throttle.redis.tlsCASecret=redis-ca"],
        'throttle.redis.url="redis://r:6379" is not rediss://',
    ),
    "redis password in the url": (["--set", "throttle.redis.url=redis://:pw@r:6379"], "/throttle/redis/url"),
    "redis url options": (["--set", "throttle.redis.url=rediss://r?ssl_cert_reqs=none"], "/throttle/redis/url"),
    "misspelt redis key": (["--set", "throttle.redis.password=pw"], "additional properties 'password' not allowed"),
    # The schema (values.schema.json) catches these before any template runs.
    "misspelt key": (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
    "misspelt nested key": (["--set", "ingress.api.hots=x"], "additional properties 'hots' not allowed"),
    "unknown proxy": (["--set", "config.proxy=haproxy"], "/config/proxy"),
    "bad host name": ([*PREFECT, "--set", "ingress.host=Prefect_Example"], "/ingress/host"),
    "replicas not a number": (["--set", "replicaCount=two"], "/replicaCount"),
    "port out of range": (["--set", "service.port=70000"], "/service/port"),
    "policy without routes": (
        ["--set-json", 'config.policy={"throttle":{"enabled":true}}', "--set", "config.policy.routes=null"],
        "routes",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_values_fail_with_a_clear_message(case: str) -> None:
    args, message = CASES[case]
    result = template(args, check=False)
    assert result.returncode != 0, f"{case}: rendered anyway"
    assert message in result.stderr, result.stderr
