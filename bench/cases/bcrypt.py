"""Case 3: Basic with a bcrypt password through nginx to authgate (its verification cache warm) against
nginx's and Caddy's own bcrypt checks."""

from __future__ import annotations

from typing import Any

from bench.measure import DEF, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import BCRYPT_COST, Stack
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
