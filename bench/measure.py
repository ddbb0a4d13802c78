"""What every case is made of and how it is measured: variants, interleaved rounds, medians and ratios.

Method: for each case, every variant gets a warm-up, then ``--rounds`` rounds of ``wrk -t1 -c32 -d S``; in
each round every variant runs once, the order reversed every other round (A B C, C B A, ...), so drift
on a shared machine hits all variants alike. A ratio is computed per round and the median reported. In a
run of several cases the cases take turns (bench/turns.py): one round of each case in turn (two for a case
measured ``finer``), so each case's rounds are spread over the whole run and a noisy stretch of minutes
costs each case a round, not a case its every round.
Every variant is checked first (no credential → 401, the credential → 200), and a round with any socket
error or non-2xx answer fails the run rather than counting. The gRPC case drives both of its variants
with h2load instead (HTTP/2 for gRPC, ``--h1`` for HTTP: one load generator for both sides of its ratio).
Server CPU per request is counted for every variant from the processes it names (``serves``).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.settings import DEFAULT_SERVER
from bench import procstat, turns
from bench.servers import OTHER_SERVER, Stack, suffix
from bench.wrk import Wrk, WrkResult

Log = Callable[[str], None]
DEF, ALT = DEFAULT_SERVER, OTHER_SERVER
ALT_KEY = suffix(OTHER_SERVER)  # "-uvicorn": the key and component suffix of the other server's variants
# What an ingress-nginx auth subrequest carries besides the credential, for a variant asking authgate directly.
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
    # Every answer is a denial (4xx): wrk counts them as errors, so only its socket errors fail a round; the
    # case checks afterwards that they were the denials it meant (the denial case reads authgate's metrics).
    denials: bool = False


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
    turns: bool = False  # the cases take turns (bench/turns.py), rather than run one after another
    rounds_per_turn: int = 1  # rounds a case runs each turn: finer() doubles it with the rounds


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
    return dataclasses.replace(
        p, rounds=2 * p.rounds, seconds=max(1, round(p.seconds / 2)), rounds_per_turn=2 * p.rounds_per_turn
    )


def measure(stack: Stack, wrk: Wrk, variants: Sequence[Variant], p: Params, log: Log) -> Runs:
    for v in variants:
        check_variant(v)
    pids = {v.key: {c: procstat.tree([stack.pids[c]]) for c in v.serves} for v in variants}

    def run(v: Variant, seconds: float) -> WrkResult:
        return v.load(seconds) if v.load is not None else wrk.run(v.url, {**v.extra, **v.headers}, seconds)

    for v in variants:
        run(v, p.warmup)
    results: Runs = {v.key: [] for v in variants}
    for r in range(p.rounds):
        if r and r % p.rounds_per_turn == 0:
            turns.pass_turn()  # taking turns (bench/turns.py): the other cases' rounds come between this case's
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            before = {c: procstat.cpu_seconds(tree) for c, tree in pids[v.key].items()}
            started = time.time()
            res = dataclasses.replace(run(v, p.seconds), started_unix=started)
            cpu = {
                c: 1e6 * (procstat.cpu_seconds(tree) - before[c]) / max(res.requests, 1)
                for c, tree in pids[v.key].items()
            }
            if res.errors - (res.statuses if v.denials else 0):
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
