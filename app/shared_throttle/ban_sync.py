"""Bans in: the bans Redis holds and publishes, imposed on the local table for the time they have left.

Every replica subscribes to the bans channel, so a ban reached with failures split across replicas holds on
all of them one Redis round trip and one pub/sub delivery after the failure that reached it was answered. A
replica that (re)connects first subscribes, then reads the live bans from the sorted set (:meth:`BanSync.
subscribed`), so none published while it was starting or disconnected is missed. The pusher's script answer
carries bans too (:meth:`BanSync.learn`).

Nothing from Redis ever lifts a ban or shortens one, and nothing but a well-formed digest is imposed: anyone
who can write to Redis could publish anything, and the most it can do is ban (never longer than this
replica's own ``ban_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from app.metrics import Metrics
from app.policy import RedisSettings
from app.shared_throttle.connection import HEALTH_INTERVAL
from app.throttle import DIGEST_BYTES, KINDS, Key, Throttle

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

CATCH_UP_PAGE = 1000  # live bans read per command when a replica (re)connects


class BanSync:
    """Keeps the local table's bans in step with Redis's while a session runs. ``bans_key`` is the sorted set
    of live bans, ``channel`` the one bans are published on, ``origin`` this replica's mark on the bans it
    publishes itself (which it has already)."""

    def __init__(
        self,
        table: Throttle,
        redis: RedisSettings,
        metrics: Metrics,
        *,
        bans_key: str,
        channel: str,
        origin: str,
    ) -> None:
        self._table = table
        self._redis = redis
        self._metrics = metrics
        self._bans_key = bans_key
        self._channel = channel
        self._origin = origin

    @contextlib.asynccontextmanager
    async def subscribed(self, client: Redis) -> AsyncIterator[PubSub]:
        """Subscribes to the bans channel, then catches up: after subscribing, so no ban falls between the
        two. Yields the subscription for :meth:`listen`; closes it when the block ends."""
        timeout = self._redis.timeout_seconds
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(timeout):
                await pubsub.subscribe(self._channel)
            await self._catch_up(client)
            yield pubsub
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self, client: Redis) -> None:
        """Imposes the bans Redis holds now, those published while this replica was not subscribed (it was
        starting, or disconnected): the longest-lasting first, at most as many as the local table keeps, read
        in pages that each get the command timeout (a Redis holding many bans must not keep us from connecting)."""
        timeout = self._redis.timeout_seconds
        async with asyncio.timeout(timeout):
            seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        wanted = max(1, self._table.settings.max_tracked // 2)
        for start in range(0, wanted, CATCH_UP_PAGE):
            async with asyncio.timeout(timeout):
                rows: list[tuple[bytes, float]] = await client.zrevrangebyscore(  # type: ignore[assignment]
                    self._bans_key,
                    "+inf",
                    now_ms + 1,
                    start=start,
                    num=min(CATCH_UP_PAGE, wanted - start),
                    withscores=True,
                )
            for member, until_ms in rows:
                self.on_message(f"{until_ms - now_ms:.0f} catch-up ".encode() + member)
            if len(rows) < CATCH_UP_PAGE:
                return

    async def listen(self, pubsub: PubSub) -> None:
        """Imposes each ban published, until an error (raised) or cancellation."""
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_INTERVAL)
            if message is not None and message.get("type") == "message":
                self.on_message(message["data"])

    def on_message(self, data: Any) -> None:
        """``"<ms> <origin> <kind> <digest>"`` (the digest in hex), published by the script; malformed ones
        are ignored (anyone who can write to Redis could send them)."""
        try:
            ms, origin, kind, hex_digest = bytes(data).decode("ascii").split(" ", 3)
            seconds = float(ms) / 1000
            digest = bytes.fromhex(hex_digest)
        except (TypeError, ValueError):
            return
        if origin == self._origin or kind not in KINDS or len(hex_digest) != 2 * DIGEST_BYTES:
            return
        if len(digest) != DIGEST_BYTES or not math.isfinite(seconds):
            return
        self.learn((kind, digest), seconds)

    def learn(self, key: Key, seconds: float) -> None:
        """Imposes a ban another replica reached, for the time it has left (at most this replica's own)."""
        if self._table.impose_ban(key, min(seconds, self._table.settings.ban_seconds)):
            self._metrics.throttle_bans_learnt.inc()
