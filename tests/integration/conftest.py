"""A real ``authgate serve`` (on each server, see ``server_kind``) over a Secret directory laid out and rotated
the way kubelet does it."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from app.credentials import token_digest
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SERVERS, AuthgateProcess

TOKEN_A = "token-A-0123456789abcdefghij"
TOKEN_B = "token-B-0123456789abcdefghij"
PASSWORD = "alice-password"
BCRYPT_ALICE = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()

POLICY = """
routes:
  api:
    schemes: [bearer, basic]
    realm: prefect-api
    anonymous: ["GET /api/health"]
  ui:
    schemes: [basic]
    realm: prefect
throttle: {max_failures_per_address: 1000}
"""


def token_line(name: str, token: str, attrs: str = "") -> str:
    return f"{name} sha256:{token_digest(token).hex()} {attrs}\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def nginx_headers(path: str = "/api/flows", method: str = "GET", **extra: str) -> dict[str, str]:
    return {
        "X-Original-URL": f"https://prefect.example.com{path}",
        "X-Original-Method": method,
        "X-Real-IP": "10.1.2.3",
        **extra,
    }


@contextlib.contextmanager
def serving(base: Path, tokens: str, *, grpc: bool = False, server: str | None = None) -> Iterator[AuthgateProcess]:
    """A ready ``authgate serve`` (``grpc``: with ``--grpc-port``; ``server``: ``--server``, None = the
    default) on POLICY, over a kubelet-style Secret holding ``tokens`` and alice's bcrypt password, all under
    ``base``; stopped at the end."""
    secret = KubeletSecretDir(base / "secret")
    secret.write({"tokens": tokens, "htpasswd": f"alice:{BCRYPT_ALICE}\n"})
    (base / "policy.yaml").write_text(POLICY)
    proc = AuthgateProcess(secret.path, base / "authgate.log", config=base / "policy.yaml", grpc=grpc, server=server)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def secret(tmp_path: Path) -> KubeletSecretDir:
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": token_line("ci-a", TOKEN_A), "htpasswd": f"alice:{BCRYPT_ALICE}\n"})
    return secret


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Each test that takes it (or ``authgate``) runs once on every server ``--server`` offers."""
    kind: str = request.param
    return kind


@pytest.fixture
def authgate(
    secret: KubeletSecretDir, policy_file: Path, tmp_path: Path, server_kind: str
) -> Iterator[AuthgateProcess]:
    proc = AuthgateProcess(secret.path, tmp_path / "authgate.log", config=policy_file, server=server_kind)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
