"""Prometheus metrics on a registry the app owns (never the global one), with the hot-path children
resolved once so a decision costs a dict lookup and an increment."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.credentials import Credentials

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "authgate_decisions",
            "Decisions by route, result, reason and scheme.",
            ["route", "result", "reason", "scheme"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "authgate_decision_duration_seconds",
            "Time to decide one request (inside authgate).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.credentials_loaded = Gauge(
            "authgate_credentials_loaded",
            "Credentials in the current snapshot, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.reloads = Counter("authgate_reloads", "Secret reloads by result.", ["result"], registry=self.registry)
        self.last_reload_success = Gauge(
            "authgate_last_reload_success_timestamp_seconds",
            "Unix time of the last good reload.",
            registry=self.registry,
        )
        self.token_expiry = Gauge(
            "authgate_token_expires_in_seconds",
            "Seconds until each expiring token expires (negative: expired).",
            ["name"],
            registry=self.registry,
        )
        self.throttled = Gauge(
            "authgate_throttled_clients", "Addresses and users banned right now.", ["kind"], registry=self.registry
        )
        self._expiries: dict[str, dt.datetime] = {}
        self._decision_children: dict[tuple[str, str, str, str], Counter] = {}
        for result in ("success", "error"):
            self.reloads.labels(result=result)

    def count_decision(self, route: str, allowed: bool, reason: str, scheme: str) -> None:
        key = (route, "allow" if allowed else "deny", reason, scheme)
        child = self._decision_children.get(key)
        if child is None:
            child = self.decisions.labels(*key)
            self._decision_children[key] = child
        child.inc()

    def loaded(self, credentials: Credentials, when: dt.datetime) -> None:
        """Records a good reload: counts by kind and the expiry of each token."""
        self.credentials_loaded.labels(kind="token").set(len(credentials.tokens_by_digest))
        self.credentials_loaded.labels(kind="user").set(len(credentials.users))
        self.reloads.labels(result="success").inc()
        self.last_reload_success.set(when.timestamp())
        for name in self._expiries:
            self.token_expiry.remove(name)
        self._expiries = {t.name: t.expires for t in credentials.tokens if t.expires is not None}
        for name in self._expiries:
            self.token_expiry.labels(name=name).set_function(self._seconds_left(name))

    def _seconds_left(self, name: str):  # type: ignore[no-untyped-def]
        expires = self._expiries[name]
        return lambda: (expires - dt.datetime.now(dt.UTC)).total_seconds()
