"""The request-head limits (RequestLimits.max_head_bytes and max_headers) checked on the ASGI scope, for a
server whose own parser enforces them only roughly.

granian's parser (hyper) bounds a head by its read buffer, which lets a head somewhat larger than the buffer
through when one read completes it (measured: 70,000 bytes through a 65,536-byte buffer; 2 MB refused), and
it counts header lines up to its own fixed 100. So granian_server.py sizes the buffer at the limit, which
bounds the memory a head can take, and this wrapper answers exactly what uvicorn's protocol (app/limits.py)
answers: a 431 that closes the connection for one byte or one header line more than allowed, logged the same
way (never the head's contents: they hold credentials).

Per request this costs a length check and one pass over the header tuples in C.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

from app.settings import RequestLimits

log = logging.getLogger("authgate.limits")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_BODY = b"Request Header Fields Too Large"
_REFUSAL: Any = {
    "type": "http.response.start",
    "status": 431,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(_BODY)),
        (b"connection", b"close"),
    ],
}
_REFUSAL_BODY: Any = {"type": "http.response.body", "body": _BODY, "more_body": False}
# Each header line is NAME ": " VALUE CRLF; the request line is METHOD SP TARGET SP "HTTP/1.1" CRLF; the head
# ends with CRLF.
_PER_HEADER = 4
_REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n")
_END = 2


def head_bytes(scope: dict[str, Any]) -> int:
    """The size of the head that carried ``scope``: request line and header lines, CRLFs included, as a client
    sends them with one space after each colon (the parser drops any other whitespace around a value)."""
    headers = scope["headers"]
    target = len(scope.get("raw_path") or scope["path"].encode())
    query = scope.get("query_string")
    if query:
        target += 1 + len(query)
    fields = sum(map(len, chain.from_iterable(headers)))
    return len(scope["method"]) + target + _REQUEST_LINE_EXTRA + fields + _PER_HEADER * len(headers) + _END


class HeadLimits:
    """Wraps an ASGI app: an HTTP request whose head has more than ``max_headers`` lines or more than
    ``max_head_bytes`` bytes is answered 431 and never reaches the app."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.max_headers = limits.max_headers
        self.max_head_bytes = limits.max_head_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if len(scope["headers"]) > self.max_headers:
                await self._refuse(scope, send, "too_many_headers")
                return
            if head_bytes(scope) > self.max_head_bytes:
                await self._refuse(scope, send, "head_too_large")
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: dict[str, Any], send: Any, reason: str) -> None:
        client = scope.get("client")
        log.warning(
            "request refused",
            extra={
                "event": "request_refused",
                "reason": reason,
                "status": 431,
                "client": f"{client[0]}:{client[1]}" if client else None,
            },
        )
        await send(_REFUSAL)
        await send(_REFUSAL_BODY)
