"""Fixtures for the Kubernetes tests: a fake API server on a free port and a kubeconfig aimed at it."""

from __future__ import annotations

import asyncio
import faulthandler
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import kubernetes.client
import pytest

from app.health import Heartbeat
from app.kube.api import new_api_client
from app.kube.watch import SecretWatcher
from tests.kube.fake_apiserver import FakeApiServer, write_kubeconfig
from tests.support.tools import require_tool

NAMESPACE = "auth"
SECRET = "authgate"


@pytest.fixture(autouse=True)
def _no_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``token create`` checks ``--routes`` against ``$AUTHGATE_CONFIG`` when set: only where a test sets it."""
    monkeypatch.delenv("AUTHGATE_CONFIG", raising=False)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the real openssl."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    make = (str(require_tool("openssl")), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2")
    subject = ("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    subprocess.run(
        [*make, *subject, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", fake.url, namespace=NAMESPACE)


@pytest.fixture
def client_factory(kubeconfig: Path) -> Callable[[], kubernetes.client.ApiClient]:
    return lambda: new_api_client(str(kubeconfig))


class Applied:
    """A stand-in for ``Reloader.apply`` that records what it got and accepts non-empty ``tokens``."""

    def __init__(self, accept: Callable[[Mapping[str, bytes]], bool] | None = None) -> None:
        self.calls: list[tuple[dict[str, bytes], str]] = []
        self._lock = threading.Lock()
        self._accept = accept or (lambda files: "tokens" in files)

    def __call__(self, files: Mapping[str, bytes], source: str) -> bool:
        with self._lock:
            self.calls.append((dict(files), source))
        return self._accept(files)

    def last_tokens(self) -> bytes | None:
        with self._lock:
            return self.calls[-1][0].get("tokens") if self.calls else None


class WatcherThread:
    """Runs a SecretWatcher in its own event loop in a thread, as the server's loop would."""

    def __init__(self, watcher: SecretWatcher) -> None:
        self.watcher = watcher
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-watcher-loop")

    def _main(self) -> None:
        try:
            asyncio.run(self.watcher.run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> WatcherThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        self.watcher.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            faulthandler.dump_traceback(all_threads=True)  # where it hangs, in the captured stderr
        assert not self._thread.is_alive(), "the watcher did not stop within its grace period"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def make_watcher(
    apply: Applied,
    factory: Callable[[], kubernetes.client.ApiClient],
    *,
    max_age: float = 30.0,
    watch_timeout: int = 30,
    read_margin: float = 5.0,
) -> tuple[SecretWatcher, Heartbeat]:
    heartbeat = Heartbeat("secret-watch", max_age=max_age)
    watcher = SecretWatcher(
        NAMESPACE,
        SECRET,
        apply,
        heartbeat,
        api_client_factory=factory,
        watch_timeout_seconds=watch_timeout,
        backoff_max=0.4,
        backoff_base=0.05,
        connect_timeout=1.0,
        request_timeout=3.0,
        read_timeout_margin=read_margin,
    )
    return watcher, heartbeat
