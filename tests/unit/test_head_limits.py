"""The header-line limit on the ASGI scope (granian's path, below hyper's own 100): one line over is a logged
431 that closes, never reaching the app; anything else reaches the app unchanged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app.head_limits import HeaderCountLimit

SECRET = b"Bearer head-limits-secret-0123456789"


def scope_with(lines: int) -> dict[str, Any]:
    headers = [(b"host", b"authgate"), (b"authorization", SECRET)]
    headers += [(b"x-pad-%d" % i, b"1") for i in range(lines - len(headers))]
    return {"type": "http", "method": "GET", "path": "/auth/api", "headers": headers, "client": ("10.0.0.1", 40000)}


class Recorder:
    def __init__(self) -> None:
        self.called_with: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.called_with.append(scope)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def call(max_headers: int, scope: dict[str, Any]) -> Recorder:
    recorder = Recorder()

    async def run() -> None:
        await HeaderCountLimit(recorder.app, max_headers)(scope, None, recorder.send)

    asyncio.run(run())
    return recorder


def test_exactly_the_limit_passes_and_one_line_more_is_a_logged_431(caplog: pytest.LogCaptureFixture) -> None:
    assert call(20, scope_with(20)).called_with
    caplog.set_level(logging.INFO, logger="authgate.limits")
    recorder = call(20, scope_with(21))
    assert recorder.called_with == []
    start, body = recorder.sent
    assert start["status"] == 431 and (b"connection", b"close") in start["headers"]
    assert body["body"] == b"Request Header Fields Too Large" and not body["more_body"]
    (record,) = caplog.records
    assert record.__dict__["event"] == "request_refused" and record.__dict__["reason"] == "too_many_headers"
    assert record.__dict__["client"] == "10.0.0.1:40000" and record.__dict__["status"] == 431
    assert SECRET.decode() not in caplog.text


def test_other_scopes_pass_untouched() -> None:
    lifespan = {"type": "lifespan"}
    assert call(1, lifespan).called_with == [lifespan]
