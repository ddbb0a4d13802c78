"""Probes on ``--health-port`` against a real ``authgate serve`` on each server, over raw sockets: they tell the
truth within a second while the decision port is flooded with half-sent requests, where a probe sent to the
decision port waits in its backlog (granian) or is refused 503 (uvicorn), and a liveness probe would restart
a healthy pod under attack."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration.conftest import nginx_headers
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SHUTDOWN_COMPLETE, AuthgateProcess

FLOOD = 1100  # more than --max-connections (1024): the decision port's server is full
PROBE_SECONDS = 1.0  # what each probe must be answered within, as a kubelet probe's timeoutSeconds
SLACK = 10.0  # for setting the flood up on a loaded machine, never part of what is asserted as fast
# A request head cut short, the blank line never sent: each one holds a connection until the read timeout.
HALF_SENT = (
    "GET /auth/api HTTP/1.1\r\nHost: authgate\r\n" + "".join(f"{k}: {v}\r\n" for k, v in nginx_headers().items())
)[:-10].encode()


@pytest.fixture
def enough_files() -> None:
    """Room for the flood's sockets here and in the authgate started after it (it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * FLOOD + 512
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE's hard limit {hard} is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture
def flooded_authgate(
    enough_files: None, secret: KubeletSecretDir, policy_file: Path, tmp_path: Path, server_kind: str
) -> Iterator[AuthgateProcess]:
    """A ready authgate with --health-port, its decision port then holding FLOOD half-sent requests (a read
    timeout long enough that none is closed while the test runs); every socket closed at the end."""
    proc = AuthgateProcess(
        secret.path,
        tmp_path / "authgate.log",
        config=policy_file,
        server=server_kind,
        health=True,
        env={"AUTHGATE_READ_TIMEOUT": "60"},
    )
    with ExitStack() as stack:
        stack.callback(proc.stop)
        proc.wait_ready()
        for _ in range(FLOOD):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", proc.port), timeout=SLACK))
            sock.sendall(HALF_SENT)
        yield proc  # the sockets close (last in, first out) before the process is stopped


def get(port: int, path: str, timeout: float) -> tuple[int | None, float]:
    """GET ``path`` over a new raw connection: (the answer's status, or None without one in ``timeout``
    seconds; the seconds it took)."""
    started = time.monotonic()
    deadline = started + timeout
    data = b""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: authgate\r\nConnection: close\r\n\r\n".encode())
        while b"\r\n" not in data and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    if not data.startswith(b"HTTP/1.1 ") or b"\r\n" not in data:
        return None, elapsed
    return int(data.split(b" ", 2)[1]), elapsed


def test_probes_answer_within_a_second_while_the_decision_port_is_flooded(flooded_authgate: AuthgateProcess) -> None:
    proc = flooded_authgate
    assert proc.health_port is not None
    # The flood holds: the decision port answers no probe in time (granian: it waits in the backlog behind the
    # flood; uvicorn: 503 beyond its connection cap).
    status, _ = get(proc.port, "/readyz", PROBE_SECONDS)
    assert status != 200, "the flood did not fill the decision port: this test would prove nothing"
    for path in ("/healthz", "/readyz", "/metrics"):
        status, elapsed = get(proc.health_port, path, PROBE_SECONDS)
        assert status == 200, f"{path} on the health port under the flood: {status} after {elapsed:.2f}s"
        assert elapsed < PROBE_SECONDS, f"{path} took {elapsed:.2f}s"


def test_with_the_grpc_and_health_ports_the_service_starts_and_stops_cleanly(
    secret: KubeletSecretDir, policy_file: Path, tmp_path: Path, server_kind: str
) -> None:
    proc = AuthgateProcess(
        secret.path, tmp_path / "authgate.log", config=policy_file, server=server_kind, grpc=True, health=True
    )
    try:
        proc.wait_ready()
        assert proc.health_port is not None and proc.grpc_port is not None
        assert get(proc.health_port, "/readyz", SLACK)[0] == 200
        assert get(proc.port, "/readyz", SLACK)[0] == 200  # still on the decision port, where older probes look
    finally:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status says what ended it.
        assert proc.stop() in (0, -signal.SIGTERM)
    assert SHUTDOWN_COMPLETE[server_kind] in proc.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proc.health_port), timeout=SLACK).close()


def test_a_health_port_in_use_fails_the_start(secret: KubeletSecretDir, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = AuthgateProcess(secret.path, tmp_path / "authgate.log", extra_args=["--health-port", str(port)])
        try:
            assert proc.proc.wait(timeout=30) != 0
        finally:
            proc.stop()
    assert f"--health-port: cannot listen on 127.0.0.1:{port}" in proc.output()
