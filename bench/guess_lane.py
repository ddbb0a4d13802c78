#!/usr/bin/env python3
"""The guess lane's cost in-process (docs/benchmarks.md, section 11): the served app (app.service.create_asgi,
``--proxy ingress-nginx``, at ``info``, bench's policy), or with ``--complete-floor`` the raw-ASGI floor's
``/auth/complete`` (bench/baseline_app.py), called directly with ASGI scopes, no server. Blocks of
denials (case 11's flood: a new wrong Bearer token each request, a new ``X-Real-IP`` every 60) interleaved with
blocks of allows (the valid token, same headers); prints the median CPU µs per request of each.

    .venv/bin/python bench/guess_lane.py                  # 20,000 per block, 5 rounds
    .venv/bin/python bench/guess_lane.py --profile        # cProfile of one denial block instead
    .venv/bin/python bench/guess_lane.py --complete-floor # the same blocks through the raw-ASGI floor's
                                                          # /auth/complete (bench/baseline_app.py) instead
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import logging
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.service import create_asgi  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.baseline_app import load_digests, make_app  # noqa: E402
from bench.cases.denial import PER_ADDRESS  # noqa: E402
from bench.servers import POLICY  # noqa: E402


def _scope(authorization: bytes, address: bytes, path: str = "/auth/api") -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"x-original-url", b"http://bench.test/api/ok"),
        (b"x-original-method", b"GET"),
        (b"x-real-ip", address),
        (b"authorization", authorization),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--complete-floor",
        action="store_true",
        help="ask the raw-ASGI floor's /auth/complete (the required work of a denial in one function) instead",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="guess-lane-"))
    token = secrets.token_urlsafe(32)
    secret = workdir / "secret"
    secret.mkdir()
    (secret / "tokens").write_text(f"bench sha256:{hashlib.sha256(token.encode()).hexdigest()}\n")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    served = create_asgi(Settings(secret_dir=secret, config=policy, proxy=("ingress-nginx",), log_level="info"))
    logging.getLogger().handlers[:] = [logging.StreamHandler(open("/dev/null", "w"))]  # noqa: SIM115

    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(served({"type": "lifespan"}, messages.get, lifespan_send))  # type: ignore[arg-type]
    await started.wait()
    state = served.decider.state
    while state.store.current is None:
        await asyncio.sleep(0.01)

    # What the blocks ask: authgate, or the complete floor (its allow is the floor's own; same token file).
    asked: Any = served
    path = "/auth/api"
    if args.complete_floor:
        asked, path = make_app(load_digests(secret / "tokens")), "/auth/complete"
    statuses: dict[int, int] = {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    salt = "wrong-" + secrets.token_hex(8) + "-"
    sent = {"deny": 0, "allow": 1 << 22}
    good = f"Bearer {token}".encode()

    def scopes(kind: str) -> list[dict[str, Any]]:
        out = []
        for _ in range(args.n):
            n = sent[kind]
            sent[kind] += 1
            a = n // PER_ADDRESS
            address = f"10.{a // 65536 % 256}.{a // 256 % 256}.{a % 256}".encode()
            authorization = f"Bearer {salt}{n}".encode() if kind == "deny" else good
            out.append(_scope(authorization, address, path))
        return out

    async def block(kind: str) -> float:
        batch = scopes(kind)
        begin = time.process_time()
        for scope in batch:
            await asked(scope, receive, send)
        return (time.process_time() - begin) / len(batch) * 1e6

    await block("allow")
    await block("deny")  # warm-up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await block("deny")
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        results: dict[str, list[float]] = {"deny": [], "allow": []}
        for index in range(args.rounds):
            for kind in ("deny", "allow") if index % 2 == 0 else ("allow", "deny"):
                results[kind].append(await block(kind))
        deny, allow = statistics.median(results["deny"]), statistics.median(results["allow"])
        print(f"deny  µs/request: {deny:.2f}  (rounds: {', '.join(f'{x:.2f}' for x in results['deny'])})")
        print(f"allow µs/request: {allow:.2f}  (rounds: {', '.join(f'{x:.2f}' for x in results['allow'])})")
        print(f"statuses: {dict(sorted(statuses.items()))}")
    await messages.put({"type": "lifespan.shutdown"})
    await lifespan


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1:]))
