"""Throttling of credential guessing, per client address and per Basic user name.

The trade-off (documented in the README):

* Only *failed checks* count: a wrong password, an unknown user or token, a malformed header. A request
  with no credential at all (a browser's first request before it prompts) never counts.
* After ``max_failures_per_address`` failures from one address, or ``max_failures_per_user`` against one
  existing user name, within ``window_seconds``, that address or user is banned for ``ban_seconds``: its
  unverified attempts get 403 without being checked, so a guesser learns nothing and burns no bcrypt time.
* A ban never locks out a credential that is already known good: a valid Bearer token (unguessable, and
  cheap to check) and a Basic credential this process has verified before (it is in the verified cache) still
  pass. So one guesser behind a shared NAT or load-balancer address cannot lock out the other clients behind
  it that already work, and guessing at a user name does not log that user out. What a ban can still delay is
  a *first* Basic login from a banned address or for a banned user (for example right after a pod restart).
* Per-user counters are kept only for user names that exist, and the whole table is bounded, so random
  names or addresses cannot grow memory without limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.policy import ThrottleSettings


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int = 0
    banned_until: float = 0.0


class Throttle:
    """Failure counters with bans. Thread-safe (slow password checks record from worker threads)."""

    def __init__(self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    def banned(self, address: str | None, user: str | None) -> bool:
        """Whether unverified attempts from this address or for this user are refused right now."""
        if not self.settings.enabled or not self._counters:
            return False
        now = self._clock()
        with self._lock:
            for key in self._keys(address, user):
                counter = self._counters.get(key)
                if counter is not None and counter.banned_until > now:
                    return True
        return False

    def record_failure(self, address: str | None, user: str | None) -> None:
        """Counts one failed check; bans the address or user that reaches its limit."""
        if not self.settings.enabled:
            return
        now = self._clock()
        with self._lock:
            for key in self._keys(address, user):
                limit = (
                    self.settings.max_failures_per_address
                    if key[0] == "address"
                    else self.settings.max_failures_per_user
                )
                if limit <= 0:
                    continue
                counter = self._counters.get(key)
                if counter is None or now - counter.window_start >= self.settings.window_seconds:
                    banned_until = counter.banned_until if counter is not None else 0.0
                    counter = _Counter(window_start=now, banned_until=banned_until)
                    self._counters[key] = counter
                counter.failures += 1
                if counter.failures >= limit:
                    counter.banned_until = now + self.settings.ban_seconds
                    counter.failures = 0
                    counter.window_start = now
            if len(self._counters) > self.settings.max_tracked:
                self._prune(now)

    def banned_counts(self) -> dict[str, int]:
        """How many addresses and users are banned now (for the metrics gauge)."""
        now = self._clock()
        counts = {"address": 0, "user": 0}
        with self._lock:
            for (kind, _), counter in self._counters.items():
                if counter.banned_until > now:
                    counts[kind] += 1
        return counts

    @staticmethod
    def _keys(address: str | None, user: str | None) -> list[tuple[str, str]]:
        keys = []
        if address:
            keys.append(("address", address))
        if user is not None:
            keys.append(("user", user))
        return keys

    def _prune(self, now: float) -> None:
        """Drops idle counters; if still over the bound, drops the oldest (bans are kept longest)."""
        window = self.settings.window_seconds
        for key in [k for k, c in self._counters.items() if c.banned_until <= now and now - c.window_start >= window]:
            del self._counters[key]
        overflow = len(self._counters) - self.settings.max_tracked
        if overflow > 0:
            unbanned = [k for k, c in self._counters.items() if c.banned_until <= now]
            for key in (unbanned + list(self._counters))[:overflow]:
                self._counters.pop(key, None)
