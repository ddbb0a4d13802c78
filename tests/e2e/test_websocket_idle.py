"""Long-lived WebSockets: an authorised socket survives 65 s of real idleness (past nginx's 60 s default).

Slow on purpose: 65 s is the point. Each case is its own test so xdist runs them beside the rest.
Only the default authgate server: after the handshake authgate is not on the socket's path.
Neither side pings (the upstream runs with ``ws_ping_interval=None``, the client with ``ping_interval=None``),
so only the proxy's timeouts decide; the control case shows that a short ``proxy-read-timeout`` does
close the same idle socket, so the long case would fail if the 3600 s annotation were not rendered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from app.settings import DEFAULT_SERVER
from tests.e2e.conftest import ALICE_TOKEN, HOST, Gateway, Upstream, bearer, start_authgate
from tests.e2e.nginx import IngressSpec, NginxProcess

pytestmark = pytest.mark.e2e

IDLE_SECONDS = 65.0
SLOW = True  # scheduled first (see conftest.pytest_collection_modifyitems)


@pytest.mark.parametrize("stack", [("nginx", DEFAULT_SERVER), ("traefik", DEFAULT_SERVER)], indirect=True)
def test_websocket_survives_65s_idle(gateway: Gateway) -> None:
    with gateway.websocket("/api/events/out", bearer(ALICE_TOKEN)) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=IDLE_SECONDS)  # nothing arrives, nothing is sent: real idleness
        ws.send("after 65 s idle")
        assert ws.recv(timeout=10) == "after 65 s idle"


@pytest.fixture
def short_timeout_nginx(tmp_path: Path, upstream: Upstream) -> Iterator[Gateway]:
    authgate, _ = start_authgate(tmp_path / "authgate", proxy="ingress-nginx")
    spec = IngressSpec(
        host=HOST,
        path="/api",
        backend=upstream.address,
        auth_url=f"http://127.0.0.1:{authgate.port}/auth/api",
        auth_response_headers=("X-Auth-Request-User",),
        proxy_read_timeout=2,
        proxy_send_timeout=2,
    )
    try:
        with NginxProcess([spec], tmp_path / "nginx") as nginx:
            yield Gateway("nginx", nginx.port, upstream)
    finally:
        authgate.stop()


def test_control_short_read_timeout_closes_an_idle_websocket(short_timeout_nginx: Gateway) -> None:
    with short_timeout_nginx.websocket("/api/events/out", bearer(ALICE_TOKEN)) as ws:
        ws.send("ping-by-hand")
        assert ws.recv(timeout=10) == "ping-by-hand"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
        assert 1.5 <= time.monotonic() - started <= 10
