"""The free gRPC auth service: the least any ``envoy.service.auth.v3.Authorization/Check`` service can cost on
grpcio, the gRPC server authgate depends on. The ceiling of authgate's gRPC door, as nginx's ``return 200`` is
the HTTP door's (bench/cases/envoy.py, bench/cases/grpc.py).

A ``grpc.aio`` server on uvloop (as authgate's gRPC wire runs: one process, its server's event loop), the Check
method registered with no deserializer and no serializer, answering every call ``OK`` with the same pre-built
CheckResponse bytes: no parsing, no decision, no rendering. Only grpcio's own per-call work is left.

    python bench/grpc_free.py --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import uvloop
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, OkHttpResponse
from google.rpc.status_pb2 import Status

SERVICE, METHOD = "envoy.service.auth.v3.Authorization", "Check"
OK: bytes = CheckResponse(status=Status(code=0), ok_response=OkHttpResponse()).SerializeToString()


async def check(request: bytes, context: Any) -> bytes:
    return OK


async def serve(port: int) -> None:
    # authgate's own server options (app/grpc_server.py), so the two differ only in the work per call.
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 256), ("grpc.so_reuseport", 0)])
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {METHOD: grpc.unary_unary_rpc_method_handler(check)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_registered_method_handlers(SERVICE, methods)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
