"""Rendering the chart with the real helm binary, and picking objects out of a render."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool

CHART = REPO_ROOT / "charts" / "authgate"
PREFECT_VALUES = CHART / "examples" / "prefect-values.yaml"
RELEASE = "authgate"
NAMESPACE = "prefect"

GATEWAY_KINDS = ("filter", "envoy-gateway", "istio")


def _prefect(*settings: str) -> list[str]:
    """The Prefect example values with each of ``settings`` (``key=value``, or ``key:=json``) on top. The
    example turns sign-in on; the scenarios about other parts turn it off unless they set it themselves (the
    ``sign-in*`` scenarios and ``prefect`` itself render it)."""
    args = ["-f", str(PREFECT_VALUES)]
    if not any(s.startswith("signIn.enabled=") for s in settings):
        args += ["--set", "signIn.enabled=false"]
    for setting in settings:
        key, json_sep, json_value = setting.partition(":=")
        args += ["--set-json", f"{key}={json_value}"] if json_sep else ["--set", setting]
    return args


def _gateway(kind: str, *settings: str) -> list[str]:
    """HTTPRoutes with ``gateway.externalAuth=kind`` in the application's namespace "apps" (authgate in
    "prefect": a ReferenceGrant), attached to Gateway edge, plus ``settings``."""
    edge = '[{"name":"edge","namespace":"gateway-system","sectionName":"https"}]'
    return _prefect(
        "gateway.enabled=true",
        f"gateway.externalAuth={kind}",
        "ingress.namespace=apps",
        f"gateway.parentRefs:={edge}",
        *settings,
    )


# The example with sign-in off: the scenarios about other parts of the chart (sign-in has its own).
PREFECT_WITHOUT_SIGN_IN = ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=false"]

NO_INGRESS = ("ingress.api.enabled=false", "ingress.ui.enabled=false")


# Named value sets the tests render once per session (each `helm template` takes ~0.1 s).
SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    # The example as shipped: sign-in on.
    "prefect": ["-f", str(PREFECT_VALUES)],
    "prefect-without-sign-in": PREFECT_WITHOUT_SIGN_IN,
    "existing-secret": ["--set", "secret.create=false", "--set", "secret.existingSecret=prefect-auth"],
    "separate-hosts": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "ingress.api.host=api.prefect.example.com",
        "--set",
        "ingress.ui.host=ui.prefect.example.com",
        "--set",
        "ingress.api.tlsSecretName=api-tls",
        "--set",
        "ingress.ui.tlsSecretName=ui-tls",
    ],
    "extras": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "dashboard.enabled=true",
    ],
    "jwt-kubernetes": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "jwt.kubernetesIssuer.enabled=true",
        "--set",
        "jwt.kubernetesIssuer.tokenReview=true",
        "--set-json",
        'config.policy.routes.api.jwt_issuers=[{"kubernetes": true, "audiences": ["authgate"], "token_review": true}]',
    ],
    "watch": [
        "--set",
        "secret.create=false",
        "--set",
        "secret.existingSecret=prefect-auth",
        "--set",
        "watchSecret.enabled=true",
        "--set",
        "rbac.operator.create=true",
        "--set-json",
        'rbac.operator.subjects=[{"kind":"Group","name":"platform-admins","apiGroup":"rbac.authorization.k8s.io"}]',
    ],
    "keepalive": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "ingress.authKeepalive=32",
        "--set",
        "ingress.authKeepaliveRequests=500",
        "--set",
        "ingress.authKeepaliveTimeout=50",
        "--set-json",
        "ingress.authResponseHeaders=[]",
    ],
    "auth-cache": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "ingress.authCache.enabled=true",
        "--set",
        "ingress.authCache.seconds=30",
        "--set",
        "config.server=uvicorn",
    ],
    # The Gateway API parts, in the application's namespace "apps" (authgate in "prefect": a ReferenceGrant).
    **{f"gateway-{kind}": _gateway(kind) for kind in GATEWAY_KINDS},
    # Only HTTPRoutes (no Ingress), authgate in the application's namespace.
    "gateway-only": _prefect(
        *NO_INGRESS, "gateway.enabled=true", 'gateway.parentRefs:=[{"name":"edge","namespace":"gateway-system"}]'
    ),
    # Envoy's gRPC ext_authz: Contour (HTTPProxy + ExtensionService) in the application's namespace "apps",
    # with the Ingresses off; and each gateway kind over gRPC (the filter with one route only, and with both
    # parts, decided by the path each part's route claims).
    "grpc-contour": _prefect(
        *NO_INGRESS, "ingress.namespace=apps", "grpc.enabled=true", "contour.enabled=true", "networkPolicy.enabled=true"
    ),
    **{
        f"grpc-{kind}": _gateway(kind, "grpc.enabled=true", *(["gateway.ui.enabled=false"] if kind == "filter" else []))
        for kind in GATEWAY_KINDS
    },
    "grpc-filter-both": _gateway("filter", "grpc.enabled=true"),
    "redis": [
        "--set",
        "throttle.redis.url=rediss://redis-master.redis.svc.cluster.local:6380/0",
        "--set",
        "throttle.redis.existingSecret=redis-auth",
        "--set",
        "throttle.redis.tlsCASecret=redis-ca",
        "--set",
        "config.policy.throttle.max_failures_per_user=5",
        "--set-json",
        'config.extraEnv=[{"name":"TZ","value":"UTC"}]',
    ],
    "traefik": [
        *PREFECT_WITHOUT_SIGN_IN,
        "--set",
        "ingress.provider=traefik",
        "--set",
        "ingress.className=traefik",
        "--set",
        "config.proxy=traefik",
    ],
    # Sign-in (signIn.enabled) on every kind of front door the chart renders.
    "sign-in": _prefect("signIn.enabled=true"),
    "sign-in-traefik": _prefect(
        "signIn.enabled=true", "ingress.provider=traefik", "ingress.className=traefik", "config.proxy=traefik"
    ),
    **{f"sign-in-{kind}": _gateway(kind, "signIn.enabled=true", *NO_INGRESS) for kind in GATEWAY_KINDS},
    "sign-in-contour": _prefect(
        *NO_INGRESS,
        "ingress.namespace=apps",
        "grpc.enabled=true",
        "contour.enabled=true",
        "signIn.enabled=true",
        "signIn.prefix=/_auth/",
    ),
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the real helm; the result keeps stdout and stderr."""
    return subprocess.run([str(require_tool("helm")), *args], capture_output=True, text=True, check=check, timeout=60)


def template(
    values_args: Sequence[str], *, release: str = RELEASE, namespace: str = NAMESPACE, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return helm("template", release, str(CHART), "--namespace", namespace, *values_args, check=check)


@dataclass
class Render:
    """One `helm template` output: its text and its objects."""

    name: str
    text: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, values_args: Sequence[str]) -> Render:
        text = template(values_args).stdout
        return cls(name, text, [doc for doc in yaml.safe_load_all(text) if doc])

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.name}.yaml"
        path.write_text(self.text)
        return path
