"""The key budget: how many failure counters this replica may create in Redis.

However many names a guesser invents, Redis must hold only about ``max_tracked`` counters per replica, like
the local table. The pusher (app.shared_throttle.push) asks the budget before it pushes a key; a key past the
budget is counted on this replica only (``authgate_throttle_failures_not_shared_total``).
"""

from __future__ import annotations

from collections import OrderedDict

from app.shared_throttle.outbox import MAX_PENDING_KEYS
from app.throttle import Key


class KeyBudget:
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
        self.remembered = remembered  # by default as many as one batch from the outbox can hold
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
