"""What every front door module provides."""

from __future__ import annotations

import re
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

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        """``scheme://host`` of the original request from marks this door always writes itself, for an
        absolute sign-in redirect; None when it vouches for no scheme and host (the redirect stays relative)."""


def last_hop(forwarded_for: bytes | None) -> bytes | None:
    """The address the proxy appended last to ``X-Forwarded-For`` (the one it saw), or None."""
    if not forwarded_for:
        return None
    return forwarded_for.rsplit(b",", 1)[-1].strip() or None


# A host as a browser addresses one: a DNS name or an IPv4 address, or an IPv6 literal, and an optional port.
_HOST_RE = re.compile(rb"(?:[a-z0-9](?:[a-z0-9.-]{0,252})|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")


def origin_of(scheme: bytes | None, host: bytes | None) -> str | None:
    """``scheme://host`` when both are what a door writes (``http``/``https``, a plain host), else None: never
    a value that could make a redirect leave the host (userinfo, a path, spaces, a second value)."""
    if not scheme or not host:
        return None
    scheme, host = scheme.strip().lower(), host.strip().lower()
    if scheme not in (b"http", b"https") or _HOST_RE.fullmatch(host) is None:
        return None
    return f"{scheme.decode()}://{host.decode()}"


def path_of(target: bytes) -> bytes:
    """The raw path of a request target: everything before the query. A '#' is not a fragment here (a
    client sent it raw, and nginx forwards it raw), so it stays part of the path and never matches."""
    return target.split(b"?", 1)[0]
