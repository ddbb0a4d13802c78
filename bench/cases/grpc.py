"""Case 7: Envoy's gRPC ext_authz Check against the HTTP decision endpoint of the same authgate process and
against the free gRPC auth service (bench/grpc_free.py: grpcio's own per-call cost, nothing else), all driven
by h2load, the gRPC variants checked with a real grpcio client first (h2load sees only HTTP statuses)."""

from __future__ import annotations

from typing import Any

from bench.h2load import H2load, grpc_frame
from bench.measure import ORIGINAL, HarnessError, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack, find_tool
from bench.wrk import Wrk
from tests.support.envoy_grpc import Answer, CheckClient, envoy_check

# The gRPC case: 32 requests in flight on both sides, as Envoy would keep them: 4 HTTP/2 connections of 8
# streams each for gRPC (Envoy multiplexes its checks on a connection per worker), 32 keepalive HTTP/1.1
# connections for HTTP (Envoy's HTTP ext_authz pool; ingress-nginx's auth-keepalive).
GRPC_CLIENTS, GRPC_STREAMS, HTTP_CLIENTS = 4, 8, 32


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    """gRPC Check against the HTTP decision endpoint of the same authgate process, both over keepalive
    connections and both driven by h2load: what Envoy's gRPC ext_authz costs next to its HTTP one."""
    creds = stack.creds
    ag = stack.authgate("grpc", stack.small_files(), grpc=True)
    grpc_port = ag.grpc_port
    assert grpc_port is not None
    h2load = H2load(find_tool("h2load"))
    # The CheckRequest Envoy's HTTP filter sends for a client's `GET /api/ok` on route api, framed for gRPC.
    message = envoy_check("GET", "/api/ok", {"authorization": creds.bearer["Authorization"]}).SerializeToString()
    body = stack.workdir / "check-request.grpc"
    body.write_bytes(grpc_frame(message))
    grpc_url = f"http://127.0.0.1:{grpc_port}/envoy.service.auth.v3.Authorization/Check"
    free_grpc_port = stack.grpc_free()
    free_url = f"http://127.0.0.1:{free_grpc_port}/envoy.service.auth.v3.Authorization/Check"
    http_url = ag.base_url + "/auth/api"

    def check_grpc() -> None:
        """h2load sees HTTP 200 whatever the gRPC status: the very bytes it sends must be an allow."""
        from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

        client = CheckClient(grpc_port)
        try:
            denied = client.check(envoy_check("GET", "/api/ok")).http_status
            allowed = Answer.of(CheckResponse.FromString(client.raw(message, timeout=10))).http_status
        finally:
            client.close()
        if (denied, allowed) != (401, 200):
            raise HarnessError(f"gRPC Check: without credential {denied} (want 401), with {allowed} (want 200)")

    def check_free() -> None:
        from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

        client = CheckClient(free_grpc_port)
        try:
            allowed = Answer.of(CheckResponse.FromString(client.raw(message, timeout=10))).http_status
        finally:
            client.close()
        if allowed != 200:
            raise HarnessError(f"free gRPC auth service: {allowed} (want 200)")

    grpc_headers = {"content-type": "application/grpc", "te": "trailers"}
    variants = [
        Variant(
            "grpc",
            f"gRPC Check (h2load, {GRPC_CLIENTS} connections x {GRPC_STREAMS} streams, Bearer)",
            grpc_url,
            {},
            serves=("authgate:grpc",),
            load=lambda s: h2load.run(grpc_url, grpc_headers, s, clients=GRPC_CLIENTS, streams=GRPC_STREAMS, body=body),
            check=check_grpc,
        ),
        Variant(
            "http",
            f"HTTP /auth/api, same process (h2load --h1, {HTTP_CLIENTS} keepalive connections, Bearer)",
            http_url,
            creds.bearer,
            ORIGINAL,
            serves=("authgate:grpc",),
            load=lambda s: h2load.run(http_url, {**ORIGINAL, **creds.bearer}, s, clients=HTTP_CLIENTS, http1=True),
        ),
        Variant(
            "grpc_free",
            f"gRPC Check to the free gRPC auth service (grpcio answering pre-built bytes; h2load, {GRPC_CLIENTS} x "
            f"{GRPC_STREAMS})",
            free_url,
            {},
            serves=("grpc_free",),
            load=lambda s: h2load.run(free_url, grpc_headers, s, clients=GRPC_CLIENTS, streams=GRPC_STREAMS, body=body),
            check=check_free,
        ),
    ]
    ratios = [
        Ratio("gRPC Check / HTTP auth request, same authgate process", "grpc", "http"),
        Ratio("gRPC Check / free gRPC auth service (grpcio's limit)", "grpc", "grpc_free"),
    ]
    try:
        return summarize(
            "grpc",
            "7. Envoy's gRPC ext_authz vs the HTTP endpoint, one authgate process, and vs grpcio's limit",
            variants,
            ratios,
            measure(stack, wrk, variants, p, log),
        )
    finally:
        h2load.close()
