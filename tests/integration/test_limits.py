"""Request limits against a real ``authgate serve`` on each server, over raw sockets: a slow, oversized or
surplus client gets a fast answer (408, 431, 503 or a close), and what a proxy legitimately sends still gets
its decision.

Where granian answers differently from uvicorn (app/granian_server.py, docs/security.md) the test says so:
a late head gets a close without a 408, a kept-alive connection idle for the read timeout is closed, a
connection beyond the cap waits for a free slot instead of getting a 503, and what hyper refuses itself is
not logged by authgate.

Every wait has a deadline; the read timeout is shortened (``AUTHGATE_READ_TIMEOUT``) so the slow cases
take about a second.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.limits import RequestLimits
from tests.integration.conftest import BCRYPT_ALICE, TOKEN_A, nginx_headers, token_line
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess, wait_for

READ_TIMEOUT = 1.0
SLACK = 4.0  # scheduling on a loaded 2-core machine, never part of what is asserted as fast
DEFAULTS = RequestLimits()
# The largest Authorization the decision accepts (MAX_AUTHORIZATION_BYTES), carrying a valid token.
BIG_TOKEN = "big-" + "x" * (8192 - len("Bearer big-"))
SECRET_MARK = "SECRET-IN-THE-HEAD"


@pytest.fixture
def secret(tmp_path: Path) -> KubeletSecretDir:
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write(
        {"tokens": token_line("ci-a", TOKEN_A) + token_line("big", BIG_TOKEN), "htpasswd": f"alice:{BCRYPT_ALICE}\n"}
    )
    return secret


@pytest.fixture
def start(
    secret: KubeletSecretDir, policy_file: Path, tmp_path: Path, server_kind: str
) -> Iterator[Callable[..., AuthgateProcess]]:
    """Starts ``authgate serve --server server_kind`` with ``AUTHGATE_*`` limit variables; stops every one
    started."""
    with ExitStack() as stack:
        started: list[AuthgateProcess] = []

        def start(**env: str) -> AuthgateProcess:
            log_path = tmp_path / f"authgate-{len(started)}.log"
            proc = AuthgateProcess(secret.path, log_path, config=policy_file, env=env, server=server_kind)
            started.append(proc)
            stack.callback(proc.stop)
            proc.wait_ready()
            return proc

        yield start


@pytest.fixture
def short(start: Callable[..., AuthgateProcess]) -> AuthgateProcess:
    return start(AUTHGATE_READ_TIMEOUT=str(READ_TIMEOUT))


def head(headers: list[tuple[str, str]], *, path: str = "/auth/api", close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: authgate"] + [f"{name}: {value}" for name, value in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def valid(**extra: str) -> list[tuple[str, str]]:
    return [*nginx_headers(**extra).items(), ("Authorization", f"Bearer {TOKEN_A}")]


# A valid request's head with its last line cut short and the blank line never sent.
HALF_SENT = head([*valid(), ("X-Last", "cut-short")])[:-8]


def connect(proc: AuthgateProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=SLACK)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]


def read_answer(sock: socket.socket, timeout: float = SLACK) -> Answer:
    """One response (head and Content-Length body) read within ``timeout``, leaving the connection open."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ConnectionError(f"closed before a whole answer: {data[:100]!r}")
        data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ConnectionError("closed in the middle of an answer's body")
        body += chunk
    return Answer(int(status_line.split()[1]), headers)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        try:
            chunk = _recv(sock, deadline)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the server neither answered nor closed in time")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except TimeoutError:
        raise TimeoutError("the server neither answered nor closed in time") from None


def exchange(proc: AuthgateProcess, request: bytes) -> Answer:
    with connect(proc) as sock:
        sock.sendall(request)
        return read_answer(sock)


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Sends while the test reads: the server answers before the last byte, then the send may fail."""

    def send() -> None:
        with contextlib.suppress(OSError):  # the server refused and closed first: what is being tested
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def refusals(proc: AuthgateProcess) -> list[str]:
    return [line for line in proc.output().splitlines() if '"event": "request_refused"' in line]


# What a head still incomplete at the read timeout gets before the close: hyper closes without a word.
LATE_HEAD_ANSWER = {"uvicorn": b"HTTP/1.1 408 ", "granian": b""}


def test_a_half_sent_head_gets_a_close_within_the_read_timeout(short: AuthgateProcess, server_kind: str) -> None:
    with connect(short) as sock:
        started = time.monotonic()
        sock.sendall(HALF_SENT)
        data = read_until_closed(sock, READ_TIMEOUT + SLACK)
        elapsed = time.monotonic() - started
    assert elapsed >= READ_TIMEOUT - 0.1, "refused before the timeout"
    if server_kind == "uvicorn":
        assert data.startswith(LATE_HEAD_ANSWER[server_kind]), data
        assert b"connection: close" in data.lower()
        wait_for(lambda: refusals(short), timeout=SLACK, what="the refusal logged")
        assert '"reason": "read_timeout"' in refusals(short)[0]
    else:
        assert data == LATE_HEAD_ANSWER[server_kind]
    assert TOKEN_A not in short.output()


def test_many_half_open_connections_are_all_closed_by_the_deadline(short: AuthgateProcess, server_kind: str) -> None:
    with ExitStack() as stack, selectors.DefaultSelector() as selector:
        received: dict[socket.socket, bytes] = {}
        for i in range(200):
            sock = stack.enter_context(connect(short))
            if i % 2 == 0:  # half of them send part of a head, the other half nothing at all
                sock.sendall(HALF_SENT)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            received[sock] = b""
        deadline = time.monotonic() + READ_TIMEOUT + SLACK
        open_socks = set(received)
        while open_socks and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
                    open_socks.discard(sock)
        assert not open_socks, f"{len(open_socks)} of 200 half-open connections still open after the deadline"
        answers = list(received.values())
    assert all(a.startswith(LATE_HEAD_ANSWER[server_kind]) for a in answers[0::2])
    assert all(a == b"" for a in answers[1::2])  # nothing asked, nothing answered: just the close
    assert exchange(short, head(valid(), close=True)).status == 200


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (lambda: [("X-Big", SECRET_MARK + "a" * 2_000_000)], "head_too_large"),
        (lambda: [(f"X-Many-{i}", SECRET_MARK) for i in range(20_000)], None),
    ],
    ids=["a-2-mb-header", "20000-headers"],
)
def test_an_oversized_head_is_refused_with_431_fast(
    start: Callable[..., AuthgateProcess],
    server_kind: str,
    extra: Callable[[], list[tuple[str, str]]],
    reason: str | None,
) -> None:
    proc = start()
    request = head([*valid(), *extra()])
    with connect(proc) as sock:
        started = time.monotonic()
        send_in_background(sock, request)
        data = read_until_closed(sock, SLACK)
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert time.monotonic() - started < SLACK
    assert exchange(proc, head(valid(), close=True)).status == 200
    if reason is not None and server_kind == "uvicorn":  # on granian, hyper refuses it before authgate sees it
        wait_for(lambda: refusals(proc), timeout=SLACK, what="the refusal logged")
        assert f'"reason": "{reason}"' in refusals(proc)[0]
    assert SECRET_MARK not in proc.output()


def test_a_proxys_largest_normal_request_passes_and_one_header_more_is_refused(
    start: Callable[..., AuthgateProcess],
) -> None:
    proc = start()
    # What ingress-nginx forwards for a browser with a large session: the largest Authorization the decision
    # takes (8 KiB), a 16 KiB Cookie, 60 ordinary headers; Host and Connection make 100 header lines.
    ordinary = [(f"X-Ordinary-{i}", f"value-{i}-" + "v" * 30) for i in range(60)]
    headers = [
        *nginx_headers().items(),
        ("Authorization", f"Bearer {BIG_TOKEN}"),
        ("Cookie", "session=" + "c" * (16 * 1024)),
        *ordinary,
    ]
    headers += [(f"X-Pad-{i}", "1") for i in range(DEFAULTS.max_headers - 2 - len(headers))]
    answer = exchange(proc, head(headers, close=True))
    assert answer.status == 200 and answer.headers["x-auth-request-user"] == "big"
    assert exchange(proc, head([*headers, ("X-One-More", "1")], close=True)).status == 431
    # Exactly max_head_bytes of request line and header lines passes.
    assert exchange(proc, largest_head()).status == 200


def largest_head(extra: int = 0) -> bytes:
    """A valid request whose head is exactly ``max_head_bytes`` (plus ``extra``) long."""
    few = [*nginx_headers().items(), ("Authorization", f"Bearer {BIG_TOKEN}")]
    filler = DEFAULTS.max_head_bytes - len(head([*few, ("Cookie", "")], close=True))
    return head([*few, ("Cookie", "c" * (filler + extra))], close=True)


def send_slowly(sock: socket.socket, data: bytes, chunk: int = 1024) -> None:
    """A client that trickles its head in (each piece its own read, unlike a proxy's one burst)."""
    for i in range(0, len(data), chunk):
        sock.sendall(data[i : i + chunk])
        time.sleep(0.0005)  # pacing the pieces, not waiting for a condition


@pytest.mark.parametrize("server_kind", ["uvicorn"])
def test_one_byte_over_the_head_limit_is_refused(start: Callable[..., AuthgateProcess]) -> None:
    proc = start()
    assert exchange(proc, largest_head(1)).status == 431
    wait_for(lambda: refusals(proc), timeout=SLACK, what="the refusal logged")
    assert '"reason": "head_too_large"' in refusals(proc)[-1]


@pytest.mark.parametrize("server_kind", ["granian"])
def test_granian_refuses_a_head_over_the_limit_once_its_read_buffer_holds_the_limit(
    start: Callable[..., AuthgateProcess],
) -> None:
    # hyper's buffer (app/granian_server.py): a head that has grown past the limit without its end is refused,
    # however its pieces arrive; in one burst, a head passes only if the read that crosses the limit also ends
    # it, never at twice the limit. (The trickled head stops one byte past the limit, short of its final CRLF
    # CRLF: a busy machine can join the last pieces into one read, and a read that crossed the limit *and* held
    # the end would let it through, as the burst case says.)
    proc = start()
    over_by_one = largest_head(5)[:-4]
    assert len(over_by_one) == DEFAULTS.max_head_bytes + 1 and not over_by_one.endswith(b"\r\n\r\n")
    with connect(proc) as sock:
        send_slowly(sock, over_by_one)
        assert read_answer(sock).status == 431
    for burst in (largest_head(DEFAULTS.max_head_bytes), largest_head(3 * DEFAULTS.max_head_bytes)):
        with connect(proc) as sock:
            send_in_background(sock, burst)
            assert read_until_closed(sock, SLACK).startswith(b"HTTP/1.1 431 ")
    assert exchange(proc, head(valid(), close=True)).status == 200


def test_a_lower_header_limit_is_answered_431_and_logged(start: Callable[..., AuthgateProcess]) -> None:
    proc = start(AUTHGATE_MAX_HEADERS="20")
    headers = valid()
    headers += [(f"X-Pad-{i}", "1") for i in range(20 - 2 - len(headers))]  # Host and Connection make 20
    assert exchange(proc, head(headers, close=True)).status == 200
    assert exchange(proc, head([*headers, ("X-One-More", SECRET_MARK)], close=True)).status == 431
    wait_for(lambda: refusals(proc), timeout=SLACK, what="the refusal logged")
    assert '"reason": "too_many_headers"' in refusals(proc)[-1]
    assert SECRET_MARK not in proc.output()


@pytest.mark.parametrize("server_kind", ["uvicorn"])
def test_the_connection_cap_answers_503_beyond_it_and_200_below_it(start: Callable[..., AuthgateProcess]) -> None:
    cap = 8
    proc = start(AUTHGATE_MAX_CONNECTIONS=str(cap), AUTHGATE_READ_TIMEOUT="60")  # the idle ones outlive the test
    request = head(valid(), close=True)
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(proc)) for _ in range(cap - 1)]
        # With the asking one, `cap` connections are open: served.
        wait_for(lambda: exchange(proc, request).status == 200, timeout=SLACK, what="200 at the cap")
        idle.append(stack.enter_context(connect(proc)))
        # One more than the cap: a fast 503 that closes, which nginx and Traefik turn into a 500 (fail closed).
        started = time.monotonic()
        wait_for(lambda: exchange(proc, request).status == 503, timeout=SLACK, what="503 beyond the cap")
        assert time.monotonic() - started < SLACK
        for sock in idle[:2]:
            sock.close()
        wait_for(lambda: exchange(proc, request).status == 200, timeout=SLACK, what="200 once below the cap again")


@pytest.mark.parametrize("server_kind", ["granian"])
def test_beyond_the_connection_cap_granian_serves_a_connection_once_a_slot_frees(
    start: Callable[..., AuthgateProcess],
) -> None:
    cap = 8
    proc = start(AUTHGATE_MAX_CONNECTIONS=str(cap), AUTHGATE_READ_TIMEOUT="60")  # the idle ones outlive the test
    request = head(valid(), close=True)
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(proc)) for _ in range(cap - 1)]
        wait_for(lambda: exchange(proc, request).status == 200, timeout=SLACK, what="200 at the cap")
        idle.append(stack.enter_context(connect(proc)))
        # One more: the kernel completes the handshake, granian leaves it in the listen backlog (no 503).
        waiting = stack.enter_context(connect(proc))
        waiting.sendall(request)
        with pytest.raises(TimeoutError):
            read_answer(waiting, timeout=1.0)
        for sock in idle[:2]:
            sock.close()
        assert read_answer(waiting).status == 200, "not served once a slot was free"


@pytest.mark.parametrize("server_kind", ["uvicorn"])
def test_keep_alive_survives_idleness_and_the_read_clock_starts_at_the_next_requests_first_byte(
    short: AuthgateProcess,
) -> None:
    with connect(short) as sock:
        for _ in range(3):
            sock.sendall(head(valid()))
            answer = read_answer(sock)
            assert answer.status == 200 and "connection" not in answer.headers
        # Idle for longer than the read timeout: a kept-alive connection is not a slow request.
        sock.settimeout(READ_TIMEOUT * 1.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        for _ in range(2):
            sock.sendall(head(valid()))
            assert read_answer(sock).status == 200
        started = time.monotonic()
        sock.sendall(HALF_SENT)
        data = read_until_closed(sock, READ_TIMEOUT + SLACK)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert elapsed >= READ_TIMEOUT - 0.1, "the clock started before the request's first byte"


@pytest.mark.parametrize("server_kind", ["granian"])
def test_granian_closes_a_kept_alive_connection_idle_for_the_read_timeout(short: AuthgateProcess) -> None:
    # hyper's header read timer also runs between requests: a proxy's pool must close idle connections
    # sooner (docs/proxies.md).
    with connect(short) as sock:
        for _ in range(3):
            sock.sendall(head(valid()))
            answer = read_answer(sock)
            assert answer.status == 200 and "connection" not in answer.headers
        started = time.monotonic()
        assert read_until_closed(sock, READ_TIMEOUT + SLACK) == b""
        assert time.monotonic() - started >= READ_TIMEOUT - 0.1


def test_a_stalled_body_is_cut_at_the_read_timeout(short: AuthgateProcess) -> None:
    with connect(short) as sock:
        sock.sendall(head([*valid(), ("Content-Length", "100")]) + b"only ten b")
        assert read_answer(sock).status == 200  # the decision does not wait for a body
        assert read_until_closed(sock, READ_TIMEOUT + SLACK) == b""
