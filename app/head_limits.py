"""RequestLimits.max_headers below granian's own limit, checked on the ASGI scope.

granian's HTTP/1 parser (hyper) refuses a 101st header line itself, with a 431 that closes the connection
(so --max-headers is at most 100 there, app/settings.py). A lower limit is this wrapper's: a request with
more header lines is answered what uvicorn's protocol (app/limits.py) answers, a 431 that closes the
connection, logged the same way (never the head's contents: they hold credentials). It costs one length
check per request, and nothing at the default, where granian_server.py leaves it out.

The head's size in bytes is left to hyper's read buffer (app/granian_server.py says exactly what holds):
counting it here, exactly, measured 2 to 4 µs per request, a tenth of authgate's whole cost on granian
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

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


class HeaderCountLimit:
    """Wraps an ASGI app: an HTTP request with more than ``max_headers`` header lines is answered 431 and
    never reaches the app."""

    def __init__(self, app: ASGIApp, max_headers: int) -> None:
        self.app = app
        self.max_headers = max_headers

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine itself: it hands back the app's (or the refusal's), one frame less per request.
        if scope["type"] == "http" and len(scope["headers"]) > self.max_headers:
            return self._refuse(scope, send)
        return self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: dict[str, Any], send: Any) -> None:
        client = scope.get("client")
        log.warning(
            "request refused",
            extra={
                "event": "request_refused",
                "reason": "too_many_headers",
                "status": 431,
                "client": f"{client[0]}:{client[1]}" if client else None,
            },
        )
        await send(_REFUSAL)
        await send(_REFUSAL_BODY)
