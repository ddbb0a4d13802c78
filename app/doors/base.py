"""What every front door module provides."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class View(NamedTuple):
    """What one door's headers say about the original request. None = that part was not sent."""

    method: bytes | None
    path: bytes | None  # raw, without the query; never decoded or normalised (a '#' stays in it)
    client: bytes | None

    @property
    def complete(self) -> bool:
        return self.method is not None and self.path is not None


class Door(Protocol):
    """One proxy's wire format."""

    name: str
    # Human-readable names of the headers this door always writes (for the misconfiguration log).
    mark_names: str
    # Whether the door stands for a client address at all; if not, no address is used (not even the peer,
    # which is then the door itself: throttling it would throttle every client behind it).
    vouches_for_client: bool
    # Whether a redirect (302) from authgate reaches the browser through this door, so that a browser's page
    # load without a session is sent to the sign-in page by authgate itself. Doors that turn any answer but
    # 2xx/401/403 into a 500 (nginx auth_request) say no: ingress-nginx redirects a 401 itself when the
    # Ingress has the auth-signin annotation; NGINX Gateway Fabric cannot redirect at all.
    redirects_to_sign_in: bool

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        """This door's account of the original request, or None when the request carries none of its marks.

        ``headers`` are the auth request's (lower-case names); ``rest`` is what followed ``/auth/<route>/``
        in the auth request's path (None when nothing did)."""

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        """Where this door puts the original path, as sent (for a cheap "could this be path P?" test)."""

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the request bears a mark of this door that no other known door lets a client forge
        (used only to choose between two trusted doors whose accounts agree)."""

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        """Headers this door needs on an allow beyond the common ones (``identified``: the allow names a
        principal, so identity headers are set)."""


def last_hop(forwarded_for: bytes | None) -> bytes | None:
    """The address the proxy appended last to ``X-Forwarded-For`` (the one it saw), or None."""
    if not forwarded_for:
        return None
    return forwarded_for.rsplit(b",", 1)[-1].strip() or None


def path_of(target: bytes) -> bytes:
    """The raw path of a request target: everything before the query. A '#' is not a fragment here (a
    client sent it raw, and nginx forwards it raw), so it stays part of the path and never matches."""
    return target.split(b"?", 1)[0]
