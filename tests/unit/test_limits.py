"""RequestLimits loading, the protocol's counting fed byte by byte through a fake transport, and the uvicorn
internals it relies on (a uvicorn upgrade that changes them fails here, not in production)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.errors import ConfigError
from app.limits import UVICORN_HOOKS, LimitedHttpToolsProtocol, protocol_class
from app.settings import RequestLimits, load_settings

FLAGS = dict.fromkeys(["read_timeout", "max_head_bytes", "max_headers", "max_connections"])


def load_request_limits(environ: dict[str, str], **flags: str) -> RequestLimits:
    return load_settings({**FLAGS, **flags}, environ).limits


# sha256 of the dedented source of uvicorn 0.54.0's HttpToolsProtocol.data_received, which app/limits.py
# reimplements. When it changes, port the change to LimitedHttpToolsProtocol.data_received, then update this.
DATA_RECEIVED_SHA256 = "02c2572f1df559070eba7f206a3f7e251782f5af4aaae194fc1ffb67f24c3873"


def test_uvicorns_data_received_is_the_one_limits_reimplements() -> None:
    source = textwrap.dedent(inspect.getsource(HttpToolsProtocol.data_received))
    assert hashlib.sha256(source.encode()).hexdigest() == DATA_RECEIVED_SHA256, (
        f"uvicorn {uvicorn.__version__} changed HttpToolsProtocol.data_received: port the change to "
        "app/limits.py LimitedHttpToolsProtocol.data_received, then update DATA_RECEIVED_SHA256"
    )


def test_uvicorn_has_every_method_the_protocol_relies_on() -> None:
    assert all(callable(getattr(HttpToolsProtocol, name, None)) for name in UVICORN_HOOKS)


def test_the_limits_come_from_defaults_and_the_environment() -> None:
    assert load_request_limits({}) == RequestLimits()
    assert RequestLimits() == RequestLimits(
        read_timeout=10.0, max_head_bytes=65536, max_headers=100, max_connections=1024
    )
    env = {
        "AUTHGATE_READ_TIMEOUT": "2.5",
        "AUTHGATE_MAX_HEAD_BYTES": "32768",
        "AUTHGATE_MAX_HEADERS": "50",
        "AUTHGATE_MAX_CONNECTIONS": " 200 ",
    }
    assert load_request_limits(env) == RequestLimits(2.5, 32768, 50, 200)
    assert load_request_limits({"AUTHGATE_MAX_HEADERS": ""}) == RequestLimits()
    # a flag wins over its variable
    assert load_request_limits(env, max_headers="7").max_headers == 7
    # uvicorn counts the asking connection too: 200 may be open and served, the 201st's request is a 503.
    assert RequestLimits(max_connections=200).uvicorn_limit_concurrency() == 201


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHGATE_READ_TIMEOUT", "0"),
        ("AUTHGATE_READ_TIMEOUT", "-1"),
        ("AUTHGATE_READ_TIMEOUT", "nan"),
        ("AUTHGATE_READ_TIMEOUT", "inf"),
        ("AUTHGATE_READ_TIMEOUT", "10s"),
        ("AUTHGATE_MAX_HEAD_BYTES", "64k"),
        ("AUTHGATE_MAX_HEADERS", "0"),
        ("AUTHGATE_MAX_HEADERS", "-5"),
        ("AUTHGATE_MAX_CONNECTIONS", "1.5"),
        ("AUTHGATE_MAX_CONNECTIONS", "²"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_request_limits({name: value})
    assert name in str(raised.value) and repr(value) in str(raised.value)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.9", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One protocol instance on a fake transport; the app is never run, only its start recorded."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: RequestLimits) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never started
            raise AssertionError

        config = Config(app, http=protocol_class(limits), lifespan="off", log_config=None)
        config.load()
        self.protocol = config.http_protocol_class(config, ServerState(), {}, _loop=loop)  # type: ignore[call-arg]
        assert isinstance(self.protocol, LimitedHttpToolsProtocol)
        self.started: list[str] = []

        def start(cycle: Any, app: Any) -> None:
            cycle.response_complete = True  # as if answered at once, so the next request is not queued
            self.started.append(cycle.scope["path"])

        self.protocol._start_asgi_task = start  # type: ignore[method-assign]
        self.transport = FakeTransport()
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    def feed(self, *reads: bytes) -> None:
        for data in reads:
            if self.transport.closed:
                return
            self.protocol.data_received(data)

    @property
    def status(self) -> int | None:
        return int(self.transport.written.split(b" ", 2)[1]) if self.transport.written else None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


LIMITS = RequestLimits(max_head_bytes=4096, max_headers=10)


def request(n_headers: int = 3, value: bytes = b"v", body: bytes = b"") -> bytes:
    lines = [b"GET /auth/api HTTP/1.1", b"Host: authgate"]
    lines += [b"X-H-%d: " % i + value for i in range(n_headers - 2)]
    lines += [b"Content-Length: %d" % len(body)] if body else [b"X-Last: 1"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_the_instance_attributes_the_protocol_relies_on_exist(loop: asyncio.AbstractEventLoop) -> None:
    conn = Connection(loop, LIMITS)
    conn.feed(b"GET /a")
    for name in ("parser", "headers", "url", "loop", "client", "transport", "cycle", "logger", "connections"):
        assert hasattr(conn.protocol, name), name
    assert conn.protocol in conn.protocol.connections


def test_a_head_at_the_limits_is_served_and_keep_alive_requests_are_counted_afresh(
    loop: asyncio.AbstractEventLoop,
) -> None:
    conn = Connection(loop, LIMITS)
    at_limit = request(LIMITS.max_headers, b"v" * 300)
    assert len(at_limit) <= LIMITS.max_head_bytes
    conn.feed(at_limit)
    conn.protocol.on_response_complete()
    conn.feed(at_limit[:100], at_limit[100:])
    assert conn.started == ["/auth/api", "/auth/api"] and conn.status is None


def test_one_header_too_many_is_a_431(loop: asyncio.AbstractEventLoop) -> None:
    conn = Connection(loop, LIMITS)
    conn.feed(request(LIMITS.max_headers + 1))
    assert conn.status == 431 and conn.transport.closed and conn.started == []


def test_a_head_one_byte_over_is_a_431_whether_it_arrives_whole_or_in_pieces(
    loop: asyncio.AbstractEventLoop,
) -> None:
    whole = request(3, b"v" * 100)
    over = request(3, b"v" * (100 + LIMITS.max_head_bytes + 1 - len(whole)))
    assert len(over) == LIMITS.max_head_bytes + 1
    for reads in ([over], [over[:1000], over[1000:]], [over[i : i + 7] for i in range(0, len(over), 7)]):
        conn = Connection(loop, LIMITS)
        conn.feed(*reads)
        assert conn.status == 431 and conn.started == [], len(reads)


def test_a_header_that_never_ends_is_refused_once_it_passes_the_limit(loop: asyncio.AbstractEventLoop) -> None:
    conn = Connection(loop, LIMITS)
    start = b"GET /auth/api HTTP/1.1\r\nX-Endless: "
    conn.feed(start)
    received = len(start)
    while received + 1000 <= LIMITS.max_head_bytes:
        conn.feed(b"a" * 1000)
        received += 1000
        assert conn.status is None
    conn.feed(b"a" * 1000)  # httptools would buffer this header for ever: refused with the read that passes
    assert conn.status == 431 and conn.transport.closed


def test_a_body_in_the_same_read_as_the_head_does_not_count_as_head(loop: asyncio.AbstractEventLoop) -> None:
    conn = Connection(loop, LIMITS)
    conn.feed(request(3, body=b"b" * (3 * LIMITS.max_head_bytes)))
    assert conn.started == ["/auth/api"] and conn.status is None


def late(conn: Connection, seconds: float) -> None:
    """Moves the connection's current request back in time by ``seconds``."""
    assert conn.protocol._read_started is not None
    conn.protocol._read_started -= seconds


def test_the_sweep_answers_408_to_a_late_head_and_closes_a_silent_or_stalled_connection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    limits = RequestLimits(read_timeout=5.0)
    half_sent, silent, stalled, idle, on_time = (Connection(loop, limits) for _ in range(5))
    half_sent.feed(b"GET /auth/api HTTP/1.1\r\nHost: a")
    stalled.feed(b"GET /auth/api HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    idle.feed(request())
    on_time.feed(b"GET /auth/api HTTP/1.1\r\n")
    for conn in (half_sent, silent, stalled):
        late(conn, 5.0)
    late(on_time, 4.5)
    assert idle.protocol._read_started is None  # between requests: only uvicorn's keep-alive timeout applies
    connections = {c.protocol for c in (half_sent, silent, stalled, idle, on_time)}
    half_sent.protocol.deadlines.sweep(loop, connections)
    assert half_sent.status == 408 and half_sent.transport.closed
    assert silent.transport.written == b"" and silent.transport.closed
    assert stalled.transport.written == b"" and stalled.transport.closed and stalled.started == ["/auth/api"]
    assert not idle.transport.closed and not on_time.transport.closed


def test_the_sweep_runs_while_there_are_connections_and_one_more_rearms_it(loop: asyncio.AbstractEventLoop) -> None:
    conn = Connection(loop, RequestLimits(read_timeout=2.0))
    deadlines = conn.protocol.deadlines
    assert deadlines.tick == 0.5 and deadlines._handle is not None
    deadlines._handle.cancel()
    deadlines.sweep(loop, {conn.protocol})
    assert deadlines._handle is not None
    deadlines._handle.cancel()
    deadlines.sweep(loop, set())
    assert deadlines._handle is None
    deadlines.watch(loop, {conn.protocol})
    assert deadlines._handle is not None


def test_a_bad_flag_names_itself() -> None:
    with pytest.raises(ConfigError) as raised:
        load_request_limits({}, read_timeout="soon")
    assert "--read-timeout: must be a number of seconds" in str(raised.value)
