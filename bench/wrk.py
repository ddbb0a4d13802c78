"""Running wrk (Debian's, LuaJIT inside) and reading its result as JSON rather than scraping its text."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

# wrk calls done() once at the end; we print one JSON line after its own text output.
_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. ``errors`` counts socket errors and non-2xx/3xx answers together; ``statuses`` the
    answers of status 400 or more alone (a denial case expects every answer to be one)."""

    rps: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    statuses: int = 0
    started_unix: float = 0.0  # when the run started (bench/measure.py sets it): shows the order of the rounds

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class Wrk:
    """``wrk -t THREADS -c CONNECTIONS -d SECONDS`` against one URL with fixed headers."""

    def __init__(self, binary: str | None = None, *, threads: int = 1, connections: int = 32) -> None:
        found = binary or shutil.which("wrk")
        if found is None:
            raise FileNotFoundError("wrk is not installed: run scripts/tools/10-nginx.sh")
        self.binary = found
        self.threads = threads
        self.connections = connections
        self._script_dir = tempfile.TemporaryDirectory(prefix="authgate-wrk-")
        self._script = Path(self._script_dir.name) / "done.lua"
        self._script.write_text(_DONE_LUA)

    def run(self, url: str, headers: Mapping[str, str], seconds: float, *, request_lua: str = "") -> WrkResult:
        """``request_lua``: Lua prepended to the script, e.g. a ``request`` function that varies each request."""
        script = self._script
        if request_lua:
            script = Path(self._script_dir.name) / f"script-{abs(hash(request_lua))}.lua"
            script.write_text(request_lua + _DONE_LUA)
        argv = [
            self.binary,
            "-t",
            str(self.threads),
            "-c",
            str(self.connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
        ]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}) for {url}:\n{out.stdout}\n{out.stderr}")
        raw = json.loads(line.removeprefix("WRKJSON "))
        seconds_run = raw["duration_us"] / 1e6
        errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
        return WrkResult(
            rps=raw["requests"] / seconds_run if seconds_run else 0.0,
            requests=raw["requests"],
            errors=errors,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            mean_ms=raw["mean_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            statuses=raw["status"],
        )

    def close(self) -> None:
        self._script_dir.cleanup()
