"""SecretWatcher against the fake API server, through the real ``kubernetes`` client over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import kubernetes.client
import pytest

from app.health import Heartbeat
from app.kube.api import new_api_client
from app.kube.watch import SecretWatcher
from tests.kube.conftest import NAMESPACE, SECRET, Applied, WatcherThread, make_watcher
from tests.kube.fake_apiserver import FakeApiServer, write_kubeconfig
from tests.support.procs import wait_for

pytestmark = pytest.mark.kube
Factory = Callable[[], kubernetes.client.ApiClient]


def tokens(n: int) -> dict[str, bytes]:
    return {"tokens": f"t{n} sha256:{n:064x}\n".encode()}


def test_lists_then_applies_each_change_from_the_resource_version(fake: FakeApiServer, client_factory: Factory) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, heartbeat = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: watcher.synced, what="first list applied")
        assert applied.calls[0] == (tokens(1), f"secret {NAMESPACE}/{SECRET}")
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.put_secret(NAMESPACE, "other", tokens(9))  # a different Secret: filtered by fieldSelector
        fake.put_secret(NAMESPACE, SECRET, tokens(2))
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], timeout=2, what="change applied")
        assert [c[0] for c in applied.calls] == [tokens(1), tokens(2)]
        assert watcher.resource_version == fake.resource_version(NAMESPACE, SECRET)
        assert heartbeat.is_alive()
    watches = [p for m, p in fake.requests.log if "watch=true" in p]
    assert watches and all("fieldSelector=metadata.name%3Dauthgate" in p for p in watches)
    assert all("allowWatchBookmarks=true" in p and "resourceVersion=" in p for p in watches)


def test_bookmark_moves_the_resource_version_and_beats(fake: FakeApiServer, client_factory: Factory) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, heartbeat = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.put_secret(NAMESPACE, "other", tokens(9))  # moves the global RV only
        fake.send_bookmark()
        wait_for(lambda: heartbeat.detail.startswith("bookmark"), what="bookmark seen")
        assert watcher.resource_version == fake.resource_version(NAMESPACE, "other")
        assert len(applied.calls) == 1  # a bookmark carries no data


def test_410_gone_relists_and_picks_up_what_was_missed(fake: FakeApiServer, client_factory: Factory) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.stop()  # API away; meanwhile the Secret changes and the history is compacted
        fake.put_secret(NAMESPACE, SECRET, tokens(2))
        fake.expire_history()
        lists_before = fake.requests.count("GET", "fieldSelector") - fake.requests.count("GET", "watch=true")
        fake.start()
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], timeout=5, what="relisted data applied")
        lists_after = fake.requests.count("GET", "fieldSelector") - fake.requests.count("GET", "watch=true")
        assert lists_after == lists_before + 1


def test_410_error_event_at_watch_start_relists(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "authgate.watch")
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    fake.gone_next_watches = 1
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: len(applied.calls) == 2, what="second list after 410")
        wait_for(lambda: fake.open_streams == 1, what="watch reopened")
    assert "410 Gone" in caplog.text


def test_stream_dropped_midway_resumes_from_its_resource_version(fake: FakeApiServer, client_factory: Factory) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.drop_after_events = 1
        fake.put_secret(NAMESPACE, SECRET, tokens(2))
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], what="event before the drop applied")
        rv = fake.resource_version(NAMESPACE, SECRET)
        wait_for(lambda: any(f"resourceVersion={rv}" in p for _, p in fake.requests.log), what="resumed watch")
        fake.put_secret(NAMESPACE, SECRET, tokens(3))
        wait_for(lambda: applied.last_tokens() == tokens(3)["tokens"], timeout=3, what="change after the drop")
    lists = [p for m, p in fake.requests.log if "fieldSelector" in p and "watch=true" not in p]
    assert len(lists) == 1  # resumed from the resourceVersion, no relist
    assert [c[0] for c in applied.calls] == [tokens(1), tokens(2), tokens(3)]  # nothing missed or replayed


def test_api_down_at_start_then_up(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "authgate.watch")
    fake.stop()
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, heartbeat = make_watcher(applied, client_factory, max_age=0.3)
    with WatcherThread(watcher):
        wait_for(lambda: caplog.text.count("cannot reach the Kubernetes API") >= 2, what="two logged failures")
        wait_for(lambda: not heartbeat.is_alive(), what="liveness failing while nothing works")
        assert not watcher.synced
        fake.start()
        wait_for(lambda: watcher.synced, timeout=5, what="synced once the API is up")
        wait_for(
            lambda: heartbeat.is_alive() and heartbeat.detail.startswith(("listed", "watch connected")),
            what="stamped by the list, then by the watch it opens",
        )
    delays = [r.args[2] for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(delays) >= 2 and max(delays) <= 0.4  # capped backoff


def test_stalled_stream_stops_the_heartbeat_then_the_read_timeout_recovers(
    fake: FakeApiServer, client_factory: Factory
) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    # server-side timeout 1 s + client read margin 1 s: a silent stream raises after 2 s instead of never
    watcher, heartbeat = make_watcher(applied, client_factory, max_age=0.5, watch_timeout=1, read_margin=1.0)
    fake.stall_next_watches = 1  # the first watch stream goes silent for good
    with WatcherThread(watcher):
        wait_for(lambda: watcher.synced and fake.open_streams == 1, what="listed and watching")
        fake.put_secret(NAMESPACE, SECRET, tokens(2))  # never sent on the stalled stream
        wait_for(lambda: not heartbeat.is_alive(), timeout=3, what="liveness noticing the stall")
        assert applied.last_tokens() == tokens(1)["tokens"]
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], timeout=6, what="recovery by read timeout")
        wait_for(lambda: heartbeat.detail.startswith("modified"), what="stamped by the resumed watch")
    watches = [p for _, p in fake.requests.log if "watch=true" in p]
    assert len(watches) >= 2 and "timeoutSeconds=1" in watches[0]


def test_deleted_secret_keeps_credentials_and_recreated_one_applies(
    fake: FakeApiServer, client_factory: Factory
) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, heartbeat = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.delete_secret(NAMESPACE, SECRET)
        wait_for(lambda: heartbeat.detail.startswith("deleted"), what="delete seen")
        assert len(applied.calls) == 1 and watcher.synced
        fake.put_secret(NAMESPACE, SECRET, tokens(4))
        wait_for(lambda: applied.last_tokens() == tokens(4)["tokens"], what="recreated Secret applied")


def test_rejected_update_is_not_synced(fake: FakeApiServer, client_factory: Factory) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"htpasswd": b"x"})
    applied = Applied()  # rejects data without "tokens"
    watcher, _heartbeat = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: applied.calls, what="apply called")
        assert not watcher.synced
        fake.put_secret(NAMESPACE, SECRET, tokens(1))
        wait_for(lambda: watcher.synced, what="synced by a good update")


def test_forbidden_watch_is_logged_and_retried(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "authgate.watch")
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    fake.forbidden_verbs.add("list")
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: "permission denied" in caplog.text, what="403 logged")
        fake.forbidden_verbs.clear()
        wait_for(lambda: watcher.synced, what="synced once allowed")
    assert "sha256:" not in caplog.text  # never secret data in the log


def test_a_line_that_is_not_json_is_skipped_and_the_watch_goes_on(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "authgate.watch")
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher) as running:
        wait_for(lambda: fake.open_streams == 1, what="watch open")
        fake.send_garbage_line("<html>502 Bad Gateway</html>")
        fake.put_secret(NAMESPACE, SECRET, tokens(2))
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], what="next event applied")
        assert running.alive and running.error is None
    assert "not a JSON event" in caplog.text


def test_applied_log_names_the_resource_version_of_the_object_applied(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "authgate.watch")
    listed_rv = fake.put_secret(NAMESPACE, SECRET, tokens(1))
    fake.put_secret(NAMESPACE, "other", tokens(9))  # the list's own resourceVersion is now past the Secret's
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: fake.open_streams == 1, what="listed and watching")
        modified_rv = fake.put_secret(NAMESPACE, SECRET, tokens(2))
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], what="change applied")
    lines = [r.getMessage() for r in caplog.records if ": applied (" in r.getMessage()]
    assert lines == [
        f"secret watch {NAMESPACE}/{SECRET}: applied (list, resourceVersion {listed_rv})",
        f"secret watch {NAMESPACE}/{SECRET}: applied (MODIFIED, resourceVersion {modified_rv})",
    ]


def test_heartbeat_revives_when_the_watch_reconnects_without_waiting_for_an_event(
    fake: FakeApiServer, client_factory: Factory
) -> None:
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    # a quiet Secret: no event and no bookmark would come before the 30 s server-side watch timeout
    watcher, heartbeat = make_watcher(applied, client_factory, max_age=1.0, watch_timeout=30)
    with WatcherThread(watcher):
        wait_for(lambda: watcher.synced and fake.open_streams == 1, what="listed and watching")
        watches = fake.requests.count("GET", "watch=true")
        fake.stop()
        wait_for(lambda: not heartbeat.is_alive(), timeout=3, what="liveness failing during the outage")
        fake.start()
        wait_for(heartbeat.is_alive, timeout=3, what="liveness back once the watch is re-established")
        assert heartbeat.detail.startswith("watch connected")
        assert fake.requests.count("GET", "watch=true") > watches and fake.open_streams == 1
    assert len(applied.calls) == 1  # revived by the reconnect itself: no event, no relist


def test_a_change_after_an_api_server_restart_applies_within_2s_whatever_an_earlier_outage_did(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25's sequence: outage, restart (403 while RBAC loads, 410 on the old RV), a quiet Secret, the same again.

    The production backoff (0.5 s doubling to 30 s): the first outage must leave nothing behind that slows the
    second recovery, and a reconnect logs one line per failed attempt, the RBAC window once, nothing from urllib3.
    """
    caplog.set_level(logging.WARNING)  # urllib3's own "Retrying (Retry(...))" warnings would show here
    caplog.set_level(logging.INFO, "authgate.watch")
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    applied = Applied()
    watcher = SecretWatcher(
        NAMESPACE,
        SECRET,
        applied,
        Heartbeat("secret-watch", max_age=60),
        api_client_factory=client_factory,
        watch_timeout_seconds=1,  # a quiet Secret: each watch ends cleanly without an event or a bookmark
        connect_timeout=1.0,
        request_timeout=3.0,
        read_timeout_margin=5.0,
    )

    def lists() -> int:
        return fake.requests.count("GET", "fieldSelector") - fake.requests.count("GET", "watch=true")

    def refused() -> int:
        return caplog.text.count("cannot reach the Kubernetes API")

    def outage_and_restart() -> None:
        before = refused()
        fake.stop()
        wait_for(lambda: refused() >= before + 3, timeout=30, what="three failed reconnects")
        forbidden = fake.forbidden_answers
        fake.restart()
        wait_for(lambda: fake.forbidden_answers >= forbidden + 2, timeout=30, what="two refusals while RBAC loads")
        fake.rbac_loaded()

    with WatcherThread(watcher):
        wait_for(lambda: watcher.synced and fake.open_streams == 1, what="listed and watching")
        outage_and_restart()
        wait_for(lambda: lists() == 2 and fake.open_streams == 1, timeout=30, what="relisted after the 410")
        watches = fake.requests.count("GET", "watch=true")
        wait_for(lambda: fake.requests.count("GET", "watch=true") >= watches + 2, what="a quiet watch ended cleanly")
        assert applied.calls == [(tokens(1), f"secret {NAMESPACE}/{SECRET}")] * 2
        outage_and_restart()
        fake.put_secret(NAMESPACE, SECRET, tokens(2))  # made once the API server has recovered
        wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], timeout=2.0, what="the change applied")
    assert "Retrying (Retry(" not in caplog.text
    permission = [r for r in caplog.records if r.levelno >= logging.WARNING and "permission denied" in r.getMessage()]
    assert len(permission) == 2, [r.getMessage() for r in permission]  # once per restart
    assert "may still be loading its RBAC rules" in permission[0].getMessage()
    assert "410 Gone again" not in caplog.text
    assert caplog.text.count("relisting") == 2 and "sha256:" not in caplog.text


def test_a_410_on_the_watch_a_relist_just_started_backs_off_by_its_own_streak(
    fake: FakeApiServer, client_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "authgate.watch")
    fake.put_secret(NAMESPACE, SECRET, tokens(1))
    fake.gone_next_watches = 3  # a list served from a cache behind the watch's: every fresh watch is too old
    applied = Applied()
    watcher, _ = make_watcher(applied, client_factory)
    with WatcherThread(watcher):
        wait_for(lambda: len(applied.calls) == 4 and fake.open_streams == 1, what="watching after three 410s")
    delays = [r.args[2] for r in caplog.records if "410 Gone again right after a relist" in r.getMessage()]
    assert len(delays) == 3 and delays[0] <= 0.05 and delays[1] <= 0.1 and delays[2] <= 0.2, delays


def test_an_unverified_tls_connection_is_logged_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tls_files: tuple[Path, Path]
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeApiServer(tls=tls_files) as fake:
        fake.put_secret(NAMESPACE, SECRET, tokens(1))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url, namespace=NAMESPACE, insecure=True)
        applied = Applied()
        watcher, _ = make_watcher(applied, lambda: new_api_client(str(kubeconfig)))
        with WatcherThread(watcher):
            wait_for(lambda: watcher.synced and fake.open_streams == 1, what="listed and watching over HTTPS")
            fake.put_secret(NAMESPACE, SECRET, tokens(2))
            wait_for(lambda: applied.last_tokens() == tokens(2)["tokens"], what="change applied")
    assert [r.getMessage() for r in caplog.records] == [
        f"secret watch {NAMESPACE}/{SECRET}: the TLS certificate of {fake.url} is not verified "
        "(insecure-skip-tls-verify in the kubeconfig): whoever is in between can read and change the Secret"
    ]
