"""The allow memo: allows remembered by (route, credential), so that a repeat costs one keyed hash and a
dict lookup instead of a decision, on whichever wire (HTTP or gRPC) it comes.

It is kept apart from the decision (app.decision, plain functions on plain data) because it holds state and
a secret, and apart from the code that asks it (app.fast_lane), which knows routes, front doors and wires:
this module knows none of them, only that what it remembers says whether it may be remembered and until
when. Each snapshot owns one memo (``app.decision.Snapshot.allows``), so a reload or a rotation drops it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

# Distinct (route, credential) allows remembered per snapshot. Only a valid credential in its one canonical
# spelling gets in (app.decision.is_canonical), so this is bounded by the credentials anyway; the cap is a
# backstop.
MAX_REMEMBERED_ALLOWS = 10_000


class Rememberable(Protocol):
    """What the memo reads of a decision (app.decision.Decision)."""

    @property
    def rememberable(self) -> bool: ...

    @property
    def expires(self) -> dt.datetime | None: ...


D = TypeVar("D", bound=Rememberable)


class Remembered(Generic[D]):
    """One remembered allow: the decision, when it stops holding (Unix time, None: with the snapshot), what
    the caller asked to keep with it (app.decider: the decision's metric key), and each wire's rendering of
    it once rendered (app.answers), so that a repeat builds and renders nothing."""

    __slots__ = ("answers", "decision", "expires_at", "label")

    def __init__(self, decision: D, expires_at: float | None, label: object = None) -> None:
        self.decision = decision
        self.expires_at = expires_at
        self.label = label
        self.answers: dict[str, object] = {}


class AllowMemo(Generic[D]):
    """Allow decisions by (route, credential): the decision is the same whichever wire asks, and each wire
    renders it its own way.

    Keys are a keyed BLAKE2b of the route and the whole Authorization value under a random per-memo secret:
    nothing in the memo can be reversed or brute-forced offline into a token or password. Only rememberable
    allows of a canonically spelt header get in (the caller checks app.decision.is_canonical), so the size is
    bounded by the Secret's credentials times the routes; the cap is a backstop."""

    def __init__(self, max_entries: int = MAX_REMEMBERED_ALLOWS, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock  # for dropping expired entries when full
        self._pruned_at = 0.0
        self._secret = secrets.token_bytes(32)
        # Per route, the keyed hash state after the route's name (length-prefixed, so no two routes' keys can
        # meet): each key copies it, a third cheaper than keying a new hash. Only routes something was
        # remembered for have one, so a request for any other route is ruled out before hashing.
        self._keyed: dict[str, Any] = {}
        self._entries: dict[bytes, Remembered[D]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, route_name: str, authorization: bytes) -> bytes:
        keyed = self._keyed.get(route_name)
        if keyed is None:
            name = route_name.encode()
            keyed = hashlib.blake2b(b"%d:%s" % (len(name), name), key=self._secret, digest_size=16)
            self._keyed[route_name] = keyed
        hasher = keyed.copy()
        hasher.update(authorization)
        return hasher.digest()

    def _drop_expired(self) -> None:
        """Makes room among allows that expire on their own (JWTs, each new one a new credential): at most
        once a second, so a full memo of live entries costs one scan a second, not one per request."""
        now = self.clock()
        if now - self._pruned_at < 1.0:
            return
        self._pruned_at = now
        expired = [
            key for key, entry in self._entries.items() if entry.expires_at is not None and now >= entry.expires_at
        ]
        for key in expired:
            del self._entries[key]

    def recall(
        self, route_name: str, authorization: bytes, clock: Callable[[], float] = time.time
    ) -> Remembered[D] | None:
        keyed = self._keyed.get(route_name)
        if keyed is None:
            return None
        hasher = keyed.copy()  # key()'s three lines again: this is the hot path, a call less counts
        hasher.update(authorization)
        entry = self._entries.get(hasher.digest())
        if entry is None or (entry.expires_at is not None and clock() >= entry.expires_at):
            return None
        return entry

    def remember(self, route_name: str, authorization: bytes, decision: D, label: object = None) -> None:
        if decision.rememberable and len(self._entries) >= self.max_entries and decision.expires is not None:
            self._drop_expired()
        if decision.rememberable and len(self._entries) < self.max_entries:
            expires_at = decision.expires.timestamp() if decision.expires is not None else None
            self._entries[self.key(route_name, authorization)] = Remembered(decision, expires_at, label)
