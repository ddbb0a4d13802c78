"""The health wire: ``/healthz``, ``/readyz`` and ``/metrics`` (app.probes) on ``--health-port``, a listener
of their own, so that a probe never waits behind the decision port's connections.

Under a flood of half-sent requests the decision port's server holds ``--max-connections`` of them until
the read timeout and leaves the rest in its listen backlog (granian) or answers them 503 (uvicorn): a probe
sent there would wait or fail exactly when the pod is attacked, and a liveness probe would restart a healthy
pod. This listener shares nothing with the decision port but the event loop, which idle connections do not
occupy (tests/integration/test_probes.py floods the decision port on both servers and times the probes here).

Small on purpose: asyncio streams on the process's event loop, one request per connection (answered with
``connection: close``), GET and HEAD only, and bounds of its own against a client that is not a probe: a
head of at most MAX_HEAD_BYTES within READ_TIMEOUT seconds, MAX_CONNECTIONS at once (beyond, a connection
is closed unanswered). The chart's NetworkPolicy lets only Prometheus reach it (kubelet's probes come from
the node)."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections.abc import AsyncIterator

from app.probes import PROBES, TEXT, ProbeAnswer
from app.state import AppState

log = logging.getLogger("authgate.health")

MAX_HEAD_BYTES = 8192
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
BACKLOG = 128
_METHODS = (b"GET", b"HEAD")
_NOT_FOUND = ProbeAnswer(404, TEXT, b"not found: /healthz, /readyz and /metrics are served here\n")
_NOT_ALLOWED = ProbeAnswer(405, TEXT, b"method not allowed: GET or HEAD\n")
_BAD_REQUEST = ProbeAnswer(400, TEXT, b"bad request\n")
_TOO_LARGE = ProbeAnswer(431, TEXT, b"request header fields too large\n")


def _encode(answer: ProbeAnswer, with_body: bool, extra: bytes = b"") -> bytes:
    status = http.HTTPStatus(answer.status)
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"content-type: {answer.content_type}\r\n"
        f"content-length: {len(answer.body)}\r\n"
        "connection: close\r\n"
    ).encode("latin-1")
    return head + extra + b"\r\n" + (answer.body if with_body else b"")


class HealthServer:
    """Answers one probe per connection from the state; ``port`` is the bound one once started."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        settings = self.state.settings
        try:
            self._server = await asyncio.start_server(
                self._serve,
                settings.host,
                settings.health_port,
                limit=MAX_HEAD_BYTES,
                backlog=BACKLOG,
            )
        except OSError as exc:
            log.error(
                "--health-port: cannot listen on %s:%s (%s)",
                settings.host,
                settings.health_port,
                exc.strerror or exc,
                extra={"event": "start", "result": "error", "health_port": settings.health_port},
            )
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("health listening", extra={"event": "start", "health_port": self.port, "host": settings.host})

    async def stop(self) -> None:
        """Stops listening and drops the connections still open (a probe's answer is never long in flight)."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                writer.write(_encode(_TOO_LARGE, True))
                return
            except (TimeoutError, asyncio.IncompleteReadError):
                return  # nothing to answer: the client went silent or away
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        method, _, rest = head.partition(b"\r\n")[0].partition(b" ")
        target, _, version = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or b" " in version:
            return _encode(_BAD_REQUEST, True)
        if method not in _METHODS:
            return _encode(_NOT_ALLOWED, True, b"allow: GET, HEAD\r\n")
        probe = PROBES.get(target.partition(b"?")[0].decode("latin-1"))
        answer = _NOT_FOUND if probe is None else probe(self.state)
        return _encode(answer, method == b"GET")


@contextlib.asynccontextmanager
async def serving_health(state: AppState) -> AsyncIterator[HealthServer]:
    """Runs the health listener for the duration of the block."""
    server = HealthServer(state)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
