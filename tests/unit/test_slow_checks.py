"""The bound on slow checks waiting for a worker thread, without a server (both wires share one:
tests/unit/test_grpc_server.py::test_one_bound_on_waiting_slow_checks_for_both_wires)."""

from __future__ import annotations

import asyncio
import datetime as dt

import bcrypt
import pytest

from app.credentials import load_secret_files
from app.decision import Decision, RequestFacts, Snapshot
from app.passwords import VerifiedCache
from app.policy import ThrottleSettings, parse_policy
from app.slow_checks import SlowChecks
from app.throttle import Throttle

pytestmark = pytest.mark.anyio
SATURATED = Decision(403, "slow_checks_saturated", scheme="basic")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def alice() -> tuple[Snapshot, RequestFacts]:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    credentials = load_secret_files({"htpasswd": f"alice:{hashed}\n".encode()}, "test")
    snapshot = Snapshot(credentials, parse_policy({"routes": {"ui": {"schemes": ["basic"]}}}, "t"), VerifiedCache(10))
    return snapshot, RequestFacts("GET", "/", (b"Basic YWxpY2U6cHc=",), client="10.1.2.3")


async def test_checks_past_the_bound_are_refused_while_the_first_ones_wait():
    snapshot, facts = alice()
    checks = SlowChecks(1, Throttle(ThrottleSettings()))
    now = dt.datetime.now(dt.UTC)
    first, second = await asyncio.gather(
        checks.decide("ui", facts, snapshot, now), checks.decide("ui", facts, snapshot, now)
    )
    assert (first.status, first.principal) == (200, "alice")
    assert second == SATURATED
    assert checks.pending == 0  # counted down when a check is done
    assert (await checks.decide("ui", facts, snapshot, now)).status == 200
