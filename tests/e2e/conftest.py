"""Shared stacks for the end-to-end suite: upstream, authgate, and a proxy in front (nginx or Traefik).

Each xdist worker starts its own session-scoped stacks the first time a test asks for them, one per proxy
and authgate server (``--server``); tests that must stop or rotate something start their own (see
test_fail_closed.py, test_rotation.py).
Requests are tagged with a unique ``X-Test-Id`` so a test finds exactly its own records in the upstream.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.e2e.nginx import NginxProcess, prefect_ingresses
from tests.e2e.traefik import TraefikProcess, TraefikRoute
from tests.e2e.upstream import RECORDER_PATH
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SERVERS, AuthgateProcess, Process, free_port, wait_for, wait_http

HOST = "prefect.test"

# Test credentials (never used anywhere real).
ALICE_TOKEN = "alice-e2e-token-0123456789abcdef"  # stored hashed; any route
READER_TOKEN = "reader-e2e-token-fedcba9876543210"  # stored plain; GET /api/flows only
ADMIN_USER, ADMIN_PASSWORD = "admin", "e2e-admin-password"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tokens_file(**tokens: str) -> str:
    """A ``tokens`` file; keyword = NAME, value = ``SECRET [ATTRIBUTES]``."""
    return "".join(f"{name} {line}\n" for name, line in tokens.items())


def default_tokens() -> str:
    return tokens_file(
        alice=f"sha256:{sha256_hex(ALICE_TOKEN)}",
        reader=f"{READER_TOKEN} routes=api methods=GET paths=/api/flows",
    )


def default_htpasswd() -> str:
    digest = base64.b64encode(hashlib.sha1(ADMIN_PASSWORD.encode()).digest()).decode()
    return f"{ADMIN_USER}:{{SHA}}{digest}\n"


def policy_yaml(*, max_age_seconds: int = 0) -> str:
    return f"""\
routes:
  api:
    schemes: [bearer, basic]
    realm: prefect-api
    principals: ["*"]
    anonymous:
      - GET /api/health
      - GET /api/ready
  ui:
    schemes: [basic]
    realm: prefect
    principals: ["*"]
decision_cache:
  max_age_seconds: {max_age_seconds}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def new_test_id() -> str:
    return uuid.uuid4().hex


class Upstream:
    """The recording upstream (tests/e2e/upstream.py) in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = Process(
            [sys.executable, "-m", "tests.e2e.upstream", "--port", str(self.port)], workdir / "upstream.log"
        )
        wait_http(f"http://{self.address}{RECORDER_PATH}?test_id=startup")

    def records(self, test_id: str) -> list[dict[str, Any]]:
        """Every request that reached the upstream carrying ``X-Test-Id: test_id``."""
        response = httpx.get(f"http://{self.address}{RECORDER_PATH}", params={"test_id": test_id}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    """A proxy in front of authgate and the upstream, as a client on the outside sees it."""

    name: str
    port: int
    upstream: Upstream
    host: str = HOST

    def request(
        self, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Answer:
        """One request with ``target`` sent byte for byte (no client-side normalisation of ``..``/``%2F``).

        A body-less POST/PUT/DELETE carries ``Content-Length: 0``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.host)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None or method in ("POST", "PUT", "PATCH", "DELETE"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def websocket(self, path: str, headers: Mapping[str, str] | None = None) -> ClientConnection:
        """A WebSocket through the proxy, with ``Host`` = the Ingress host; no client pings (idle means idle)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            return connect(
                f"ws://{self.host}{path}",
                sock=sock,
                additional_headers=dict(headers or {}),
                ping_interval=None,
                proxy=None,
                open_timeout=10,
                close_timeout=5,
            )
        except BaseException:
            sock.close()
            raise


@dataclass
class Stack:
    gateway: Gateway
    authgate: AuthgateProcess
    secret: KubeletSecretDir


def start_authgate(
    workdir: Path,
    *,
    proxy: str,
    max_age_seconds: int = 0,
    tokens: str | None = None,
    htpasswd: str | None = None,
    server: str | None = None,
) -> tuple[AuthgateProcess, KubeletSecretDir]:
    """authgate on the test policy and credentials, waited until ready; ``server`` None = the default."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret = KubeletSecretDir(workdir / "secret")
    secret.write(
        {
            "tokens": default_tokens() if tokens is None else tokens,
            "htpasswd": default_htpasswd() if htpasswd is None else htpasswd,
        }
    )
    config = workdir / "policy.yaml"
    config.write_text(policy_yaml(max_age_seconds=max_age_seconds))
    authgate = AuthgateProcess(secret.path, workdir / "authgate.log", config=config, proxy=proxy, server=server)
    try:
        authgate.wait_ready()
    except BaseException:
        authgate.stop()
        raise
    return authgate, secret


def traefik_routes(authgate_port: int, backend: str) -> list[TraefikRoute]:
    """The Prefect shape for Traefik: /api with the api route, everything else with the ui route."""
    return [
        TraefikRoute(
            name="api",
            host=HOST,
            path_prefix="/api",
            priority=20,
            backend=backend,
            auth_address=f"http://127.0.0.1:{authgate_port}/auth/api",
            auth_response_headers=("X-Auth-Request-User",),
        ),
        TraefikRoute(
            name="ui",
            host=HOST,
            path_prefix="/",
            priority=10,
            backend=backend,
            auth_address=f"http://127.0.0.1:{authgate_port}/auth/ui",
            auth_response_headers=("X-Auth-Request-User",),
        ),
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Deliberately slow tests (modules with ``SLOW = True``) first, so xdist starts them at once and the
    rest runs beside them instead of after them. A stable sort: every other order is kept."""
    items.sort(key=lambda item: not getattr(getattr(item, "module", None), "SLOW", False))


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = Upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    up.stop()


StackFactory = Callable[[str, str], Stack]
# (proxy, authgate server) of every shared stack; the tests that take ``stack`` or ``gateway`` run on each.
STACKS = [(proxy, server) for proxy in ("nginx", "traefik") for server in SERVERS]


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[StackFactory]:
    """The shared stack of a proxy and an authgate server, started on first use, stopped at the end."""
    with ExitStack() as cleanup:
        started: dict[tuple[str, str], Stack] = {}

        def get(proxy: str, server: str) -> Stack:
            if (proxy, server) not in started:
                workdir = tmp_path_factory.mktemp(f"{proxy}-{server}-stack")
                door = "ingress-nginx" if proxy == "nginx" else "traefik"
                authgate, secret = start_authgate(workdir / "authgate", proxy=door, server=server)
                cleanup.callback(authgate.stop)
                front: NginxProcess | TraefikProcess
                if proxy == "nginx":
                    ingresses = prefect_ingresses(host=HOST, authgate_port=authgate.port, backend=upstream.address)
                    front = NginxProcess(ingresses, workdir / "nginx")
                else:
                    front = TraefikProcess(traefik_routes(authgate.port, upstream.address), workdir / "traefik")
                cleanup.callback(front.stop)
                front.start()
                started[proxy, server] = Stack(Gateway(proxy, front.port, upstream), authgate, secret)
            return started[proxy, server]

        yield get


@pytest.fixture(params=STACKS, ids=[f"{proxy}-{server}" for proxy, server in STACKS])
def stack(request: pytest.FixtureRequest, stacks: StackFactory) -> Stack:
    """Each test that takes ``stack`` (or ``gateway``) runs through nginx and Traefik, in front of authgate on
    each server."""
    proxy, server = request.param
    return stacks(proxy, server)


@pytest.fixture
def gateway(stack: Stack) -> Gateway:
    return stack.gateway


__all__ = ["Answer", "Gateway", "Stack", "Upstream", "wait_for"]
