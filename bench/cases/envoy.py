"""Case 9: one Envoy (``--concurrency 1``): ext_authz over HTTP and over gRPC to authgate against ext_authz to
a free auth service, Envoy's own ``basic_auth {SHA}`` and no auth at all."""

from __future__ import annotations

from typing import Any

from bench.measure import DEF, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy→free auth service (the limit)", "envoy_http", "envoy_free", 0.8),
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
