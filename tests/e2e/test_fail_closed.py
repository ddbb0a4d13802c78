"""authgate stopped: every proxy fails closed — the client gets 500 and nothing reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_TOKEN,
    HOST,
    Gateway,
    Upstream,
    bearer,
    new_test_id,
    start_authgate,
    traefik_routes,
)
from tests.e2e.nginx import NginxProcess, prefect_ingresses
from tests.e2e.traefik import TraefikProcess
from tests.support.procs import AuthgateProcess

pytestmark = pytest.mark.e2e


@dataclass
class Doomed:
    gateway: Gateway
    authgate: AuthgateProcess


@pytest.fixture(params=["nginx", "traefik"])
def doomed(request: pytest.FixtureRequest, tmp_path: Path, upstream: Upstream) -> Iterator[Doomed]:
    """A stack of its own, since the test stops its authgate."""
    proxy = "ingress-nginx" if request.param == "nginx" else "traefik"
    authgate, _ = start_authgate(tmp_path / "authgate", proxy=proxy)
    try:
        if request.param == "nginx":
            specs = prefect_ingresses(host=HOST, authgate_port=authgate.port, backend=upstream.address)
            with NginxProcess(specs, tmp_path / "nginx") as nginx:
                yield Doomed(Gateway("nginx", nginx.port, upstream), authgate)
        else:
            with TraefikProcess(traefik_routes(authgate.port, upstream.address), tmp_path / "traefik") as traefik:
                yield Doomed(Gateway("traefik", traefik.port, upstream), authgate)
    finally:
        authgate.stop()


def test_authgate_stopped_fails_closed(doomed: Doomed) -> None:
    gateway = doomed.gateway
    assert gateway.request("GET", "/api/flows", bearer(ALICE_TOKEN)).status == 200
    doomed.authgate.stop()
    test_id = new_test_id()
    for method, target, headers in [
        ("GET", "/api/flows", bearer(ALICE_TOKEN)),  # a valid credential
        ("GET", "/api/health", {}),  # an anonymous exception: still decided by authgate
        ("GET", "/", {}),  # the UI
    ]:
        answer = gateway.request(method, target, {**headers, "X-Test-Id": test_id})
        assert answer.status == 500, (method, target, answer.status)
    with pytest.raises(Exception) as raised:
        gateway.websocket("/api/events/in", {**bearer(ALICE_TOKEN), "X-Test-Id": test_id}).close()
    assert getattr(getattr(raised.value, "response", None), "status_code", None) == 500
    assert gateway.upstream.records(test_id) == []
