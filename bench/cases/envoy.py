"""Case 9: one Envoy (``--concurrency 1``): ext_authz over HTTP and over gRPC to authgate against ext_authz to
a free auth service over each (nginx's ``return 200``; a grpcio server answering pre-built bytes), Envoy's own
``basic_auth {SHA}`` and no auth at all."""

from __future__ import annotations

from typing import Any

from bench.measure import ALT, ALT_KEY, DEF, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack
from bench.wrk import Wrk

# Issue 24's target for the gRPC door: Envoy→authgate over gRPC at least 0.8 of Envoy→authgate over HTTP.
GRPC_TARGET = 0.8


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    """One Envoy (1 worker) in front of nginx's ``return 200``: ext_authz over HTTP and over gRPC to authgate,
    against the same ext_authz asking an auth service that costs nothing (nginx answering 200 at once: the
    most ext_authz can give; over gRPC, bench/grpc_free.py: the most ext_authz on grpcio can give), Envoy's
    native ``basic_auth`` and no auth at all."""
    creds, urls = stack.creds, stack.envoy()
    authgate = ("envoy", "authgate:envoy", "nginx")
    authgate_alt = ("envoy", "authgate:envoy" + ALT_KEY, "nginx")
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
            "envoy_http" + ALT_KEY,
            f"Envoy ext_authz HTTP → authgate on {ALT} (Bearer)",
            urls["envoy_http" + ALT_KEY] + "/api/ok",
            creds.bearer,
            serves=authgate_alt,
        ),
        Variant(
            "envoy_grpc" + ALT_KEY,
            f"Envoy ext_authz gRPC → authgate on {ALT} (Bearer)",
            urls["envoy_grpc" + ALT_KEY] + "/api/ok",
            creds.bearer,
            serves=authgate_alt,
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
            "envoy_grpc_free",
            "Envoy ext_authz gRPC → grpcio answering OK from pre-built bytes (no gRPC auth service on grpcio can "
            "cost less)",
            urls["envoy_grpc_free"] + "/api/ok",
            {},
            open=True,
            serves=("envoy", "grpc_free", "nginx"),
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
        Ratio(
            f"Envoy→authgate HTTP ({DEF}) / Envoy→free auth service (the limit)", "envoy_http", "envoy_free", target=0.8
        ),
        Ratio(f"Envoy→authgate gRPC ({DEF}) / Envoy→authgate HTTP", "envoy_grpc", "envoy_http", target=GRPC_TARGET),
        Ratio(
            f"Envoy→authgate gRPC ({ALT}) / Envoy→authgate HTTP ({ALT})",
            "envoy_grpc" + ALT_KEY,
            "envoy_http" + ALT_KEY,
            target=GRPC_TARGET,
        ),
        Ratio(f"Envoy→authgate gRPC ({DEF}) / Envoy→free auth service", "envoy_grpc", "envoy_free"),
        Ratio(
            f"Envoy→authgate gRPC ({DEF}) / Envoy→free gRPC auth service (grpcio's limit)",
            "envoy_grpc",
            "envoy_grpc_free",
        ),
        Ratio(
            f"Envoy→free gRPC auth service / Envoy→authgate HTTP ({DEF}) (the gRPC row's ceiling on grpcio)",
            "envoy_grpc_free",
            "envoy_http",
        ),
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy basic_auth {{SHA}}", "envoy_http", "envoy_basic"),
        Ratio(
            "Envoy→free auth service / Envoy basic_auth {SHA} (ext_authz's own ceiling)", "envoy_free", "envoy_basic"
        ),
        Ratio(f"Envoy→authgate HTTP ({DEF}) / Envoy without auth (ceiling)", "envoy_http", "envoy_none"),
    ]
    return summarize(
        "envoy",
        "9. Envoy (--concurrency 1): ext_authz over HTTP and gRPC vs a free auth service over each and basic_auth",
        variants,
        ratios,
        measure(stack, wrk, variants, p, log),
    )
