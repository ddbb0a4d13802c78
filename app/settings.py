"""Process settings: a plain frozen object, loaded and validated once from flags and ``AUTHGATE_*``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from app.errors import ConfigError

ProxyKind = Literal["ingress-nginx", "traefik", "path-prefix", "nginx-gateway-fabric", "envoy"]
LogLevel = Literal["debug", "info", "warning", "error"]
ServerKind = Literal["granian", "uvicorn"]

PROXY_KINDS: tuple[str, ...] = get_args(ProxyKind)
# The chart's Ingresses are served unchanged by ingress-nginx and by Traefik's ingress-nginx provider.
DEFAULT_PROXY: tuple[ProxyKind, ...] = ("ingress-nginx", "traefik")
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
DEFAULT_PORT = 8080
DEFAULT_HEALTH_PORT = 8081  # what the chart and manifests/ give --health-port
SERVER_KINDS: tuple[str, ...] = get_args(ServerKind)
# Measured with bench/run.py on ingress-nginx's default path (a new connection per auth call): see
# docs/benchmarks.md.
DEFAULT_SERVER: ServerKind = "granian"
# granian's HTTP/1 parser (hyper) refuses a head of more than 100 header lines itself, whatever authgate says.
GRANIAN_MAX_HEADERS = 100


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one client may send. The defaults fit what ingress-nginx, Traefik and Envoy send to an auth
    server (a few dozen headers, an 8 KiB Authorization, a large Cookie) with room to spare."""

    # Seconds from a request's first byte (from the connection's opening, for its first request) until
    # its head and any body have arrived. A head still incomplete then is answered 408; otherwise the
    # connection is closed.
    read_timeout: float = 10.0
    # Bytes of request line and header lines, CRLFs included. Every one of the header lines counts:
    # ingress-nginx forwards all of the client's headers to the auth subrequest.
    max_head_bytes: int = 64 * 1024
    # Header lines in one request; Envoy and Apache use the same default.
    max_headers: int = 100
    # Open connections served at once, idle keep-alive and half-sent ones included; a request arriving
    # while more are open is answered 503 (uvicorn's limit_concurrency, which counts the asking one too).
    # 1024 worst-case heads of 64 KiB are 64 MiB, inside the chart's 256 Mi memory limit.
    max_connections: int = 1024

    def uvicorn_limit_concurrency(self) -> int:
        """uvicorn answers 503 when ``len(connections) >= limit_concurrency``, the asking one included."""
        return self.max_connections + 1


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    secret_dir: Path = Path("/etc/authgate/secret")
    config: Path | None = None
    proxy: tuple[ProxyKind, ...] = DEFAULT_PROXY  # the front doors believed (--proxy, comma-separated)
    log_level: LogLevel = "info"
    watch_secret: tuple[str, str] | None = None  # (namespace, name)
    limits: RequestLimits = RequestLimits()
    # Envoy's gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) on this port, same host; None = off.
    grpc_port: int | None = None
    # The route of a CheckRequest whose context_extensions name none (None: such a request is refused).
    grpc_default_route: str | None = None
    # /healthz, /readyz and /metrics on a listener of their own, same host (app/health_server.py); None =
    # off (they stay on the decision port either way). The chart and manifests/ set DEFAULT_HEALTH_PORT.
    health_port: int | None = None
    server: ServerKind = DEFAULT_SERVER  # the HTTP server running the one ASGI app (app/server.py)


# flag name -> environment variable
ENV_NAMES: dict[str, str] = {
    "host": "AUTHGATE_HOST",
    "port": "AUTHGATE_PORT",
    "secret_dir": "AUTHGATE_SECRET_DIR",
    "config": "AUTHGATE_CONFIG",
    "proxy": "AUTHGATE_PROXY",
    "log_level": "AUTHGATE_LOG_LEVEL",
    "watch_secret": "AUTHGATE_WATCH_SECRET",
    "read_timeout": "AUTHGATE_READ_TIMEOUT",
    "max_head_bytes": "AUTHGATE_MAX_HEAD_BYTES",
    "max_headers": "AUTHGATE_MAX_HEADERS",
    "max_connections": "AUTHGATE_MAX_CONNECTIONS",
    "grpc_port": "AUTHGATE_GRPC_PORT",
    "grpc_default_route": "AUTHGATE_GRPC_DEFAULT_ROUTE",
    "health_port": "AUTHGATE_HEALTH_PORT",
    "server": "AUTHGATE_SERVER",
}
LIMIT_KEYS = ("read_timeout", "max_head_bytes", "max_headers", "max_connections")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def parse_proxy(value: str, where: str) -> tuple[ProxyKind, ...]:
    """``--proxy``: one front door, or several (``ingress-nginx,traefik``) that are then all believed and
    cross-checked (app.doors.reading). ``envoy`` is the earlier name of ``path-prefix``."""
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if name not in PROXY_KINDS:
            raise ConfigError(
                f"{name!r} is not a front door (known: {', '.join(PROXY_KINDS)}; several as a comma list)", where
            )
    doors = ["path-prefix" if name == "envoy" else name for name in names]
    if len(set(doors)) != len(doors):
        raise ConfigError(f"names a front door twice: {value!r}", where)
    return tuple(doors)  # type: ignore[arg-type]  # each name was checked against PROXY_KINDS


def load_settings(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Settings:
    """Builds Settings from flag values (None = not given), falling back to the environment.

    Raises ConfigError naming the flag (or variable) and the bad value.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[str, str]] = {}  # key -> (where it came from, value)
    for key, env_name in ENV_NAMES.items():
        value = flags.get(key)
        if value is not None:
            raw[key] = (_flag(key), value)
        elif env.get(env_name, "") != "":
            raw[key] = (env_name, env[env_name])

    values: dict[str, object] = {}
    if "host" in raw:
        where, value = raw["host"]
        if not value.strip():
            raise ConfigError(f"must not be empty, got {value!r}", where)
        values["host"] = value
    for key in ("port", "grpc_port", "health_port"):
        if key in raw:
            where, value = raw[key]
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
                raise ConfigError(f"must be an integer from 1 to 65535, got {value!r}", where)
            values[key] = int(value)
    if "grpc_port" in values and values["grpc_port"] == values.get("port", DEFAULT_PORT):
        raise ConfigError(f"must differ from the HTTP port, got {values['grpc_port']}", raw["grpc_port"][0])
    if "health_port" in values:
        others = {"the HTTP port": values.get("port", DEFAULT_PORT), "the gRPC port": values.get("grpc_port")}
        for what, port in others.items():
            if values["health_port"] == port:
                raise ConfigError(f"must differ from {what}, got {port}", raw["health_port"][0])
    if "grpc_default_route" in raw:
        where, value = raw["grpc_default_route"]
        if "grpc_port" not in values:
            raise ConfigError("has no effect without --grpc-port (AUTHGATE_GRPC_PORT)", where)
        if not value.strip() or value != value.strip():
            raise ConfigError(f"must be a route name, got {value!r}", where)
        values["grpc_default_route"] = value
    if "secret_dir" in raw:
        values["secret_dir"] = Path(raw["secret_dir"][1])
    if "config" in raw:
        where, value = raw["config"]
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"no such file: {value!r}", where)
        values["config"] = path
    if "proxy" in raw:
        where, value = raw["proxy"]
        values["proxy"] = parse_proxy(value, where)
    if "log_level" in raw:
        where, value = raw["log_level"]
        if value.lower() not in LOG_LEVELS:
            raise ConfigError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}", where)
        values["log_level"] = value.lower()
    if "watch_secret" in raw:
        where, value = raw["watch_secret"]
        namespace, sep, name = value.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ConfigError(f"must be NAMESPACE/NAME, got {value!r}", where)
        values["watch_secret"] = (namespace, name)
    values["limits"] = limits = _request_limits({key: raw[key] for key in LIMIT_KEYS if key in raw})
    if "server" in raw:
        where, value = raw["server"]
        if value.strip().lower() not in SERVER_KINDS:
            raise ConfigError(f"must be one of {', '.join(SERVER_KINDS)}, got {value!r}", where)
        values["server"] = value.strip().lower()
    if values.get("server", DEFAULT_SERVER) == "granian" and limits.max_headers > GRANIAN_MAX_HEADERS:
        where = raw["max_headers"][0]  # above the default, so it was given
        raise ConfigError(
            f"above {GRANIAN_MAX_HEADERS} needs --server uvicorn: granian's HTTP/1 parser refuses a "
            f"{GRANIAN_MAX_HEADERS + 1}st header line itself, got {limits.max_headers}",
            where,
        )
    return Settings(**values)  # type: ignore[arg-type]


def _request_limits(raw: Mapping[str, tuple[str, str]]) -> RequestLimits:
    """RequestLimits from (where, text) per field; ConfigError names the flag or variable of a bad one."""
    values: dict[str, float | int] = {}
    for key, (where, value) in raw.items():
        text = value.strip()
        if key == "read_timeout":
            try:
                seconds = float(text)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and 0 < seconds <= 3600):
                raise ConfigError(f"must be a number of seconds above 0 and at most 3600, got {value!r}", where)
            values[key] = seconds
        else:
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", where)
            values[key] = int(text)
    return RequestLimits(**values)  # type: ignore[arg-type]
