"""Lockout on demand, through a real nginx rendered from the chart's Ingresses: guessing at a user's name bans
the name, and the ban must never lock out that user's own password, on either route, across a reload of the
Secret that does not change that user's hash.

The user is the suite's ``admin``, a ``{SHA}`` entry (cheap: checked even under a name ban). Before the fix,
admin's correct password got 403 on the UI route at once (only a per-route allow memo let it through on the
route it had used) and on ``/api`` after any unrelated Secret change (the memo dies with the snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    HOST,
    Gateway,
    Upstream,
    basic,
    bearer,
    default_htpasswd,
    default_tokens,
    sha256_hex,
    start_authgate,
    tokens_file,
)
from tests.e2e.nginx import NginxProcess, prefect_ingresses
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

NEW_TOKEN = "lockout-new-token-0123456789abcdef"
USER_LIMIT = 10  # the policy's default max_failures_per_user


@pytest.fixture
def lockout_stack(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[Gateway, KubeletSecretDir]]:
    authgate, secret = start_authgate(tmp_path / "authgate", proxy="ingress-nginx")
    try:
        with NginxProcess(
            prefect_ingresses(host=HOST, authgate_port=authgate.port, backend=upstream.address), tmp_path / "nginx"
        ) as nginx:
            yield Gateway("nginx", nginx.port, upstream), secret
    finally:
        authgate.stop()


def guess(gateway: Gateway, count: int) -> list[int]:
    return [gateway.request("GET", "/api/flows", basic(ADMIN_USER, f"guess-{i}")).status for i in range(count)]


def test_guessing_at_a_name_never_locks_out_its_password_on_either_route_across_a_reload(
    lockout_stack: tuple[Gateway, KubeletSecretDir],
) -> None:
    gateway, secret = lockout_stack
    admin = basic(ADMIN_USER, ADMIN_PASSWORD)
    assert gateway.request("GET", "/api/flows", admin).status == 200  # admin signs in on the API

    assert guess(gateway, USER_LIMIT) == [401] * USER_LIMIT  # an attacker's ten wrong passwords ban the name
    assert guess(gateway, 1) == [403]  # ... and the next wrong one gets the ban's answer

    assert gateway.request("GET", "/ui/dashboard", admin).status == 200  # the UI route, never used before
    assert gateway.request("GET", "/api/flows", admin).status == 200

    # An unrelated change to the Secret (a token added), applied once the new token passes.
    tokens = default_tokens() + tokens_file(newtoken=f"sha256:{sha256_hex(NEW_TOKEN)}")
    secret.write({"tokens": tokens, "htpasswd": default_htpasswd()})  # admin's hash unchanged
    wait_for(
        lambda: gateway.request("GET", "/api/flows", bearer(NEW_TOKEN)).status == 200,
        timeout=15,
        what="the reload with the new token",
    )
    assert gateway.request("GET", "/api/flows", admin).status == 200
    assert gateway.request("GET", "/ui/dashboard", admin).status == 200

    assert guess(gateway, USER_LIMIT) == [403] * USER_LIMIT  # ten more renew the ban; still no lockout
    assert gateway.request("GET", "/api/flows", admin).status == 200
    assert gateway.request("GET", "/ui/dashboard", admin).status == 200
