"""The raw-ASGI floor's complete denial lane (bench/baseline_app.py, ``/auth/complete``), driven in-process: it
must do what authgate does for a guess, or case 11's complete floor measures less than the product's work."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from typing import Any

import pytest

from app.policy import ThrottleSettings
from app.throttle import Throttle
from bench.baseline_app import CompleteDenial, make_app

GOOD = b"the-good-token"
TABLE = {hashlib.sha256(GOOD).digest(): (b"alice", hashlib.sha256(GOOD).digest())}
ORIGINAL = [(b"x-original-url", b"http://bench.test/api/ok?x=1"), (b"x-original-method", b"GET")]


def scope(token: bytes, address: bytes | None, path: bytes = b"/auth/complete", original=ORIGINAL) -> dict[str, Any]:
    headers = [*original, (b"authorization", b"Bearer " + token)]
    if address is not None:
        headers.append((b"x-real-ip", address))
    return {"type": "http", "path": path.decode(), "raw_path": path, "headers": headers, "client": ("127.0.0.9", 5)}


def ask(app, scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each request's start message, all on one running loop (the denial log's timer needs one)."""

    async def run() -> list[dict[str, Any]]:
        starts = []
        for one in scopes:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            await app(one, None, send)
            assert sent[1] == {"type": "http.response.body", "body": b""}
            starts.append(sent[0])
        return starts

    return asyncio.run(run())


def test_fifty_guesses_ban_the_address_then_it_is_refused_unchecked(caplog):
    complete = CompleteDenial()
    app = make_app(TABLE, complete)
    guesses = [scope(b"wrong-%d" % n, b"10.0.0.1") for n in range(51)]
    with caplog.at_level(logging.INFO, logger="baseline.decision"):
        starts = ask(app, [*guesses, scope(b"wrong-x", b"10.0.0.2"), scope(GOOD, b"10.0.0.1")])
    assert [s["status"] for s in starts] == [401] * 50 + [403, 401, 200]
    challenges = [value for name, value in starts[0]["headers"] if name == b"www-authenticate"]
    assert challenges == [b'Bearer realm="bench", error="invalid_token"', b'Basic realm="bench", charset="UTF-8"']
    assert (b"cache-control", b"no-store") in starts[50]["headers"]
    assert complete.cells == {
        ("complete", "deny", "unknown_token", "bearer"): [51],
        ("complete", "deny", "throttled", "bearer"): [1],
    }
    assert sum(complete.bucket_counts) == 52 and complete.latency_sum[0] > 0
    assert len(complete.bans) == 1 and len(complete.counters) == 1 and complete.problems == {}
    # The first denial of each kind logged in full, the others counted for the window's summary line.
    logged = [r for r in caplog.records if r.name == "baseline.decision"]
    assert [(r.status, r.method, r.path, r.client) for r in logged] == [  # type: ignore[attr-defined]
        (401, "GET", "/api/ok", "10.0.0.1"),
        (403, "GET", "/api/ok", "10.0.0.1"),
    ]
    assert complete.not_logged == {
        ("complete", 401, "unknown_token", "bearer"): 50,
        ("complete", 403, "throttled", "bearer"): 0,
    }


def test_a_request_off_the_lone_doors_path_counts_a_front_door_problem():
    complete = CompleteDenial()
    app = make_app(TABLE, complete)
    no_url = [(b"x-original-method", b"GET")]
    traefik = [*ORIGINAL, (b"x-forwarded-uri", b"/api/ok")]
    starts = ask(app, [scope(b"wrong", b"10.0.0.1", original=no_url), scope(b"wrong", b"10.0.0.1", original=traefik)])
    assert [s["status"] for s in starts] == [401, 401]
    assert complete.problems == {("complete", "missing"): 1, ("complete", "conflict"): 1}
    # The peer's address is counted then (what the door vouches for is unknown).
    assert len(complete.counters) == 1


def test_anything_but_a_guess_gets_the_floors_own_denial():
    complete = CompleteDenial()
    app = make_app(TABLE, complete)
    other_spelling = scope(b"wrong", b"10.0.0.1")
    other_spelling["headers"][-2] = (b"authorization", b"bearer wrong")
    starts = ask(app, [scope(b"wrong", b"10.0.0.1", path=b"/auth/api"), other_spelling, scope(b"a b", b"10.0.0.1")])
    assert [(s["status"], s["headers"][0][1]) for s in starts] == [(401, b'Bearer realm="baseline"')] * 3
    assert complete.cells == {} and not complete.counters


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ban_seconds", [30.0, 5.0])  # 5: a ban expires inside its window and counts on there
def test_the_throttle_answers_as_authgates_does(seed, ban_seconds):
    """Against app.throttle.Throttle on the same failures and clock, with a table small enough to fill: the same
    answers and the same number of keys kept, step by step."""
    settings = ThrottleSettings(max_failures_per_address=3, window_seconds=10.0, ban_seconds=ban_seconds, max_tracked=6)
    now = [0.0]
    complete = CompleteDenial(settings, clock=lambda: now[0])
    throttle = Throttle(settings, clock=lambda: now[0])
    app = make_app(TABLE, complete)
    rng = random.Random(seed)
    steps = []
    for n in range(3000):
        now[0] += rng.choice((0.0, 0.0, 0.5, 2.0, 9.0))
        address = f"10.0.0.{rng.randrange(12)}"
        steps.append((now[0], address, n))

    statuses: list[int] = []

    async def run() -> None:
        for at, address, n in steps:
            now[0] = at
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            await app(scope(b"wrong-%d" % n, address.encode()), None, send)
            expected = 403 if throttle.banned_else_count(address) else 401
            assert sent[0]["status"] == expected, (n, address)
            assert len(complete.counters) + len(complete.bans) == throttle.tracked(), n
            assert len(complete.bans) <= settings.max_tracked // 2, n
            statuses.append(expected)

    asyncio.run(run())
    assert statuses.count(403) > 20 and statuses.count(401) > 100  # bans, refusals, and a full table, all met


def test_a_ban_expiring_inside_its_window_counts_on_in_that_window():
    """As app.throttle's _count: a key whose expired ban the sweep has not reached yet (two per failure) keeps the
    window its ban opened. Limit 2, window 10 s, ban 5 s: A, B and C banned at 0; at 6 C's failure sweeps A and
    B, and C counts on in the window of 0, so at 11 that window has closed and the next failure does not ban."""
    settings = ThrottleSettings(max_failures_per_address=2, window_seconds=10.0, ban_seconds=5.0)
    now = [0.0]
    complete = CompleteDenial(settings, clock=lambda: now[0])
    throttle = Throttle(settings, clock=lambda: now[0])
    app = make_app(TABLE, complete)
    script = [(0.0, "a"), (0.0, "a"), (0.0, "b"), (0.0, "b"), (0.0, "c"), (0.0, "c"), (1.0, "c")]
    script += [(6.0, "c"), (11.0, "c"), (11.5, "c"), (12.0, "c")]
    statuses = []
    for n, (at, address) in enumerate(script):
        now[0] = at
        (start,) = ask(app, [scope(b"wrong-%d" % n, address.encode())])
        statuses.append((start["status"], 403 if throttle.banned_else_count(address) else 401))
    assert statuses == [(401, 401)] * 6 + [(403, 403)] + [(401, 401)] * 3 + [(403, 403)]
