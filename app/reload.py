"""Reloading credentials: build a new immutable snapshot off to the side, then swap one reference.

A request reads ``store.current`` once and uses that snapshot to the end, so no request ever sees a
half-loaded state. A malformed update keeps the last good snapshot and says why (file and line, never
the secret) in the log and in ``authgate_reloads_total{result="error"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path

import watchfiles

from app.credentials import files_fingerprint, load_secret_files, read_secret_dir
from app.decision import Snapshot
from app.errors import ConfigError
from app.health import Heartbeat
from app.jwt_keys import JwtKeys, remote_key_sets, secret_key_sets
from app.metrics import Metrics
from app.passwords import DecoyFactory, Decoys, VerifiedCache
from app.policy import Policy
from app.sessions import require_keys

log = logging.getLogger("authgate.reload")


class SnapshotStore:
    """Holds the current snapshot; None until the first good load (then decisions answer 503)."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None


class Reloader:
    def __init__(self, policy: Policy, store: SnapshotStore, metrics: Metrics) -> None:
        self.policy = policy
        self.store = store
        self.metrics = metrics
        self.decoys = DecoyFactory()
        # JWT issuers (app.jwt_keys): the fetched key sets outlive every snapshot; none without issuers.
        issuers = [issuer for route in policy.routes.values() for issuer in route.jwt_issuers]
        self.jwt_remote = remote_key_sets(issuers)
        self.jwt_secret_keys = {issuer.location for issuer in issuers if issuer.source == "secret"}
        self.jwt = bool(issuers)

    def apply(self, files: Mapping[str, bytes], source: str) -> bool:
        """Validates the Secret's files and swaps them in. False (and the old snapshot kept) on error."""
        current = self.store.current
        if current is not None and current.credentials.fingerprint == files_fingerprint(files):
            return True
        try:
            credentials = load_secret_files(files, source)
            jwt_keys = (
                JwtKeys(secret_key_sets(files, self.jwt_secret_keys, source), self.jwt_remote) if self.jwt else None
            )
            require_keys(credentials, self.policy)
        except ConfigError as exc:
            return self._failed(source, exc)
        # Verified passwords stay verified across reloads, except those of users removed or whose hash changed
        # (their keys include the stored hash, so those could never match again anyway).
        if current is not None:
            verified = current.verified
            verified.retain(credentials.users)
        else:
            verified = VerifiedCache(self.policy.verify_cache_max_entries)
        decoys = Decoys(credentials.users, self.decoys)
        self.store.current = Snapshot(credentials, self.policy, verified, decoys, jwt=jwt_keys)
        now = dt.datetime.now(dt.UTC)
        self.metrics.loaded(credentials, now)
        log.info(
            "credentials loaded",
            extra={
                "event": "reload",
                "result": "success",
                "source": source,
                "tokens": len(credentials.tokens_by_digest),
                "users": len(credentials.users),
                "plain_tokens": sum(1 for t in credentials.tokens if t.plain),
            },
        )
        return True

    def load_directory(self, directory: Path) -> bool:
        """Reads a mounted Secret directory and applies it."""
        try:
            files = read_secret_dir(directory)
        except FileNotFoundError:
            return self._failed(str(directory), ConfigError("no such directory", str(directory)))
        except ConfigError as exc:
            return self._failed(str(directory), exc)
        return self.apply(files, str(directory))

    def _failed(self, source: str, exc: ConfigError) -> bool:
        """Counts and logs a rejected update (where and why, never the content); the old snapshot stays."""
        self.metrics.reloads.labels(result="error").inc()
        log.error(
            "reload failed, keeping the last good credentials: %s",
            exc,
            extra={
                "event": "reload",
                "result": "error",
                "source": source,
                "file": exc.source,
                "line": exc.line,
                "reason": exc.reason,
                "kept_previous": self.store.current is not None,
            },
        )
        return False


class DirectoryWatcher:
    """Watches a mounted Secret directory (kubelet's ``..data`` swap shows up as events in it) and
    re-reads it on every change, plus every ``resync_seconds`` in case an event was missed."""

    def __init__(self, directory: Path, reloader: Reloader, heartbeat: Heartbeat, resync_seconds: float = 5.0) -> None:
        self.directory = directory
        self.reloader = reloader
        self.heartbeat = heartbeat
        self.resync_seconds = resync_seconds
        self._stop = asyncio.Event()

    async def reload(self) -> bool:
        # Parsing 10,000 lines takes tens of milliseconds: keep it off the event loop.
        return await asyncio.to_thread(self.reloader.load_directory, self.directory)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.reload()
        self.heartbeat.beat("loaded")
        while not self._stop.is_set():
            if not self.directory.is_dir():
                self.heartbeat.beat("waiting for the secret directory")
                await self._sleep(min(self.resync_seconds, 1.0))
                await self.reload()
                continue
            try:
                async for _changes in watchfiles.awatch(
                    self.directory,
                    watch_filter=None,
                    debounce=400,
                    step=30,
                    stop_event=self._stop,
                    rust_timeout=int(self.resync_seconds * 1000),
                    yield_on_timeout=True,
                ):
                    self.heartbeat.beat("watching")
                    await self.reload()
            except (FileNotFoundError, RuntimeError, OSError) as exc:
                log.warning(
                    "watching %s failed (%s); retrying",
                    self.directory,
                    exc,
                    extra={"event": "watch", "result": "error"},
                )
                await self._sleep(min(self.resync_seconds, 1.0))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
