"""Failures out: the outbox (app.shared_throttle.outbox) pushed to Redis, one atomic Lua script call per batch.

The script adds each key's failures to its counter, which expires with the window; at the limit it records a
ban in the one sorted set of live bans (scored by expiry) and publishes it. A ban this replica imposed itself
is pushed too, so a client banned here while Redis was down is banned everywhere once Redis is back. The
script's answer carries each pushed key's ban, if any, which the local table then learns.

The pusher runs as soon as a failure wakes it, then lingers ``PUSH_LINGER`` for more to join the same call.
Failures older than the window when their turn comes (Redis was down) are dropped rather than counted in a
fresh window, and a key past the key budget (app.shared_throttle.budget) stays local; both are counted in
``authgate_throttle_failures_not_shared_total``, as is a batch that failed (it is not retried: part of it may
have been applied). The script touches a counter and the one set of bans: a standalone Redis (or the primary
behind a Sentinel-managed Service), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.metrics import Metrics
from app.policy import RedisSettings
from app.shared_throttle.budget import KeyBudget
from app.shared_throttle.connection import HEALTH_INTERVAL
from app.shared_throttle.outbox import Outbox, Pending
from app.throttle import Key, Throttle

if TYPE_CHECKING:
    from redis.asyncio import Redis

# How long the pusher waits, once woken, for more failures to join the same script call. A call costs about
# 100-150 us of authgate CPU whatever it carries (redis-py), more than a failure's own decision: pushing each
# failure alone would double the failure path's cost. With the wait there are at most 200 calls a second.
PUSH_LINGER = 0.005
PUSH_CHUNK = 500  # keys per script call (one round trip; Redis runs each call for well under a millisecond)

# One call per batch of keys (a call per key would cost more Python per failure than the decision itself).
# KEYS[1] the bans: a sorted set of "kind digest" (hex) scored by expiry (ms, Redis's clock); KEYS[2..] the keys'
# failure counters. ARGV[1..4]: window ms, ban ms, the bans channel, the pushing replica's origin; then one
# value per counter, "FAILURES LIMIT OWN_BAN_MS KIND DIGEST" (OWN_BAN_MS: a ban the pushing replica imposed
# itself, 0 if none). Returns {index, ms left, ...} for the counters whose key is banned (1-based, in KEYS[2..]
# order); usually empty. Atomic: replicas never lose an increment or a ban.
SCRIPT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window, ban_ms, channel, origin = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local banned = {}
local pruned = false
for i = 2, #KEYS do
  local f, l, b, member = string.match(ARGV[3 + i], '^(%d+) (%d+) (%d+) (.*)$')
  local failures = tonumber(f)
  local count = redis.call('INCRBY', KEYS[i], failures)
  if count == failures or redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
  end
  local ban = tonumber(b)
  if count >= tonumber(l) then
    ban = ban_ms
    redis.call('DEL', KEYS[i])
  end
  local banned_until = tonumber(redis.call('ZSCORE', KEYS[1], member) or 0)
  if ban > 0 and now + ban > banned_until then
    banned_until = now + ban
    redis.call('ZADD', KEYS[1], banned_until, member)
    if not pruned then
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
      pruned = true
    end
    if redis.call('PTTL', KEYS[1]) < ban then
      redis.call('PEXPIRE', KEYS[1], ban)
    end
    redis.call('PUBLISH', channel, ban .. ' ' .. origin .. ' ' .. member)
  end
  if banned_until > now then
    banned[#banned + 1] = i - 1
    banned[#banned + 1] = banned_until - now
  end
end
return banned
"""


class FailurePusher:
    """Takes the outbox to Redis while a session runs (:meth:`run`); :meth:`wake` is all the decision calls.

    ``table`` is the local throttle (its settings and per-kind limits), ``redis`` where it shares; ``learn``
    imposes a ban Redis reports (app.shared_throttle.ban_sync). ``bans_key``, ``channel`` and ``origin`` are
    the script's: the sorted set of live bans, the channel bans are published on, and this replica's mark on
    the bans it publishes."""

    def __init__(
        self,
        table: Throttle,
        redis: RedisSettings,
        outbox: Outbox,
        budget: KeyBudget,
        metrics: Metrics,
        clock: Callable[[], float],
        learn: Callable[[Key, float], None],
        *,
        bans_key: str,
        channel: str,
        origin: str,
    ) -> None:
        self._table = table
        self._redis = redis
        self._outbox = outbox
        self._budget = budget
        self._metrics = metrics
        self._clock = clock
        self._learn = learn
        self._bans_key = bans_key
        self._channel = channel
        self._origin = origin
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wakeup: asyncio.Event | None = None

    def attach(self) -> None:
        """Binds the pusher to the running event loop, so :meth:`wake` reaches it from any thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Something is in the outbox. O(1), never waits; from the event loop or a worker thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        if threading.get_ident() == self._loop_thread:
            wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to push to
                loop.call_soon_threadsafe(wakeup.set)

    async def load_script(self, client: Redis) -> str:
        """Loads the script on this connection's Redis; returns its SHA for :meth:`run`."""
        return str(await client.script_load(SCRIPT))

    async def run(self, client: Redis, sha: str) -> None:
        """Pushes whatever the outbox holds, as it comes, until an error (raised) or cancellation; PINGs Redis
        after ``HEALTH_INTERVAL`` without a push, so a Redis that stopped answering is noticed."""
        assert self._wakeup is not None
        while True:
            if len(self._outbox) == 0:
                try:
                    async with asyncio.timeout(HEALTH_INTERVAL):
                        await self._wakeup.wait()
                except TimeoutError:
                    async with asyncio.timeout(self._redis.timeout_seconds):
                        await client.ping()
                    continue
            await asyncio.sleep(PUSH_LINGER)  # gather what else fails meanwhile into the same call
            self._wakeup.clear()
            await self.push(client, sha, self._outbox.take())

    async def push(self, client: Redis, sha: str, batch: dict[Key, Pending]) -> None:
        """Runs the script for the batch's keys; imposes the bans Redis reports. A batch that fails is not retried
        (part of it may have been applied): its failures stay local only, and are counted as such."""
        settings = self._table.settings
        now = self._clock()
        window_ms = int(settings.window_seconds * 1000)
        ban_ms = int(settings.ban_seconds * 1000)
        rows: list[tuple[Key, int, int]] = []  # key, failures, ms of a ban imposed here
        for key, entry in batch.items():
            own_ban = int((entry.banned_until - now) * 1000) if entry.banned_until > now else 0
            fresh = now - entry.first_seen < settings.window_seconds
            if own_ban > 0 or (fresh and self._budget.allows(key, now)):
                rows.append((key, entry.failures, own_ban))
            else:
                self._metrics.throttle_failures_not_shared.inc(entry.failures)
        head: list[str | int] = [window_ms, ban_ms, self._channel, self._origin]
        for start in range(0, len(rows), PUSH_CHUNK):
            chunk = rows[start : start + PUSH_CHUNK]
            counters: list[str] = []
            args: list[str] = []
            for (kind, digest), failures, own_ban in chunk:
                hex_digest = digest.hex()
                counters.append(f"{self._redis.key_prefix}f:{kind[0]}:{hex_digest}")
                args.append(f"{failures} {self._table.limit(kind)} {own_ban} {kind} {hex_digest}")
            try:
                async with asyncio.timeout(self._redis.timeout_seconds):
                    banned = await client.evalsha(sha, 1 + len(counters), self._bans_key, *counters, *head, *args)
            except BaseException:
                self._metrics.throttle_failures_not_shared.inc(sum(row[1] for row in rows[start:]))
                raise
            for index, left in zip(banned[::2], banned[1::2], strict=True):
                key, _, own_ban = chunk[int(index) - 1]
                if own_ban == 0:
                    self._learn(key, int(left) / 1000)
