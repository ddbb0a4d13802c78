"""Watch mode end to end: SecretWatcher feeding the real Reloader, and a real ``authgate serve --watch-secret``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import kubernetes.client
import pytest

from app.credentials import token_digest
from app.health import Heartbeat
from app.kube.watch import SecretWatcher
from app.settings import load_settings
from app.state import build_state
from tests.kube.conftest import NAMESPACE, SECRET, WatcherThread
from tests.kube.fake_apiserver import FakeApiServer
from tests.support.procs import SERVERS, SHUTDOWN_COMPLETE, Process, free_port, wait_for, wait_http

pytestmark = pytest.mark.kube
TOKEN_A = "token-A-0123456789abcdefghij"
TOKEN_B = "token-B-0123456789abcdefghij"


def line(name: str, token: str) -> bytes:
    return f"{name} sha256:{token_digest(token).hex()}\n".encode()


def test_watcher_feeds_the_reloader_and_a_bad_update_keeps_the_last_good(
    fake: FakeApiServer, client_factory: Callable[[], kubernetes.client.ApiClient]
) -> None:
    state = build_state(load_settings({"watch_secret": f"{NAMESPACE}/{SECRET}"}, environ={}))
    fake.put_secret(NAMESPACE, SECRET, {"tokens": line("a", TOKEN_A)})
    heartbeat = Heartbeat("secret-watch", max_age=30)
    watcher = SecretWatcher(
        NAMESPACE,
        SECRET,
        state.reloader.apply,
        heartbeat,
        api_client_factory=client_factory,
        watch_timeout_seconds=30,
        backoff_max=0.2,
        backoff_base=0.05,
    )

    def knows(token: str) -> bool:
        snapshot = state.store.current
        return snapshot is not None and snapshot.credentials.find_token(token) is not None

    errors = state.metrics.registry.get_sample_value
    with WatcherThread(watcher):
        wait_for(lambda: knows(TOKEN_A), what="first list loaded")
        assert watcher.synced
        wait_for(lambda: fake.open_streams == 1, what="watching")
        fake.put_secret(NAMESPACE, SECRET, {"tokens": b"broken line without secret\n"})
        wait_for(lambda: errors("authgate_reloads_total", {"result": "error"}) == 1.0, what="rejected update")
        assert knows(TOKEN_A)  # last good kept
        fake.put_secret(NAMESPACE, SECRET, {"tokens": line("b", TOKEN_B)})
        wait_for(lambda: knows(TOKEN_B), what="good update loaded")
        assert not knows(TOKEN_A)


@pytest.mark.parametrize("server", SERVERS)
def test_serve_watch_secret_accepts_a_token_added_through_the_api_within_2s(
    fake: FakeApiServer, kubeconfig: Path, tmp_path: Path, server: str
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": line("a", TOKEN_A)})
    port = free_port()
    proc = Process(
        [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--watch-secret",
            f"{NAMESPACE}/{SECRET}",
            "--secret-dir",
            str(tmp_path / "absent"),
            "--server",
            server,
        ],
        tmp_path / "serve.log",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    base = f"http://127.0.0.1:{port}"
    headers = {
        "X-Original-URL": "https://prefect.example.com/api/flows",
        "X-Original-Method": "GET",
        "X-Real-IP": "10.1.2.3",
    }

    def status(token: str) -> int:
        return httpx.get(
            f"{base}/auth/default", headers={**headers, "Authorization": f"Bearer {token}"}, timeout=2
        ).status_code

    try:
        wait_http(base + "/readyz", timeout=20)
        assert status(TOKEN_A) == 200 and status(TOKEN_B) == 401
        assert httpx.get(base + "/healthz", timeout=2).status_code == 200
        fake.put_secret(NAMESPACE, SECRET, {"tokens": line("a", TOKEN_A) + line("b", TOKEN_B)})
        wait_for(lambda: status(TOKEN_B) == 200, timeout=2.0, what="token B accepted through the watch")
    finally:
        code = proc.stop()
    output = proc.output()
    assert code in (0, -15), output  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert SHUTDOWN_COMPLETE[server] in output and "secret watch auth/authgate: stopped" in output
    assert TOKEN_B not in output and token_digest(TOKEN_B).hex() not in output
    assert any("watch=true" in p for _, p in fake.requests.log)
