"""Case 8: a valid token's p99 latency on an authgate whose throttle table is at its cap (filled by a flood
of failures from distinct addresses, some of them banned) against one whose table is empty."""

from __future__ import annotations

from typing import Any

import httpx

from bench.measure import ORIGINAL, HarnessError, Log, Params, Ratio, Variant, finer, measure, summarize
from bench.servers import POLICY, Credentials, Stack
from bench.wrk import Wrk

# Failed checks (a wrong Bearer token) from addresses numbered from OFFSET: the first BANNED addresses
# LIMIT times each (a few more than the ban needs: wrk may spend a request on its own start), then one
# failure from each of the rest.
_FLOOD_LUA = """
local n = OFFSET
request = function()
  local a
  if n < BANNED * LIMIT then a = math.floor(n / LIMIT) else a = n - BANNED * LIMIT + BANNED end
  n = n + 1
  local ip = string.format("10.%d.%d.%d", math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256)
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Real-IP"] = ip
  return wrk.format(nil, nil, headers)
end
"""


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    """A valid token's latency with the throttle table at its cap (max_tracked addresses remembered, some of
    them banned) against an instance whose table is empty."""
    from app.policy import ThrottleSettings

    settings = ThrottleSettings()
    cap, limit = settings.max_tracked, settings.max_failures_per_address + 5
    banned = min(1_000, settings.max_tracked // 2)
    empty = stack.authgate("throttle-empty", stack.small_files(), policy=POLICY)
    full = stack.authgate("throttle-full", stack.small_files(), policy=POLICY)
    flood_url = full.base_url + "/auth/api"
    wrong = {**ORIGINAL, "Authorization": "Bearer " + Credentials.generate().token}  # X-Real-IP: set per request
    needed = banned * limit + cap + cap // 10  # every ban, then more single failures than the table holds
    sent = 0
    log(f"  filling the throttle table: {banned:,} addresses banned, then {needed - banned * limit:,} more failing")
    while sent < needed:
        lua = _FLOOD_LUA.replace("OFFSET", str(sent)).replace("BANNED", str(banned)).replace("LIMIT", str(limit))
        sent += wrk.run(flood_url, wrong, 5, request_lua=lua).requests
    metrics = httpx.get(full.base_url + "/metrics", timeout=10).text
    bans = next(
        (
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('authgate_throttled_clients{kind="address"}')
        ),
        0.0,
    )
    if bans < banned:
        raise HarnessError(f"throttle table: {bans:.0f} addresses banned after the flood, want {banned}")
    log(f"  {sent:,} failures sent, {bans:.0f} addresses banned")
    variants = [
        Variant(
            "full",
            f"authgate, throttle table full ({cap:,} keys, {banned:,} bans) (Bearer)",
            flood_url,
            stack.creds.bearer,
            ORIGINAL,
            serves=("authgate:throttle-full",),
        ),
        Variant(
            "empty",
            "authgate, throttle table empty (Bearer)",
            empty.base_url + "/auth/api",
            stack.creds.bearer,
            ORIGINAL,
            serves=("authgate:throttle-empty",),
        ),
    ]
    ratios = [Ratio("valid token p99: throttle table full / empty", "full", "empty", 2.0, metric="p99")]
    summary = summarize(
        "throttle", "8. Throttle table at its cap", variants, ratios, measure(stack, wrk, variants, finer(p), log)
    )
    summary["flood"] = {"failures_sent": sent, "banned": bans, "max_tracked": cap}
    return summary
