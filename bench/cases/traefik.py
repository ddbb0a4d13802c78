"""Case 4: Traefik's ForwardAuth to authgate on each server against ForwardAuth to a free auth service,
Traefik's own ``basicAuth {SHA}`` and no auth at all."""

from __future__ import annotations

from typing import Any

from bench.measure import ALT, ALT_KEY, DEF, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack, suffix
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
