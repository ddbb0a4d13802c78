"""A real ``redis-server`` (Debian's, installed by scripts/tools/60-redis.sh) on a free loopback port, in a
temporary directory, without persistence: started and stopped by the tests themselves."""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from tests.support.procs import Process, free_port, wait_for
from tests.support.tools import require_tool


class RedisServer:
    """One redis-server; ``stop()`` and ``start()`` again keep its port (a restart, as a pod's would)."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,  # (CA, server certificate, server key)
    ) -> None:
        self.binary = require_tool("redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",  # DEBUG SLEEP, from loopback only: a slow Redis on demand
        ]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            ca, cert, key = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            argv += ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> RedisServer:
        self.starts += 1
        self.process = Process(self.argv(), self.directory / f"redis-{self.starts}.log")
        wait_for(self._answers, timeout=15, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def client(self, timeout: float | None = 5.0) -> redis.Redis:
        kwargs: dict[str, object] = {}
        if self.tls is not None:
            kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls[0])}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=timeout, **kwargs)

    def _answers(self) -> bool:
        if self.process is not None and self.process.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{self.process.output()}")
        try:
            with self.client(timeout=1.0) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def sleep_in_background(self, seconds: float) -> threading.Thread:
        """``DEBUG SLEEP``: the server answers nothing for that long (sent from a thread; returns at once
        once the server has started sleeping)."""
        started = threading.Event()

        def run() -> None:
            with self.client(timeout=seconds + 10) as client:
                started.set()
                client.execute_command("DEBUG", "SLEEP", seconds)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(5)
        return thread
