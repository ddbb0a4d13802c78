"""Credentials straight from the Kubernetes API: list, then watch one Secret, and apply every change.

kubelet takes 60-90 s to refresh a mounted Secret; a watch sees the change in about a second. The loop
is the classic list-then-watch, done the way the kiwigrid sidecar did not:

- it resumes every watch from the last ``resourceVersion`` it saw (events and BOOKMARKs move it), so a
  reconnect neither misses nor replays changes; only a 410 Gone (history compacted) forces a relist;
- errors are logged with their reason, one line per failed attempt, and retried with capped exponential
  backoff and jitter, never swallowed behind a fixed sleep. Two cases retry quickly instead (every
  ``quick_retry`` seconds, jittered), because they mean the API server is restarting rather than
  overloaded: a refused connection, and a 403 within ``rbac_grace`` seconds of the API answering again
  (a restarted API server refuses everything until its RBAC caches are loaded; logged once per window).
  Every successful list and every sign of a working watch (event, bookmark, clean end) resets the
  backoff, so an earlier outage never slows the recovery from the next one. That policy is
  ``app.kube.retry.RetryPolicy``; what an event means for the credentials is ``app.kube.feed.SecretFeed``;
- the liveness heartbeat is stamped by this loop itself on real progress (a list, a watch request the
  API server answered, an event, a bookmark, a clean end of a stream). A client-side read timeout
  slightly longer than the server-side watch timeout makes a silently stalled stream raise instead of
  hanging, and while nothing progresses the heartbeat ages until ``/healthz`` fails;
- the ``kubernetes`` client is synchronous, so every call runs in this watcher's own worker thread
  (``app.kube.worker.ClientThread``); the event loop only awaits, and ``apply`` runs on the event loop like
  a file-mode reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from app.health import Heartbeat
from app.kube.api import (
    TRANSPORT_ERRORS,
    KubeError,
    SecretRef,
    describe_error,
    new_api_client,
    resource_version_of,
    unverified_tls,
)
from app.kube.feed import Apply, SecretFeed
from app.kube.retry import Retry, RetryPolicy
from app.kube.worker import ClientThread

log = logging.getLogger("authgate.watch")

T = TypeVar("T")
_END = object()  # the stream ended without an error (server-side timeoutSeconds)


def recommended_max_age(
    watch_timeout_seconds: int, backoff_max: float, read_timeout_margin: float = 10.0, request_timeout: float = 30.0
) -> float:
    """The smallest heartbeat ``max_age`` that a healthy but quiet watch never exceeds.

    A quiet Secret may send nothing for a whole watch (``watch_timeout_seconds``, plus the read-timeout
    margin), then one reconnect may wait out a backoff and a list. Anything shorter restarts healthy
    pods; much longer delays noticing a dead watch.
    """
    return watch_timeout_seconds + read_timeout_margin + backoff_max + request_timeout


class _Gone(Exception):
    """The watch's resourceVersion is older than the server's history (410): relist."""


def _connection_refused(exc: BaseException) -> bool:
    """True if a transport error comes from a refused connection (urllib3 wraps the OSError twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return False


class SecretWatcher:
    """Keeps ``apply`` fed with one Secret's data; see the module docstring for the guarantees."""

    def __init__(
        self,
        namespace: str,
        name: str,
        apply: Apply,
        heartbeat: Heartbeat,
        *,
        api_client_factory: Callable[[], kubernetes.client.ApiClient] | None = None,
        watch_timeout_seconds: int = 300,
        backoff_max: float = 30.0,
        backoff_base: float = 0.5,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        read_timeout_margin: float = 10.0,
        shutdown_grace: float = 2.0,
        quick_retry: float = 1.0,
        rbac_grace: float = 10.0,
    ) -> None:
        self.ref = SecretRef(namespace, name)
        self._feed = SecretFeed(self.ref, apply)
        self._retry = RetryPolicy(
            backoff_base=backoff_base, backoff_max=backoff_max, quick_retry=quick_retry, rbac_grace=rbac_grace
        )
        self._heartbeat = heartbeat
        self._factory = api_client_factory or new_api_client
        self._watch_timeout = watch_timeout_seconds
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._read_timeout_margin = read_timeout_margin
        self._shutdown_grace = shutdown_grace
        self._selector = f"metadata.name={name}"
        self._resource_version: str | None = None
        self._stopping = False
        self._watch: Watch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: ClientThread | None = None
        self._host = ""

    # --- public -----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a list succeeded and ``apply`` accepted its data (readiness); stays true after."""
        return self._feed.synced

    @property
    def resource_version(self) -> str | None:
        return self._resource_version

    def stop(self) -> None:
        """Ends ``run()`` soon; safe from any thread. Breaks a blocked stream read right away."""
        self._stopping = True
        watch = self._watch
        if watch is not None:
            watch.stop()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Lists, watches and applies until ``stop()`` or cancellation; raises KubeError on bad config."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._thread = thread = ClientThread(self._shutdown_grace)
        try:
            try:
                api = await thread.call(self._factory)
            except KubeError as exc:
                log.error("secret watch %s: %s", self.ref, exc)
                raise
            self._host = str(api.configuration.host)
            insecure = unverified_tls(api)
            if insecure is not None:
                log.warning("secret watch %s: %s", self.ref, insecure)
            try:
                await self._run_with(CoreV1Api(api))
            finally:
                api.close()  # type: ignore[no-untyped-call]
        finally:
            thread.close()
            log.info("secret watch %s: stopped", self.ref)

    # --- the loop ---------------------------------------------------------------------------------

    async def _run_with(self, core: CoreV1Api) -> None:
        log.info("secret watch %s: starting against %s", self.ref, self._host)
        while not self._stopping:
            try:
                if self._resource_version is None:
                    await self._list(core)
                if not self._stopping:
                    await self._watch_once(core)
            except _Gone:
                await self._relist_after_gone()
            except ApiException as exc:  # an HTTP error answer (a 403 right after the API came back: quickly)
                retry = self._retry.refused(exc.status)
                await self._retry_after(describe_error(exc, self.ref, "list/watch", self._host), retry)
            except TRANSPORT_ERRORS as exc:
                retry = self._retry.unreachable(_connection_refused(exc))
                await self._retry_after(describe_error(exc, self.ref, "list/watch", self._host), retry)
            except Exception:  # a bug or a malformed answer: say so once, keep trying, never die silently
                log.exception("secret watch %s: unexpected error", self.ref)
                await self._retry_after("unexpected error (traceback above)", self._retry.failed())

    async def _relist_after_gone(self) -> None:
        """A 410 relists at once; only a 410 on the very watch a relist just started waits (``RetryPolicy.gone``)."""
        self._resource_version = None
        retry = self._retry.gone()
        if retry is None:
            log.info("secret watch %s: resourceVersion expired (410 Gone); relisting", self.ref)
            return
        await self._retry_after("410 Gone again right after a relist", retry)

    def _recovered(self, failures: int, what: str) -> None:
        """The list or the watch works again after ``failures`` failed attempts: said once."""
        if failures:
            log.info("secret watch %s: %s after %s failed attempt(s)", self.ref, what, failures)

    async def _list(self, core: CoreV1Api) -> None:
        assert self._thread is not None
        result = await self._thread.call(
            core.list_namespaced_secret,
            self.ref.namespace,
            field_selector=self._selector,
            _request_timeout=(self._connect_timeout, self._request_timeout),
        )
        resource_version = str(getattr(result.metadata, "resource_version", None) or "")
        secret = next((s for s in result.items or [] if getattr(s.metadata, "name", None) == self.ref.name), None)
        self._resource_version = resource_version
        self._recovered(self._retry.listed(), f"listed at resourceVersion {resource_version}")
        if secret is None:
            self._feed.missing()
        else:
            self._feed.deliver(secret.data, "list", resource_version_of(secret.metadata))
        self._heartbeat.beat(f"listed at resourceVersion {resource_version}")

    async def _watch_once(self, core: CoreV1Api) -> None:
        """One watch request from the current resourceVersion, until it ends, breaks or we stop."""
        thread = self._thread
        assert thread is not None
        watch = Watch()  # type: ignore[no-untyped-call]
        self._watch = watch
        stream = watch.stream(  # type: ignore[no-untyped-call]
            self._beating_on_connect(core.list_namespaced_secret),
            self.ref.namespace,
            field_selector=self._selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,  # also stops the client's own silent 410 retry
            _request_timeout=(self._connect_timeout, self._watch_timeout + self._read_timeout_margin),
        )
        pending: asyncio.Future[Any] | None = None
        try:
            while not self._stopping:
                pending = thread.submit(next, stream, _END)
                await self._until_done_or_stopping(pending)
                if self._stopping or not pending.done():
                    return  # stop() was called (its closing the stream is no error); the finally unblocks a read
                event = pending.result()
                pending = None
                if event is _END:
                    what = f"watch ended cleanly at resourceVersion {self._resource_version}"
                    self._recovered(self._retry.watched(), what)
                    self._heartbeat.beat(f"watch ended cleanly at resourceVersion {self._resource_version}")
                    return
                self._handle(event)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from None
            raise
        finally:
            self._watch = None
            if await thread.settle(pending, watch.stop):
                stream.close()
            else:
                log.warning(
                    "secret watch %s: a stream read did not end within %.1fs; leaving it to its read timeout",
                    self.ref,
                    self._shutdown_grace,
                )

    def _beating_on_connect(self, list_call: Callable[..., T]) -> Callable[..., T]:
        """``list_call`` that stamps the heartbeat as soon as the watch request has its HTTP response.

        A quiet Secret sends nothing for a whole watch: stamped only on events, liveness would stay failed
        after an API outage until the first change or the watch's timeout, and kubelet would restart a pod
        that had already recovered. The stamp comes from the watch request itself, so a watch that cannot
        connect still lets the heartbeat age. ``functools.wraps`` keeps the docstring and signature the
        client reads to decode events.
        """

        @functools.wraps(list_call)
        def connect(*args: Any, **kwargs: Any) -> T:
            response = list_call(*args, **kwargs)
            self._retry.answered()
            if 200 <= getattr(response, "status", 200) <= 299:  # older clients leave an error status to Watch
                self._heartbeat.beat(f"watch connected at resourceVersion {self._resource_version}")
            return response

        return connect

    async def _until_done_or_stopping(self, future: asyncio.Future[Any]) -> None:
        """Waits for a worker call, or for ``stop()``; cancellation never cancels the worker's future."""
        assert self._wake is not None
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({future, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    def _handle(self, event: object) -> None:
        """One watch event: applied by the feed; it moves the cursor and shows the watch works."""
        seen = self._feed.event(event)
        if seen is None:
            return
        kind, resource_version = seen
        if resource_version:
            self._resource_version = resource_version
        what = f"watching again ({kind.lower()} at resourceVersion {self._resource_version})"
        self._recovered(self._retry.watched(), what)
        self._heartbeat.beat(f"{kind.lower()} at resourceVersion {self._resource_version}")

    # --- plumbing ---------------------------------------------------------------------------------

    async def _retry_after(self, reason: str, retry: Retry) -> None:
        """One log line for this failed attempt, then a pause that ``stop()`` cuts short."""
        log.log(
            retry.level,
            "secret watch %s: %s; retrying in %.2fs (attempt %s)",
            self.ref,
            reason + retry.note,
            retry.delay,
            retry.attempt,
        )
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=retry.delay)
