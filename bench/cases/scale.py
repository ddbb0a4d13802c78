"""Case 5: an authgate holding ``--tokens`` tokens and ``--users`` htpasswd users against one holding one of
each; then the large one's resident memory and its latency."""

from __future__ import annotations

from typing import Any

from bench import procstat
from bench.measure import ORIGINAL, Log, Params, Ratio, Variant, finer, measure, summarize
from bench.servers import Stack, large_secret
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
