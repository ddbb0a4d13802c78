"""Throttling of credential guessing, per client address and per Basic user name.

The trade-off (documented in the README):

* Only *failed checks* count: a wrong password, an unknown user or token, a malformed header. A request
  with no credential at all (a browser's first request before it prompts) never counts.
* After ``max_failures_per_address`` failures from one address, or ``max_failures_per_user`` against one
  user name, within ``window_seconds``, that address or user is banned for ``ban_seconds``: its
  unverified attempts get 403 without being checked, so a guesser learns nothing and burns no bcrypt time.
  Failures recorded while banned keep counting, and reaching the limit again extends the ban.
* A ban never locks out a credential that is already known good: a valid Bearer token (unguessable, and
  cheap to check) and a Basic credential this process has verified before (it is in the verified cache) still
  pass. So one guesser behind a shared NAT or load-balancer address cannot lock out the other clients behind
  it that already work, and guessing at a user name does not log that user out. Under a ban on a *name* only,
  app.decision also checks a hash cheap enough for any load (``{SHA}``): its right password passes, a wrong
  one gets the ban's 403 and counts (against the address too, whose limit then bounds the guessing). What a
  ban can still delay is a *first* Basic login from a banned address, or for a banned name whose hash is slow
  (for example right after a pod restart).
* Any user name given is counted and banned alike, whether or not it exists (the throttle cannot tell), so the
  caller can count every name a client sends without the answers revealing which names exist. Random addresses
  and user names must therefore not grow memory or cost time, however many an attacker sends.
* Nothing the client sent is kept: every address and user name is held as a keyed BLAKE2b digest of
  ``DIGEST_BYTES`` (:meth:`Throttle.key`), so an entry costs the same few hundred bytes whether the name had 5
  characters or 6,000, and the table's size in bytes is bounded by ``max_tracked`` (docs/security.md gives the
  figure). The key is random per process, or shared by the replicas that share a Redis (app.shared_throttle).

How the table stays bounded, at O(1) per call whatever its size (a full table must not slow the event loop,
and a valid credential's ``banned()`` check must cost the same with 10 or 100,000 entries):

* Bans and mere counters live apart. Bans sit in one ordered dict in expiry order (every ban lasts
  ``ban_seconds`` from a monotonic clock, so appending, or moving an extended ban to the end, keeps that order):
  expired bans leave from the front. Counters sit in another in least-recently-failed order (LRU).
* In total at most ``max_tracked`` keys are kept. Bans may take at most half of them, so counting always has
  room; counters may also use whatever room the bans leave. A counter is forgotten only after at least
  ``max_tracked - max_tracked // 2`` other keys have failed since its own last failure.
* When a new key needs room, an expired ban goes first, then the least recently failed counter (a live ban
  only when ``max_tracked`` is 1). So flooding new addresses or names, however many,
  evicts only counters, never an active ban.
* When a new ban needs room among the bans, the ban closest to expiry goes. So a live ban is cut short only by
  the ``max_tracked // 2``-th ban after it, and every one of those costs the attacker a full limit of failed
  checks (``max_failures_per_user`` for a name) from addresses that are not banned themselves.
* A ban learnt from elsewhere (``impose_ban``: another replica's, through app.shared_throttle) keeps the time
  it has left. It goes at the end when it expires last and at the front when it expires first, so the order
  holds; only one whose expiry falls between the first and the last ban's sits out of order. That one is
  still exact for ``banned()``; it is merely swept, and counted in ``banned_counts()``, late: once the bans
  before it have expired, at most ``ban_seconds`` after its own expiry.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.policy import ThrottleSettings

Kind = Literal["address", "user"]
Key = tuple[Kind, bytes]  # the kind, and the keyed digest of the address or user name (never the value itself)
KINDS: tuple[Kind, ...] = ("address", "user")
DIGEST_BYTES = 16

# Expired bans swept from the front per recorded failure: spreads the cleanup after a wave of bans expires
# over later calls, instead of leaving it all to one metrics scrape, without making any call cost more than O(1).
_SWEEP_PER_FAILURE = 2


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int = 0
    banned_until: float = 0.0


class Throttle:
    """Failure counters with bans. Thread-safe (slow password checks record from worker threads)."""

    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic, digest_key: bytes | None = None
    ) -> None:
        self.settings = settings
        self._clock = clock
        # One keyed hash state per kind (copied per key, cheaper than keying anew). The kind is hashed in too,
        # so an address and a user name of the same text get unrelated digests.
        key = digest_key if digest_key is not None else secrets.token_bytes(32)
        self._hashers = {
            kind: hashlib.blake2b(kind.encode() + b"\0", key=key, digest_size=DIGEST_BYTES) for kind in KINDS
        }
        # Told every failure counted, with whether it banned, outside the lock (app.shared_throttle queues them
        # for the other replicas); None: counted here alone.
        self.on_counted: Callable[[list[tuple[Key, bool]]], None] | None = None
        self._lock = threading.Lock()
        self._counters: OrderedDict[Key, _Counter] = OrderedDict()  # not banned; least recently failed first
        self._bans: OrderedDict[Key, _Counter] = OrderedDict()  # banned (or expired, not yet swept); expiry order
        self._ban_counts: dict[str, int] = {"address": 0, "user": 0}  # kept with _bans, so scrapes cost O(1)
        self._max_bans = max(1, settings.max_tracked // 2)

    def key(self, kind: Kind, value: str) -> Key:
        """The fixed-size key an address or user name is counted under: a keyed digest, never the value."""
        hasher = self._hashers[kind].copy()
        hasher.update(value.encode("utf-8", "surrogatepass"))
        return kind, hasher.digest()

    def banned(self, address: str | None, user: str | None) -> bool:
        """Whether unverified attempts from this address or for this user are refused right now."""
        if not self.settings.enabled or not self._bans:  # no ban at all: skip the lock on the common path
            return False
        now = self._clock()
        keys = self._keys(address, user)
        with self._lock:
            for key in keys:
                ban = self._bans.get(key)
                if ban is not None and ban.banned_until > now:
                    return True
        return False

    def record_failure(self, address: str | None, user: str | None) -> list[tuple[Key, bool]]:
        """Counts one failed check; bans the address or user that reaches its limit. Returns each key counted
        (a kind whose limit is 0 is not) with whether this failure banned it or extended its ban."""
        if not self.settings.enabled:
            return []
        return self._record(self._keys(address, user), self._clock())  # hashed before taking the lock

    def banned_else_count(self, address: str | None) -> bool:
        """``banned(address, None)``, and when not banned ``record_failure(address, None)``, with the address
        digested once for both: what a guess (a Bearer token that is no credential) costs the throttle. Returns
        whether the address is banned (nothing is counted then, as with the two calls).

        Every denial of a credential-stuffing flood comes here, so :meth:`key` and :meth:`_record` are written
        out: one hash, and the ban check, the sweep and the count under one hold of the lock
        (docs/benchmarks.md §11)."""
        if not self.settings.enabled:
            return False
        now = self._clock()
        if not address:
            self._record([], now)
            return False
        hasher = self._hashers["address"].copy()
        hasher.update(address.encode("utf-8", "surrogatepass"))
        key: Key = ("address", hasher.digest())
        limit = self.limit("address")
        with self._lock:
            if self._bans:
                ban = self._bans.get(key)
                if ban is not None and ban.banned_until > now:
                    return True
                self._sweep_expired(now, _SWEEP_PER_FAILURE)
            if limit <= 0:
                return False
            banned = self._count_one(key, limit, now)
        if self.on_counted is not None:
            self.on_counted([(key, banned)])
        return False

    def _record(self, keys: list[Key], now: float) -> list[tuple[Key, bool]]:
        """Counts one failure against each of ``keys`` (see :meth:`record_failure`)."""
        counted: list[tuple[Key, bool]] = []
        with self._lock:
            if self._bans:
                self._sweep_expired(now, _SWEEP_PER_FAILURE)
            for key in keys:
                limit = self.limit(key[0])
                if limit > 0:
                    counted.append((key, self._count_one(key, limit, now)))
        if counted and self.on_counted is not None:
            self.on_counted(counted)
        return counted

    def _count_one(self, key: Key, limit: int, now: float) -> bool:
        """:meth:`_count`, with its common case first: a key counting, not banned (a key is in ``_counters``
        or in ``_bans``, never both), inside its window, short of its limit, counted in place. Under the lock."""
        counter = self._counters.get(key)
        if (
            counter is not None
            and now - counter.window_start < self.settings.window_seconds
            and counter.failures + 1 < limit
        ):
            counter.failures += 1
            self._counters.move_to_end(key)
            return False
        return self._count(key, limit, now)

    def limit(self, kind: Kind) -> int:
        """Failures within the window that ban a key of this kind (0: never)."""
        return self.settings.max_failures_per_address if kind == "address" else self.settings.max_failures_per_user

    def impose_ban(self, key: Key, seconds: float) -> bool:
        """Bans a key for ``seconds`` from now, unless it is banned that long already: a ban learnt from
        elsewhere (another replica's). Returns whether the key's ban was added or extended."""
        if not self.settings.enabled or seconds <= 0:
            return False
        now = self._clock()
        until = now + seconds
        with self._lock:
            self._sweep_expired(now, _SWEEP_PER_FAILURE)
            counter = self._bans.get(key)
            if counter is not None:
                if counter.banned_until >= until:
                    return False
                self._drop_ban(key)
            else:
                counter = self._counters.pop(key, None) or _Counter(window_start=now)
                counter.failures = 0
                counter.window_start = now
            first = next(iter(self._bans.values()), None)
            counter.banned_until = until
            self._add_ban(key, counter)
            if first is not None and until <= first.banned_until:
                self._bans.move_to_end(key, last=False)  # expires first: the front keeps expiry order
            while len(self._counters) + len(self._bans) > self.settings.max_tracked and self._counters:
                self._counters.popitem(last=False)
            return True

    def banned_counts(self) -> dict[str, int]:
        """How many addresses and users are banned now (for the metrics gauge)."""
        now = self._clock()
        with self._lock:
            self._sweep_expired(now, len(self._bans))  # each ban is swept once: O(1) amortised
            return dict(self._ban_counts)

    def tracked(self) -> int:
        """How many addresses and user names are remembered, banned or counting (bounded by ``max_tracked``)."""
        with self._lock:
            return len(self._counters) + len(self._bans)

    def _keys(self, address: str | None, user: str | None) -> list[Key]:
        keys: list[Key] = []
        if address:
            keys.append(self.key("address", address))
        if user is not None:
            keys.append(self.key("user", user))
        return keys

    def _count(self, key: Key, limit: int, now: float) -> bool:
        window = self.settings.window_seconds
        counter = self._bans.get(key)
        if counter is not None and counter.banned_until <= now:
            self._drop_ban(key)  # expired: counts on as a plain counter, in the window it was in
            if now - counter.window_start < window:
                self._add_counter(key, counter, now)
            counter = None
        banned = counter is not None
        if counter is None:
            counter = self._counters.get(key)
            if counter is None:
                counter = _Counter(window_start=now)
                self._add_counter(key, counter, now)
            else:
                self._counters.move_to_end(key)
        if now - counter.window_start >= window:
            counter.window_start = now
            counter.failures = 0
        counter.failures += 1
        if counter.failures < limit:
            return False
        counter.banned_until = now + self.settings.ban_seconds
        counter.failures = 0
        counter.window_start = now
        if banned:
            self._bans.move_to_end(key)  # extended: the latest expiry, so the end keeps expiry order
        else:
            del self._counters[key]
            self._add_ban(key, counter)
        return True

    def _add_counter(self, key: Key, counter: _Counter, now: float) -> None:
        self._counters[key] = counter
        while len(self._counters) + len(self._bans) > self.settings.max_tracked:
            if self._bans and next(iter(self._bans.values())).banned_until <= now:
                self._drop_ban(next(iter(self._bans)))
            elif len(self._counters) > 1:
                self._counters.popitem(last=False)  # least recently failed; never the one just added
            elif self._bans:
                self._drop_ban(next(iter(self._bans)))  # only when max_tracked leaves no room besides bans
            else:
                break

    def _add_ban(self, key: Key, counter: _Counter) -> None:
        if len(self._bans) >= self._max_bans:
            self._drop_ban(next(iter(self._bans)))  # closest to expiry (or expired already)
        self._bans[key] = counter
        self._ban_counts[key[0]] += 1

    def _drop_ban(self, key: Key) -> None:
        del self._bans[key]
        self._ban_counts[key[0]] -= 1

    def _sweep_expired(self, now: float, at_most: int) -> None:
        """Drops expired bans from the front of the expiry order."""
        for _ in range(at_most):
            if not self._bans:
                return
            key, first = next(iter(self._bans.items()))
            if first.banned_until > now:
                return
            self._drop_ban(key)
