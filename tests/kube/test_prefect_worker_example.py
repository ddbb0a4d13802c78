"""The chart's example of a Prefect worker without a long-lived secret (``charts/authgate/examples/
prefect-worker-values.yaml`` on top of ``prefect-values.yaml``, and the worker's ``prefect-worker.yaml``):
the policy the real helm renders from the two values files decides tokens signed the way the API server signs
the projected token the worker's manifest asks for. The one change to the render: where the pod finds its API
server and credentials (in-cluster addresses) points at the fake API server (``tests/kube/fake_apiserver.py``),
which serves the issuer's discovery, its keys and TokenReview as the real one does."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.decision import Decision, RequestFacts, decide
from app.metrics import Metrics
from app.policy import parse_policy
from app.reload import Reloader, SnapshotStore
from app.throttle import Throttle
from tests.chart.render import CHART, PREFECT_VALUES, Render
from tests.kube.fake_apiserver import TOKEN, FakeApiServer
from tests.support.jose import SigningKey

WORKER_VALUES = CHART / "examples" / "prefect-worker-values.yaml"
WORKER_MANIFEST = CHART / "examples" / "prefect-worker.yaml"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T = int(NOW.timestamp())


@pytest.fixture(scope="module")
def render() -> Render:
    return Render.of("prefect-worker", ["-f", str(PREFECT_VALUES), "-f", str(WORKER_VALUES)])


@pytest.fixture(scope="module")
def worker() -> dict[str, Any]:
    """What the worker's manifest says: its ServiceAccount, the projected token's audience and lifetime, and
    whether the container reads the file the volume projects."""
    docs = [d for d in yaml.safe_load_all(WORKER_MANIFEST.read_text()) if d]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (source,) = [s["serviceAccountToken"] for v in pod["volumes"] for s in v["projected"]["sources"]]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == pod["volumes"][0]["name"]]
    return {
        "namespace": account["metadata"]["namespace"],
        "name": account["metadata"]["name"],
        "pod_account": pod["serviceAccountName"],
        "audience": source["audience"],
        "lifetime": source["expirationSeconds"],
        "token_path": f"{mount['mountPath']}/{source['path']}",
        "script": " ".join(container["args"]),
    }


@pytest.fixture
def fake(tls_files: tuple[Path, Path]):
    with FakeApiServer(tls=tls_files) as fake:
        fake.service_account_keys = [SigningKey.rsa("sa-key-1")]
        yield fake


def reloader(render: Render, fake: FakeApiServer, ca: Path, tmp_path: Path) -> Reloader:
    policy = yaml.safe_load(render.one("ConfigMap", "authgate-policy")["data"]["policy.yaml"])
    (issuer,) = policy["routes"]["api"]["jwt_issuers"]
    assert issuer["kubernetes"] is True  # the render: the cluster's own issuer, in-cluster
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    issuer.update(kubernetes={"api_server": fake.url}, ca_file=str(ca), bearer_token_file=str(token_file))
    loaded = Reloader(parse_policy(policy, "render"), SnapshotStore(), Metrics())
    secret = render.one("Secret", "authgate")["stringData"]  # the example's tokens, users and session key
    assert loaded.apply({key: value.encode() for key, value in secret.items()}, "render")
    return loaded


def run(reloader: Reloader, token: str) -> Decision:
    return ask(reloader, f"Bearer {token}".encode())


def ask(reloader: Reloader, authorization: bytes) -> Decision:
    snapshot = reloader.store.current
    assert snapshot is not None
    facts = RequestFacts("GET", "/api/flow_runs/filter", (authorization,), "10.0.0.1")
    throttle = Throttle(snapshot.policy.throttle)
    decision = decide("api", facts, snapshot, throttle, NOW, slow_ok=False)
    if decision is None:  # keys fetched and TokenReview asked in a worker thread in the service (app.decider)
        decision = decide("api", facts, snapshot, throttle, NOW, slow_ok=True)
    assert decision is not None
    return decision


def test_the_worker_reads_the_token_its_pod_projects_for_authgate(worker: dict[str, Any]) -> None:
    assert worker["pod_account"] == worker["name"]
    assert f"cat {worker['token_path']}" in worker["script"]
    assert "PREFECT_CLIENT_CUSTOM_HEADERS" in worker["script"]
    # It exits before its token expires and after kubelet has rewritten it (at 80 % of the lifetime).
    timeout = int(shlex.split(worker["script"].split("exec timeout", 1)[1])[0])
    assert 0.8 * worker["lifetime"] < timeout < worker["lifetime"]


def test_the_render_keeps_the_prefect_routes_and_grants_what_the_issuer_needs(render: Render) -> None:
    policy = yaml.safe_load(render.one("ConfigMap", "authgate-policy")["data"]["policy.yaml"])
    api = policy["routes"]["api"]
    assert api["schemes"] == ["bearer", "basic", "session"]  # machines' tokens and the UI's session stay
    assert api["anonymous"] == ["GET /api/health", "GET /api/ready"]
    roles = {b["roleRef"]["name"] for b in render.all("ClusterRoleBinding")}
    assert {"system:service-account-issuer-discovery", "system:auth-delegator"} <= roles


def test_the_workers_projected_token_passes_and_other_tokens_do_not(render, worker, fake, tls_files, tmp_path):
    r = reloader(render, fake, tls_files[0], tmp_path)
    ns, name, audience = worker["namespace"], worker["name"], worker["audience"]

    def token(namespace: str, account: str, audiences: list[str], pod: str = "worker-1") -> str:
        return fake.service_account_token(
            namespace, account, audiences, T - 10, worker["lifetime"], pod={"name": pod, "uid": "u-" + pod}
        )

    decision = run(r, token(ns, name, [audience]))
    assert (decision.status, decision.principal) == (200, f"system:serviceaccount:{ns}:{name}")
    # Another ServiceAccount of the cluster, even with a token for authgate: refused by the sub rule.
    other = run(r, token(ns, "default", [audience]))
    assert (other.allowed, other.status) == (False, 401)
    # The pod's default token (audience: the API server) is not for authgate.
    default = run(r, token(ns, name, ["https://kubernetes.default.svc.cluster.local"]))
    assert (default.status, default.reason) == (401, "jwt_audience")
    # The example's static token (examples/secret/tokens) passes beside it.
    static = ask(r, b"Bearer example-api-token-0123456789abcdef")
    assert (static.status, static.principal) == (200, "ci-deploy")
    # token_review: a deleted pod's token stops working (the review is asked again within a minute).
    fake.deleted_pods.add("worker-2")
    gone = run(r, token(ns, name, [audience], pod="worker-2"))
    assert (gone.status, gone.reason) == (401, "jwt_review")
