"""The health wire in-process on a free port, over raw connections: the probes' truth, what it answers a client
that is no probe, and its own bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app import health_server
from app.credentials import token_digest
from app.health import Heartbeat
from app.health_server import HealthServer, serving_health
from app.settings import Settings
from app.state import AppState, build_state

TOKENS = {"tokens": f"ci sha256:{token_digest('in-process-token-0123456789').hex()}\n".encode()}
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def state(tmp_path: Path) -> AppState:
    return build_state(Settings(host="127.0.0.1", secret_dir=tmp_path / "absent", health_port=0))


@pytest.fixture
async def server(state: AppState) -> AsyncIterator[HealthServer]:
    async with serving_health(state) as server:
        yield server


async def ask(server: HealthServer, request: bytes) -> bytes:
    """Everything the server sends back to ``request`` until it closes (within 5 s)."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await until_closed(reader)
    finally:
        writer.close()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What arrives until the server closes (a reset counts as closing with nothing more), within 5 s."""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: authgate\r\n\r\n".encode()


async def test_readiness_and_liveness_tell_the_truth(server: HealthServer, state: AppState) -> None:
    answer = await ask(server, get("/readyz"))
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and answer.endswith(
        b"\r\n\r\nno credentials loaded yet\n"
    )
    assert b"\r\nconnection: close\r\n" in answer
    assert state.reloader.apply(TOKENS, "test")
    assert (await ask(server, get("/readyz?verbose"))).endswith(
        b"\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n"
    )
    assert (await ask(server, get("/healthz"))).startswith(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
    )
    stale = Heartbeat("secret-directory-watch", max_age=0.0)
    state.heartbeats.append(stale)
    await asyncio.sleep(0.01)  # older than its max_age of 0
    answer = await ask(server, get("/healthz"))
    assert answer.startswith(b"HTTP/1.1 503 ") and b"unhealthy: secret-directory-watch: no progress for" in answer


async def test_metrics_and_head(server: HealthServer, state: AppState) -> None:
    assert state.reloader.apply(TOKENS, "test")
    answer = await ask(server, get("/metrics"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=")
    assert b'\nauthgate_credentials_loaded{kind="token"} 1.0\n' in answer
    head = await ask(server, get("/readyz", "HEAD"))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"content-length: 6\r\nconnection: close\r\n\r\n")


async def test_anything_but_a_probe_gets_a_clear_refusal(server: HealthServer) -> None:
    assert (await ask(server, get("/auth/api"))).startswith(b"HTTP/1.1 404 Not Found\r\n")
    refused = await ask(server, get("/healthz", "POST"))
    assert refused.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"\r\nallow: GET, HEAD\r\n" in refused
    assert (await ask(server, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    big = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * health_server.MAX_HEAD_BYTES + b"\r\n\r\n"
    assert (await ask(server, big)).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_a_silent_connection_is_closed_at_the_read_timeout(
    state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_server, "READ_TIMEOUT", 0.2)
    async with serving_health(state) as server:
        assert await ask(server, b"GET /healthz HTTP/1.1\r\n") == b""


async def test_beyond_its_connection_cap_a_connection_is_closed_unanswered_and_stop_drops_the_rest(
    state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_server, "MAX_CONNECTIONS", 3)
    async with serving_health(state) as server:
        assert server.port is not None
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # half a head: each holds its slot
        await asyncio.sleep(0.1)
        assert await ask(server, get("/healthz")) == b""
    # Stopped: the held connections were dropped, nothing listens any more.
    for reader, writer in held:
        assert await until_closed(reader) == b""
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
