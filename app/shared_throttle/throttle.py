"""The shared throttle itself: the local :class:`~app.throttle.Throttle`, with its parts wired around it.

:class:`SharedThrottle` is still the throttle the decision asks: ``banned`` is the local one, untouched, and
``record_failure`` (and ``banned_else_count``) counts locally, then drops each key counted into the outbox and
wakes the pusher — O(1), never a wait. What runs in the background is one task, started and stopped by the
service's lifespan: the connection (app.shared_throttle.connection) runs :meth:`SharedThrottle._session` on each
client it opens, and a session loads the script, subscribes and catches up on the live bans
(app.shared_throttle.ban_sync), says the throttle is shared, then pushes failures (app.shared_throttle.push)
and learns bans until either fails.

:func:`make_throttle` is what the state calls at start: the local throttle, or this one when the policy names
a Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import ConfigError
from app.metrics import Metrics
from app.policy import RedisSettings, ThrottleSettings
from app.shared_throttle.ban_sync import BanSync
from app.shared_throttle.budget import KeyBudget
from app.shared_throttle.connection import RedisConnection
from app.shared_throttle.outbox import Outbox
from app.shared_throttle.password import redis_password, shared_digest_key
from app.shared_throttle.push import FailurePusher
from app.throttle import Key, Throttle

if TYPE_CHECKING:
    from redis.asyncio import Redis


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


class SharedThrottle(Throttle):
    """The local throttle, kept in step with the other replicas through Redis (app.shared_throttle).

    ``banned`` is the local one, untouched: no decision ever waits on Redis. ``record_failure`` (and
    ``banned_else_count``) also queues the failure for the background task started by :meth:`start` (in the
    app's lifespan)."""

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
        self._metrics = metrics
        self.outbox = Outbox()
        self.origin = secrets.token_hex(6)  # tells this replica's own published bans apart
        self.bans_key = f"{redis.key_prefix}bans"  # a sorted set: every live ban, for a replica that connects
        self.channel = f"{redis.key_prefix}banned"  # each new or extended ban, as it happens
        names = {"bans_key": self.bans_key, "channel": self.channel, "origin": self.origin}
        self.connection = RedisConnection(redis, password, metrics, clock)
        self.ban_sync = BanSync(self, redis, metrics, **names)
        budget = KeyBudget(settings.max_tracked, settings.window_seconds, clock())
        self.pusher = FailurePusher(self, redis, self.outbox, budget, metrics, clock, self.ban_sync.learn, **names)
        self._wake = self.pusher.wake  # bound once: record_failure is on the path of every denial
        self.on_counted = self._queue
        self._task: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Whether failures and bans are shared right now (``authgate_throttle_shared``)."""
        return self.connection.shared

    # -- called by the decision (event loop or worker thread): O(1), never waits ---------------------------

    def _queue(self, counted: list[tuple[Key, bool]]) -> None:
        # Throttle.on_counted, under record_failure and banned_else_count alike: every failure counted locally is
        # queued.
        now = self._clock()
        for key, banned in counted:
            if not self.outbox.add(key, now, now + self.settings.ban_seconds if banned else 0.0):
                self._metrics.throttle_failures_not_shared.inc()
        self._wake()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the background task; returns at once (authgate decides with the local table meanwhile)."""
        self.pusher.attach()
        self._task = asyncio.create_task(self.connection.run(self._session), name="shared-throttle")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connection.set_shared(False)

    async def _session(self, client: Redis) -> None:
        """One connection's life: runs until an error (raised) or cancellation."""
        async with asyncio.timeout(self.redis.timeout_seconds):
            await client.ping()
            sha = await self.pusher.load_script(client)
        async with self.ban_sync.subscribed(client) as pubsub:
            self.connection.up()
            tasks = [
                asyncio.create_task(self.pusher.run(client, sha)),
                asyncio.create_task(self.ban_sync.listen(pubsub)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # raises the error that ended the session
