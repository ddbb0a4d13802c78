#!/usr/bin/env python3
"""authgate benchmarks: every figure a ratio against a baseline measured in the same run, interleaved.

    .venv/bin/python bench/run.py            # full run, ~20 minutes
    .venv/bin/python bench/run.py --quick    # ~2 minutes, fewer and shorter rounds

Writes ``bench/results/<UTC timestamp>/results.{md,json,png}`` and prints the Markdown table. Exit status:
0 every target met, 1 a target missed (each named on stderr), 2 the harness itself failed.

Method: for each case, every variant gets a warm-up, then ``--rounds`` rounds of ``wrk -t1 -c32 -d S``; in
each round every variant runs once, the order reversed every other round (A B C, C B A, ...), so drift
on a shared machine hits all variants alike. A ratio is computed per round and the median reported.
Every variant is checked first (no credential → 401, the credential → 200), and a round with any socket
error or non-2xx answer fails the run rather than counting. The gRPC case drives both of its variants
with h2load instead (HTTP/2 for gRPC, ``--h1`` for HTTP: one load generator for both sides of its ratio).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _harness_failed(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """An exception nothing caught — an import, the results' writing, anything outside the cases' own
    boundary in main() — is the harness failing: exit 2 with its traceback. Python's own status for it
    would be 1, which here means "a target missed" (and a caller accepting 1 would then look for results
    that were never written)."""
    traceback.print_exception(kind, exc, tb)
    sys.stderr.flush()
    os._exit(2)


if __name__ == "__main__":
    sys.excepthook = _harness_failed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from app.settings import DEFAULT_SERVER  # noqa: E402
from bench import procstat, report  # noqa: E402
from bench.h2load import H2load, grpc_frame  # noqa: E402
from bench.servers import (  # noqa: E402
    BCRYPT_COST,
    OTHER_SERVER,
    POLICY,
    POLICY_NO_THROTTLE,
    Credentials,
    Stack,
    find_tool,
    large_secret,
    suffix,
)
from bench.wrk import Wrk, WrkResult  # noqa: E402
from tests.support.envoy_grpc import Answer, CheckClient, envoy_check  # noqa: E402

CASES = ("direct", "nginx", "bcrypt", "traefik", "scale", "rotation", "throttle", "grpc", "envoy")
ALT_KEY = suffix(OTHER_SERVER)  # "-uvicorn": the key and component suffix of the other server's variants
ORIGINAL = {"X-Original-URL": "http://bench.test/api/ok", "X-Original-Method": "GET", "X-Real-IP": "127.0.0.1"}


@dataclass(frozen=True)
class Variant:
    """One thing wrk hits: a URL and the headers carrying a valid credential."""

    key: str
    label: str
    url: str
    headers: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)  # sent with and without the credential
    open: bool = False  # the no-auth ceiling: 200 for everyone
    serves: tuple[str, ...] = ()  # Stack components doing the work (their CPU is counted per request)
    # Instead of wrk with the headers: a run of that many seconds by another load generator (the gRPC case),
    # and the check that the variant measures what it claims.
    load: Callable[[float], WrkResult] | None = None
    check: Callable[[], None] | None = None


@dataclass(frozen=True)
class Ratio:
    name: str
    subject: str  # variant key
    baseline: str  # variant key
    target: float | None = None  # "rps": subject/baseline must be >= target; "p99": <= target
    metric: str = "rps"  # "rps": throughput ratio; "p99": wrk's p99 latency ratio (lower is better)


@dataclass(frozen=True)
class Params:
    rounds: int
    seconds: float
    warmup: float
    connections: int
    rotations: int
    tokens: int
    users: int


class HarnessError(RuntimeError):
    pass


def check_variant(v: Variant) -> None:
    """No credential → 401 and the credential → 200, or the variant does not measure what it claims."""
    if v.check is not None:
        v.check()
        return
    with httpx.Client(timeout=10.0) as client:
        denied = client.get(v.url, headers=v.extra)
        allowed = client.get(v.url, headers={**v.extra, **v.headers})
    if denied.status_code != (200 if v.open else 401) or allowed.status_code != 200:
        raise HarnessError(
            f"{v.label} ({v.url}): without credential {denied.status_code} (want 401), "
            f"with {allowed.status_code} (want 200)"
        )


Runs = dict[str, list[tuple[WrkResult, dict[str, float]]]]  # variant -> [(wrk, server CPU µs/request by process)]


def finer(p: Params) -> Params:
    """Twice the rounds at half the length, same time: for the cases whose target sits near the ratio they
    measure (direct ≥ 0.9, scale ≥ 0.95, the throttle's p99), where more pairs make the median steadier."""
    return dataclasses.replace(p, rounds=2 * p.rounds, seconds=max(1, round(p.seconds / 2)))


def measure(stack: Stack, wrk: Wrk, variants: Sequence[Variant], p: Params, log: Callable[[str], None]) -> Runs:
    for v in variants:
        check_variant(v)
    pids = {v.key: {c: procstat.tree([stack.pids[c]]) for c in v.serves} for v in variants}

    def run(v: Variant, seconds: float) -> WrkResult:
        return v.load(seconds) if v.load is not None else wrk.run(v.url, {**v.extra, **v.headers}, seconds)

    for v in variants:
        run(v, p.warmup)
    results: Runs = {v.key: [] for v in variants}
    for r in range(p.rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            before = {c: procstat.cpu_seconds(tree) for c, tree in pids[v.key].items()}
            res = run(v, p.seconds)
            cpu = {
                c: 1e6 * (procstat.cpu_seconds(tree) - before[c]) / max(res.requests, 1)
                for c, tree in pids[v.key].items()
            }
            if res.errors:
                raise HarnessError(f"{v.label}: {res.errors} errors (socket errors or non-2xx) in round {r + 1}")
            results[v.key].append((res, cpu))
        rates = "  ".join(f"{v.key}={results[v.key][-1][0].rps:,.0f}/s" for v in variants)
        log(f"  round {r + 1}/{p.rounds}: {rates}")
    return results


def summarize(
    case: str, title: str, variants: Sequence[Variant], ratios: Sequence[Ratio], results: Runs
) -> dict[str, Any]:
    out_variants = {}
    for v in variants:
        runs = [r for r, _ in results[v.key]]
        cpu = [sum(c.values()) for _, c in results[v.key] if c]
        out_variants[v.key] = {
            "label": v.label,
            "serves": list(v.serves),
            "rps": [r.rps for r in runs],
            "rps_median": statistics.median(r.rps for r in runs),
            "p50_ms_median": statistics.median(r.p50_ms for r in runs),
            "p99_ms_median": statistics.median(r.p99_ms for r in runs),
            "cpu_us_per_request_median": statistics.median(cpu) if cpu else None,
            "cpu_us_per_request_by_process_median": {
                c: statistics.median(cpus[c] for _, cpus in results[v.key]) for c in v.serves
            },
            "runs": [{**r.as_dict(), "cpu_us_per_request_by_process": c} for r, c in results[v.key]],
        }
    out_ratios = []
    for ratio in ratios:
        pairs = zip(results[ratio.subject], results[ratio.baseline], strict=True)
        per_round, cpu_per_round = [], []
        for (a, a_cpu), (b, b_cpu) in pairs:
            per_round.append(a.p99_ms / b.p99_ms if ratio.metric == "p99" else a.rps / b.rps)
            if a_cpu and b_cpu and sum(a_cpu.values()) > 0:
                cpu_per_round.append(sum(b_cpu.values()) / sum(a_cpu.values()))
        median = statistics.median(per_round)
        out_ratios.append(
            {
                "name": ratio.name,
                "subject": ratio.subject,
                "baseline": ratio.baseline,
                "per_round": per_round,
                "median": median,
                "min": min(per_round),
                "max": max(per_round),
                "target": ratio.target,
                "metric": ratio.metric,
                "met": (
                    None
                    if ratio.target is None
                    else (median <= ratio.target if ratio.metric == "p99" else median >= ratio.target)
                ),
                # baseline CPU per request / subject CPU per request: the ratio a CPU-bound run would show
                "cpu_cost_ratio_median": statistics.median(cpu_per_round) if cpu_per_round else None,
            }
        )
    return {"case": case, "title": title, "variants": out_variants, "ratios": out_ratios}


# -- the cases ----------------------------------------------------------------------------------------
DEF, ALT = DEFAULT_SERVER, OTHER_SERVER


def case_direct(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    creds = stack.creds
    variants = []
    for server in (DEF, ALT):
        variants += [
            Variant(
                "authgate" + suffix(server),
                f"authgate /auth/api on {server} (Bearer)",
                stack.authgate_small(server).base_url + "/auth/api",
                creds.bearer,
                ORIGINAL,
                serves=("authgate:small" + suffix(server),),
            ),
            Variant(
                "baseline" + suffix(server),
                f"raw-ASGI floor on {server} (Bearer)",
                stack.baseline(server) + "/auth/api",
                creds.bearer,
                ORIGINAL,
                serves=("baseline" + suffix(server),),
            ),
        ]
    # The same two authgates asked by wrk directly with Connection: close: the server's connection handling
    # alone, without nginx's own per-connection work beside it on the same cores.
    variants += [
        Variant(
            "authgate_close" + suffix(server),
            f"authgate /auth/api on {server} (Bearer, Connection: close)",
            stack.authgate_small(server).base_url + "/auth/api",
            creds.bearer,
            {**ORIGINAL, "Connection": "close"},
            serves=("authgate:small" + suffix(server),),
        )
        for server in (DEF, ALT)
    ]
    ratios = [
        Ratio(f"authgate / raw-ASGI floor, same server ({DEF})", "authgate", "baseline", 0.9),
        Ratio(f"authgate / raw-ASGI floor, same server ({ALT})", "authgate" + ALT_KEY, "baseline" + ALT_KEY),
        Ratio(f"authgate on {DEF} / authgate on {ALT}, keepalive", "authgate", "authgate" + ALT_KEY),
        Ratio(
            f"authgate on {DEF} / authgate on {ALT}, Connection: close", "authgate_close", "authgate_close" + ALT_KEY
        ),
    ]
    return summarize(
        "direct",
        "1. Direct (wrk keeps its connections), Bearer, one process each",
        variants,
        ratios,
        measure(stack, wrk, variants, finer(p), log),
    )


def case_nginx(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    creds, urls = stack.creds, stack.nginx()
    variants = []
    for server in (DEF, ALT):
        variants += [
            Variant(
                "authreq" + suffix(server),
                f"nginx auth_request → authgate on {server} (Bearer, Connection: close)",
                urls["authreq" + suffix(server)] + "/api/ok",
                creds.bearer,
                serves=("nginx", "authgate:small" + suffix(server)),
            ),
            Variant(
                "authreq_baseline" + suffix(server),
                f"nginx auth_request → raw-ASGI floor on {server} (Bearer, Connection: close)",
                urls["authreq_baseline" + suffix(server)] + "/api/ok",
                creds.bearer,
                serves=("nginx", "baseline" + suffix(server)),
            ),
            Variant(
                "authreq_keepalive" + suffix(server),
                f"nginx auth_request → authgate on {server}, keepalive pool (Bearer)",
                urls["authreq_keepalive" + suffix(server)] + "/api/ok",
                creds.bearer,
                serves=("nginx", "authgate:small" + suffix(server)),
            ),
        ]
    variants += [
        Variant(
            "authreq_cache",
            f"nginx auth_request → authgate on {DEF}, auth-cache-key + decision_cache 60 s (Bearer)",
            urls["authreq_cache"] + "/api/ok",
            creds.bearer,
            serves=("nginx", "authgate:cacheable"),
        ),
        Variant("sha", "nginx auth_basic {SHA}", urls["sha"] + "/api/ok", creds.basic, serves=("nginx",)),
        Variant("none", "nginx, no auth", urls["none"] + "/api/ok", {}, open=True, serves=("nginx",)),
    ]
    ratios = [
        Ratio(f"nginx→authgate / nginx→raw-ASGI floor, Connection: close ({DEF})", "authreq", "authreq_baseline", 0.9),
        Ratio(f"nginx→authgate on {DEF} / on {ALT}, Connection: close", "authreq", "authreq" + ALT_KEY, 1.5),
        Ratio("nginx→authgate decision cache / nginx auth_basic {SHA}", "authreq_cache", "sha", 1.0),
        Ratio(f"nginx→authgate ({DEF}) / nginx auth_basic {{SHA}}", "authreq", "sha"),
        Ratio(f"nginx→authgate ({ALT}) / nginx auth_basic {{SHA}}", "authreq" + ALT_KEY, "sha"),
        Ratio(f"nginx→raw-ASGI floor ({DEF}) / nginx auth_basic {{SHA}}", "authreq_baseline", "sha"),
        Ratio(
            f"nginx→raw-ASGI floor on {DEF} / nginx→authgate on {ALT}, Connection: close (the most any ASGI app on "
            f"{DEF} reaches)",
            "authreq_baseline",
            "authreq" + ALT_KEY,
        ),
        Ratio(
            f"nginx→authgate / nginx→raw-ASGI floor, Connection: close ({ALT})",
            "authreq" + ALT_KEY,
            "authreq_baseline" + ALT_KEY,
        ),
        Ratio(f"nginx→authgate ({DEF}) / nginx without auth (ceiling)", "authreq", "none"),
        Ratio(f"nginx→authgate keepalive ({DEF}) / nginx auth_basic {{SHA}}", "authreq_keepalive", "sha"),
        Ratio(f"nginx→authgate keepalive ({ALT}) / nginx auth_basic {{SHA}}", "authreq_keepalive" + ALT_KEY, "sha"),
    ]
    return summarize(
        "nginx",
        "2. Through nginx (1 worker): ingress-nginx's default path (a new connection per auth call) and its options",
        variants,
        ratios,
        measure(stack, wrk, variants, p, log),
    )


def case_bcrypt(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    creds, urls = stack.creds, stack.nginx()
    caddy = stack.caddy()
    variants = [
        Variant(
            "authreq_basic",
            f"nginx auth_request → authgate on {DEF} (Basic bcrypt, cache warm, Connection: close)",
            urls["authreq"] + "/api/ok",
            creds.basic,
            serves=("nginx", "authgate:small"),
        ),
        Variant(
            "authreq_keepalive_basic",
            f"nginx auth_request → authgate on {DEF}, keepalive pool (Basic bcrypt, cache warm)",
            urls["authreq_keepalive"] + "/api/ok",
            creds.basic,
            serves=("nginx", "authgate:small"),
        ),
        Variant("bcrypt", "nginx auth_basic bcrypt", urls["bcrypt"] + "/api/ok", creds.basic, serves=("nginx",)),
        Variant("caddy", "Caddy basic_auth bcrypt", caddy + "/api/ok", creds.basic, serves=("caddy",)),
    ]
    ratios = [
        Ratio("nginx→authgate / nginx auth_basic bcrypt", "authreq_basic", "bcrypt", 20.0),
        Ratio("nginx→authgate / Caddy basic_auth bcrypt", "authreq_basic", "caddy"),
        Ratio("nginx→authgate keepalive / nginx auth_basic bcrypt", "authreq_keepalive_basic", "bcrypt"),
    ]
    title = f"3. Basic with bcrypt (cost {BCRYPT_COST})"
    return summarize("bcrypt", title, variants, ratios, measure(stack, wrk, variants, p, log))


def case_traefik(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    creds, urls = stack.creds, stack.traefik()
    variants = [
        Variant(
            "forwardauth" + suffix(server),
            f"Traefik ForwardAuth → authgate on {server} (Bearer)",
            urls["forwardauth" + suffix(server)] + "/api/ok",
            creds.bearer,
            serves=("traefik", "authgate:traefik" + suffix(server), "nginx"),
        )
        for server in (DEF, ALT)
    ]
    variants += [
        Variant(
            "forwardauth_free",
            "Traefik ForwardAuth → nginx answering 200 (no auth service can cost less)",
            urls["forwardauth_free"] + "/api/ok",
            {},
            open=True,
            serves=("traefik", "nginx"),
        ),
        Variant(
            "basic", "Traefik basicAuth {SHA}", urls["basic"] + "/api/ok", creds.basic, serves=("traefik", "nginx")
        ),
        Variant("none", "Traefik, no auth", urls["none"] + "/api/ok", {}, open=True, serves=("traefik", "nginx")),
    ]
    ratios = [
        Ratio(f"Traefik→authgate ({DEF}) / Traefik basicAuth {{SHA}}", "forwardauth", "basic", 0.5),
        Ratio(f"Traefik→authgate ({ALT}) / Traefik basicAuth {{SHA}}", "forwardauth" + ALT_KEY, "basic"),
        Ratio(f"Traefik→authgate ({DEF}) / Traefik without auth (ceiling)", "forwardauth", "none"),
        Ratio(
            "Traefik→free auth service / Traefik basicAuth {SHA} (ForwardAuth's own ceiling)",
            "forwardauth_free",
            "basic",
        ),
        Ratio(f"Traefik→authgate ({DEF}) / Traefik→free auth service", "forwardauth", "forwardauth_free"),
    ]
    return summarize(
        "traefik",
        "4. Traefik (GOMAXPROCS=1): ForwardAuth vs basicAuth",
        variants,
        ratios,
        measure(stack, wrk, variants, p, log),
    )


def case_scale(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    creds = stack.creds
    small = stack.authgate_small()
    log(f"  loading {p.tokens:,} tokens and {p.users:,} htpasswd users")
    large = stack.authgate("large", large_secret(creds, p.tokens, p.users))
    variants = [
        Variant(
            "large",
            f"authgate, {p.tokens:,} tokens + {p.users:,} users (Bearer)",
            large.base_url + "/auth/api",
            creds.bearer,
            ORIGINAL,
            serves=("authgate:large",),
        ),
        Variant(
            "small",
            "authgate, 1 token + 1 user (Bearer)",
            small.base_url + "/auth/api",
            creds.bearer,
            ORIGINAL,
            serves=("authgate:small",),
        ),
    ]
    ratios = [Ratio(f"{p.tokens:,} tokens + {p.users:,} users / 1 token", "large", "small", 0.95)]
    summary = summarize(
        "scale", "5. Scale: credentials loaded", variants, ratios, measure(stack, wrk, variants, finer(p), log)
    )
    rss_large = procstat.memory_bytes(procstat.tree([large.proc.pid]))
    rss_small = procstat.memory_bytes(procstat.tree([small.proc.pid]))
    mb = 1024 * 1024
    summary["rss"] = {
        "large_mb": rss_large["VmRSS"] / mb,
        "large_peak_mb": rss_large["VmHWM"] / mb,
        "small_mb": rss_small["VmRSS"] / mb,
        "small_peak_mb": rss_small["VmHWM"] / mb,
        "target_mb": 80.0,
        "met": rss_large["VmRSS"] / mb <= 80.0,
    }
    large_runs = summary["variants"]["large"]
    summary["latency"] = {
        "connections": p.connections,
        "p50_ms": large_runs["p50_ms_median"],
        "p99_ms": large_runs["p99_ms_median"],
    }
    return summary


def case_rotation(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    ag = stack.authgate("rotation", stack.small_files(), policy=POLICY_NO_THROTTLE)
    secret = ag.secret  # type: ignore[attr-defined]
    rng = random.Random(6)  # spacing between swaps, not a secret
    samples: list[float] = []
    timeouts = 0
    with httpx.Client(timeout=2.0) as client:
        for i in range(p.rotations):
            token = Credentials.generate().token
            digest = hashlib.sha256(token.encode()).hexdigest()
            files = {**stack.small_files()}
            files["tokens"] += f"rotated-{i} sha256:{digest}\n"
            started = time.monotonic()
            secret.write(files)  # kubelet's swap: new timestamped dir, ..data renamed over, old dir removed
            deadline = started + 10.0
            while time.monotonic() < deadline:
                answer = client.get(ag.base_url + "/auth/api", headers={**ORIGINAL, "Authorization": f"Bearer {token}"})
                if answer.status_code == 200:
                    samples.append(time.monotonic() - started)
                    break
                time.sleep(0.005)
            else:
                timeouts += 1
            time.sleep(rng.uniform(0.2, 0.6))  # spread swaps over any polling phase
    log("  rotations: " + " ".join(f"{s:.2f}" for s in samples) + (f" (+{timeouts} timeouts)" if timeouts else ""))
    ordered = sorted(samples) or [float("inf")]
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))] if not timeouts else float("inf")
    return {
        "case": "rotation",
        "title": "6. Rotation: kubelet-style swap → new token accepted",
        "samples_s": samples,
        "timeouts": timeouts,
        "p50_s": statistics.median(ordered),
        "p99_s": p99,
        "max_s": ordered[-1],
        "target_s": 2.0,
        "met": p99 <= 2.0,
    }


# The gRPC case: 32 requests in flight on both sides, as Envoy would keep them: 4 HTTP/2 connections of 8
# streams each for gRPC (Envoy multiplexes its checks on a connection per worker), 32 keepalive HTTP/1.1
# connections for HTTP (Envoy's HTTP ext_authz pool; ingress-nginx's auth-keepalive).
GRPC_CLIENTS, GRPC_STREAMS, HTTP_CLIENTS = 4, 8, 32


def case_grpc(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
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
    ]
    ratios = [Ratio("gRPC Check / HTTP auth request, same authgate process", "grpc", "http")]
    try:
        return summarize(
            "grpc",
            "7. Envoy's gRPC ext_authz vs the HTTP endpoint, one authgate process",
            variants,
            ratios,
            measure(stack, wrk, variants, p, log),
        )
    finally:
        h2load.close()


# Failed checks (a wrong Bearer token) from addresses numbered from OFFSET: the first BANNED addresses
# LIMIT times each (a few more than the ban needs: wrk may spend a request on its own start), then one
# failure from each of the rest.
_FLOOD_LUA = """
local n = OFFSET
request = function()
  local a
  if n < BANNED * LIMIT then a = math.floor(n / LIMIT) else a = n - BANNED * LIMIT + BANNED end
  n = n + 1
  local ip = string.format("10.%d.%d.%d", math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256)
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Real-IP"] = ip
  return wrk.format(nil, nil, headers)
end
"""


def case_throttle(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    """A valid token's latency with the throttle table at its cap (max_tracked addresses remembered, some of
    them banned) against an instance whose table is empty."""
    from app.policy import ThrottleSettings

    settings = ThrottleSettings()
    cap, limit = settings.max_tracked, settings.max_failures_per_address + 5
    banned = min(1_000, settings.max_tracked // 2)
    empty = stack.authgate("throttle-empty", stack.small_files(), policy=POLICY)
    full = stack.authgate("throttle-full", stack.small_files(), policy=POLICY)
    flood_url = full.base_url + "/auth/api"
    wrong = {**ORIGINAL, "Authorization": "Bearer " + Credentials.generate().token}  # X-Real-IP: set per request
    needed = banned * limit + cap + cap // 10  # every ban, then more single failures than the table holds
    sent = 0
    log(f"  filling the throttle table: {banned:,} addresses banned, then {needed - banned * limit:,} more failing")
    while sent < needed:
        lua = _FLOOD_LUA.replace("OFFSET", str(sent)).replace("BANNED", str(banned)).replace("LIMIT", str(limit))
        sent += wrk.run(flood_url, wrong, 5, request_lua=lua).requests
    metrics = httpx.get(full.base_url + "/metrics", timeout=10).text
    bans = next(
        (
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('authgate_throttled_clients{kind="address"}')
        ),
        0.0,
    )
    if bans < banned:
        raise HarnessError(f"throttle table: {bans:.0f} addresses banned after the flood, want {banned}")
    log(f"  {sent:,} failures sent, {bans:.0f} addresses banned")
    variants = [
        Variant(
            "full",
            f"authgate, throttle table full ({cap:,} keys, {banned:,} bans) (Bearer)",
            flood_url,
            stack.creds.bearer,
            ORIGINAL,
            serves=("authgate:throttle-full",),
        ),
        Variant(
            "empty",
            "authgate, throttle table empty (Bearer)",
            empty.base_url + "/auth/api",
            stack.creds.bearer,
            ORIGINAL,
            serves=("authgate:throttle-empty",),
        ),
    ]
    ratios = [Ratio("valid token p99: throttle table full / empty", "full", "empty", 2.0, metric="p99")]
    summary = summarize(
        "throttle", "8. Throttle table at its cap", variants, ratios, measure(stack, wrk, variants, finer(p), log)
    )
    summary["flood"] = {"failures_sent": sent, "banned": bans, "max_tracked": cap}
    return summary


def case_envoy(stack: Stack, wrk: Wrk, p: Params, log: Callable[[str], None]) -> dict[str, Any]:
    """One Envoy (1 worker) in front of nginx's ``return 200``: ext_authz over HTTP and over gRPC to authgate,
    against the same ext_authz asking an auth service that costs nothing (nginx answering 200 at once: the
    most ext_authz can give), Envoy's native ``basic_auth`` and no auth at all."""
    creds, urls = stack.creds, stack.envoy()
    authgate = ("envoy", "authgate:envoy", "nginx")
    variants = [
        Variant(
            "envoy_http",
            f"Envoy ext_authz HTTP → authgate on {DEF} (Bearer)",
            urls["envoy_http"] + "/api/ok",
            creds.bearer,
            serves=authgate,
        ),
        Variant(
            "envoy_grpc",
            f"Envoy ext_authz gRPC → authgate on {DEF} (Bearer)",
            urls["envoy_grpc"] + "/api/ok",
            creds.bearer,
            serves=authgate,
        ),
        Variant(
            "envoy_free",
            "Envoy ext_authz HTTP → nginx answering 200 (no auth service can cost less)",
            urls["envoy_free"] + "/api/ok",
            {},
            open=True,
            serves=("envoy", "nginx"),
        ),
        Variant(
            "envoy_basic",
            "Envoy basic_auth {SHA}",
            urls["envoy_basic"] + "/api/ok",
            creds.basic,
            serves=("envoy", "nginx"),
        ),
        Variant(
            "envoy_none", "Envoy, no auth", urls["envoy_none"] + "/api/ok", {}, open=True, serves=("envoy", "nginx")
        ),
    ]
    ratios = [
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy→free auth service (the limit)", "envoy_http", "envoy_free"),
        Ratio(f"Envoy→authgate gRPC ({DEF}) / Envoy→authgate HTTP", "envoy_grpc", "envoy_http"),
        Ratio(f"Envoy→authgate gRPC ({DEF}) / Envoy→free auth service", "envoy_grpc", "envoy_free"),
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy basic_auth {{SHA}}", "envoy_http", "envoy_basic"),
        Ratio(
            "Envoy→free auth service / Envoy basic_auth {SHA} (ext_authz's own ceiling)", "envoy_free", "envoy_basic"
        ),
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy without auth (ceiling)", "envoy_http", "envoy_none"),
    ]
    return summarize(
        "envoy",
        "9. Envoy (--concurrency 1): ext_authz over HTTP and gRPC vs a free auth service and basic_auth",
        variants,
        ratios,
        measure(stack, wrk, variants, p, log),
    )


RUNNERS: dict[str, Callable[[Stack, Wrk, Params, Callable[[str], None]], dict[str, Any]]] = {
    "direct": case_direct,
    "nginx": case_nginx,
    "bcrypt": case_bcrypt,
    "traefik": case_traefik,
    "scale": case_scale,
    "rotation": case_rotation,
    "throttle": case_throttle,
    "grpc": case_grpc,
    "envoy": case_envoy,
}


# -- machine and verdicts ------------------------------------------------------------------------------
def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    import granian
    import uvicorn

    def tool(name: str, *args: str) -> str:
        try:
            return _version([find_tool(name), *args])
        except FileNotFoundError:
            return "not installed"

    traefik = tool("traefik", "version")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "granian": granian.__version__,
        "default_server": DEFAULT_SERVER,
        "nginx": tool("nginx", "-v"),
        "traefik": traefik.split()[-1] if traefik else traefik,
        "caddy": tool("caddy", "version").split()[0],
        "wrk": tool("wrk", "--version").split("[")[0].strip(),
        "h2load": tool("h2load", "--version"),
        "envoy": tool("envoy", "--version").split("version:")[-1].strip(),
        "grpcio": _package_version("grpcio"),
        "loadavg_start": os.getloadavg(),
    }


def verdicts(cases: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(what, met, detail) for every target in the results."""
    out = []
    for case in cases:
        for ratio in case.get("ratios", []):
            if ratio["target"] is not None:
                bound = "≤" if ratio.get("metric") == "p99" else "≥"
                out.append((ratio["name"], ratio["met"], f"{ratio['median']:.3g} (target {bound} {ratio['target']:g})"))
        if "rss" in case:
            out.append(
                (
                    "RSS with 10,000 tokens",
                    case["rss"]["met"],
                    f"{case['rss']['large_mb']:.1f} MB (target ≤ {case['rss']['target_mb']:g} MB)",
                )
            )
        if case["case"] == "rotation":
            out.append(("rotation p99", case["met"], f"{case['p99_s']:.2f} s (target ≤ {case['target_s']:g} s)"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="authgate benchmarks (ratios, interleaved, one run)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s, 5 rotations (~2 minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="results go to OUT/<UTC timestamp>/ (default bench/results)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, quick 3)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 5, quick 1; whole seconds)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per variant (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rotations", type=int, help="Secret swaps timed (default 20, quick 5)")
    parser.add_argument("--tokens", type=int, default=10_000, help="tokens in the scale case (default 10,000)")
    parser.add_argument("--users", type=int, default=1_000, help="htpasswd users in the scale case (default 1,000)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    params = Params(
        rounds=args.rounds or (3 if args.quick else 5),
        seconds=args.seconds or (1 if args.quick else 5),
        warmup=args.warmup or (1 if args.quick else 2),
        connections=args.connections,
        rotations=args.rotations or (5 if args.quick else 20),
        tokens=args.tokens,
        users=args.users,
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out / stamp
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    log(f"authgate bench → {out_dir} ({params})")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        stack = Stack(work, Credentials.generate())
        wrk = Wrk(find_tool("wrk"), threads=1, connections=params.connections)
        try:
            for case in cases:
                log(f"case {case}")
                results.append(RUNNERS[case](stack, wrk, params, log))
        except Exception as exc:  # one boundary: say what failed, keep the logs
            traceback.print_exc()
            keep = out_dir / "logs"
            keep.mkdir(exist_ok=True)
            for logfile in list(work.rglob("*.log")) + list(work.rglob("*.out")):
                (keep / f"{logfile.parent.name}-{logfile.name}").write_bytes(logfile.read_bytes())
            log(f"harness error: {exc} (process logs in {keep})")
            return 2
        finally:
            stack.stop()
            wrk.close()
    info["loadavg_end"] = os.getloadavg()
    outcome = verdicts(results)
    doc: dict[str, Any] = {
        "started_utc": stamp,
        "command": command,
        "duration_s": round(time.monotonic() - started, 1),
        "params": dataclasses.asdict(params),
        "machine": info,
        "cases": results,
        "verdicts": outcome,
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=float))
    markdown = report.markdown(doc)
    (out_dir / "results.md").write_text(markdown)
    report.chart(doc, out_dir / "results.png")
    print(markdown)
    missed = [(what, detail) for what, met, detail in outcome if not met]
    for what, detail in missed:
        log(f"TARGET MISSED: {what}: {detail}")
    log(f"done in {doc['duration_s']:.0f} s → {out_dir}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
