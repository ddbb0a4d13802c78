"""Credential rotation under traffic, through nginx, with the Secret directory swapped the way kubelet swaps it.

A load loop sends token A continuously while the Secret goes A -> A+B -> (malformed) -> B. Measured:
no answer for A other than 200 before its removal; B accepted within 2 s of being added; A refused within
2 s of its removal; the malformed update (which, applied, would have removed A) changes nothing.
The throttle keeps its defaults, as in production: a client hammering with a revoked token soon gets 403.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import HOST, Gateway, Upstream, bearer, sha256_hex, start_authgate, tokens_file
from tests.e2e.nginx import NginxProcess, prefect_ingresses
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SERVERS, AuthgateProcess, metric_value, wait_for

pytestmark = pytest.mark.e2e

TOKEN_A = "rotation-token-a-0123456789abcdef"
TOKEN_B = "rotation-token-b-fedcba9876543210"
LINE_A = f"sha256:{sha256_hex(TOKEN_A)} routes=api"
LINE_B = f"sha256:{sha256_hex(TOKEN_B)} routes=api"
PROPAGATION_BOUND = 2.0
PACE = 0.01  # seconds between requests of the load loop: ~50-80 req/s on a shared 2-core machine


@dataclass(frozen=True)
class Sample:
    sent: float
    done: float
    status: int


class LoadLoop:
    """Sends GET /api/flows with one token, back to back (paced), recording every answer."""

    def __init__(self, gateway: Gateway, token: str) -> None:
        self.gateway = gateway
        self.token = token
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status = self.gateway.request("GET", "/api/flows", bearer(self.token)).status
            except OSError:
                status = -1
            self.samples.append(Sample(sent, time.monotonic(), status))
            self._stop.wait(PACE)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@dataclass
class RotationStack:
    gateway: Gateway
    authgate: AuthgateProcess
    secret: KubeletSecretDir


@pytest.fixture(params=SERVERS)
def rotation_stack(request: pytest.FixtureRequest, tmp_path: Path, upstream: Upstream) -> Iterator[RotationStack]:
    authgate, secret = start_authgate(
        tmp_path / "authgate", proxy="ingress-nginx", tokens=tokens_file(a=LINE_A), server=request.param
    )
    try:
        with NginxProcess(
            prefect_ingresses(host=HOST, authgate_port=authgate.port, backend=upstream.address), tmp_path / "nginx"
        ) as nginx:
            yield RotationStack(Gateway("nginx", nginx.port, upstream), authgate, secret)
    finally:
        authgate.stop()


def reload_errors(authgate: AuthgateProcess) -> float:
    return metric_value(authgate.base_url, 'authgate_reloads_total{result="error"}')


def wait_status(gateway: Gateway, token: str, status: int, *, since: float) -> float:
    """Seconds from ``since`` until a request with ``token`` answers ``status`` (fails after the bound + 3 s)."""
    wait_for(
        lambda: gateway.request("GET", "/api/flows", bearer(token)).status == status,
        timeout=PROPAGATION_BOUND + 3,
        interval=0.02,
        what=f"status {status}",
    )
    return time.monotonic() - since


def test_rotation_under_traffic(rotation_stack: RotationStack) -> None:
    gateway, secret = rotation_stack.gateway, rotation_stack.secret
    assert gateway.request("GET", "/api/flows", bearer(TOKEN_B)).status == 401
    with LoadLoop(gateway, TOKEN_A) as load:
        wait_for(lambda: len(load.samples) >= 20, timeout=10, what="load loop warm-up")

        # 1. add B
        added = time.monotonic()
        secret.write({"tokens": tokens_file(a=LINE_A, b=LINE_B)})
        b_accepted_after = wait_status(gateway, TOKEN_B, 200, since=added)

        # 2. a malformed update that, applied, would drop A: nothing may change
        errors_before = reload_errors(rotation_stack.authgate)
        secret.write({"tokens": tokens_file(b=LINE_B) + "this line has no secret\n"})
        wait_for(
            lambda: reload_errors(rotation_stack.authgate) > errors_before,
            timeout=PROPAGATION_BOUND + 3,
            what="the malformed update to be rejected",
        )
        rejected_at = time.monotonic()
        wait_for(
            lambda: len([s for s in load.samples if s.sent > rejected_at]) >= 20,
            timeout=10,
            what="traffic after the malformed update",
        )
        assert gateway.request("GET", "/api/flows", bearer(TOKEN_B)).status == 200

        # 3. B alone
        removed = time.monotonic()
        secret.write({"tokens": tokens_file(b=LINE_B)})
        wait_for(
            lambda: any(s.sent > removed and s.status == 401 for s in load.samples),
            timeout=PROPAGATION_BOUND + 3,
            what="A to be refused",
        )
        wait_for(
            lambda: len([s for s in load.samples if s.sent > removed + PROPAGATION_BOUND]) >= 20,
            timeout=PROPAGATION_BOUND + 10,
            what="traffic past the propagation bound",
        )
    assert gateway.request("GET", "/api/flows", bearer(TOKEN_B)).status == 200

    before_removal = [s for s in load.samples if s.done < removed]
    assert len(before_removal) >= 50
    assert [s for s in before_removal if s.status != 200] == []
    first_refusal = min(s.sent for s in load.samples if s.sent > removed and s.status == 401)
    assert first_refusal - removed <= PROPAGATION_BOUND
    assert b_accepted_after <= PROPAGATION_BOUND
    # once refused, always refused: 401, then 403 once the throttle (on by default) bans the failing
    # client; nothing but 200/401/403 in the switch-over window, never a 5xx
    after = [s for s in load.samples if s.sent >= first_refusal]
    assert after[0].status == 401
    assert {s.status for s in after} <= {401, 403}
    assert {s.status for s in load.samples if s.sent >= removed} <= {200, 401, 403}
