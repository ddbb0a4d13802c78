"""Where a browser may be sent after signing in or out: the ``rd`` parameter, checked so that authgate's form is
never an open redirect (oauth2-proxy's ``rd`` with ``--whitelist-domain``, Authelia's ``rd``).

Accepted: a path on the host the form was served on (``/ui/flows?x=1``), or an ``https`` URL (``http`` when
sessions are not ``secure``) whose host is that host or one listed in ``session.allowed_redirect_hosts``.
Anything else becomes ``/``: other schemes (``javascript:``, ``data:``), protocol-relative ``//evil`` and its
spellings a browser reads the same way (``/\\evil``, ``/\\t/evil``, ``/%2F/evil``...), user info
(``https://ok@evil``), control characters, whitespace and raw non-ASCII, and anything too long to be a real address.
"""

from __future__ import annotations

import urllib.parse

MAX_REDIRECT_CHARS = 2048
FALLBACK = "/"


def _host_allowed(host: str, own_host: str | None, allowed: tuple[str, ...]) -> bool:
    if own_host is not None and host == own_host:
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for entry in allowed:
        if entry.startswith("."):
            if name.endswith(entry) or name == entry[1:]:
                return True
        elif host == entry or name == entry:
            return True
    return False


def safe_redirect(rd: str | None, own_host: str | None, allowed: tuple[str, ...], *, secure: bool = True) -> str:
    """``rd`` if a browser may be sent there, else ``/``. ``own_host``: the Host the form was served on (lower
    case, with its port if any); ``allowed``: ``session.allowed_redirect_hosts``."""
    if not rd or len(rd) > MAX_REDIRECT_CHARS:
        return FALLBACK
    # Browsers drop tabs and newlines from URLs and read a backslash as a slash: "/\t/evil" and "/\evil" are
    # "//evil" to them. Refuse all of it, raw or percent-encoded (an application may decode and redirect again).
    if not rd.isascii():  # a browser sends a URL percent-encoded; raw non-ASCII cannot go in a Location header
        return FALLBACK
    decoded = urllib.parse.unquote(rd)
    for text in (rd, decoded):
        if "\\" in text or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            return FALLBACK
    if rd.startswith("/"):
        return FALLBACK if rd.startswith("//") or decoded.startswith("//") else rd
    try:
        parts = urllib.parse.urlsplit(rd)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return FALLBACK
    if parts.scheme not in (("https",) if secure else ("https", "http")) or not host:
        return FALLBACK
    if "@" in parts.netloc:
        return FALLBACK
    netloc = host if port is None else f"{host}:{port}"
    return rd if _host_allowed(netloc, own_host, allowed) else FALLBACK
