"""Running what a render of the chart describes: its credentials and policy laid out as kubelet mounts them,
and authgate started with the Deployment's arguments. Shared by the end-to-end modules that drive real
proxies from the chart's own output."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.chart.render import RELEASE, Render
from tests.e2e.nginx import DEFAULT_AUTH_CACHE_DURATION, IngressSpec, to_loopback
from tests.e2e.traefik import TraefikRoute
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess

NGINX = "nginx.ingress.kubernetes.io/"


def sha1_htpasswd(user: str, password: str) -> str:
    return f"{user}:{{SHA}}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def credential_values(tokens: Mapping[str, tuple[str, str]], users: Mapping[str, str]) -> list[str]:
    """helm arguments putting test credentials in the chart's Secret: ``tokens`` maps a name to (token,
    attributes), stored as digests; ``users`` maps a user to a password, stored as ``{SHA}``."""
    lines = [
        f"{name} sha256:{hashlib.sha256(token.encode()).hexdigest()} {attrs}".rstrip()
        for name, (token, attrs) in tokens.items()
    ]
    return [
        "--set-json",
        "secret.tokens=" + json.dumps(lines),
        "--set-json",
        "secret.htpasswd=" + json.dumps([sha1_htpasswd(user, password) for user, password in users.items()]),
    ]


def arg_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@dataclass
class RenderedAuthgate:
    """The Secret and policy of a render on disk, and the Deployment's ``--proxy``/``--log-level``/``--server``."""

    secret: KubeletSecretDir
    policy: Path
    proxy: str
    log_level: str
    server: str | None = None

    @classmethod
    def lay_out(cls, render: Render, workdir: Path) -> RenderedAuthgate:
        secret = render.one("Secret", RELEASE)["stringData"]
        secret_dir = KubeletSecretDir(workdir / "secret")
        secret_dir.write({key: secret[key] for key in ("tokens", "htpasswd", "session-keys") if key in secret})
        policy = workdir / "policy.yaml"
        policy.write_text(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
        [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
        args: list[str] = container["args"]
        server = arg_value(args, "--server") if "--server" in args else None
        return cls(secret_dir, policy, arg_value(args, "--proxy"), arg_value(args, "--log-level"), server)

    def process(
        self, log_path: Path, *, proxy: str | None = None, grpc: bool = False, extra_args: Sequence[str] = ()
    ) -> AuthgateProcess:
        """authgate on these files, with the rendered ``--proxy`` unless another is given (not yet ready);
        ``grpc``: with ``--grpc-port`` (a free one); ``extra_args``: more of the rendered arguments."""
        return AuthgateProcess(
            self.secret.path,
            log_path,
            config=self.policy,
            proxy=proxy or self.proxy,
            log_level=self.log_level,
            server=self.server,
            grpc=grpc,
            extra_args=extra_args,
        )


def service_address(render: Render) -> tuple[str, int]:
    """The in-cluster host name and ``http`` port of the chart's Service."""
    service = render.one("Service")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    [port] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    return host, int(port)


def nginx_ingress_specs(render: Render, *, authgate_port: int, backend: str) -> list[IngressSpec]:
    """Every rendered Ingress (nginx class) as ingress-nginx would serve it, addresses moved to loopback:
    ``auth-url`` (checked to name the chart's Service) to authgate on ``authgate_port``; a backend that is the
    chart's Service (the sign-in Ingress) to authgate too, the application's to ``backend``; and
    ``auth-signin``'s ``https://$host`` to ``https://$http_host``, because nginx here listens on a free port,
    not 443 (``$host`` has no port, ``$http_host`` the one the browser used)."""
    service_host, service_port = service_address(render)
    specs = []
    for ingress in render.all("Ingress"):
        annotations: dict[str, str] = ingress["metadata"].get("annotations") or {}
        auth_url = annotations.get(NGINX + "auth-url")
        if auth_url is not None:
            assert auth_url.startswith(f"http://{service_host}:{service_port}/"), auth_url
            auth_url = to_loopback(auth_url, authgate_port)
        signin = annotations.get(NGINX + "auth-signin")
        if signin is not None:
            assert signin.startswith("https://$host/"), signin
            signin = "https://$http_host/" + signin.removeprefix("https://$host/")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                service = path["backend"]["service"]
                if service["name"] == render.one("Service")["metadata"]["name"]:
                    assert service["port"] in ({"name": "http"}, {"number": service_port}), service
                    target = f"127.0.0.1:{authgate_port}"
                else:
                    target = backend
                specs.append(
                    IngressSpec(
                        name=ingress["metadata"]["name"],
                        host=rule["host"],
                        path=path["path"],
                        path_type=path["pathType"],
                        backend=target,
                        auth_url=auth_url,
                        auth_response_headers=tuple(
                            h.strip() for h in annotations.get(NGINX + "auth-response-headers", "").split(",") if h
                        ),
                        proxy_read_timeout=int(annotations.get(NGINX + "proxy-read-timeout", 60)),
                        proxy_send_timeout=int(annotations.get(NGINX + "proxy-send-timeout", 60)),
                        auth_cache_key=annotations.get(NGINX + "auth-cache-key"),
                        auth_cache_duration=tuple(
                            d.strip() for d in annotations.get(NGINX + "auth-cache-duration", "").split(",") if d
                        )
                        or DEFAULT_AUTH_CACHE_DURATION,
                        auth_keepalive=int(annotations.get(NGINX + "auth-keepalive", 0)),
                        auth_keepalive_requests=int(annotations.get(NGINX + "auth-keepalive-requests", 1000)),
                        auth_keepalive_timeout=int(annotations.get(NGINX + "auth-keepalive-timeout", 60)),
                        auth_signin=signin,
                        auth_signin_redirect_param=annotations.get(NGINX + "auth-signin-redirect-param", "rd"),
                        auth_always_set_cookie=annotations.get(NGINX + "auth-always-set-cookie") == "true",
                    )
                )
    return specs


def traefik_routes(render: Render, *, authgate_port: int, backend: str) -> list[TraefikRoute]:
    """The rendered Ingresses of ``ingress.provider: traefik`` as Traefik's Kubernetes Ingress provider serves
    them: one router per path (``Host && PathPrefix``, longer paths first), the ForwardAuth Middleware named
    in ``router.middlewares`` (its ``address`` checked to name the chart's Service, moved to authgate on
    ``authgate_port``; ``authResponseHeaders``; ``addAuthCookiesToResponse``), backends as in
    :func:`nginx_ingress_specs`."""
    service_host, service_port = service_address(render)
    service_name = render.one("Service")["metadata"]["name"]
    middlewares = {
        f"{m['metadata']['namespace']}-{m['metadata']['name']}@kubernetescrd": m["spec"]["forwardAuth"]
        for m in render.all("Middleware")
    }
    routes = []
    for ingress in render.all("Ingress"):
        annotations: dict[str, str] = ingress["metadata"].get("annotations") or {}
        attached = annotations.get("traefik.ingress.kubernetes.io/router.middlewares")
        forward_auth = middlewares[attached] if attached else None
        address = None
        if forward_auth is not None:
            assert forward_auth["address"].startswith(f"http://{service_host}:{service_port}/"), forward_auth
            address = to_loopback(forward_auth["address"], authgate_port)
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["pathType"] == "Prefix", path
                target = f"127.0.0.1:{authgate_port}" if path["backend"]["service"]["name"] == service_name else backend
                routes.append(
                    TraefikRoute(
                        name=ingress["metadata"]["name"],
                        host=rule["host"],
                        path_prefix=path["path"],
                        backend=target,
                        auth_address=address,
                        auth_response_headers=tuple((forward_auth or {}).get("authResponseHeaders", ())),
                        auth_cookies=tuple((forward_auth or {}).get("addAuthCookiesToResponse", ())),
                        priority=len(path["path"]) + 1,
                    )
                )
    return routes
