#!/usr/bin/env python3
"""grpcio's own levers, measured on the free gRPC auth service (bench/grpc_free.py's answer: pre-built OK bytes,
no parsing, no decision): which server shape and options make a Check cheapest on grpcio. Not a case of
bench/run.py: it compares grpcio against itself, interleaved, and prints a Markdown table of the median req/s
and server CPU µs per call (docs/benchmarks.md, issue 24's gRPC row).

    .venv/bin/python bench/grpc_levers.py                 # every variant, 5 rounds of 2 s
    .venv/bin/python bench/grpc_levers.py --rounds 3 aio sync-8

Load: h2load, one HTTP/2 connection with 32 streams (one Envoy worker's connection to its gRPC auth cluster,
with wrk's 32 connections behind it), the CheckRequest of bench/cases/grpc.py as the body.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SERVICE, METHOD = "envoy.service.auth.v3.Authorization", "Check"
BASE_OPTIONS: list[tuple[str, Any]] = [("grpc.max_concurrent_streams", 256), ("grpc.so_reuseport", 0)]
# name -> (server shape, extra channel options, extra environment)
VARIANTS: dict[str, tuple[str, list[tuple[str, Any]], dict[str, str]]] = {
    "aio": ("aio-uvloop", [], {}),  # authgate's: grpc.aio on uvloop, async handler, no (de)serializer
    "aio-asyncio-loop": ("aio-asyncio", [], {}),
    "aio-throughput": ("aio-uvloop", [("grpc.optimization_target", "throughput")], {}),
    "aio-no-bdp-probe": ("aio-uvloop", [("grpc.http2.bdp_probe", 0)], {}),
    "aio-no-event-engine-listener": (
        "aio-uvloop",
        [],
        {"GRPC_EXPERIMENTS": "-event_engine_listener,-event_engine_for_all_other_endpoints"},
    ),
    "sync-1": ("sync-1", [], {}),
    "sync-8": ("sync-8", [], {}),
    # The sync server with each call handed to one asyncio loop (what authgate's one-loop core would need).
    "sync-8-to-loop": ("sync-8-loop", [], {}),
}


def serve(shape: str, port: int, options: list[tuple[str, Any]]) -> None:
    import grpc
    from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, OkHttpResponse
    from google.rpc.status_pb2 import Status

    ok: bytes = CheckResponse(status=Status(code=0), ok_response=OkHttpResponse()).SerializeToString()
    address = f"127.0.0.1:{port}"

    if shape.startswith("aio"):

        async def check(request: bytes, context: Any) -> bytes:
            return ok

        async def run() -> None:
            server = grpc.aio.server(options=options)
            methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {METHOD: grpc.unary_unary_rpc_method_handler(check)}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
            server.add_insecure_port(address)
            await server.start()
            await server.wait_for_termination()

        if shape == "aio-uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run())
        else:
            asyncio.run(run())
        return

    threads = int(shape.split("-")[1])
    handler: Any
    if shape.endswith("-loop"):
        import uvloop

        loop = uvloop.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        async def decide() -> bytes:
            return ok

        def handler(request: bytes, context: Any) -> bytes:
            return asyncio.run_coroutine_threadsafe(decide(), loop).result()

    else:

        def handler(request: bytes, context: Any) -> bytes:
            return ok

    server = grpc.server(ThreadPoolExecutor(threads), options=options)
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {METHOD: grpc.unary_unary_rpc_method_handler(handler)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(description="grpcio's levers on the free gRPC auth service")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, BASE_OPTIONS + [tuple(o) for o in json.loads(args.options)])
        return 0

    from bench import procstat
    from bench.h2load import H2load, grpc_frame
    from tests.support.envoy_grpc import envoy_check
    from tests.support.procs import free_port, wait_for

    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    h2load = H2load()
    message = envoy_check("GET", "/api/ok", {"authorization": "Bearer " + "x" * 43}).SerializeToString()
    body = Path(h2load._dir.name) / "check.grpc"
    body.write_bytes(grpc_frame(message))
    headers = {"content-type": "application/grpc", "te": "trailers"}
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name in args.variants:
            shape, options, env = VARIANTS[name]
            port = free_port()
            argv = [sys.executable, __file__, "--serve", shape, "--port", str(port), "--options", json.dumps(options)]
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}/{SERVICE}/{METHOD}"
            procs[name] = (proc, url)
            wait_for(functools.partial(h2load_ok, h2load, url, headers, body), timeout=30, what=name)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in procs}
        for r in range(args.rounds):
            for name in procs if r % 2 == 0 else list(reversed(procs)):
                proc, url = procs[name]
                tree = procstat.tree([proc.pid])
                before = procstat.cpu_seconds(tree)
                res = h2load.run(url, headers, args.seconds, clients=1, streams=32, body=body)
                if res.errors:
                    raise RuntimeError(f"{name}: {res.errors} errors")
                results[name].append((res.rps, 1e6 * (procstat.cpu_seconds(tree) - before) / max(res.requests, 1)))
        print(f"load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds x {args.seconds} s, h2load -c1 -m32\n")
        print("| variant | req/s (median) | server CPU µs per call (median) |\n|---|---:|---:|")
        for name, runs in results.items():
            rps = statistics.median(x for x, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"| {name} | {rps:,.0f} | {cpu:.0f} |")
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)
        h2load.close()
    return 0


def h2load_ok(h2load: Any, url: str, headers: dict[str, str], body: Path) -> bool:
    try:
        time.sleep(0.2)
        return not h2load.run(url, headers, 1, clients=1, streams=1, body=body).errors
    except RuntimeError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
