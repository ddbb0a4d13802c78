"""The machine a run measured on, written into results.json and the table's footer: CPUs, memory, kernel,
and the version of every server, proxy and load generator involved."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from app.settings import DEFAULT_SERVER
from bench.servers import find_tool


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    import granian
    import uvicorn

    def tool(name: str, *args: str) -> str:
        try:
            return _version([find_tool(name), *args])
        except FileNotFoundError:
            return "not installed"

    traefik = tool("traefik", "version")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "granian": granian.__version__,
        "default_server": DEFAULT_SERVER,
        "nginx": tool("nginx", "-v"),
        "traefik": traefik.split()[-1] if traefik else traefik,
        "caddy": tool("caddy", "version").split()[0],
        "wrk": tool("wrk", "--version").split("[")[0].strip(),
        "h2load": tool("h2load", "--version"),
        "envoy": tool("envoy", "--version").split("version:")[-1].strip(),
        "grpcio": _package_version("grpcio"),
        "loadavg_start": os.getloadavg(),
    }
