"""The ``session`` credential kind: a browser's sealed session cookie, issued by the sign-in form (app.browser).

Like oauth2-proxy's session loaders, this module only turns what a request carries into a session or the
reason there is none; app.decision puts the result into a Decision with the same throttle, metrics and
principal checks as tokens and passwords. Only routes that list ``session`` in their schemes have their
cookies read, and only when the request carries no Authorization header: a machine's token or password
always decides by itself, so tokens and Basic pay nothing for sessions.

A session holds the user's name, when it was issued and when it ends, and a digest of the user's stored
hash, all sealed (app.session_keys). It is checked against the current snapshot on every request, so it
ends when the user is removed from htpasswd or their password changes, and survives any other reload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from typing import NamedTuple

from app.credentials import Credentials, User
from app.errors import ConfigError
from app.policy import Policy, SessionSettings
from app.session_keys import SESSION_KEYS_FILE

# Requests a browser may make across sites without it meaning anything (RFC 9110 safe methods).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A clock skew between replicas that a session's issue time may be ahead by.
MAX_SKEW_SECONDS = 60


class BrowserFacts(NamedTuple):
    """What a request on a session route says about the browser that sent it. Read only on session routes,
    only without an Authorization header (app.decider)."""

    cookies: tuple[str, ...]  # every value of the session cookie in the request (more than one is refused)
    fetch_site: str | None  # Sec-Fetch-Site
    fetch_mode: str | None  # Sec-Fetch-Mode
    origin: str | None  # Origin
    host: str | None  # the original request's host, as the proxy tells it
    accepts_html: bool  # Accept names text/html

    @property
    def is_browser(self) -> bool:
        """A browser's request (not a script's): it sends Sec-Fetch-* (every current browser), an Accept for
        HTML (older ones), or our cookie."""
        return self.fetch_mode is not None or self.accepts_html or bool(self.cookies)

    def is_navigation(self, method: str | None) -> bool:
        """A top-level page load, which a sign-in redirect can answer (a fetch() from a page cannot use one)."""
        if method not in ("GET", "HEAD"):
            return False
        if self.fetch_mode is not None:
            return self.fetch_mode == "navigate"
        return self.accepts_html


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _original_host(headers: dict[bytes, bytes]) -> str | None:
    """The host the browser addressed: Traefik's X-Forwarded-Host, ingress-nginx's X-Original-URL, else Host
    (Envoy and NGINX Gateway Fabric send the original one)."""
    forwarded = headers.get(b"x-forwarded-host")
    if forwarded:
        return forwarded.decode("latin-1").split(",", 1)[0].strip().lower()
    original = headers.get(b"x-original-url")
    if original:
        try:
            netloc = urllib.parse.urlsplit(original.decode("latin-1")).netloc
        except ValueError:
            return None
        return netloc.lower() or None
    host = headers.get(b"host") or headers.get(b":authority")
    return None if host is None else host.decode("latin-1").lower()


def require_keys(credentials: Credentials, policy: Policy) -> None:
    """Refuses (ConfigError) a Secret without ``session-keys`` when routes accept sessions: loading it would
    leave them unable to open any session or issue one, so the last good Secret stays (or none: not ready)."""
    if credentials.session_keys is None and policy.session_routes:
        raise ConfigError(
            f"holds no {SESSION_KEYS_FILE!r}, and routes {', '.join(sorted(policy.session_routes))} accept "
            "sessions ('NAME KEY' lines, KEY from `openssl rand -base64 32`)",
            credentials.source,
        )


def cookie_values(header: bytes | None, name: bytes) -> tuple[str, ...]:
    """Every value of cookie ``name`` in a Cookie header (RFC 6265 §5.4: ``a=1; b=2``)."""
    if not header or name not in header:
        return ()
    values = []
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            values.append(value.strip().strip(b'"').decode("latin-1"))
    return tuple(values)


def read_browser(headers: dict[bytes, bytes], cookie_name: bytes) -> BrowserFacts:
    """The browser facts of a request (lower-case header names, as every wire hands them to the core)."""
    accept = headers.get(b"accept")
    return BrowserFacts(
        cookies=cookie_values(headers.get(b"cookie"), cookie_name),
        fetch_site=_latin1(headers.get(b"sec-fetch-site")),
        fetch_mode=_latin1(headers.get(b"sec-fetch-mode")),
        origin=_latin1(headers.get(b"origin")),
        host=_original_host(headers),
        accepts_html=accept is not None and b"text/html" in accept,
    )


def cross_site(method: str | None, browser: BrowserFacts) -> bool:
    """Whether a request that would pass on its session cookie alone must be refused as cross-site request
    forgery: an unsafe method (or one the proxy did not tell) that the browser marks as sent from another site
    (Sec-Fetch-Site, which pages cannot forge), or, from a browser that sends no Sec-Fetch-Site, with an Origin
    other than the host it went to. Without either header nothing says the request is cross-site: SameSite=Lax
    keeps the cookie off cross-site POSTs in those browsers anyway."""
    if method in SAFE_METHODS:
        return False
    if browser.fetch_site is not None:
        return browser.fetch_site not in ("same-origin", "none")
    if browser.origin is None:
        return False
    if browser.origin == "null" or browser.host is None:
        return True
    try:
        origin_host = urllib.parse.urlsplit(browser.origin).netloc.lower()
    except ValueError:
        return True
    return origin_host != browser.host


def sign_in_location(settings: SessionSettings, headers: dict[bytes, bytes], target: bytes | None) -> str:
    """Where a door that passes redirects sends a browser's page load without a session: the sign-in page,
    with ``rd`` the page it asked for (its raw path and query; a whole URL when the sign-in page is on another
    host, which must then list this one in ``session.allowed_redirect_hosts``)."""
    if target is None or not target.startswith(b"/"):
        return settings.sign_in_url
    rd = target.decode("latin-1")
    if not settings.sign_in_url.startswith("/"):
        host = _original_host(headers)
        proto = (headers.get(b"x-forwarded-proto") or b"https").decode("latin-1").split(",", 1)[0].strip()
        if host is not None and proto in ("http", "https"):
            rd = f"{proto}://{host}{rd}"
    return f"{settings.sign_in_url}?rd={urllib.parse.quote(rd, safe='')}"


def hash_tag(user: User) -> str:
    """A digest of the user's stored hash, sealed into their sessions: a new password ends them."""
    return hashlib.sha256(b"authgate session user\0" + user.hash.encode()).hexdigest()[:24]


class Session(NamedTuple):
    user: str
    issued: int  # Unix seconds
    expires: int  # Unix seconds


def issue(credentials: Credentials, user: User, now: float, settings: SessionSettings) -> tuple[str, Session]:
    """A new session for ``user``, sealed under the snapshot's first session key, and what it holds. The
    caller has verified the password; a snapshot without session keys cannot get here (app.reload)."""
    keys = credentials.session_keys
    assert keys is not None, "a policy with session routes is never loaded without session-keys"
    issued = int(now)
    session = Session(user.name, issued, issued + settings.lifetime_seconds)
    payload = {"u": user.name, "h": hash_tag(user), "i": session.issued, "e": session.expires}
    return keys.seal(json.dumps(payload, separators=(",", ":")).encode()), session


def load(
    values: tuple[str, ...], credentials: Credentials, settings: SessionSettings, now: float
) -> tuple[Session | None, str]:
    """The session a request's cookie values hold, checked against the snapshot now, and ``allowed``; or None
    and why not (the decision's reason): ``session_malformed``, ``session_unknown_key`` (sealed under a key no
    longer listed), ``session_invalid`` (forged or altered), ``session_expired``, ``session_user_gone``,
    ``session_password_changed``, ``no_session_keys``."""
    keys = credentials.session_keys
    if keys is None:
        return None, "no_session_keys"
    if len(values) != 1:
        # Two cookies of our name: one was planted (a __Host- cookie cannot be; others can, from a sibling host).
        return None, "session_malformed"
    opened = keys.open(values[0])
    if isinstance(opened, str):
        return None, f"session_{opened}"
    try:
        payload = json.loads(opened)
        name, tag, issued, expires = payload["u"], payload["h"], payload["i"], payload["e"]
    except (ValueError, TypeError, KeyError):
        return None, "session_malformed"
    if not (isinstance(name, str) and isinstance(tag, str) and type(issued) is int and type(expires) is int):
        return None, "session_malformed"
    # The current lifetime bounds old sessions too: shortening it ends longer ones at once.
    if now >= min(expires, issued + settings.lifetime_seconds) or issued > now + MAX_SKEW_SECONDS:
        return None, "session_expired"
    user = credentials.users.get(name)
    if user is None:
        return None, "session_user_gone"
    if not hmac.compare_digest(tag.encode(), hash_tag(user).encode()):
        return None, "session_password_changed"
    return Session(name, issued, expires), "allowed"
