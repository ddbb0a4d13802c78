"""The shared throttle's cost and speed: failure-path latency with Redis against local counting, and how long
a ban reached with failures split across two replicas takes to hold on both. Light on purpose (about two
minutes), separate from bench/run.py.

    .venv/bin/python bench/shared_throttle.py [--rounds 5] [--seconds 3] [--trials 30]

Method: one real redis-server (no persistence) and three authgate processes on loopback: ``local`` (no
``throttle.redis``) and ``redis`` (the same policy with ``throttle.redis``) for latency, and a second
``redis`` replica for propagation. wrk (-t1 -c32) drives each variant in interleaved rounds, so both sides of
a ratio see the same machine: failures (an unknown Bearer token, answered 401) from one client address,
failures from a new random address per request (every failure a distinct key in Redis; ``max_tracked`` is
raised so the key budget never binds during the run), and allows (a valid token). Limits are set so high that
nothing is banned during the latency rounds. Ratios are medians of per-round ratios (redis / local); the order
of the two alternates per round. Propagation: per trial a fresh user name gets its limit of failures
alternately on both replicas; the time from the last failure's answer until both replicas'
``authgate_throttled_clients`` gauges show the ban, polled over keepalive connections (about a millisecond per
poll, so the figure includes up to that much).
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds
from bench.wrk import _DONE_LUA
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess, wait_for
from tests.support.redis_server import RedisServer

TOKEN = "bench-shared-throttle-token-0123456789"
LIMIT = 6
_RANDOM_ADDRESS_LUA = r"""
math.randomseed(os.time())
request = function()
  wrk.headers["X-Real-IP"] = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255),
    math.random(0, 255))
  return wrk.format(nil)
end
"""


def policy(path: Path, redis_url: str | None, *, limit: int) -> Path:
    throttle: dict[str, object] = {
        "max_failures_per_user": limit,
        "max_failures_per_address": limit,
        "max_tracked": 10_000_000,
    }
    if redis_url is not None:
        throttle["redis"] = {"url": redis_url, "key_prefix": "bench:"}
    path.write_text("routes: {api: {}}\nthrottle: " + json.dumps(throttle) + "\n")
    return path


def wrk(url: str, headers: dict[str, str], seconds: int, script: Path, connections: int = 32) -> dict[str, float]:
    import subprocess

    argv = ["wrk", "-t1", f"-c{connections}", "-d", f"{seconds}s", "--timeout", "5s", "-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    if raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]:
        raise RuntimeError(f"wrk socket errors against {url}: {raw}")
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50": raw["p50_us"] / 1000,
        "p99": raw["p99_us"] / 1000,
        "requests": raw["requests"],
    }


def gauge(client: httpx.Client, proc: AuthgateProcess, sample: str) -> float:
    for line in client.get(proc.base_url + "/metrics").text.splitlines():
        if line.split(" ")[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args(argv)

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="authgate-bench-shared-"))
    redis = RedisServer(work / "redis").start()
    redis_version = redis.version()
    secret = KubeletSecretDir(work / "secret")
    from app.credentials import token_digest

    secret.write({"tokens": f"bench sha256:{token_digest(TOKEN).hex()}\n"})
    high = 1_000_000_000
    procs = {
        "local": AuthgateProcess(
            secret.path, work / "local.log", config=policy(work / "l.yaml", None, limit=high), log_level="warning"
        ),
        "redis": AuthgateProcess(
            secret.path, work / "redis.log", config=policy(work / "r.yaml", redis.url, limit=high), log_level="warning"
        ),
    }
    replicas = [
        AuthgateProcess(
            secret.path,
            work / f"replica-{i}.log",
            config=policy(work / f"p{i}.yaml", redis.url, limit=LIMIT),
            log_level="warning",
        )
        for i in range(2)
    ]
    scripts = {"fixed": work / "fixed.lua", "random": work / "random.lua"}
    scripts["fixed"].write_text(_DONE_LUA)
    scripts["random"].write_text(_RANDOM_ADDRESS_LUA + _DONE_LUA)
    base = {"X-Original-URL": "https://app.example.com/api/flows", "X-Original-Method": "GET", "X-Real-IP": "10.0.0.1"}
    wrong = {**base, "Authorization": "Bearer wrong-token-0123456789abcdef"}
    variants = {  # name: (headers, wrk script, connections)
        "failure, one client": (wrong, "fixed", 32),
        "failure, a new address each": (wrong, "random", 32),
        "failure, a new address each, 1 connection (unloaded latency)": (wrong, "random", 1),
        "allow": ({**base, "Authorization": f"Bearer {TOKEN}"}, "fixed", 32),
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    propagation: list[float] = []
    try:
        for proc in [*procs.values(), *replicas]:
            proc.wait_ready(timeout=60)
        with httpx.Client(timeout=5) as client:
            wait_for(
                lambda: all(gauge(client, p, "authgate_throttle_shared") == 1 for p in [procs["redis"], *replicas]),
                timeout=15,
                what="sharing through Redis",
            )
            for headers, script, connections in variants.values():  # warm-up
                for proc in procs.values():
                    wrk(proc.base_url + "/auth/api", headers, 1, scripts[script], connections)
            for round_ in range(args.rounds):
                for variant, (headers, script, connections) in variants.items():
                    order = list(procs.items())
                    for name, proc in order if round_ % 2 == 0 else order[::-1]:  # neither side always first
                        pids = [proc.proc.pid] + ([redis.process.proc.pid] if name == "redis" and redis.process else [])
                        cpu0 = cpu_seconds([proc.proc.pid]), cpu_seconds(pids)
                        result = wrk(proc.base_url + "/auth/api", headers, args.seconds, scripts[script], connections)
                        result["cpu_us"] = (cpu_seconds([proc.proc.pid]) - cpu0[0]) / result["requests"] * 1e6
                        result["cpu_total_us"] = (cpu_seconds(pids) - cpu0[1]) / result["requests"] * 1e6
                        results.setdefault((variant, name), []).append(result)

            a, b = replicas
            for trial in range(args.trials):
                user = f"guess-target-{trial}"
                before = [gauge(client, p, 'authgate_throttled_clients{kind="user"}') for p in replicas]
                for i in range(LIMIT):
                    auth = "Basic " + base64.b64encode(f"{user}:guess-{i}".encode()).decode()
                    answer = client.get(
                        f"{(a, b)[i % 2].base_url}/auth/api",
                        headers={**base, "X-Real-IP": f"10.9.{trial}.{i}", "Authorization": auth},
                    )
                    assert answer.status_code == 401, answer.status_code
                reached = time.perf_counter()
                while [gauge(client, p, 'authgate_throttled_clients{kind="user"}') for p in replicas] != [
                    n + 1 for n in before
                ]:
                    if time.perf_counter() - reached > 10:
                        raise RuntimeError(f"trial {trial}: the ban did not reach both replicas within 10 s")
                propagation.append(time.perf_counter() - reached)
    finally:
        for proc in [*procs.values(), *replicas]:
            proc.stop()
        redis.stop()

    print(
        f"Run {started}: {args.rounds} interleaved rounds x "
        f"{args.seconds} s per variant, wrk -t1 -c32 unless said; {platform.python_version()}, redis-server "
        f"{redis_version}, {platform.machine()}.\n"
    )
    print(
        "| variant | local req/s | Redis req/s | req/s ratio (median) | local p50 / p99 ms | Redis p50 / p99 ms "
        "| authgate CPU µs/request, local / Redis | + redis-server |"
    )
    print("|---|---:|---:|---:|---|---|---|---:|")
    for variant in variants:
        loc, red = results[(variant, "local")], results[(variant, "redis")]
        ratio = statistics.median(r["rps"] / lr["rps"] for r, lr in zip(red, loc, strict=True))

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"| {variant} | {med(loc, 'rps'):,.0f} | {med(red, 'rps'):,.0f} | **{ratio:.2f}** "
            f"| {med(loc, 'p50'):.2f} / {med(loc, 'p99'):.2f} | {med(red, 'p50'):.2f} / {med(red, 'p99'):.2f} "
            f"| {med(loc, 'cpu_us'):.0f} / {med(red, 'cpu_us'):.0f} "
            f"| {med(red, 'cpu_total_us') - med(red, 'cpu_us'):.0f} |"
        )
    ms = sorted(p * 1000 for p in propagation)
    print(
        f"\nBan propagation over {len(ms)} trials (limit {LIMIT} failures split 3 + 3 over two replicas): "
        f"p50 {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
