"""Where a browser may be sent after signing in: the ``rd`` parameter, checked so that authgate's form is never
an open redirect (oauth2-proxy's and Authelia's ``rd``).

Only a path on the same host is accepted: it starts with a single ``/``. Anything else becomes ``/``: a URL with
a scheme (``https://``, ``javascript:``, ``data:``), protocol-relative ``//evil`` and every spelling a browser or a
later redirect reads the same way (``/\\evil``, ``/\\t/evil``, ``/%2F/evil``, ``/%5Cevil``...), control
characters, whitespace and raw non-ASCII, and anything too long to be a real address.
"""

from __future__ import annotations

import urllib.parse

MAX_REDIRECT_CHARS = 2048
FALLBACK = "/"


def safe_redirect(rd: str | None) -> str:
    """``rd`` if it is a plain path on this host, else ``/``."""
    if not rd or len(rd) > MAX_REDIRECT_CHARS or not rd.isascii() or not rd.startswith("/"):
        return FALLBACK
    # Browsers drop tabs and newlines from URLs and read a backslash as a slash: "/\t/evil" and "/\evil" are
    # "//evil" to them. Refuse all of it, raw or percent-encoded (an application may decode and redirect again).
    decoded = urllib.parse.unquote(rd)
    for text in (rd, decoded):
        if text.startswith("//") or "\\" in text or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            return FALLBACK
    return rd
