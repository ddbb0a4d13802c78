"""Liveness stamped by the loops that must stay alive (never by a bystander loop)."""

from __future__ import annotations

import threading
import time


class Heartbeat:
    """A timestamp that one loop refreshes each time it makes progress.

    ``/healthz`` reports unhealthy when any registered heartbeat is older than its ``max_age``: a watch
    loop that silently died or stalls stops beating, and the probe notices. Thread-safe, because the
    Kubernetes watch runs in a worker thread.
    """

    def __init__(self, name: str, max_age: float) -> None:
        self.name = name
        self.max_age = max_age
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.detail = "starting"

    def beat(self, detail: str = "ok") -> None:
        with self._lock:
            self._last = time.monotonic()
            self.detail = detail

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._last

    def is_alive(self) -> bool:
        return self.age() <= self.max_age
