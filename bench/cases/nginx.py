"""Case 2: through one nginx worker, ingress-nginx's default path (``auth_request`` with a new connection per
auth call) to authgate and to the raw-ASGI floor on each server, its keepalive pool (to both too), its decision
cache, against the same ``auth_request`` asking the free auth service (a separate nginx answering 200 at once:
the limit, with a new connection and over the keepalive pool), nginx's own ``auth_basic {SHA}`` and no auth."""

from __future__ import annotations

from typing import Any

from bench.measure import ALT, ALT_KEY, DEF, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack, suffix
from bench.wrk import Wrk


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
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
            Variant(
                "authreq_keepalive_baseline" + suffix(server),
                f"nginx auth_request → raw-ASGI floor on {server}, keepalive pool (Bearer)",
                urls["authreq_keepalive_baseline" + suffix(server)] + "/api/ok",
                creds.bearer,
                serves=("nginx", "baseline" + suffix(server)),
            ),
        ]
    # The limit: the same auth_request asking an auth service that costs nothing (a separate nginx process
    # answering 200 at once), with a new connection per call and over the keepalive pool.
    variants += [
        Variant(
            "authreq_free",
            "nginx auth_request → a separate nginx answering 200 (the free auth service, Connection: close)",
            urls["authreq_free"] + "/api/ok",
            {},
            open=True,
            serves=("nginx", "nginx_free"),
        ),
        Variant(
            "authreq_keepalive_free",
            "nginx auth_request → a separate nginx answering 200 (the free auth service), keepalive pool",
            urls["authreq_keepalive_free"] + "/api/ok",
            {},
            open=True,
            serves=("nginx", "nginx_free"),
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
        Ratio(
            f"nginx→authgate keepalive ({DEF}) / nginx→free auth service keepalive (the limit)",
            "authreq_keepalive",
            "authreq_keepalive_free",
            0.8,
        ),
        Ratio(
            f"nginx→authgate keepalive ({ALT}) / nginx→free auth service keepalive (the limit)",
            "authreq_keepalive" + ALT_KEY,
            "authreq_keepalive_free",
            0.8,
        ),
        Ratio(
            f"nginx→raw-ASGI floor keepalive ({DEF}) / nginx→free auth service keepalive (any ASGI app's ceiling)",
            "authreq_keepalive_baseline",
            "authreq_keepalive_free",
        ),
        Ratio(
            f"nginx→raw-ASGI floor keepalive ({ALT}) / nginx→free auth service keepalive (any ASGI app's ceiling)",
            "authreq_keepalive_baseline" + ALT_KEY,
            "authreq_keepalive_free",
        ),
        Ratio(
            f"nginx→authgate keepalive / nginx→raw-ASGI floor keepalive ({DEF})",
            "authreq_keepalive",
            "authreq_keepalive_baseline",
        ),
        Ratio(
            f"nginx→authgate keepalive / nginx→raw-ASGI floor keepalive ({ALT})",
            "authreq_keepalive" + ALT_KEY,
            "authreq_keepalive_baseline" + ALT_KEY,
        ),
        Ratio(
            f"nginx→authgate ({DEF}) / nginx→free auth service, Connection: close (the limit)",
            "authreq",
            "authreq_free",
            0.8,
        ),
        Ratio(
            f"nginx→authgate ({ALT}) / nginx→free auth service, Connection: close (the limit)",
            "authreq" + ALT_KEY,
            "authreq_free",
            0.8,
        ),
        Ratio(
            f"nginx→raw-ASGI floor ({DEF}) / nginx→free auth service, Connection: close (any ASGI app's ceiling)",
            "authreq_baseline",
            "authreq_free",
        ),
        Ratio(
            f"nginx→raw-ASGI floor ({ALT}) / nginx→free auth service, Connection: close (any ASGI app's ceiling)",
            "authreq_baseline" + ALT_KEY,
            "authreq_free",
        ),
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
