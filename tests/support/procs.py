"""Real processes on free loopback ports, and waiting for conditions with a deadline (never a fixed sleep)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
# What ``authgate serve --server`` runs; the tests that exercise the server itself run on each.
SERVERS = ("granian", "uvicorn")
# What each server logs once the app's lifespan has shut down.
SHUTDOWN_COMPLETE = {"granian": "application shutdown complete", "uvicorn": "Application shutdown complete"}
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Polls ``condition`` until it returns something truthy; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (OSError, httpx.HTTPError) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def wait_http(url: str, *, status: int = 200, timeout: float = 15.0) -> None:
    """Waits until ``url`` answers with ``status``."""

    def ok() -> bool:
        return httpx.get(url, timeout=1.0).status_code == status

    wait_for(ok, timeout=timeout, what=f"{url} to answer {status}")


def metric_value(base_url: str, sample: str) -> float:
    """One sample of ``base_url``/metrics, named as exposed (``authgate_reloads_total{result="error"}``);
    0 when it is not there."""
    for line in httpx.get(base_url + "/metrics", timeout=5).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode


class AuthgateProcess(Process):
    """``authgate serve`` as a real process on a free port; ``server`` None = the default server."""

    def __init__(
        self,
        secret_dir: Path,
        log_path: Path,
        *,
        config: Path | None = None,
        proxy: str = "ingress-nginx",
        extra_args: Sequence[str] = (),
        log_level: str = "info",
        port: int | None = None,
        env: dict[str, str] | None = None,
        grpc: bool = False,
        health: bool = False,
        server: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.server = server
        self.base_url = f"http://127.0.0.1:{self.port}"
        # --grpc-port: Envoy's gRPC ext_authz on a second free port
        self.grpc_port = free_port() if grpc else None
        # --health-port: /healthz, /readyz and /metrics on a listener of their own
        self.health_port = free_port() if health else None
        self.health_url = None if self.health_port is None else f"http://127.0.0.1:{self.health_port}"
        argv = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--secret-dir",
            str(secret_dir),
            "--proxy",
            proxy,
            "--log-level",
            log_level,
        ]
        if config is not None:
            argv += ["--config", str(config)]
        if self.grpc_port is not None:
            argv += ["--grpc-port", str(self.grpc_port)]
        if self.health_port is not None:
            argv += ["--health-port", str(self.health_port)]
        if server is not None:
            argv += ["--server", server]
        super().__init__(argv + list(extra_args), log_path, env=env)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"authgate exited early ({self.proc.returncode}):\n{self.output()}")
            return httpx.get(self.base_url + "/readyz", timeout=1.0).status_code == 200

        wait_for(ready, timeout=timeout, what="authgate /readyz")
