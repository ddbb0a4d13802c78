"""The upstream the proxies forward to: plain HTTP routes and a WebSocket echo, recording what arrived.

It stands in for the protected application (Prefect in production). Every request, HTTP or WebSocket
handshake, is recorded with its method, raw path and headers, so a test can prove what reached the
upstream — and what never did. Tests tag their requests with an ``X-Test-Id`` header and look them up
through the recorder's own endpoint, which is reached directly on the upstream's port (never through a
proxy)::

    GET /__recorder/requests?test_id=ID   -> JSON list of records carrying that X-Test-Id

Any other HTTP request answers 200 with its own record as JSON. A WebSocket on any path is accepted and
echoes each text message; the message ``headers`` is answered with the handshake's record as JSON.
``/__status/CODE`` (and anything below it) is a fake auth service: it answers CODE with a ``WWW-Authenticate``, an
``X-Auth-Request-User: fake-user``, a ``Location`` (``http://elsewhere.test/``, or the query's ``location``), a
``Set-Cookie`` per ``set_cookie`` in the query, and the body ``auth-body-leak``.

A browser's navigation to any path outside ``/api`` (a GET whose ``Accept`` names ``text/html``) gets the
stand-in UI instead: a small HTML page (:data:`UI_PAGE`) showing the path and the ``X-Auth-Request-User`` it
arrived with, whose script does what Prefect's UI does on the same origin — a ``fetch`` POST to
``/api/flows/filter`` and a WebSocket to ``/api/events/in`` — and writes what each got into the DOM
(``#fetch``: ``<status> <user the upstream saw>``; ``#ws``: ``open <user>`` or ``error``) for a test to read.

Run as its own process: ``python -m tests.e2e.upstream --port PORT``. Server-side WebSocket pings are
off, so an idle socket is really idle (the proxy's read timeout, not a keepalive, decides its fate).
"""

from __future__ import annotations

import argparse
import html
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RECORDER_PATH = "/__recorder/requests"
STATUS_PREFIX = "/__status/"

# The stand-in UI (see the module's docstring); {path} and {user} are filled in HTML-escaped.
UI_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>stand-in UI</title></head>
<body>
<p id="path">{path}</p>
<p id="user">{user}</p>
<p id="fetch">pending</p>
<p id="ws">pending</p>
<script>
const show = (id, text) => {{ document.getElementById(id).textContent = text; }};
fetch("/api/flows/filter", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: "{{}}"}})
  .then(r => r.text().then(t => {{
    let user = "";
    try {{ user = (JSON.parse(t).headers["x-auth-request-user"] || [""])[0]; }} catch (e) {{}}
    show("fetch", r.status + " " + user);
  }}))
  .catch(e => show("fetch", "error " + e));
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/events/in");
ws.onopen = () => ws.send("headers");
ws.onmessage = m => {{
  show("ws", "open " + (JSON.parse(m.data).headers["x-auth-request-user"] || [""])[0]);
  ws.close();
}};
ws.onerror = () => show("ws", "error");
</script>
</body></html>
"""


def _is_ui_navigation(scope: Scope) -> bool:
    """A browser asking for a page outside /api: answered with the stand-in UI."""
    if scope.get("method") != "GET" or scope["path"] == "/api" or scope["path"].startswith("/api/"):
        return False
    accept = b",".join(value for name, value in scope["headers"] if name.lower() == b"accept")
    return b"text/html" in accept


class Recorder:
    """Everything that reached the upstream, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)

    def with_test_id(self, test_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._records if test_id in r["headers"].get("x-test-id", [])]


def _record(scope: Scope) -> dict[str, Any]:
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return {
        "kind": scope["type"],
        "method": scope.get("method", "GET"),
        "raw_path": raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""),
        "headers": headers,
    }


def create_app(recorder: Recorder) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            await _http(scope, receive, send, recorder)
        elif scope["type"] == "websocket":
            await _websocket(scope, receive, send, recorder)

    return app


async def _http(scope: Scope, receive: Receive, send: Send, recorder: Recorder) -> None:
    more = True
    while more:  # drain the body
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"].startswith(STATUS_PREFIX):
        # A stand-in auth service answering a fixed status, to map what each proxy does with each status.
        recorder.add(_record(scope))
        # /__status/CODE, or /__status/CODE/<the original path> from a proxy that appends it (Envoy's path_prefix)
        status = int(scope["path"][len(STATUS_PREFIX) :].split("/", 1)[0])
        body = b"" if status in (204, 304) else b"auth-body-leak"
        query = parse_qs(scope["query_string"].decode())
        location = query.get("location", ["http://elsewhere.test/"])[0]
        headers = [
            (b"www-authenticate", b'Test realm="fake"'),
            (b"x-auth-request-user", b"fake-user"),
            (b"location", location.encode("latin-1")),
        ]
        headers += [(b"set-cookie", cookie.encode("latin-1")) for cookie in query.get("set_cookie", [])]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    content_type = b"application/json"
    if scope["path"] == RECORDER_PATH:
        test_id = parse_qs(scope["query_string"].decode()).get("test_id", [""])[0]
        body = json.dumps(recorder.with_test_id(test_id)).encode()
    elif _is_ui_navigation(scope):
        record = _record(scope)
        recorder.add(record)
        user = record["headers"].get("x-auth-request-user", [""])[0]
        body = UI_PAGE.format(path=html.escape(record["raw_path"]), user=html.escape(user)).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        record = _record(scope)
        recorder.add(record)
        body = json.dumps(record).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket(scope: Scope, receive: Receive, send: Send, recorder: Recorder) -> None:
    record = _record(scope)
    recorder.add(record)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode(errors="replace")
        reply = json.dumps(record) if text == "headers" else text
        await send({"type": "websocket.send", "text": reply})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(Recorder()),
        host=args.host,
        port=args.port,
        log_level="warning",
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
