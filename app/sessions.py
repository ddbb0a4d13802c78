"""The ``session`` credential kind: a browser's sealed session cookie, issued by the sign-in form (app.browser).

Like oauth2-proxy's session loaders, this module only turns what a request carries into a session or the
reason there is none; app.decision puts the result into a Decision with the same throttle, metrics and
principal checks as tokens and passwords. Only routes that list ``session`` in their schemes have their
cookies read, and only when the request carries no Authorization header: a machine's token or password
always decides by itself, so tokens and Basic pay nothing for sessions.

A session holds the user's name, how they signed in (``form``), when it was issued, when it ends (absolute)
and when it ends unless used again (idle), and a keyed digest of the user's htpasswd line, all sealed
(app.session_keys). It is checked against the current snapshot on every request, so it ends when the user is
removed from htpasswd or their password changes, and survives any other reload. An allow past half the idle
timeout carries a refreshed cookie (sliding idle expiry), which doors that pass ``Set-Cookie`` on allows hand
to the browser; elsewhere the idle expiry still ends the session.
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
from app.session_keys import SESSION_KEYS_FILE, SessionKey, SessionKeys

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
    scheme: str = "https"  # the original request's scheme, as the proxy tells it (https when it does not)

    @property
    def own_origin(self) -> str | None:
        return None if self.host is None else f"{self.scheme}://{self.host}"

    def is_navigation(self, method: str | None) -> bool:
        """A top-level page load, which a sign-in redirect can answer (a fetch() from a page cannot use one)."""
        if method not in ("GET", "HEAD"):
            return False
        if self.fetch_mode is not None:
            return self.fetch_mode == "navigate"
        return self.accepts_html


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _original_scheme(headers: dict[bytes, bytes]) -> str:
    """The scheme the browser used: ingress-nginx's X-Original-URL, Traefik's X-Forwarded-Proto, Envoy's
    :scheme (gRPC) or X-Forwarded-Proto; https when none says."""
    original = headers.get(b"x-original-url")
    if original:
        scheme = original.split(b":", 1)[0].lower()
        if scheme in (b"http", b"https"):
            return scheme.decode()
    for name in (b"x-forwarded-proto", b":scheme"):
        value = headers.get(name)
        if value:
            scheme = value.split(b",", 1)[0].strip().lower()
            if scheme in (b"http", b"https"):
                return scheme.decode()
    return "https"


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
            "sessions (one key a line: authgate new-session-key)",
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
        scheme=_original_scheme(headers),
    )


def cross_site(method: str | None, browser: BrowserFacts) -> bool:
    """Whether a request that would pass on its session cookie alone must be refused as cross-site request
    forgery: an unsafe method (or one the proxy did not tell) without the browser's word that it comes from this
    site: ``Sec-Fetch-Site`` ``same-origin`` or ``same-site``, or an ``Origin`` equal to the original request's
    origin (scheme://host). Pages cannot forge either header; a request with neither is refused."""
    if method in SAFE_METHODS:
        return False
    if browser.fetch_site in ("same-origin", "same-site"):
        return False
    own = browser.own_origin
    return browser.origin is None or own is None or browser.origin.lower() != own


def sign_in_location(settings: SessionSettings, target: bytes | None, origin: str | None = None) -> str:
    """Where a door that passes redirects sends a browser's page load without a session: the sign-in page,
    with ``rd`` the page it asked for (its raw path and query, URL-encoded). With ``origin`` (the original
    ``scheme://host`` as the door itself tells it, app.doors.base.Door.origin) the URL is absolute on that
    host, which Traefik needs; without, relative. ``rd`` stays a path either way."""
    page = settings.sign_in_path if origin is None else origin + settings.sign_in_path
    if target is None or not target.startswith(b"/"):
        return page
    return f"{page}?rd={urllib.parse.quote(target.decode('latin-1'), safe='')}"


def set_cookie(settings: SessionSettings, value: str, max_age: int) -> str:
    """The session cookie's Set-Cookie value (``max_age`` 0 clears it)."""
    return f"{settings.cookie_name}={value}; Max-Age={max(0, max_age)}; Path=/; Secure; HttpOnly; SameSite=Lax"


def hash_tag(key: SessionKey, user: User) -> str:
    """A keyed digest of the user's htpasswd line, sealed into their sessions: a new password ends them."""
    line = f"{user.name}:{user.hash}".encode()
    return hmac.new(key.tag_key, line, hashlib.sha256).hexdigest()[:32]


class Session(NamedTuple):
    user: str
    via: str  # how they signed in: "form" or "oidc" (an OpenID provider, app.oidc_client)
    issued: int  # Unix seconds
    expires: int  # Unix seconds: the absolute end
    idle_expires: int  # Unix seconds: the end unless used again
    groups: tuple[str, ...] = ()  # "oidc": the provider's groups that some route admits (policy ``group:``)
    email: str | None = None  # "oidc": the e-mail address the provider verified (policy ``domain:``)

    @property
    def ends(self) -> int:
        return min(self.expires, self.idle_expires)


def provider_tag(key: SessionKey, settings: SessionSettings) -> str:
    """A keyed digest of the OpenID client (issuer and client id), sealed into its sessions: another provider or
    client ends them (there is no htpasswd line to tie them to)."""
    config = settings.oidc.config_tag if settings.oidc is not None else b"no oidc"
    return hmac.new(key.tag_key, config, hashlib.sha256).hexdigest()[:32]


def _seal(keys: SessionKeys, session: Session, user: User | SessionSettings) -> str:
    payload: dict[str, object] = {
        "u": session.user,
        "v": session.via,
        "i": session.issued,
        "e": session.expires,
        "x": session.idle_expires,
        "h": hash_tag(keys.sealing, user) if isinstance(user, User) else provider_tag(keys.sealing, user),
    }
    if session.via == "oidc":
        payload["g"] = list(session.groups)
        payload["m"] = session.email
    return keys.seal(json.dumps(payload, separators=(",", ":")).encode())


def issue(credentials: Credentials, user: User, now: float, settings: SessionSettings) -> tuple[str, Session]:
    """A new session for ``user``, sealed under the snapshot's first session key, and what it holds. The
    caller has verified the password; a snapshot without session keys cannot get here (app.reload)."""
    keys = credentials.session_keys
    assert keys is not None, "a policy with session routes is never loaded without session-keys"
    issued = int(now)
    expires = issued + settings.lifetime_seconds
    session = Session(user.name, "form", issued, expires, min(expires, issued + settings.idle_timeout_seconds))
    return _seal(keys, session, user), session


def issue_oidc(
    credentials: Credentials,
    principal: str,
    groups: tuple[str, ...],
    email: str | None,
    now: float,
    settings: SessionSettings,
) -> tuple[str, Session]:
    """A new session for a person an OpenID provider vouched for (app.oidc_client checked the ID token)."""
    keys = credentials.session_keys
    assert keys is not None, "a policy with session routes is never loaded without session-keys"
    issued = int(now)
    expires = issued + settings.lifetime_seconds
    idle = min(expires, issued + settings.idle_timeout_seconds)
    session = Session(principal, "oidc", issued, expires, idle, groups, email)
    return _seal(keys, session, settings), session


def _oidc_fields(payload: dict[str, object]) -> tuple[tuple[str, ...], str | None] | None:
    groups, email = payload.get("g", []), payload.get("m")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return None
    if email is not None and not isinstance(email, str):
        return None
    return tuple(groups), email


def load(
    values: tuple[str, ...], credentials: Credentials, settings: SessionSettings, now: float
) -> tuple[Session | None, str, str | None]:
    """The session a request's cookie values hold, checked against the snapshot now, ``allowed`` and, past half
    the idle timeout, the refreshed cookie value (its idle expiry renewed, never past the absolute one); or None
    and why not (the decision's reason): ``session_malformed``, ``session_unknown_key`` (sealed under a key no
    longer listed), ``session_invalid`` (forged or altered), ``session_expired``, ``session_idle``,
    ``session_user_gone``, ``session_password_changed``, ``session_provider_changed`` (an OpenID session whose
    issuer or client is no longer the policy's), ``no_session_keys``."""
    keys = credentials.session_keys
    if keys is None:
        return None, "no_session_keys", None
    if len(values) != 1:
        # Two cookies of our name: one was planted (a __Host- cookie cannot be; others can, from a sibling host).
        return None, "session_malformed", None
    opened = keys.open(values[0])
    if isinstance(opened, str):
        return None, f"session_{opened}", None
    payload_bytes, key = opened
    try:
        payload = json.loads(payload_bytes)
        fields = payload["u"], payload["v"], payload["i"], payload["e"], payload["x"], payload["h"]
    except (ValueError, TypeError, KeyError):
        return None, "session_malformed", None
    name, via, issued, expires, idle_expires, tag = fields
    if not (
        isinstance(name, str)
        and isinstance(via, str)
        and isinstance(tag, str)
        and all(type(value) is int for value in (issued, expires, idle_expires))
    ):
        return None, "session_malformed", None
    # The current lifetime bounds old sessions too: shortening it ends longer ones at once.
    if now >= min(expires, issued + settings.lifetime_seconds) or issued > now + MAX_SKEW_SECONDS:
        return None, "session_expired", None
    if now >= idle_expires:
        return None, "session_idle", None
    owner: User | SessionSettings
    if via == "oidc":
        # Tied to the provider, not to an htpasswd line: another issuer or client (or none) ends it.
        if settings.oidc is None or not hmac.compare_digest(tag.encode(), provider_tag(key, settings).encode()):
            return None, "session_provider_changed", None
        extra = _oidc_fields(payload)
        if extra is None:
            return None, "session_malformed", None
        session = Session(name, via, issued, expires, idle_expires, *extra)
        owner = settings
    else:
        user = credentials.users.get(name)
        if user is None:
            return None, "session_user_gone", None
        if not hmac.compare_digest(tag.encode(), hash_tag(key, user).encode()):
            return None, "session_password_changed", None
        session = Session(name, via, issued, expires, idle_expires)
        owner = user
    refreshed = None
    if idle_expires - now < settings.idle_timeout_seconds / 2 and idle_expires < expires:
        session = session._replace(idle_expires=min(expires, int(now) + settings.idle_timeout_seconds))
        refreshed = _seal(keys, session, owner)
    return session, "allowed", refreshed
