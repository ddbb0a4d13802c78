"""Kubernetes ServiceAccount tokens: a route trusting the cluster's own issuer (``kubernetes:``), its keys
fetched over HTTPS from the fake API server's discovery and ``/openid/v1/jwks`` with the pod's credentials
(a CA bundle and a bearer token file), through the real Reloader and decide()."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import yaml

from app.decision import Decision, RequestFacts, decide
from app.metrics import Metrics
from app.policy import parse_policy
from app.reload import Reloader, SnapshotStore
from app.throttle import Throttle
from tests.kube.fake_apiserver import SERVICE_ACCOUNT_ISSUER, TOKEN, FakeApiServer
from tests.support.jose import SigningKey

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T = int(NOW.timestamp())
SA_KEY = SigningKey.rsa("sa-key-1")


def reloader(fake: FakeApiServer, ca: Path, tmp_path: Path, issuer_extra: str = "") -> Reloader:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    policy = parse_policy(
        yaml.safe_load(f"""
routes:
  api:
    schemes: [bearer]
    principals: ["system:serviceaccount:prefect:worker"]
    jwt_issuers:
      - kubernetes: {{api_server: "{fake.url}"}}
        ca_file: "{ca}"
        bearer_token_file: "{token_file}"
{issuer_extra}
"""),
        "test",
    )
    reloader = Reloader(policy, SnapshotStore(), Metrics())
    assert reloader.apply({"tokens": b""}, "test")
    return reloader


def run(reloader: Reloader, token: str, now: dt.datetime = NOW) -> Decision:
    snapshot = reloader.store.current
    assert snapshot is not None
    facts = RequestFacts("GET", "/api/flows", (f"Bearer {token}".encode(),), "10.0.0.1")
    throttle = Throttle(snapshot.policy.throttle)
    decision = decide("api", facts, snapshot, throttle, now, slow_ok=False)
    if decision is None:  # the keys are fetched in a worker thread in the real service (app.decider)
        decision = decide("api", facts, snapshot, throttle, now, slow_ok=True)
    assert decision is not None
    return decision


@pytest.fixture
def fake(tls_files: tuple[Path, Path]):
    with FakeApiServer(tls=tls_files) as fake:
        fake.service_account_keys = [SA_KEY]
        yield fake


def test_a_projected_serviceaccount_token_is_its_serviceaccount(fake, tls_files, tmp_path):
    r = reloader(fake, tls_files[0], tmp_path)
    token = fake.service_account_token("prefect", "worker", ["authgate"], T - 10, pod={"name": "w-1", "uid": "u"})
    decision = run(r, token)
    assert (decision.status, decision.principal) == (200, "system:serviceaccount:prefect:worker")
    assert decision.expires == dt.datetime.fromtimestamp(T - 10 + 3600, dt.UTC)
    # keys from the API server itself (its jwks_uri names an address a pod cannot reach), fetched once
    assert fake.requests.count("GET", "/openid/v1/jwks") == 1
    assert fake.requests.count("GET", "/.well-known/openid-configuration") == 1
    assert run(r, token).allowed
    assert fake.requests.count("GET", "/openid/v1/jwks") == 1


@pytest.mark.parametrize(
    ("audiences", "namespace", "reason", "status"),
    [
        (["https://kubernetes.default.svc.cluster.local"], "prefect", "jwt_audience", 401),  # the default token
        (["authgate"], "other", "principal_forbidden", 403),
    ],
)
def test_other_tokens_of_the_cluster_are_refused(fake, tls_files, tmp_path, audiences, namespace, reason, status):
    r = reloader(fake, tls_files[0], tmp_path)
    decision = run(r, fake.service_account_token(namespace, "worker", audiences, T - 10))
    assert (decision.status, decision.reason) == (status, reason)


def test_a_token_of_another_cluster_is_refused(fake, tls_files, tmp_path):
    r = reloader(fake, tls_files[0], tmp_path)
    run(r, fake.service_account_token("prefect", "worker", ["authgate"], T - 10))  # keys loaded
    fake.service_account_issuer = "https://other-cluster.example"
    decision = run(r, fake.service_account_token("prefect", "worker", ["authgate"], T - 10))
    assert (decision.status, decision.reason) == (401, "jwt_unknown_issuer")


def test_a_configured_issuer_that_discovery_contradicts_loads_no_keys(fake, tls_files, tmp_path):
    r = reloader(fake, tls_files[0], tmp_path, "        issuer: https://kubernetes.default.svc")
    fake.service_account_issuer = "https://kubernetes.default.svc"
    token = fake.service_account_token("prefect", "worker", ["authgate"], T - 10)
    fake.service_account_issuer = SERVICE_ACCOUNT_ISSUER  # discovery now names another issuer
    decision = run(r, token)
    assert (decision.status, decision.reason) == (401, "jwt_keys_unavailable")


def test_without_the_pods_credentials_no_keys_load_and_nothing_passes(fake, tls_files, tmp_path):
    r = reloader(fake, tls_files[0], tmp_path)
    (tmp_path / "token").write_text("not-the-token")
    started = time.monotonic()
    decision = run(r, fake.service_account_token("prefect", "worker", ["authgate"], T - 10))
    assert (decision.status, decision.reason) == (401, "jwt_keys_unavailable")
    assert time.monotonic() - started < 5


def test_with_token_review_a_deleted_pods_token_stops_within_a_minute(fake, tls_files, tmp_path):
    r = reloader(fake, tls_files[0], tmp_path, "        token_review: true")
    token = fake.service_account_token("prefect", "worker", ["authgate"], T - 10, pod={"name": "w-1", "uid": "u"})
    snapshot = r.store.current
    assert snapshot is not None
    facts = RequestFacts("GET", "/api/flows", (f"Bearer {token}".encode(),), "10.0.0.1")
    # even with the keys loaded, the review is blocking I/O: decide() asks for the worker thread
    run(r, token)
    assert decide("api", facts, snapshot, Throttle(snapshot.policy.throttle), NOW, slow_ok=False) is None
    decision = run(r, token)
    assert (decision.status, decision.principal) == (200, "system:serviceaccount:prefect:worker")
    assert decision.expires == NOW + dt.timedelta(seconds=60)  # remembered a minute, not to exp
    assert fake.requests.count("POST", "/tokenreviews") >= 2
    fake.deleted_pods.add("w-1")
    decision = run(r, token)
    assert (decision.status, decision.reason) == (401, "jwt_review")
    fake.deleted_pods.clear()
    fake.stop()  # the API server unreachable: refused, never allowed
    decision = run(r, token)
    assert (decision.status, decision.reason) == (401, "jwt_review")
