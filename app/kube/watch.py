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
  backoff, so an earlier outage never slows the recovery from the next one;
- the liveness heartbeat is stamped by this loop itself on real progress (a list, a watch request the
  API server answered, an event, a bookmark, a clean end of a stream). A client-side read timeout
  slightly longer than the server-side watch timeout makes a silently stalled stream raise instead of
  hanging, and while nothing progresses the heartbeat ages until ``/healthz`` fails;
- the ``kubernetes`` client is synchronous, so every call runs in this watcher's own worker thread;
  the event loop only awaits, and ``apply`` runs on the event loop like a file-mode reload.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
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
    decode_data,
    describe_error,
    new_api_client,
    resource_version_of,
    unverified_tls,
)

log = logging.getLogger("authgate.watch")

T = TypeVar("T")
Apply = Callable[[Mapping[str, bytes], str], bool]
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
        self._apply = apply
        self._heartbeat = heartbeat
        self._factory = api_client_factory or new_api_client
        self._watch_timeout = watch_timeout_seconds
        self._backoff_max = backoff_max
        self._backoff_base = backoff_base
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._read_timeout_margin = read_timeout_margin
        self._shutdown_grace = shutdown_grace
        self._quick_retry = quick_retry
        self._rbac_grace = rbac_grace
        self._source = f"secret {self.ref}"
        self._selector = f"metadata.name={name}"
        self._resource_version: str | None = None
        self._synced = False
        self._stopping = False
        self._failures = 0  # failed attempts in a row, for the log
        self._backoff_step = 0  # the exponent of the exponential backoff
        self._gone_streak = 0  # 410s in a row on the watch started right after a list
        self._fresh_list = False  # the current watch started from the list just made
        self._answered_at: float | None = None  # when the API answered again after being unreachable
        self._rbac_wait_logged = False
        self._watch: Watch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._host = ""
        self._abandoned = False  # a worker call outlived shutdown_grace: do not wait for the thread

    # --- public -----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a list succeeded and ``apply`` accepted its data (readiness); stays true after."""
        return self._synced

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
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="authgate-watch")
        try:
            try:
                api = await self._call(self._factory)
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
            self._executor.shutdown(wait=not self._abandoned, cancel_futures=True)
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
            except ApiException as exc:
                self._fresh_list = False
                await self._after_refusal(exc)
            except TRANSPORT_ERRORS as exc:
                self._fresh_list = False
                self._answered_at = None
                reason = describe_error(exc, self.ref, "list/watch", self._host)
                if _connection_refused(exc):  # the API server is (re)starting: cheap to ask again soon
                    await self._retry_after(reason, self._quick_delay())
                else:
                    await self._backoff(reason)
            except Exception:  # a bug or a malformed answer: say so once, keep trying, never die silently
                self._fresh_list = False
                log.exception("secret watch %s: unexpected error", self.ref)
                await self._backoff("unexpected error (traceback above)")

    async def _relist_after_gone(self) -> None:
        """A 410 relists at once; only a 410 on the very watch a relist just started backs off.

        That repeat (a list answered from a cache behind the watch's) would otherwise loop without pause.
        Its delay grows with the streak alone, never with failures from an earlier outage.
        """
        self._resource_version = None
        self._answered()
        self._gone_streak = self._gone_streak + 1 if self._fresh_list else 0
        self._fresh_list = False
        if self._gone_streak == 0:
            log.info("secret watch %s: resourceVersion expired (410 Gone); relisting", self.ref)
            return
        delay = self._exponential_delay(self._gone_streak - 1)
        await self._retry_after("410 Gone again right after a relist", delay)

    async def _after_refusal(self, exc: ApiException) -> None:
        """An HTTP error answer. A 403 right after the API came back is retried quickly, logged once."""
        self._answered()
        reason = describe_error(exc, self.ref, "list/watch", self._host)
        assert self._answered_at is not None
        since = time.monotonic() - self._answered_at
        if exc.status != 403 or since >= self._rbac_grace:
            await self._backoff(reason)
            return
        delay = self._quick_delay()
        if self._rbac_wait_logged:
            await self._retry_after(reason, delay, level=logging.DEBUG)
            return
        self._rbac_wait_logged = True
        await self._retry_after(
            f"{reason} (the API server answered {since:.1f}s ago and may still be loading its RBAC rules: "
            f"retried every {min(self._quick_retry, self._backoff_max):.1f}s at most for "
            f"{self._rbac_grace:.0f}s, logged once)",
            delay,
        )

    def _answered(self) -> None:
        """The API server sent an HTTP answer: starts the RBAC grace window if it was unreachable."""
        if self._answered_at is None:
            self._answered_at = time.monotonic()
            self._rbac_wait_logged = False

    def _progressed(self, what: str) -> None:
        """The list or the watch works: the backoff starts over, and a recovery is said once."""
        if self._failures:
            log.info("secret watch %s: %s after %s failed attempt(s)", self.ref, what, self._failures)
        self._failures = 0
        self._backoff_step = 0

    async def _list(self, core: CoreV1Api) -> None:
        result = await self._call(
            core.list_namespaced_secret,
            self.ref.namespace,
            field_selector=self._selector,
            _request_timeout=(self._connect_timeout, self._request_timeout),
        )
        resource_version = str(getattr(result.metadata, "resource_version", None) or "")
        secret = next((s for s in result.items or [] if getattr(s.metadata, "name", None) == self.ref.name), None)
        self._resource_version = resource_version
        self._answered()
        self._progressed(f"listed at resourceVersion {resource_version}")
        self._fresh_list = True
        if secret is None:
            log.warning(
                "secret watch %s: secret not found; keeping %s credentials until it is created",
                self.ref,
                "the last good" if self._synced else "no",
            )
        else:
            self._deliver(secret.data, "list", resource_version_of(secret.metadata))
        self._heartbeat.beat(f"listed at resourceVersion {resource_version}")

    async def _watch_once(self, core: CoreV1Api) -> None:
        """One watch request from the current resourceVersion, until it ends, breaks or we stop."""
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
                pending = self._submit(next, stream, _END)
                await self._until_done_or_stopping(pending)
                if self._stopping or not pending.done():
                    return  # stop() was called (its closing the stream is no error); the finally unblocks a read
                event = pending.result()
                pending = None
                if event is _END:
                    self._progressed(f"watch ended cleanly at resourceVersion {self._resource_version}")
                    self._gone_streak = 0
                    self._fresh_list = False
                    self._heartbeat.beat(f"watch ended cleanly at resourceVersion {self._resource_version}")
                    return
                self._handle(event)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from None
            raise
        finally:
            self._watch = None
            if await self._settle(watch, pending):
                stream.close()

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
            self._answered()
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

    async def _settle(self, watch: Watch, pending: asyncio.Future[Any] | None) -> bool:
        """Makes a read still blocked in the worker return, within ``shutdown_grace``.

        ``Watch.stop()`` shuts the stream's socket down, but the socket exists only once the request
        is sent, so it is repeated until the read returns. Returns False if it did not, in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_grace
        while pending is not None and not pending.done() and loop.time() < deadline:
            watch.stop()  # type: ignore[no-untyped-call]
            await asyncio.wait({pending}, timeout=0.05)
        watch.stop()  # type: ignore[no-untyped-call]
        if pending is None:
            return True
        if not pending.done():
            log.warning(
                "secret watch %s: a stream read did not end within %.1fs; leaving it to its read timeout",
                self.ref,
                self._shutdown_grace,
            )
            self._abandoned = True
            return False
        if not pending.cancelled():
            pending.exception()  # retrieved: already handled, or moot because we are stopping
        return True

    def _handle(self, event: object) -> None:
        if not isinstance(event, Mapping):  # the client yields None for a line that is not JSON
            log.warning("secret watch %s: ignoring a watch line that is not a JSON event", self.ref)
            return
        kind = str(event.get("type"))
        raw = event.get("raw_object") or {}
        metadata = raw.get("metadata") or {}
        resource_version = metadata.get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            if metadata.get("name") == self.ref.name:
                self._deliver(raw.get("data"), kind, str(resource_version or ""))
        elif kind == "DELETED":
            log.warning("secret watch %s: the Secret was deleted; keeping the last good credentials", self.ref)
        elif kind != "BOOKMARK":
            log.warning("secret watch %s: ignoring unexpected event type %s", self.ref, kind)
        if resource_version:
            self._resource_version = str(resource_version)
        self._progressed(f"watching again ({kind.lower()} at resourceVersion {self._resource_version})")
        self._gone_streak = 0
        self._fresh_list = False
        self._heartbeat.beat(f"{kind.lower()} at resourceVersion {self._resource_version}")

    def _deliver(
        self, data: Mapping[str, str | bytes] | Mapping[str, str] | None, why: str, resource_version: str
    ) -> None:
        """Decodes the Secret's data and hands it to ``apply``; a rejection keeps the last good set.

        ``resource_version`` is the delivered object's own, for the log. The watcher's cursor is not it:
        during an event it still holds the previous one, and a list's moves with any Secret in the namespace.
        """
        try:
            files = decode_data(data)
        except ValueError:
            log.warning(
                "secret watch %s: %s: data is not valid base64; keeping the last good credentials", self.ref, why
            )
            return
        try:
            accepted = self._apply(files, self._source)
        except Exception:
            log.exception(
                "secret watch %s: applying the %s data failed; keeping the last good credentials", self.ref, why
            )
            return
        if accepted:
            self._synced = True
            log.info("secret watch %s: applied (%s, resourceVersion %s)", self.ref, why, resource_version)
        else:
            log.warning("secret watch %s: %s data rejected; keeping the last good credentials", self.ref, why)

    # --- plumbing ---------------------------------------------------------------------------------

    def _exponential_delay(self, step: int) -> float:
        """Capped exponential backoff with jitter, so many replicas do not reconnect in lockstep."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(step, 30))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    def _quick_delay(self) -> float:
        ceiling = min(self._quick_retry, self._backoff_max)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    async def _backoff(self, reason: str) -> None:
        delay = self._exponential_delay(self._backoff_step)
        self._backoff_step += 1
        await self._retry_after(reason, delay)

    async def _retry_after(self, reason: str, delay: float, level: int = logging.WARNING) -> None:
        """One log line for this failed attempt, then a pause that ``stop()`` cuts short."""
        self._failures += 1
        log.log(level, "secret watch %s: %s; retrying in %.2fs (attempt %s)", self.ref, reason, delay, self._failures)
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        assert self._executor is not None
        return asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a blocking client call in the watcher's thread; waits for it even when cancelled.

        A one-shot call ends by its own request timeout, so waiting (bounded) keeps a cancelled
        watcher from leaving a thread behind that still uses the closed client.
        """
        future = self._submit(fn, *args, **kwargs)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future}, timeout=self._shutdown_grace)
            if not future.done():
                self._abandoned = True
            elif not future.cancelled():
                future.exception()
            raise
