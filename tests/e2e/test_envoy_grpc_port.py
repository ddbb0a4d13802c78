"""authgate behind a real Envoy configured the way Envoy Gateway translates the chart's SecurityPolicies
(its ``internal/xds/translator/extauth.go``: the ext_authz HTTP filter, ``transport_api_version: V3``,
``failure_mode_allow`` = ``failOpen`` (false), ``allowed_headers`` = ``headersToExtAuth``; ``extAuth.grpc``:
``grpc_service.envoy_grpc`` to an HTTP/2 cluster on authgate's ``--grpc-port`` with the route's
``contextExtensions`` in ``check_settings``; ``extAuth.http``: ``http_service`` with ``path_prefix`` and
``allowed_upstream_headers`` = ``headersToBackend``). Both listeners come from one render of the chart
(``gateway.externalAuth: envoy-gateway``): the header lists, authgate's Secret, policy and ``--proxy``.

What it proves:

- **No one who reaches the gRPC port can make Envoy deny everyone.** 1,024 health ``Watch`` streams held
  open on one HTTP/2 connection, or 1,024 streams that never send their request message, used to fill
  grpcio's ``maximum_concurrent_rpcs``: a direct ``Check`` got ``RESOURCE_EXHAUSTED`` and a valid token
  through Envoy got 403. Now a Check always has its room, directly and through Envoy.
- **No identity header a client writes reaches the application** through Envoy, on either wire: forged
  ``X-Auth-Request-User``/``-Scheme`` are replaced on identified allows and removed on anonymous ones.
  (The whole per-door matrix lives with the Envoy door tests; these are the two cases of this issue.)
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub

from app.grpc_server import MAX_WATCHES, STREAMS_PER_CONNECTION
from tests.chart.render import RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values
from tests.e2e.conftest import Gateway, Upstream, basic, bearer, new_test_id
from tests.support.envoy import (
    EXT_AUTHZ_PER_ROUTE,
    EnvoyProcess,
    bootstrap,
    cluster,
    ext_authz_filter,
    http_listener,
    route_to,
    virtual_host,
)
from tests.support.envoy_grpc import CHECK_METHOD, Answer, envoy_check
from tests.support.procs import AuthgateProcess, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("envoy-grpc-port")]

WORKER = "envoy-grpc-worker-token-0123456789abcdef"
UI_USER, UI_PASSWORD = "alice", "envoy-grpc-password"
HOST = "prefect.example.com"
HELD = 1024  # what the review held open: grpcio's old maximum_concurrent_rpcs (--max-connections' default)
FORGED = {"X-Auth-Request-User": "admin", "X-Auth-Request-Scheme": "forged"}
IDENTITY = ("x-auth-request-user", "x-auth-request-scheme")


def exact(names: list[str]) -> dict[str, Any]:
    """Envoy Gateway's ListStringMatcher for a list of header names: exact, ignoring case."""
    return {"patterns": [{"exact": name, "ignore_case": True} for name in names]}


@dataclass
class EnvoyFront:
    authgate: AuthgateProcess
    envoy: EnvoyProcess
    upstream: Upstream

    def gateway(self, listener: str) -> Gateway:
        return Gateway(listener, self.envoy.listener_port(listener), self.upstream, host=HOST)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[EnvoyFront]:
    workdir = tmp_path_factory.mktemp("envoy-grpc-port")
    credentials = credential_values({"worker": (WORKER, "routes=api")}, {UI_USER: UI_PASSWORD})
    render = Render.of("envoy-grpc-port", [*SCENARIOS["gateway-envoy-gateway"], *credentials])
    policy = render.one("SecurityPolicy", f"{RELEASE}-api")["spec"]["extAuth"]
    files = RenderedAuthgate.lay_out(render, workdir)
    authgate = AuthgateProcess(
        files.secret.path, workdir / "authgate.log", config=files.policy, proxy=files.proxy, grpc=True
    )
    try:
        authgate.wait_ready()
        assert authgate.grpc_port is not None
        authz = {"transport_api_version": "V3", "failure_mode_allow": policy["failOpen"]}
        authz["allowed_headers"] = exact(policy["headersToExtAuth"])
        grpc_authz = {
            **authz,
            "grpc_service": {"envoy_grpc": {"cluster_name": "authgate-grpc"}, "timeout": "10s"},
        }
        http_authz = {
            **authz,
            "http_service": {
                "server_uri": {"uri": "http://authgate/auth/api", "cluster": "authgate-http", "timeout": "10s"},
                "path_prefix": policy["http"]["path"],
                "authorization_response": {"allowed_upstream_headers": exact(policy["http"]["headersToBackend"])},
            },
        }
        # extAuth.grpc's contextExtensions (the chart renders route: <part>) reach authgate per route.
        context = {
            "envoy.filters.http.ext_authz": {
                "@type": EXT_AUTHZ_PER_ROUTE,
                "check_settings": {"context_extensions": {"route": "api"}},
            }
        }
        listeners = [
            http_listener(
                "grpc",
                free_port(),
                [virtual_host("grpc", ["*"], [route_to("/", "upstream", per_filter=context)])],
                [ext_authz_filter(grpc_authz)],
            ),
            http_listener(
                "http",
                free_port(),
                [virtual_host("http", ["*"], [route_to("/", "upstream")])],
                [ext_authz_filter(http_authz)],
            ),
        ]
        upstream_port = int(upstream.address.rsplit(":", 1)[1])
        clusters = [
            cluster("authgate-grpc", authgate.grpc_port, http2=True),
            cluster("authgate-http", authgate.port),
            cluster("upstream", upstream_port),
        ]
        with EnvoyProcess(bootstrap(listeners=listeners, clusters=clusters), workdir / "envoy") as envoy:
            yield EnvoyFront(authgate, envoy, upstream)
    finally:
        authgate.stop()


def user_through(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, list[str]] | None]:
    """The status a client gets through ``gateway`` for ``GET /api/flows``, and the identity headers the
    upstream received (None when nothing reached it)."""
    test_id = new_test_id()
    answer = gateway.request("GET", "/api/flows", {**headers, "X-Test-Id": test_id})
    records = gateway.upstream.records(test_id)
    if not records:
        return answer.status, None
    [record] = records
    return answer.status, {name: record["headers"][name] for name in IDENTITY if name in record["headers"]}


def check_request() -> Any:
    return envoy_check(headers={"authorization": f"Bearer {WORKER}"})


async def first_answers(calls: list[Any], timeout: float) -> list[Any]:
    """Each Watch call's first message, or its RPC error's code."""

    async def first(call: Any) -> Any:
        try:
            return (await call.read()).status
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    return await asyncio.wait_for(asyncio.gather(*(first(call) for call in calls)), timeout)


def test_a_thousand_health_watch_streams_on_one_connection_leave_checks_their_room(front: EnvoyFront) -> None:
    """1,024 health Watch streams (which never end) on one HTTP/2 connection, as the review held them: a Check
    on that connection, on another and through Envoy is answered while they are held."""
    port = front.authgate.grpc_port
    through_grpc = front.gateway("grpc")

    async def scenario() -> None:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as attacker,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as other,
        ):
            health = HealthStub(attacker)
            calls = [health.Watch(HealthCheckRequest()) for _ in range(HELD)]
            answers = await first_answers(calls, timeout=120)
            # MAX_WATCHES held; every other one refused: by the Watch bound (RESOURCE_EXHAUSTED), or, sent
            # before the client had the server's SETTINGS, by the per-connection stream limit (REFUSED_STREAM,
            # which grpcio reports as UNAVAILABLE).
            counts = collections.Counter(answers)
            assert counts[HealthCheckResponse.SERVING] == MAX_WATCHES, counts
            refused = counts[grpc.StatusCode.RESOURCE_EXHAUSTED] + counts[grpc.StatusCode.UNAVAILABLE]
            assert refused == HELD - MAX_WATCHES, counts
            # While they are held: a Check on the same connection, on another, and through Envoy.
            for channel in (attacker, other):
                answer = Answer.of(await AuthorizationStub(channel).Check(check_request(), timeout=10))
                assert answer.upstream == {"x-auth-request-user": "worker", "x-auth-request-scheme": "bearer"}
            status, identity = await asyncio.to_thread(user_through, through_grpc, bearer(WORKER))
            assert (status, identity) == (200, {"x-auth-request-user": ["worker"], "x-auth-request-scheme": ["bearer"]})
            for call in calls:
                call.cancel()

    asyncio.run(scenario())


def test_streams_that_never_send_a_message_take_no_check_room_and_one_connection_holds_256(
    front: EnvoyFront,
) -> None:
    """1,025 streams to Check on one HTTP/2 connection, each sending its headers and never its message
    (grpcio's old bound counted each from its headers): the server advertises 256 streams per connection and
    refuses the ones beyond; a Check, directly and through Envoy, is answered meanwhile."""
    port = front.authgate.grpc_port
    assert port is not None
    with StalledStreams(port) as attacker:
        assert attacker.max_concurrent_streams == STREAMS_PER_CONNECTION
        attacker.open(HELD + 1)
        beyond = HELD + 1 - STREAMS_PER_CONNECTION
        wait_for(lambda: attacker.refused() == beyond, timeout=60, what=f"{beyond} streams refused")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = Answer.of(AuthorizationStub(channel).Check(check_request(), timeout=10))
        assert answer.upstream["x-auth-request-user"] == "worker"
        assert user_through(front.gateway("grpc"), bearer(WORKER))[0] == 200
        assert attacker.refused() == beyond  # and the 256 others are still open


class StalledStreams:
    """A raw HTTP/2 client (frames written by hand, RFC 9113) that opens gRPC streams to Check with headers
    and nothing else, which no grpcio client does (it sends the headers with the first message)."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    HEADERS, RST_STREAM, SETTINGS, PING = 0x1, 0x3, 0x4, 0x6
    ACK, END_HEADERS = 0x1, 0x4
    REFUSED_STREAM = 0x7
    MAX_CONCURRENT_STREAMS = 0x3

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.refusals = 0
        self.next_stream = 1
        self.sock.sendall(self.PREFACE + self.frame(self.SETTINGS, 0, 0))
        settings: dict[int, int] | None = None
        while settings is None:
            kind, flags, payload = self.read_frame()
            if kind == self.SETTINGS and not flags & self.ACK:
                settings = {
                    int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(payload[i + 2 : i + 6], "big")
                    for i in range(0, len(payload), 6)
                }
        self.sock.sendall(self.frame(self.SETTINGS, self.ACK, 0))  # the limit applies once acknowledged
        self.max_concurrent_streams = settings.get(self.MAX_CONCURRENT_STREAMS)  # None: not sent, no limit

    @staticmethod
    def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    @staticmethod
    def literal(name: str, value: str) -> bytes:
        """An HPACK literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2)."""
        return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()

    def read_frame(self) -> tuple[int, int, bytes]:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags = self.buffer[3], self.buffer[4]
        payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
        if kind == self.RST_STREAM and int.from_bytes(payload, "big") == self.REFUSED_STREAM:
            self.refusals += 1
        return kind, flags, payload

    def open(self, count: int) -> None:
        """Opens ``count`` streams (headers only), then waits for the answer to a PING sent after them: by
        then the server has read every one."""
        block = b"".join(
            self.literal(name, value)
            for name, value in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", CHECK_METHOD),
                (":authority", f"127.0.0.1:{self.port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )
        frames = []
        for _ in range(count):
            frames.append(self.frame(self.HEADERS, self.END_HEADERS, self.next_stream, block))
            self.next_stream += 2
        self.sock.sendall(b"".join(frames) + self.frame(self.PING, 0, 0, b"stalled!"))
        while True:
            kind, flags, payload = self.read_frame()
            if kind == self.PING and flags & self.ACK and payload == b"stalled!":
                return

    def refused(self) -> int:
        """Streams the server refused so far (RST_STREAM REFUSED_STREAM), after reading what has arrived."""
        self.sock.settimeout(0.2)
        try:
            while True:
                self.read_frame()
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(10)
        return self.refusals

    def __enter__(self) -> StalledStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.parametrize("listener", ["http", "grpc"])
@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        pytest.param(
            bearer(WORKER), {"x-auth-request-user": ["worker"], "x-auth-request-scheme": ["bearer"]}, id="bearer"
        ),
        pytest.param(
            basic(UI_USER, UI_PASSWORD),
            {"x-auth-request-user": [UI_USER], "x-auth-request-scheme": ["basic"]},
            id="basic",
        ),
    ],
)
def test_a_client_s_identity_headers_never_reach_the_upstream_through_envoy(
    front: EnvoyFront, listener: str, credential: dict[str, str], expected: dict[str, list[str]]
) -> None:
    gateway = front.gateway(listener)
    assert user_through(gateway, {**credential, **FORGED}) == (200, expected)
    test_id = new_test_id()
    assert gateway.request("GET", "/api/health", {**FORGED, "X-Test-Id": test_id}).status == 200
    [record] = gateway.upstream.records(test_id)
    assert not set(IDENTITY) & set(record["headers"])
