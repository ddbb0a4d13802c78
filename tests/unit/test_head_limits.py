"""The head limits on the ASGI scope (granian's path): the size counted is the head's size on the wire, one
byte or header line over the limit is a logged 431 that closes, and anything else reaches the app unchanged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app.head_limits import HeadLimits, head_bytes
from app.settings import RequestLimits

SECRET = "Bearer head-limits-secret-0123456789"


def wire_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def scope_of(method: str, target: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """What an ASGI server makes of that head: names lower-cased, the query string apart."""
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
        "client": ("10.0.0.1", 40000),
    }


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/auth/api", [("Host", "authgate"), ("Authorization", SECRET)]),
        ("POST", "/auth/api/api/flows?limit=10&x=%20", [("Host", "a"), ("X-Empty", ""), ("Cookie", "c" * 900)]),
        ("GET", "/auth/ui", []),
    ],
)
def test_the_size_counted_is_the_heads_size_on_the_wire(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    assert head_bytes(scope_of(method, target, headers)) == len(wire_head(method, target, headers))


class Recorder:
    def __init__(self) -> None:
        self.called_with: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.called_with.append(scope)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def call(limits: RequestLimits, scope: dict[str, Any]) -> Recorder:
    recorder = Recorder()
    asyncio.run(HeadLimits(recorder.app, limits)(scope, None, recorder.send))
    return recorder


def test_exactly_the_limits_pass_and_one_byte_or_line_more_is_a_logged_431(caplog: pytest.LogCaptureFixture) -> None:
    headers = [("Host", "authgate"), ("Authorization", SECRET), ("X-Pad", "p" * 100)]
    size = len(wire_head("GET", "/auth/api", headers))
    exact = RequestLimits(max_head_bytes=size, max_headers=3)
    assert call(exact, scope_of("GET", "/auth/api", headers)).called_with

    caplog.set_level(logging.INFO, logger="authgate.limits")
    for limits, reason in [
        (RequestLimits(max_head_bytes=size - 1, max_headers=3), "head_too_large"),
        (RequestLimits(max_head_bytes=size, max_headers=2), "too_many_headers"),
    ]:
        caplog.clear()
        recorder = call(limits, scope_of("GET", "/auth/api", headers))
        assert recorder.called_with == []
        start, body = recorder.sent
        assert start["status"] == 431 and (b"connection", b"close") in start["headers"]
        assert body["body"] == b"Request Header Fields Too Large" and not body["more_body"]
        (record,) = caplog.records
        assert record.__dict__["event"] == "request_refused" and record.__dict__["reason"] == reason
        assert record.__dict__["client"] == "10.0.0.1:40000" and record.__dict__["status"] == 431
        assert SECRET not in caplog.text


def test_other_scopes_pass_untouched() -> None:
    tiny = RequestLimits(max_head_bytes=1, max_headers=1)
    lifespan = {"type": "lifespan"}
    assert call(tiny, lifespan).called_with == [lifespan]
