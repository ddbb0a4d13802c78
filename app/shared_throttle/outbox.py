"""The outbox: failures this replica counted, waiting for the pusher (app.shared_throttle.push) to take them
to Redis.

The decision fills it, from the event loop or a worker thread, so adding is O(1) under a lock and never
waits. It coalesces per key (a guesser hammering one name is one entry, however many failures) and is
bounded: past ``MAX_PENDING_KEYS`` keys a new key's failure is counted on this replica only (a flood of
invented names while Redis is down grows nothing; docs/security.md gives its bytes).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from app.throttle import Key

MAX_PENDING_KEYS = 10_000  # distinct keys waiting to be pushed; more are counted locally only


@dataclass(slots=True)
class Pending:
    failures: int
    first_seen: float  # monotonic time of the first failure coalesced here
    banned_until: float = 0.0  # set when this replica banned the key itself


class Outbox:
    """Failures waiting to be pushed, coalesced per key and bounded. Thread-safe; adding is O(1)."""

    def __init__(self, max_keys: int = MAX_PENDING_KEYS) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._pending: dict[Key, Pending] = {}

    def add(self, key: Key, now: float, banned_until: float = 0.0) -> bool:
        """Adds one failure (and the ban it caused here, if any). False when full: the failure stays local."""
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                if len(self._pending) >= self.max_keys:
                    return False
                self._pending[key] = Pending(1, now, banned_until)
            else:
                entry.failures += 1
                entry.banned_until = max(entry.banned_until, banned_until)
            return True

    def take(self) -> dict[Key, Pending]:
        with self._lock:
            taken, self._pending = self._pending, {}
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
