"""Throttling that holds across replicas: failure counters and bans shared through Redis.

Without it every replica counts alone, so with N pods a guesser gets N times the limit, and a client banned
on one pod may try on the next. The local :class:`~app.throttle.Throttle` stays the one that decides: the
decision is synchronous, runs on the event loop, and must never wait on the network. This module keeps it in
step with the other replicas in the background:

* **Failures out.** Each failure the local throttle counts also goes into a bounded outbox that coalesces
  per key (O(1) under a lock, from the event loop or a worker thread). One task drains it: one atomic Lua
  script call per batch adds each key's failures to its counter in Redis, which expires with the window;
  at the limit it records a ban in one sorted set of live bans (scored by expiry) and publishes it. A ban
  this replica imposed itself is pushed too, so a client banned here while Redis was down is banned
  everywhere once Redis is back.
* **Bans in.** Every replica subscribes to the bans channel and imposes each ban locally for the time it has
  left: a ban reached with failures split across replicas holds on all of them one Redis round trip and one
  pub/sub delivery after the failure that reached it was answered. A replica that (re)connects first
  subscribes, then reads the live bans from the sorted set, so none published while it was starting or
  disconnected is missed; the script's answer also carries the key's ban, if any.
* **Allows never touch Redis**, and no answer waits for it: the decision reads only the local table.

Redis down, slow or refusing (connection refused, a timeout, an error answer): the local throttle keeps
counting as before (per replica: the limit then holds per pod, not for the fleet), ``authgate_throttle_shared``
says 0, errors are counted and logged at most once a minute, and the task reconnects with jittered exponential
backoff. Never fail open: a ban or a count is only ever added from Redis, never waited for or lifted.

What Redis holds. Nothing a client sent: every counter name, ban member and published ban carries the
keyed digest the local table counts under (app.throttle, 16 bytes, hex), never the address or user name, so an
entry costs the same whatever a client sends, and a flood of 6,000-character names grows no replica. The
replicas must derive the same digest for the same name, so the key is derived (:func:`shared_digest_key`)
from what they all share: ``key_prefix`` and, when set, the Redis password. With a password, a reader of
Redis's data (a dump, a backup, a replica of it) who lacks the password cannot test a guessed name or address
against it; without one, anyone who can read it can (as anyone who can read it can also write bans).

Bounds. In Redis every counter expires within ``window_seconds`` of its first failure; the set of bans expires
when its longest ban does, and each write drops the bans that have ended. Counter keys are that digest under
``key_prefix``; a replica creates at most ``max_tracked`` new counter
keys per window (a token bucket; a key it created within the window costs nothing more; failures past the
budget are counted locally only), so however many names a guesser invents, Redis holds at most about
``max_tracked`` counters per replica, like the local table. The outbox holds at most ``MAX_PENDING_KEYS``
keys; failures older than the window when their turn comes (Redis was down) are dropped rather than counted in
a fresh window. The script touches a counter and the one set of bans: a standalone Redis (or the primary
behind a Sentinel-managed Service), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError
from app.logs import EveryInterval
from app.metrics import Metrics
from app.policy import RedisSettings, ThrottleSettings
from app.throttle import DIGEST_BYTES, KINDS, Key, Throttle

if TYPE_CHECKING:  # redis is imported only when the policy names one (about 45 ms and 6 MB otherwise)
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger("authgate.shared_throttle")

MAX_PENDING_KEYS = 10_000  # distinct keys waiting to be pushed; more are counted locally only
# How long the pusher waits, once woken, for more failures to join the same script call. A call costs about
# 100-150 us of authgate CPU whatever it carries (redis-py), more than a failure's own decision: pushing each
# failure alone would double the failure path's cost. With the wait there are at most 200 calls a second.
PUSH_LINGER = 0.005
PUSH_CHUNK = 500  # keys per script call (one round trip; Redis runs each call for well under a millisecond)
CATCH_UP_PAGE = 1000  # live bans read per command when a replica (re)connects
HEALTH_INTERVAL = 2.0  # seconds without a push before a PING checks that Redis still answers
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0  # reconnect delays, doubled per failed attempt, jittered
LOG_INTERVAL = 60.0

# One call per batch of keys (a call per key would cost more Python per failure than the decision itself).
# KEYS[1] the bans: a sorted set of "kind digest" (hex) scored by expiry (ms, Redis's clock); KEYS[2..] the keys'
# failure counters. ARGV[1..4]: window ms, ban ms, the bans channel, the pushing replica's origin; then one
# value per counter, "FAILURES LIMIT OWN_BAN_MS KIND DIGEST" (OWN_BAN_MS: a ban the pushing replica imposed
# itself, 0 if none). Returns {index, ms left, ...} for the counters whose key is banned (1-based, in KEYS[2..]
# order); usually empty. Atomic: replicas never lose an increment or a ban.
_SCRIPT = """
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


def redis_password(settings: RedisSettings, environ: Mapping[str, str]) -> str | None:
    """The password the policy names (a file or an environment variable), read once at start. Errors name the
    key and the file or variable, never what it holds."""
    if settings.password_env is not None:
        value = environ.get(settings.password_env, "")
        if not value:
            raise ConfigError(f"throttle.redis.password_env: ${settings.password_env} is not set or empty")
        return value
    if settings.password_file is not None:
        try:
            value = Path(settings.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"throttle.redis.password_file: cannot read {settings.password_file}: {type(exc).__name__}"
            ) from None
        if not value:
            raise ConfigError(f"throttle.redis.password_file: {settings.password_file} is empty")
        return value
    return None


def shared_digest_key(redis: RedisSettings, password: str | None) -> bytes:
    """The key of the digests every replica sharing this Redis counts under (the same on each of them)."""
    material = b"\0".join((b"authgate shared throttle", redis.key_prefix.encode(), (password or "").encode()))
    return hashlib.blake2b(material, digest_size=32).digest()


def make_throttle(settings: ThrottleSettings, metrics: Metrics, environ: Mapping[str, str] | None = None) -> Throttle:
    """The local throttle, shared through Redis when the policy names one. Raises ConfigError at start for a
    password or TLS file that is missing, so a typo fails the start rather than every connection."""
    if settings.redis is None:
        return Throttle(settings)
    redis = settings.redis
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(redis, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"throttle.redis.{key}: no such file: {path}")
    password = redis_password(redis, os.environ if environ is None else environ)
    return SharedThrottle(settings, redis, password, metrics)


@dataclass(slots=True)
class _Pending:
    failures: int
    first_seen: float  # monotonic time of the first failure coalesced here
    banned_until: float = 0.0  # set when this replica banned the key itself


class Outbox:
    """Failures waiting to be pushed, coalesced per key and bounded. Thread-safe; adding is O(1)."""

    def __init__(self, max_keys: int = MAX_PENDING_KEYS) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._pending: dict[Key, _Pending] = {}

    def add(self, key: Key, now: float, banned_until: float = 0.0) -> bool:
        """Adds one failure (and the ban it caused here, if any). False when full: the failure stays local."""
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                if len(self._pending) >= self.max_keys:
                    return False
                self._pending[key] = _Pending(1, now, banned_until)
            else:
                entry.failures += 1
                entry.banned_until = max(entry.banned_until, banned_until)
            return True

    def take(self) -> dict[Key, _Pending]:
        with self._lock:
            taken, self._pending = self._pending, {}
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class _KeyBudget:
    """How many counter keys this replica may create in Redis: at most ``capacity`` per ``window`` seconds
    (a token bucket, refilled evenly). A key this replica created less than a window ago, and still
    remembers (the last ``remembered`` of them), costs nothing more: one busy guesser never spends the budget
    that other keys need. So whatever the keys, this replica creates at most ``capacity`` (plus what one
    window refills) counters per window."""

    def __init__(self, capacity: int, window: float, now: float, remembered: int = MAX_PENDING_KEYS) -> None:
        self.capacity = float(capacity)
        self.window = window
        self.rate = capacity / window
        self.tokens = float(capacity)
        self.updated = now
        self.remembered = remembered
        self._created: OrderedDict[Key, float] = OrderedDict()  # key -> when its counter expires; LRU order

    def allows(self, key: Key, now: float) -> bool:
        expires = self._created.get(key)
        if expires is not None and expires > now:
            self._created.move_to_end(key)
            return True
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        self._created[key] = now + self.window
        self._created.move_to_end(key)
        while len(self._created) > self.remembered:
            self._created.popitem(last=False)
        return True


class SharedThrottle(Throttle):
    """The local throttle, kept in step with the other replicas through Redis (see the module docstring).

    ``banned`` is the local one, untouched: no decision ever waits on Redis. ``record_failure`` also queues
    the failure for the background task started by :meth:`start` (in the app's lifespan)."""

    def __init__(
        self,
        settings: ThrottleSettings,
        redis: RedisSettings,
        password: str | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, clock, digest_key=shared_digest_key(redis, password))
        self.redis = redis
        self._password = password
        self._metrics = metrics
        self.outbox = Outbox()
        self.origin = secrets.token_hex(6)  # tells this replica's own published bans apart
        self.bans_key = f"{redis.key_prefix}bans"  # a sorted set: every live ban, for a replica that connects
        self.channel = f"{redis.key_prefix}banned"  # each new or extended ban, as it happens
        self._budget = _KeyBudget(settings.max_tracked, settings.window_seconds, clock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = EveryInterval(LOG_INTERVAL)
        self._errors_since_log = 0
        self._down_since: float | None = None
        self._ever_up = False
        self._down_logged = False
        self.shared = False
        metrics.throttle_shared.set(0)

    # -- called by the decision (event loop or worker thread): O(1), never waits ---------------------------

    def record_failure(self, address: str | None, user: str | None) -> list[tuple[Key, bool]]:
        counted = super().record_failure(address, user)
        if counted:
            now = self._clock()
            for key, banned in counted:
                if not self.outbox.add(key, now, now + self.settings.ban_seconds if banned else 0.0):
                    self._metrics.throttle_failures_not_shared.inc()
            self._wake()
        return counted

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        if threading.get_ident() == self._loop_thread:
            wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to push to
                loop.call_soon_threadsafe(wakeup.set)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the background task; returns at once (authgate decides with the local table meanwhile)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="shared-throttle")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_shared(False)

    # -- the background task -----------------------------------------------------------------------------

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        backoff = BACKOFF_MIN
        while True:
            client = self._client()
            was_up = False
            try:
                await self._session(client)
            except (RedisError, OSError, TimeoutError) as exc:
                was_up = self.shared
                self._down(exc)
            except Exception as exc:  # a bug here must not end sharing for good; the local throttle stays
                was_up = self.shared
                self._down(exc, unexpected=True)
            finally:
                await _close(client)
            backoff = BACKOFF_MIN if was_up else min(backoff * 2, BACKOFF_MAX)
            await asyncio.sleep(random.uniform(backoff / 2, backoff))  # noqa: S311 - jitter, not a secret

    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        r = self.redis
        return Redis(
            host=r.host,
            port=r.port,
            db=r.db,
            username=r.username,
            password=self._password,
            socket_timeout=r.timeout_seconds,
            socket_connect_timeout=r.timeout_seconds,
            retry=Retry(NoBackoff(), 0),  # this task reconnects, with its own backoff
            max_connections=4,
            client_name="authgate",
            ssl=r.tls,
            ssl_ca_certs=r.tls_ca_file,
            ssl_certfile=r.tls_cert_file,
            ssl_keyfile=r.tls_key_file,
        )

    async def _session(self, client: Redis) -> None:
        """One connection's life: runs until an error (raised) or cancellation."""
        timeout = self.redis.timeout_seconds
        async with asyncio.timeout(timeout):
            await client.ping()
            sha = await client.script_load(_SCRIPT)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(timeout):
                await pubsub.subscribe(self.channel)
            await self._catch_up(client)  # after subscribing: no ban falls between the two
            self._up()
            tasks = [
                asyncio.create_task(self._push_loop(client, str(sha))),
                asyncio.create_task(self._listen_loop(pubsub)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # raises the error that ended the session
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self, client: Redis) -> None:
        """Imposes the bans Redis holds now, those published while this replica was not subscribed (it was
        starting, or disconnected): the longest-lasting first, at most as many as the local table keeps, read
        in pages that each get the command timeout (a Redis holding many bans must not keep us from connecting)."""
        timeout = self.redis.timeout_seconds
        async with asyncio.timeout(timeout):
            seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        wanted = max(1, self.settings.max_tracked // 2)
        for start in range(0, wanted, CATCH_UP_PAGE):
            async with asyncio.timeout(timeout):
                rows: list[tuple[bytes, float]] = await client.zrevrangebyscore(  # type: ignore[assignment]
                    self.bans_key,
                    "+inf",
                    now_ms + 1,
                    start=start,
                    num=min(CATCH_UP_PAGE, wanted - start),
                    withscores=True,
                )
            for member, until_ms in rows:
                self._on_ban_message(f"{until_ms - now_ms:.0f} catch-up ".encode() + member)
            if len(rows) < CATCH_UP_PAGE:
                return

    async def _push_loop(self, client: Redis, sha: str) -> None:
        assert self._wakeup is not None
        while True:
            if len(self.outbox) == 0:
                try:
                    async with asyncio.timeout(HEALTH_INTERVAL):
                        await self._wakeup.wait()
                except TimeoutError:
                    async with asyncio.timeout(self.redis.timeout_seconds):
                        await client.ping()
                    continue
            await asyncio.sleep(PUSH_LINGER)  # gather what else fails meanwhile into the same call
            self._wakeup.clear()
            await self._push(client, sha, self.outbox.take())

    async def _push(self, client: Redis, sha: str, batch: dict[Key, _Pending]) -> None:
        """Runs the script for the batch's keys; imposes the bans Redis reports. A batch that fails is not retried
        (part of it may have been applied): its failures stay local only, and are counted as such."""
        now = self._clock()
        window_ms = int(self.settings.window_seconds * 1000)
        ban_ms = int(self.settings.ban_seconds * 1000)
        rows: list[tuple[Key, int, int]] = []  # key, failures, ms of a ban imposed here
        for key, entry in batch.items():
            own_ban = int((entry.banned_until - now) * 1000) if entry.banned_until > now else 0
            fresh = now - entry.first_seen < self.settings.window_seconds
            if own_ban > 0 or (fresh and self._budget.allows(key, now)):
                rows.append((key, entry.failures, own_ban))
            else:
                self._metrics.throttle_failures_not_shared.inc(entry.failures)
        head: list[str | int] = [window_ms, ban_ms, self.channel, self.origin]
        for start in range(0, len(rows), PUSH_CHUNK):
            chunk = rows[start : start + PUSH_CHUNK]
            counters: list[str] = []
            args: list[str] = []
            for (kind, digest), failures, own_ban in chunk:
                hex_digest = digest.hex()
                counters.append(f"{self.redis.key_prefix}f:{kind[0]}:{hex_digest}")
                args.append(f"{failures} {self.limit(kind)} {own_ban} {kind} {hex_digest}")
            try:
                async with asyncio.timeout(self.redis.timeout_seconds):
                    banned = await client.evalsha(sha, 1 + len(counters), self.bans_key, *counters, *head, *args)
            except BaseException:
                self._metrics.throttle_failures_not_shared.inc(sum(row[1] for row in rows[start:]))
                raise
            for index, left in zip(banned[::2], banned[1::2], strict=True):
                key, _, own_ban = chunk[int(index) - 1]
                if own_ban == 0:
                    self._learn(key, int(left) / 1000)

    async def _listen_loop(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_INTERVAL)
            if message is not None and message.get("type") == "message":
                self._on_ban_message(message["data"])

    def _on_ban_message(self, data: Any) -> None:
        """``"<ms> <origin> <kind> <digest>"`` (the digest in hex), published by the script; malformed ones
        are ignored (anyone who can write to Redis could send them)."""
        try:
            ms, origin, kind, hex_digest = bytes(data).decode("ascii").split(" ", 3)
            seconds = float(ms) / 1000
            digest = bytes.fromhex(hex_digest)
        except (TypeError, ValueError):
            return
        if origin == self.origin or kind not in KINDS or len(hex_digest) != 2 * DIGEST_BYTES:
            return
        if len(digest) != DIGEST_BYTES or not math.isfinite(seconds):
            return
        self._learn((kind, digest), seconds)

    def _learn(self, key: Key, seconds: float) -> None:
        if self.impose_ban(key, min(seconds, self.settings.ban_seconds)):
            self._metrics.throttle_bans_learnt.inc()

    # -- state, metrics and logs -------------------------------------------------------------------------

    def _set_shared(self, shared: bool) -> None:
        self.shared = shared
        self._metrics.throttle_shared.set(1 if shared else 0)

    def _up(self) -> None:
        """Logs the first connection, and the end of an outage whose start was logged (so the log never
        leaves a logged outage open), at most one line per outage logged."""
        was_down = self._down_since
        self._down_since = None
        self._set_shared(True)
        fields = {"event": "shared_throttle", "state": "shared", "redis": self.redis.url}
        if not self._ever_up:
            self._ever_up = True
            log.info("shared throttle: failures and bans are shared through %s", self.redis.url, extra=fields)
        elif self._down_logged and was_down is not None:
            self._down_logged = False
            log.warning(
                "shared throttle: Redis at %s answers again after %.1f s; failures and bans are shared again",
                self.redis.url,
                self._clock() - was_down,
                extra=fields,
            )

    def _down(self, exc: BaseException, *, unexpected: bool = False) -> None:
        self._set_shared(False)
        if self._down_since is None:
            self._down_since = self._clock()
        self._metrics.throttle_redis_errors.inc()
        self._errors_since_log += 1
        held_back = self._log.due("down")
        if held_back is None:
            return
        errors, self._errors_since_log = self._errors_since_log, 0
        self._down_logged = True
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.error(
            "shared throttle: Redis at %s is unusable (%s); counting failures on this replica only, so the "
            "limits hold per replica until it is back; reconnecting with backoff",
            self.redis.url,
            reason,
            exc_info=exc if unexpected else None,
            extra={
                "event": "shared_throttle",
                "state": "local",
                "redis": self.redis.url,
                "errors": errors,
                "similar_not_logged": held_back,
            },
        )


async def _close(client: Redis) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await client.aclose()
