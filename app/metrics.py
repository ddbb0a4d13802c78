"""Prometheus metrics on a registry the app owns (never the global one).

The two per-decision metrics (the decision counter and the latency histogram) are plain integers kept by
``DecisionStats`` and turned into metric families only when Prometheus scrapes: a decision then costs two
dict updates and a bisect instead of three lock round-trips inside prometheus_client. They are only ever
updated from the event-loop thread."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app.credentials import Credentials

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_FIRST_BUCKET = LATENCY_BUCKETS[0]


class DecisionStats(Collector):
    """``authgate_decisions_total`` and ``authgate_decision_duration_seconds``, collected at scrape time.

    Each label set's count lives in a one-element list (its cell): a caller deciding many alike keeps the
    cell and counts with :meth:`observe`, without building or hashing the labels again (app.decider keeps it
    with a remembered allow, app.fast_lane counts that allow's repeats with it)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, str], list[int]] = {}
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0

    def count(self, route: str, allowed: bool, reason: str, scheme: str, seconds: float) -> None:
        self.observe(self.cell(route, allowed, reason, scheme), seconds)

    def cell(self, route: str, allowed: bool, reason: str, scheme: str) -> list[int]:
        key = (route, "allow" if allowed else "deny", reason, scheme)
        cell = self.counts.get(key)
        if cell is None:
            cell = self.counts[key] = [0]
        return cell

    def observe(self, cell: list[int], seconds: float) -> None:
        cell[0] += 1
        # Most decisions fall in the first bucket: one comparison instead of a bisect.
        self.bucket_counts[0 if seconds <= _FIRST_BUCKET else bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "authgate_decisions",
            "Decisions by route, result, reason and scheme.",
            labels=["route", "result", "reason", "scheme"],
        )
        for key, cell in list(self.counts.items()):
            decisions.add_metric(list(key), cell[0])
        yield decisions
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.bucket_counts, strict=True):
            cumulative += count
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
        latency = HistogramMetricFamily(
            "authgate_decision_duration_seconds", "Time to decide one request (inside authgate)."
        )
        latency.add_metric([], buckets, self.latency_sum)
        yield latency


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.decision_stats = DecisionStats()
        self.registry.register(self.decision_stats)
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
        self.original_request_problems = Counter(
            "authgate_original_request_problems",
            "Requests whose original method and path could not be trusted: 'missing' (none of the configured "
            "front door's headers: authgate is behind another proxy; fix --proxy) or 'conflict' (two doors' "
            "headers disagree: a client wrote one set).",
            ["route", "problem"],
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "authgate_sign_ins",
            "Posts of the browser sign-in and sign-out forms (app.browser), by result: signed_in, signed_out, "
            "bad_credentials, throttled, busy (too many slow checks waiting), forbidden (cross-site or no form "
            "token), bad_request, not_ready.",
            ["result"],
            registry=self.registry,
        )
        self.oidc_sign_ins = Counter(
            "authgate_oidc_sign_ins",
            "OpenID Connect sign-ins (app.browser, app.oidc_client), by result: started, signed_in, "
            "signed_out_at_provider, and why one was refused (bad_state, flow_missing, flow_expired, flow_invalid, "
            "code_refused, id_token_*, email_unverified, no_principal, provider_*, not_ready, busy, too_large...). "
            "Never a credential in a label.",
            ["result"],
            registry=self.registry,
        )
        self.throttled = Gauge(
            "authgate_throttled_clients", "Addresses and users banned right now.", ["kind"], registry=self.registry
        )
        self.throttle_shared = Gauge(
            "authgate_throttle_shared",
            "1 while failures and bans are shared with the other replicas through Redis (throttle.redis); 0 while "
            "this replica counts alone (no throttle.redis, or Redis down, slow or refusing).",
            registry=self.registry,
        )
        self.throttle_redis_errors = Counter(
            "authgate_throttle_redis_errors",
            "Connections to the shared throttle's Redis that failed or broke (refused, timed out, error answer).",
            registry=self.registry,
        )
        self.throttle_failures_not_shared = Counter(
            "authgate_throttle_failures_not_shared",
            "Failed checks counted by this replica only: Redis was down, the outbox was full, they were older than "
            "the window when Redis came back, or this replica's budget of new keys per window was spent.",
            registry=self.registry,
        )
        self.throttle_bans_learnt = Counter(
            "authgate_throttle_bans_learnt",
            "Bans imposed here because another replica's failures reached a limit (through Redis).",
            registry=self.registry,
        )
        self._expiries: dict[str, dt.datetime] = {}
        for result in ("success", "error"):
            self.reloads.labels(result=result)

    def loaded(self, credentials: Credentials, when: dt.datetime) -> None:
        """Records a good reload: counts by kind and the expiry of each token."""
        self.credentials_loaded.labels(kind="token").set(len(credentials.tokens_by_digest))
        self.credentials_loaded.labels(kind="user").set(len(credentials.users))
        self.reloads.labels(result="success").inc()
        self.last_reload_success.set(when.timestamp())
        for name in self._expiries:
            self.token_expiry.remove(name)
        self._expiries = {t.name: t.expires for t in credentials.tokens if t.expires is not None}
        for name, expires in self._expiries.items():
            self.token_expiry.labels(name=name).set_function(_seconds_until(expires))


def _seconds_until(expires: dt.datetime) -> Callable[[], float]:
    return lambda: (expires - dt.datetime.now(dt.UTC)).total_seconds()
