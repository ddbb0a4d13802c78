"""Case 11: denials against allows, asked directly, on each server: a credential-stuffing flood (a new wrong
Bearer token on every request) from many addresses, with the throttle doing its work, against the valid
token sent the same way.

The addresses come through the trusted door's own header (``X-Real-IP``, ingress-nginx's), a new one every
``PER_ADDRESS`` requests: each address's first ``max_failures_per_address`` (50) failures are 401s
(``unknown_token``, each counted by the throttle; the 50th bans the address) and the rest 403s (``throttled``,
refused unchecked), so the throttle counts, bans and refuses all through the run, as it would for a botnet
trying a list of tokens. The allow variant sends the valid token through the very same wrk script (a new
address every ``PER_ADDRESS`` requests too), so wrk's own work per request is the same on both sides.
Afterwards the case reads authgate's metrics and requires the denials counted to match what wrk was answered
and addresses to have been banned: every answer measured was the denial meant.

The same two floods against the raw-ASGI floor (bench/baseline_app.py) on each server give the ratio's limit:
there a denial does only what no throttle can skip (the token's digest looked up, the address's keyed digest
counted in a dict with a window and a ban), so floor denials / floor allows is the most this ratio can be on
that server, and authgate's denial / floor's denial is what authgate adds on top (the throttle's bounds and
sweep, the front-door cross-check, the metrics and the denial log).

The same flood against the floor's ``/auth/complete`` (the *complete floor*, same process) measures a denial
doing all of that required work, written as one lean function with nothing of authgate's structure
(bench/baseline_app.py's CompleteDenial). Complete floor's denials / floor's allows is the most the ratio can be
on that server for a denial that does what the product promises, as long as the floor's allows cost no less than
authgate's (on uvicorn they cost the same; on granian the floor's are cheaper, so there the CPU each denial adds
to an allow is the comparison: docs/benchmarks.md §11). authgate's denials / the complete floor's is what
authgate's structure costs."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from app.policy import ThrottleSettings
from bench.measure import ALT, ALT_KEY, DEF, ORIGINAL, HarnessError, Log, Params, Ratio, Variant, measure, summarize
from bench.servers import Stack, suffix
from bench.wrk import Wrk, WrkResult

PER_ADDRESS = ThrottleSettings().max_failures_per_address + 10  # 50 failures (the 50th bans), then 10 refusals
DENIAL_REASONS = ("unknown_token", "throttled")

# One request per call: a new address every PER requests from OFFSET on, and (VARY) a new wrong token each.
_LUA = """
local n = OFFSET
request = function()
  local a = math.floor(n / PER)
  n = n + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Real-IP"] = string.format("10.%d.%d.%d", math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256)
  if VARY then headers["Authorization"] = string.format("Bearer SALT%d", n) end
  return wrk.format(nil, nil, headers)
end
"""


class Flood:
    """wrk runs that carry on where the last one stopped: a round never reuses an address already banned."""

    def __init__(self, wrk: Wrk, url: str, headers: dict[str, str], vary_token: bool, offset: int) -> None:
        self.wrk, self.url, self.headers, self.vary = wrk, url, headers, vary_token
        self.sent = offset
        self.salt = "wrong-" + secrets.token_hex(8) + "-"

    def __call__(self, seconds: float) -> WrkResult:
        lua = (
            _LUA.replace("OFFSET", str(self.sent))
            .replace("PER", str(PER_ADDRESS))
            .replace("VARY", "true" if self.vary else "false")
            .replace("SALT", self.salt)
        )
        result = self.wrk.run(self.url, self.headers, seconds, request_lua=lua)
        # A whole number of addresses per run: the next starts on a fresh one.
        self.sent += -(-result.requests // PER_ADDRESS) * PER_ADDRESS
        return result


def _denials(base_url: str) -> tuple[float, float]:
    """(denials counted for the flood's reasons, addresses banned now) from authgate's /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    denied = banned = 0.0
    for line in text.splitlines():
        if line.startswith("authgate_decisions_total{") and 'result="deny"' in line:
            if any(f'reason="{reason}"' in line for reason in DENIAL_REASONS):
                denied += float(line.split()[-1])
        elif line.startswith('authgate_throttled_clients{kind="address"}'):
            banned = float(line.split()[-1])
    return denied, banned


def _check(base_url: str, *, floor: bool = False, path: str = "/auth/api") -> Callable[[], None]:
    """A wrong Bearer token gets 401 (from authgate and the complete floor: with ``error="invalid_token"``; the
    floor names none)."""

    def check() -> None:
        with httpx.Client(timeout=10.0) as client:
            answer = client.get(
                base_url + path,
                headers={**ORIGINAL, "X-Real-IP": "192.0.2.1", "Authorization": "Bearer not-a-known-token"},
            )
        challenge = answer.headers.get("www-authenticate", "")
        if answer.status_code != 401 or not (floor or "invalid_token" in challenge):
            want = "401" if floor else "401 invalid_token"
            raise HarnessError(f"{base_url}: a wrong Bearer token got {answer.status_code}, want {want}")

    return check


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    creds = stack.creds
    variants, floods = [], {}
    for index, server in enumerate((DEF, ALT)):
        # At info, authgate's default level, where denials are logged (app.decision_log).
        ag = stack.authgate("denials", stack.small_files(), proxy="ingress-nginx", server=server, log_level="info")
        url = ag.base_url + "/auth/api"
        # Each flood its own range of addresses (2**22 apart: more than any run sends).
        deny = Flood(wrk, url, {**ORIGINAL, **creds.bearer}, vary_token=True, offset=(2 * index) << 22)
        allow = Flood(wrk, url, {**ORIGINAL, **creds.bearer}, vary_token=False, offset=(2 * index + 1) << 22)
        floods[server] = (ag.base_url, deny)
        component = "authgate:denials" + suffix(server)
        variants += [
            Variant(
                "deny" + suffix(server),
                f"authgate on {server}: a new wrong Bearer token each request, a new address every {PER_ADDRESS} "
                "(throttle on: 50 failures, the 50th bans, then 10 refusals)",
                url,
                {},
                serves=(component,),
                load=deny,
                check=_check(ag.base_url),
                denials=True,
            ),
            Variant(
                "allow" + suffix(server),
                f"authgate on {server}: the valid Bearer token, a new address every {PER_ADDRESS} (same wrk script)",
                url,
                creds.bearer,
                serves=(component,),
                load=allow,
            ),
        ]
        # The floor (bench/baseline_app.py) on the same server, flooded the same way, its own address ranges.
        # A floor process of its own: the flood fills its throttle tables, which the other cases' floor keeps empty.
        floor = stack.baseline(server, name="denials")
        floor_url = floor + "/auth/api"
        floor_component = "baseline:denials" + suffix(server)
        variants += [
            Variant(
                "deny-floor" + suffix(server),
                f"raw-ASGI floor on {server}: the same flood (its throttle counts, bans and refuses alike)",
                floor_url,
                {},
                serves=(floor_component,),
                load=Flood(wrk, floor_url, {**ORIGINAL, **creds.bearer}, vary_token=True, offset=(4 + 2 * index) << 22),
                check=_check(floor, floor=True),
                denials=True,
            ),
            Variant(
                "allow-floor" + suffix(server),
                f"raw-ASGI floor on {server}: the valid Bearer token, same wrk script",
                floor_url,
                creds.bearer,
                serves=(floor_component,),
                load=Flood(
                    wrk, floor_url, {**ORIGINAL, **creds.bearer}, vary_token=False, offset=(5 + 2 * index) << 22
                ),
            ),
        ]
        # The complete floor: the same flood on the same process's /auth/complete (its allow is the floor's own).
        complete_url = floor + "/auth/complete"
        variants.append(
            Variant(
                "deny-complete-floor" + suffix(server),
                f"raw-ASGI complete floor on {server}: the same flood, each denial doing authgate's required work "
                "in one function (bounded throttle, door reading, metrics, denial log)",
                complete_url,
                {},
                serves=(floor_component,),
                load=Flood(wrk, complete_url, {**ORIGINAL, **creds.bearer}, vary_token=True, offset=(8 + index) << 22),
                check=_check(floor, path="/auth/complete"),
                denials=True,
            )
        )
    before = {server: _denials(base)[0] for server, (base, _) in floods.items()}
    results = measure(stack, wrk, variants, p, log)
    flood_stats = {}
    for server, (base, _) in floods.items():
        denied, banned = _denials(base)
        key = "deny" + suffix(server)
        measured = sum(r.requests for r, _ in results[key])
        # The warm-up's denials count too: at least every measured answer must be one of the flood's denials.
        if denied - before[server] < measured or banned < 1:
            raise HarnessError(
                f"{key}: {denied - before[server]:.0f} denials counted for {measured} answers measured, "
                f"{banned:.0f} addresses banned"
            )
        flood_stats[server] = {"denials_counted": denied - before[server], "addresses_banned_at_end": banned}
        log(f"  {key}: {denied - before[server]:,.0f} denials counted, {banned:,.0f} addresses banned at the end")
    ratios = [
        Ratio(f"denials / allows, direct ({DEF})", "deny", "allow", 0.7),
        Ratio(f"denials / allows, direct ({ALT})", "deny" + ALT_KEY, "allow" + ALT_KEY, 0.7),
        Ratio(f"floor's denials / floor's allows ({DEF}): the limit", "deny-floor", "allow-floor"),
        Ratio(f"floor's denials / floor's allows ({ALT}): the limit", "deny-floor" + ALT_KEY, "allow-floor" + ALT_KEY),
        Ratio(f"authgate's denials / the floor's ({DEF})", "deny", "deny-floor"),
        Ratio(f"authgate's denials / the floor's ({ALT})", "deny" + ALT_KEY, "deny-floor" + ALT_KEY),
        Ratio(
            f"complete floor's denials / floor's allows ({DEF}): the limit with the required work",
            "deny-complete-floor",
            "allow-floor",
        ),
        Ratio(
            f"complete floor's denials / floor's allows ({ALT}): the limit with the required work",
            "deny-complete-floor" + ALT_KEY,
            "allow-floor" + ALT_KEY,
        ),
        Ratio(f"authgate's denials / the complete floor's ({DEF})", "deny", "deny-complete-floor"),
        Ratio(f"authgate's denials / the complete floor's ({ALT})", "deny" + ALT_KEY, "deny-complete-floor" + ALT_KEY),
    ]
    summary = summarize(
        "denial",
        "11. Denials (a credential-stuffing flood, throttle on) against allows, direct",
        variants,
        ratios,
        results,
    )
    summary["flood"] = {"per_address": PER_ADDRESS, **flood_stats}
    return summary
