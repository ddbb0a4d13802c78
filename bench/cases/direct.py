"""Case 1: authgate against the raw-ASGI floor (bench/baseline_app.py) on the same server, asked by wrk
directly, on each server; and both authgates again with ``Connection: close``, the server's connection
handling alone."""

from __future__ import annotations

from typing import Any

from bench.measure import ALT, ALT_KEY, DEF, ORIGINAL, Log, Params, Ratio, Variant, finer, measure, summarize
from bench.servers import Stack, suffix
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
