"""Limits on what a client may send before it gets an answer, enforced inside uvicorn's httptools protocol.

Without them one slow or oversized client holds a connection and its buffers for as long as it likes
(slowloris). With them a proxy always gets a fast answer it maps to a denial or a 500: 408 and a close
for a request that does not arrive in time, 431 for a head that is too large, 503 beyond the connection
cap (uvicorn's ``limit_concurrency``). For a connection's first request the clock starts when the
connection opens (a connection that never sends a byte is closed too); on a kept-alive connection it starts
at the next request's first byte, so idle keep-alive connections stay governed by uvicorn's keep-alive
timeout alone.

The hot path pays a few attribute updates per read and per request: bytes are counted per read in
``data_received`` (not per header), the clock is read once per request, and one timer per server checks
every connection's deadline (ReadDeadlines) instead of a timer being armed and cancelled per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.settings import RequestLimits

log = logging.getLogger("authgate.limits")

# What the subclass below calls or overrides in uvicorn's HttpToolsProtocol. ``data_received`` is
# reimplemented (a refusal raised from a parser callback must become a 431, not uvicorn's 400), so a
# uvicorn release that changes it must be read before upgrading: tests/unit/test_limits.py pins its source.
UVICORN_HOOKS = (
    "connection_made",
    "data_received",
    "on_headers_complete",
    "on_message_complete",
    "send_400_response",
    "handle_websocket_upgrade",
    "_unset_keepalive_if_required",
    "_should_upgrade",
    "_unsupported_upgrade_warning",
)
_missing = [name for name in UVICORN_HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
if _missing:  # pragma: no cover - only with an incompatible uvicorn
    raise ImportError(f"uvicorn's HttpToolsProtocol lacks {', '.join(_missing)}: app/limits.py needs updating")


def _response(status: int, body: bytes) -> bytes:
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_RESPONSES = {408: _response(408, b"Request Timeout"), 431: _response(431, b"Request Header Fields Too Large")}


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; ``data_received`` turns it into a 431."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadDeadlines:
    """The read timeout for every connection of one server, checked by one timer instead of one per connection
    (arming and cancelling a uvloop timer per connection measured about twice what the rest of this module adds
    to a connection).

    Every tick (a quarter of the timeout, at most a second) it refuses the connections whose current request
    started more than the timeout ago, so a deadline is met within one tick. The timer runs only while there
    are connections; the next connection re-arms it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 4)
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, connections: Collection[object]) -> None:
        if self._handle is None:
            self._handle = loop.call_later(self.tick, self.sweep, loop, connections)

    def sweep(self, loop: asyncio.AbstractEventLoop, connections: Collection[object]) -> None:
        self._handle = None
        cutoff = loop.time() - self.timeout
        late = [
            connection
            for connection in connections
            if isinstance(connection, LimitedHttpToolsProtocol)
            and connection._read_started is not None
            and connection._read_started <= cutoff
        ]
        for connection in late:
            connection._read_timed_out()
        if connections:
            self._handle = loop.call_later(self.tick, self.sweep, loop, connections)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with RequestLimits. Instantiate only the class ``protocol_class(limits)``
    returns: it binds the limits and the server's ReadDeadlines."""

    limits: ClassVar[RequestLimits]
    deadlines: ClassVar[ReadDeadlines]

    # Per connection: whether the bytes arriving now belong to a request head, how many such bytes arrived,
    # and when the current request's first byte (for the first request: the connection) arrived, None between
    # requests, when the connection is governed by uvicorn's keep-alive timeout alone.
    _in_head: bool = True
    _head_bytes: int = 0
    _read_started: float | None = None

    # The base class is called by name rather than through super(): a measurable saving on the per-request path.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        self.headers = []  # a read of bare CRLFs begins no message; the check after it must still see a list
        self._read_started = self.loop.time()
        self.deadlines.watch(self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus the counting and the refusals.
        self._unset_keepalive_if_required()
        if self._in_head:
            if self._read_started is None:
                self._read_started = self.loop.time()
            # A read that completes the head may carry body bytes too: on_headers_complete counts exactly when
            # this sum is over the limit. A head that begins in the same read as the previous request ends
            # (pipelining, which no proxy does to an auth server) is counted, and timed, from its next read on.
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadRefused):
                self._refuse(431, exc.__context__.reason)
            else:
                self._invalid_request()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:
            # The head is still incomplete: everything counted is head, and httptools buffers it.
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, "head_too_large")
            elif len(self.headers) > self.limits.max_headers:
                self._refuse(431, "too_many_headers")

    def on_headers_complete(self) -> None:
        self._in_head = False
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            raise _HeadRefused("too_many_headers")
        if self._head_bytes > limits.max_head_bytes and self._exact_head_bytes() > limits.max_head_bytes:
            raise _HeadRefused("head_too_large")
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._read_started = None
        HttpToolsProtocol.on_message_complete(self)

    def _exact_head_bytes(self) -> int:
        """The head's size from what was parsed, for when the read that completed it also carried a body."""
        request_line = len(self.parser.get_method()) + len(self.url) + len(b"  HTTP/1.1\r\n")
        return request_line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    def _read_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes:
            self._refuse(408, "read_timeout")
        else:
            # Nothing of a head arrived (a connection opened and left silent), or the body stalled after a
            # complete head (a response may be under way): no answer can be written, only the close.
            log.info("request refused", extra=self._log_fields("read_timeout", None))
            self._read_started = None
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        log.warning("request refused", extra=self._log_fields(reason, status))
        self._in_head = False
        self._read_started = None
        self.transport.write(_RESPONSES[status])
        self.transport.close()

    def _invalid_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _log_fields(self, reason: str, status: int | None) -> dict[str, object]:
        # Never the head's contents: they hold credentials.
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        return {"event": "request_refused", "reason": reason, "status": status, "client": client}


def protocol_class(limits: RequestLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection (``Config(http=...)``), bound to ``limits``
    and to one ReadDeadlines: call it once per server."""

    class BoundHttpToolsProtocol(LimitedHttpToolsProtocol):
        pass

    BoundHttpToolsProtocol.limits = limits
    BoundHttpToolsProtocol.deadlines = ReadDeadlines(limits.read_timeout)
    return BoundHttpToolsProtocol
