"""Process settings: a plain frozen object, loaded and validated once from flags and ``AUTHGATE_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from app.errors import ConfigError

ProxyKind = Literal["ingress-nginx", "traefik", "path-prefix", "nginx-gateway-fabric", "envoy"]
LogLevel = Literal["debug", "info", "warning", "error"]

PROXY_KINDS: tuple[str, ...] = get_args(ProxyKind)
# The chart's Ingresses are served unchanged by ingress-nginx and by Traefik's ingress-nginx provider.
DEFAULT_PROXY: tuple[ProxyKind, ...] = ("ingress-nginx", "traefik")
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    secret_dir: Path = Path("/etc/authgate/secret")
    config: Path | None = None
    proxy: tuple[ProxyKind, ...] = DEFAULT_PROXY  # the front doors believed (--proxy, comma-separated)
    log_level: LogLevel = "info"
    watch_secret: tuple[str, str] | None = None  # (namespace, name)


# flag name -> environment variable
ENV_NAMES: dict[str, str] = {
    "host": "AUTHGATE_HOST",
    "port": "AUTHGATE_PORT",
    "secret_dir": "AUTHGATE_SECRET_DIR",
    "config": "AUTHGATE_CONFIG",
    "proxy": "AUTHGATE_PROXY",
    "log_level": "AUTHGATE_LOG_LEVEL",
    "watch_secret": "AUTHGATE_WATCH_SECRET",
}


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
    if "port" in raw:
        where, value = raw["port"]
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ConfigError(f"must be an integer from 1 to 65535, got {value!r}", where)
        values["port"] = int(value)
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
    return Settings(**values)  # type: ignore[arg-type]
