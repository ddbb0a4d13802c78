"""What a list result or a watch event of one Secret means for the credentials: its data handed to ``apply``.

A Secret whose data is not valid base64, or that ``apply`` rejects or fails on, keeps the last good
credentials, and so does a deleted one; each is said in one log line. Separate from the watch loop
(``app.kube.watch``), which owns the cursor, the heartbeat and the retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from app.kube.api import SecretRef, decode_data

log = logging.getLogger("authgate.watch")

Apply = Callable[[Mapping[str, bytes], str], bool]


class SecretFeed:
    """Feeds ``apply`` with one Secret's data; ``synced`` once it accepted some."""

    def __init__(self, ref: SecretRef, apply: Apply) -> None:
        self.ref = ref
        self._apply = apply
        self._source = f"secret {ref}"
        self.synced = False

    def event(self, event: object) -> tuple[str, str] | None:
        """Applies one watch event; returns its type and the resourceVersion it carries ("" for none).

        None for a line that is not an event at all (the client yields None for a line that is not JSON).
        """
        if not isinstance(event, Mapping):
            log.warning("secret watch %s: ignoring a watch line that is not a JSON event", self.ref)
            return None
        kind = str(event.get("type"))
        raw = event.get("raw_object") or {}
        metadata = raw.get("metadata") or {}
        resource_version = metadata.get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            if metadata.get("name") == self.ref.name:
                self.deliver(raw.get("data"), kind, str(resource_version or ""))
        elif kind == "DELETED":
            log.warning("secret watch %s: the Secret was deleted; keeping the last good credentials", self.ref)
        elif kind != "BOOKMARK":
            log.warning("secret watch %s: ignoring unexpected event type %s", self.ref, kind)
        return kind, str(resource_version) if resource_version else ""

    def missing(self) -> None:
        """A list found no such Secret: the credentials stay as they are until it is created."""
        log.warning(
            "secret watch %s: secret not found; keeping %s credentials until it is created",
            self.ref,
            "the last good" if self.synced else "no",
        )

    def deliver(
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
            self.synced = True
            log.info("secret watch %s: applied (%s, resourceVersion %s)", self.ref, why, resource_version)
        else:
            log.warning("secret watch %s: %s data rejected; keeping the last good credentials", self.ref, why)
