"""What probes and scrapers are told, computed from the state at each call (never a status someone must
remember to set): ``/healthz`` (liveness: every loop that must stay alive still beats), ``/readyz``
(readiness: credentials are loaded) and ``/metrics`` (Prometheus' text format).

Plain functions of the state, served by the health wire on ``--health-port`` (app.health_server) and, for
the deployments that probe it there, by the decision port's Litestar app (app.http)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.state import AppState

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    status: int
    content_type: str
    body: bytes


def healthz(state: AppState) -> ProbeAnswer:
    problem = state.unhealthy()
    if problem is not None:
        return ProbeAnswer(503, TEXT, f"unhealthy: {problem}\n".encode())
    return ProbeAnswer(200, TEXT, b"ok\n")


def readyz(state: AppState) -> ProbeAnswer:
    problem = state.not_ready()
    if problem is not None:
        return ProbeAnswer(503, TEXT, f"{problem}\n".encode())
    return ProbeAnswer(200, TEXT, b"ready\n")


def metrics(state: AppState) -> ProbeAnswer:
    for kind, count in state.throttle.banned_counts().items():
        state.metrics.throttled.labels(kind=kind).set(count)
    return ProbeAnswer(200, CONTENT_TYPE_LATEST, generate_latest(state.metrics.registry))


# path -> its answer
PROBES: dict[str, Callable[[AppState], ProbeAnswer]] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}
