"""The denial log (app.decision_log.DenialLog): per kind, the first denial of a window in full, the rest counted
exactly and summed up in one line when the window closes; every denial at debug level; never a credential."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.decision import BEARER_THROTTLED, UNKNOWN_TOKEN, Decision
from app.decision_log import DenialLog
from app.doors import Reading

READING = Reading("GET", "/api/flows", "203.0.113.7", None, "ingress-nginx")
BAD_PASSWORD = Decision(401, "bad_password", scheme="basic", principal="alice")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "authgate.decision"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="authgate.decision")
    return caplog


def test_the_first_denial_of_each_kind_in_full_the_rest_counted_then_one_summary(caplog_info):
    clock = Clock()
    denials = DenialLog(window=60.0, clock=clock)
    for _ in range(1000):
        denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    for _ in range(7):
        denials.denied("api", "api", BEARER_THROTTLED, READING)
    denials.denied("ui", "ui", BAD_PASSWORD, READING)
    full = lines(caplog_info)
    # One full line per kind: route, status, reason, scheme, and the facts of that first request.
    assert [(r.route, r.status, r.reason, r.scheme) for r in full] == [
        ("api", 401, "unknown_token", "bearer"),
        ("api", 403, "throttled", "bearer"),
        ("ui", 401, "bad_password", "basic"),
    ]
    assert all(r.getMessage() == "denied" and r.event == "decision" for r in full)
    assert (full[0].client, full[0].method, full[0].path) == ("203.0.113.7", "GET", "/api/flows")
    assert full[2].principal == "alice"
    caplog_info.clear()
    clock.now += 60.0
    denials.close_window()
    summaries = lines(caplog_info)
    # Exact counts of what was not logged, one line per kind that had any; none for the kind seen once.
    assert [(r.route, r.status, r.reason, r.scheme, r.not_logged) for r in summaries] == [
        ("api", 401, "unknown_token", "bearer", 999),
        ("api", 403, "throttled", "bearer", 6),
    ]
    assert all(r.event == "denials_not_logged" and r.window_seconds == 60.0 for r in summaries)
    assert summaries[0].getMessage() == "not logged: 999 more denials of this kind in the last 60.0 s"
    # A new window: the next denial of each kind is logged in full again.
    caplog_info.clear()
    denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    assert [r.getMessage() for r in lines(caplog_info)] == ["denied"]


def test_without_a_running_loop_the_next_denial_after_the_window_closes_it(caplog_info):
    clock = Clock()
    denials = DenialLog(window=10.0, clock=clock)
    for _ in range(5):
        denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    clock.now += 9.9
    denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    assert len(lines(caplog_info)) == 1  # still the same window
    clock.now += 0.1
    caplog_info.clear()
    denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    assert [(r.event, getattr(r, "not_logged", None)) for r in lines(caplog_info)] == [
        ("denials_not_logged", 5),
        ("decision", None),
    ]


@pytest.mark.anyio
async def test_on_the_event_loop_a_timer_closes_the_window_even_if_no_denial_follows(caplog_info):
    denials = DenialLog(window=0.05)
    for _ in range(3):
        denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    await asyncio.sleep(0.2)
    summary = [r for r in lines(caplog_info) if r.event == "denials_not_logged"]
    assert [(r.reason, r.not_logged) for r in summary] == [("unknown_token", 2)]


def test_every_denial_in_full_when_asked(caplog_info):
    denials = DenialLog(every=True)
    for _ in range(5):
        denials.denied("api", "api", UNKNOWN_TOKEN, READING)
    assert [r.event for r in lines(caplog_info)] == ["decision"] * 5


def test_kinds_are_bounded_by_the_route_label_not_the_name_asked_for(caplog_info):
    """A client naming a thousand routes that do not exist makes one kind (``_unknown``), not a thousand."""
    clock = Clock()
    denials = DenialLog(clock=clock)
    unknown = Decision(403, "unknown_route")
    for n in range(1000):
        denials.denied("_unknown", f"no-such-route-{n}", unknown, READING)
    assert len(lines(caplog_info)) == 1 and len(denials._not_logged) == 1
    caplog_info.clear()
    denials.close_window()
    (summary,) = lines(caplog_info)
    assert (summary.route, summary.not_logged) == ("_unknown", 999)
