"""What the running process owns, shared by every wire it answers on (HTTP and gRPC): one snapshot store,
one policy, one throttle, one set of metrics, the heartbeats of the loops that must stay alive."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from app.health import Heartbeat
from app.metrics import Metrics
from app.policy import Policy, load_policy
from app.reload import Reloader, SnapshotStore
from app.settings import Settings
from app.shared_throttle import make_throttle
from app.throttle import Throttle


@dataclass
class AppState:
    """Everything the app owns at run time."""

    settings: Settings
    policy: Policy
    store: SnapshotStore
    metrics: Metrics
    throttle: Throttle
    reloader: Reloader
    heartbeats: list[Heartbeat] = field(default_factory=list)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def not_ready(self) -> str | None:
        """Why no decision can be made yet, or None when one can (credentials are loaded)."""
        return "no credentials loaded yet" if self.store.current is None else None

    def unhealthy(self) -> str | None:
        """Which loops stopped making progress, or None when every one still beats."""
        stale = [hb for hb in self.heartbeats if not hb.is_alive()]
        if not stale:
            return None
        return "; ".join(f"{hb.name}: no progress for {hb.age():.0f}s ({hb.detail})" for hb in stale)


def build_state(settings: Settings, policy: Policy | None = None, metrics: Metrics | None = None) -> AppState:
    policy = policy if policy is not None else load_policy(settings.config)
    store = SnapshotStore()
    metrics = metrics if metrics is not None else Metrics()
    return AppState(
        settings=settings,
        policy=policy,
        store=store,
        metrics=metrics,
        throttle=make_throttle(policy.throttle, metrics),
        reloader=Reloader(policy, store, metrics),
    )
