"""The connection to Redis, and whether the throttle is shared right now.

:class:`RedisConnection` owns the client and runs one session on it after another (what a session does is
app.shared_throttle.throttle's business: push failures, learn bans). A session ends with an error — Redis down,
slow or refusing (connection refused, a timeout, an error answer), or a bug — and the connection says the
throttle is local (``authgate_throttle_shared`` 0), counts the error, logs at most one line a minute, closes the
client and opens a new one after a jittered exponential backoff. Meanwhile the local throttle keeps counting as
before (per replica: the limits then hold per pod, not for the fleet): nothing waits for Redis, nothing fails
open. One line says when Redis answers again, if its outage was logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.logs import EveryInterval
from app.metrics import Metrics
from app.policy import RedisSettings

if TYPE_CHECKING:  # redis is imported only when the policy names one (about 45 ms and 6 MB otherwise)
    from redis.asyncio import Redis

log = logging.getLogger("authgate.shared_throttle")

HEALTH_INTERVAL = 2.0  # seconds without a push (or a ban message) before a session checks that Redis answers
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0  # reconnect delays, doubled per failed attempt, jittered
LOG_INTERVAL = 60.0

Session = Callable[["Redis"], Awaitable[None]]  # one connection's life: runs until an error or cancellation


class RedisConnection:
    """The Redis client, reconnected with backoff, and the up/down state that ``authgate_throttle_shared``
    and the ``shared_throttle`` log lines report."""

    def __init__(
        self,
        redis: RedisSettings,
        password: str | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self._password = password
        self._metrics = metrics
        self._clock = clock
        self._log = EveryInterval(LOG_INTERVAL)
        self._errors_since_log = 0
        self._down_since: float | None = None
        self._ever_up = False
        self._down_logged = False
        self.shared = False
        metrics.throttle_shared.set(0)

    async def run(self, session: Session) -> None:
        """Runs ``session`` on a fresh client, again and again, until cancelled. The backoff restarts at its
        minimum after a session that was up (a lost connection retries at once), and doubles after each one
        that failed to come up."""
        from redis.exceptions import RedisError

        backoff = BACKOFF_MIN
        while True:
            client = self._client()
            was_up = False
            try:
                await session(client)
            except (RedisError, OSError, TimeoutError) as exc:
                was_up = self.shared
                self.down(exc)
            except Exception as exc:  # a bug here must not end sharing for good; the local throttle stays
                was_up = self.shared
                self.down(exc, unexpected=True)
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
            retry=Retry(NoBackoff(), 0),  # run() reconnects, with its own backoff
            max_connections=4,
            client_name="authgate",
            ssl=r.tls,
            ssl_ca_certs=r.tls_ca_file,
            ssl_certfile=r.tls_cert_file,
            ssl_keyfile=r.tls_key_file,
        )

    # -- state, metrics and logs -------------------------------------------------------------------------

    def set_shared(self, shared: bool) -> None:
        self.shared = shared
        self._metrics.throttle_shared.set(1 if shared else 0)

    def up(self) -> None:
        """Called by the session once it shares (connected, subscribed, caught up). Logs the first connection,
        and the end of an outage whose start was logged (so the log never leaves a logged outage open), at most
        one line per outage logged."""
        was_down = self._down_since
        self._down_since = None
        self.set_shared(True)
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

    def down(self, exc: BaseException, *, unexpected: bool = False) -> None:
        """Called when a session ends with ``exc``: the throttle is local until the next :meth:`up`. Counts
        every error, logs at most one line a minute (with the traceback when ``unexpected``: a bug)."""
        self.set_shared(False)
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
