"""A flood of failed Basic checks with the longest user names a request can carry, from one client behind the
door that vouches for no client address (NGINX Gateway Fabric: ``--proxy nginx-gateway-fabric``, so per-address
throttling does not bite), against a real ``authgate serve``: its memory stays bounded in bytes and a valid
token's latency does not change.

The requests go straight to authgate, written as NGF writes them (``Path``, ``Method``, ``Authorization``):
through a real nginx the same flood takes several times as long on a loaded 2-core machine, and nginx adds
nothing to what authgate keeps. They are pipelined over a few keep-alive connections; the log level is
``warning`` so that 100,000 denial lines do not dominate the run (no log line carries the name anyway).
"""

from __future__ import annotations

import base64
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

from tests.integration.conftest import TOKEN_A, token_line
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess

FAILURES = 100_000
NAME_CHARS = 6000  # the Authorization header then holds about 8,000 of the 8,192 bytes a decision reads
CONNECTIONS = 4
PIPELINE = 40  # requests written before their answers are read
MAX_GROWTH = 64 * 1024 * 1024
DEADLINE = 30.0  # per batch of answers: scheduling on a loaded machine, never what is measured
# With only {SHA} users, an unknown name costs a {SHA} decoy check: every failure is decided on the event
# loop and counted (with bcrypt users the flood would mostly meet the bound on waiting slow checks instead).
HTPASSWD = "admin:{SHA}0DPiKuNIrrVmD8IUCuw1hQxNqZc=\n"  # sha1("admin")
POLICY = """
routes:
  api:
    schemes: [bearer, basic]
    realm: prefect-api
"""


def ngf_request(authorization: str) -> bytes:
    return (
        "GET /auth/api HTTP/1.1\r\nHost: authgate\r\nPath: /api/flows\r\nMethod: GET\r\n"
        f"Authorization: {authorization}\r\n\r\n"
    ).encode()


def guess(index: int) -> bytes:
    name = f"{index:010d}".ljust(NAME_CHARS, "n")  # a new 6,000-character name every time
    return ngf_request("Basic " + base64.b64encode(f"{name}:wrong".encode()).decode())


def read_statuses(sock: socket.socket, count: int, buffer: bytearray) -> list[int]:
    """The statuses of the next ``count`` answers on a keep-alive connection (heads and Content-Length bodies)."""
    statuses: list[int] = []
    while len(statuses) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name == "content-length":
                    length = int(value)
            if len(buffer) >= end + 4 + length:
                statuses.append(int(head.split(" ", 2)[1]))
                del buffer[: end + 4 + length]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("authgate closed a keep-alive connection")
        buffer += chunk
    return statuses


def flood(port: int, first: int, count: int, statuses: Counter[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        buffer = bytearray()
        for start in range(first, first + count, PIPELINE):
            batch = range(start, min(start + PIPELINE, first + count))
            sock.sendall(b"".join(guess(i) for i in batch))
            statuses.update(read_statuses(sock, len(batch), buffer))


def flood_in_parallel(port: int, first: int, total: int) -> Counter[int]:
    counters = [Counter[int]() for _ in range(CONNECTIONS)]
    share = total // CONNECTIONS
    threads = [
        threading.Thread(target=flood, args=(port, first + n * share, share, counters[n])) for n in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counters, Counter[int]())


def token_latency(port: int, rounds: int = 300) -> float:
    """Median seconds for a valid token's answer, one request at a time on one keep-alive connection."""
    request = ngf_request(f"Bearer {TOKEN_A}")
    samples = []
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        buffer = bytearray()
        for _ in range(rounds):
            started = time.perf_counter()
            sock.sendall(request)
            assert read_statuses(sock, 1, buffer) == [200]
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_flood_of_long_user_names_leaves_memory_bounded_and_tokens_as_fast(tmp_path: Path):
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": token_line("ci-a", TOKEN_A), "htpasswd": HTPASSWD})
    (tmp_path / "policy.yaml").write_text(POLICY)
    proc = AuthgateProcess(
        secret.path,
        tmp_path / "authgate.log",
        config=tmp_path / "policy.yaml",
        proxy="nginx-gateway-fabric",
        log_level="warning",
    )
    try:
        proc.wait_ready()
        warm = flood_in_parallel(proc.port, 0, 4000)  # the server's own buffers and pools, before measuring
        assert warm == {401: 4000}
        quiet = token_latency(proc.port)
        before = rss_bytes(proc.proc.pid)

        started = time.monotonic()
        statuses = flood_in_parallel(proc.port, 10**6, FAILURES)
        elapsed = time.monotonic() - started
        after = rss_bytes(proc.proc.pid)
        full = token_latency(proc.port)
        print(
            f"{FAILURES} failures in {elapsed:.1f} s; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB; "
            f"token median {quiet * 1e6:.0f} -> {full * 1e6:.0f} us"
        )
        assert statuses == {401: FAILURES}  # every one checked and counted: no ban, no crash, no 5xx
        assert after - before <= MAX_GROWTH, f"RSS grew by {(after - before) / 2**20:.0f} MiB"
        assert full / quiet <= 2.0, f"a valid token's median went from {quiet * 1e6:.0f} to {full * 1e6:.0f} us"
        assert proc.proc.poll() is None
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()
