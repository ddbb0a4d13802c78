"""OpenID Connect sign-in, the part that talks to the provider: its discovery document, the authorization
request, the code exchange and the ID token's checks (OpenID Connect Core 1.0 §3.1; PKCE, RFC 7636).

What the provider publishes is fetched when first needed and kept: the discovery document (the endpoints) and
the signing keys, through the JWT bearer tokens' own key fetching (app.jwt_keys: bounded in size and time,
never following a redirect, fetched again when a token names an unknown ``kid`` but never more often than
every few seconds, the last good set kept). Nothing here runs on the event loop: the browser wire calls the
blocking functions in a worker thread.

The ID token is verified with PyJWT against a key bound to one allowed algorithm (asymmetric only: ``none``
and HMAC never), then its claims one by one (``iss`` exact, ``aud`` holding the client id and ``azp`` naming
it when there are several, ``exp``, ``iat``, ``nonce`` compared in constant time), then what the policy
asks of them (the principal claim, ``email_verified``, the groups). Failures are results with a fixed
reason, never exceptions, and never carry a code or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.jwt_bearer import PRINCIPAL_RE, signed_claims
from app.jwt_keys import RemoteKeySet, http_fetch
from app.oidc_policy import MAX_SESSION_GROUPS, OidcSettings

log = logging.getLogger("authgate.oidc")

MAX_RESPONSE_BYTES = 256 * 1024
MAX_GROUP_CHARS = 128
DISCOVERY_RETRY_SECONDS = 5.0  # an unreachable provider is asked again at most this often


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2, S256: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_secret() -> str:
    """A state, nonce or PKCE verifier: 256 random bits, 43 URL-safe characters (RFC 7636's 43-128)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the provider's discovery document says (the parts authgate uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    client_secret_post: bool = False  # the token endpoint takes only client_secret_post, not _basic


class DiscoveryError(Exception):
    """A discovery document that cannot be used."""


def _endpoint(doc: Mapping[str, Any], name: str, base_https: bool, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DiscoveryError(f"no {name}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or (base_https and parts.scheme != "https"):
        raise DiscoveryError(f"{name} is not an https URL")
    return value


def parse_discovery(data: bytes, settings: OidcSettings) -> ProviderMetadata:
    """The discovery document's endpoints; its ``issuer`` must be exactly the configured one (§4.3)."""
    try:
        doc = json.loads(data[:MAX_RESPONSE_BYTES])
    except (UnicodeDecodeError, ValueError):
        raise DiscoveryError("not JSON") from None
    if not isinstance(doc, dict):
        raise DiscoveryError("not an OpenID discovery document")
    if doc.get("issuer") != settings.issuer:
        raise DiscoveryError(f"issuer {doc.get('issuer')!r} is not the configured {settings.issuer!r}")
    https = settings.issuer.startswith("https:")
    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise DiscoveryError("the provider does not support PKCE S256")
    auth_methods = doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    post_only = (
        isinstance(auth_methods, list)
        and "client_secret_basic" not in auth_methods
        and "client_secret_post" in auth_methods
    )
    return ProviderMetadata(
        issuer=settings.issuer,
        authorization_endpoint=_endpoint(doc, "authorization_endpoint", https) or "",
        token_endpoint=_endpoint(doc, "token_endpoint", https) or "",
        jwks_uri=_endpoint(doc, "jwks_uri", https) or "",
        end_session_endpoint=_endpoint(doc, "end_session_endpoint", https, required=False),
        client_secret_post=post_only,
    )


@dataclass(frozen=True, slots=True)
class Person:
    """Who an ID token says signed in, as the policy reads it."""

    principal: str
    groups: tuple[str, ...]
    email: str | None  # only an address the provider verified (email_verified: true)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a fixed word (a metric label): id_token_signature, id_token_nonce...


class _Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body


Post = Callable[[str, dict[str, str], dict[str, str], OidcSettings], _Response]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_post(url: str, form: dict[str, str], headers: dict[str, str], settings: OidcSettings) -> _Response:
    """POSTs a form, bounded in time and size, never following a redirect; an HTTP error is a response."""
    context = ssl.create_default_context(cafile=settings.ca_file) if url.startswith("https:") else None
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - scheme checked
    request.add_unredirected_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_unredirected_header("Accept", "application/json")
    for name, value in headers.items():
        request.add_unredirected_header(name, value)
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=settings.timeout_seconds) as response:
            return _Response(response.status, response.read(MAX_RESPONSE_BYTES + 1))
    except urllib.error.HTTPError as exc:
        with exc:
            return _Response(exc.code, exc.read(MAX_RESPONSE_BYTES + 1))


class OidcClient:
    """One provider for the process's life: its metadata and keys, fetched when first needed and kept."""

    def __init__(
        self,
        settings: OidcSettings,
        fetch: Callable[[str, Any], bytes] = http_fetch,
        post: Post = http_post,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.fetch = fetch
        self.post = post
        self.clock = clock
        self.metadata: ProviderMetadata | None = None
        self.keys: RemoteKeySet | None = None
        self._attempted: float | None = None
        self._lock = threading.Lock()

    # -- discovery (blocking) -----------------------------------------------------------------------------

    def discover(self) -> ProviderMetadata | None:
        """The provider's metadata and keys, fetched on first need (at most every DISCOVERY_RETRY_SECONDS while
        it cannot be reached); None while they cannot be had. Blocking."""
        if self.metadata is not None and self.keys is not None and self.keys.keys is not None:
            return self.metadata
        with self._lock:
            now = self.clock()
            if self.metadata is None or self.keys is None:
                if self._attempted is not None and now - self._attempted < DISCOVERY_RETRY_SECONDS:
                    return None
                self._attempted = now
                try:
                    source = self.settings.key_source(self.settings.discovery_url)
                    metadata = parse_discovery(self.fetch(self.settings.discovery_url, source), self.settings)
                except Exception as exc:  # any failure: not now
                    log.warning(
                        "cannot read the OpenID provider's discovery document",
                        extra={
                            "event": "oidc_discovery",
                            "result": "error",
                            "source": self.settings.discovery_url,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                        },
                    )
                    return None
                self.metadata = metadata
                self.keys = RemoteKeySet(self.settings.key_source(metadata.jwks_uri), self.fetch, self.clock)
                log.info(
                    "OpenID provider discovered",
                    extra={"event": "oidc_discovery", "result": "success", "source": self.settings.discovery_url},
                )
            self.keys.refresh(None)
            return self.metadata if self.keys.keys is not None else None

    @property
    def ready(self) -> bool:
        return self.metadata is not None and self.keys is not None and self.keys.keys is not None

    # -- the authorization request ------------------------------------------------------------------------

    def authorization_url(
        self, metadata: ProviderMetadata, redirect_uri: str, state: str, nonce: str, verifier: str
    ) -> str:
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            },
            quote_via=urllib.parse.quote,
        )
        separator = "&" if urllib.parse.urlsplit(metadata.authorization_endpoint).query else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where sign-out sends the browser when the provider lists an end-session endpoint (RP-Initiated
        Logout 1.0: ``client_id`` and ``post_logout_redirect_uri``), else None."""
        metadata = self.metadata
        if not self.settings.end_session or metadata is None or metadata.end_session_endpoint is None:
            return None
        query = urllib.parse.urlencode(
            {"client_id": self.settings.client_id, "post_logout_redirect_uri": post_logout_redirect_uri},
            quote_via=urllib.parse.quote,
        )
        separator = "&" if urllib.parse.urlsplit(metadata.end_session_endpoint).query else "?"
        return f"{metadata.end_session_endpoint}{separator}{query}"

    # -- the code exchange and the ID token (blocking) ----------------------------------------------------

    def exchange(
        self,
        code: str,
        redirect_uri: str,
        verifier: str,
        nonce: str,
        client_secret: str,
        now: float,
        groups: frozenset[str],
    ) -> Person | Refusal:
        """Trades the code for tokens at the token endpoint and checks the ID token. Blocking."""
        metadata = self.metadata
        if metadata is None:
            return Refusal("provider_unavailable")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers: dict[str, str] = {}
        client_id = self.settings.client_id
        if metadata.client_secret_post:
            form.update(client_id=client_id, client_secret=client_secret)
        else:  # RFC 6749 §2.3.1: both form-encoded, then Basic
            user = urllib.parse.quote(client_id, safe="")
            password = urllib.parse.quote(client_secret, safe="")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        try:
            response = self.post(metadata.token_endpoint, form, headers, self.settings)
        except Exception as exc:
            log.warning(
                "the OpenID provider's token endpoint cannot be reached",
                extra={"event": "oidc_token", "result": "error", "error": type(exc).__name__},
            )
            return Refusal("provider_unreachable")
        if len(response.body) > MAX_RESPONSE_BYTES:
            return Refusal("provider_error")
        try:
            doc = json.loads(response.body)
        except (UnicodeDecodeError, ValueError):
            doc = None
        if response.status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            # invalid_grant: the code was used already (a replay), expired, or not for this verifier.
            return Refusal("code_refused" if error == "invalid_grant" else "provider_error")
        id_token = doc.get("id_token")
        if not isinstance(id_token, str):
            return Refusal("id_token_missing")
        return self.verify_id_token(id_token, nonce, now, groups)

    def verify_id_token(self, token: str, nonce: str, now: float, groups: frozenset[str]) -> Person | Refusal:
        """The ID token's signature and claims (OpenID Connect Core §3.1.3.7), then the policy's reading of them."""
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Refusal("id_token_malformed")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in settings.algorithms:
            return Refusal("id_token_algorithm")
        if kid is not None and not isinstance(kid, str):
            return Refusal("id_token_malformed")
        keys = self.keys
        if keys is None:
            return Refusal("provider_unavailable")
        if keys.wants_fetch(kid):
            keys.refresh(kid)  # a new signing key: fetched again, at a bounded rate
        if keys.keys is None:
            return Refusal("provider_unavailable")
        candidates = keys.keys.candidates(kid, alg)
        if not candidates:
            return Refusal("id_token_unknown_key")
        claims = signed_claims(token, candidates, alg)
        if claims is None:
            return Refusal("id_token_signature")
        return check_id_token_claims(claims, settings, nonce, now, groups)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1e11 < value < 1e11:
        return None
    return float(value)


def check_id_token_claims(
    claims: Mapping[str, Any], settings: OidcSettings, nonce: str, now: float, groups: frozenset[str]
) -> Person | Refusal:
    """An ID token's claims, already verified as signed by the provider."""
    if claims.get("iss") != settings.issuer:
        return Refusal("id_token_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.client_id not in audiences:
        return Refusal("id_token_audience")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
        return Refusal("id_token_audience")
    exp, iat = _number(claims, "exp"), _number(claims, "iat")
    if exp is None or iat is None:
        return Refusal("id_token_malformed")
    leeway = settings.leeway_seconds
    if now >= exp + leeway:
        return Refusal("id_token_expired")
    if now < iat - leeway:
        return Refusal("id_token_not_yet_valid")
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        return Refusal("id_token_nonce")
    return read_person(claims, settings, groups)


def read_person(claims: Mapping[str, Any], settings: OidcSettings, groups: frozenset[str]) -> Person | Refusal:
    """The principal, verified e-mail and admitted groups an ID token's claims give, as the policy reads them."""
    email = claims.get("email")
    verified = claims.get("email_verified") is True
    if settings.require_email_verified and not verified:
        return Refusal("email_unverified")
    raw = claims.get(settings.principal_claim)
    principal = settings.principal_prefix + raw if isinstance(raw, str) else None
    if principal is None or not PRINCIPAL_RE.fullmatch(principal):
        return Refusal("no_principal")
    if settings.principal_claim == "email" and isinstance(raw, str):
        principal = settings.principal_prefix + raw.lower()
    named: list[str] = []
    listed = claims.get(settings.groups_claim) if settings.groups_claim is not None else None
    if isinstance(listed, list):
        for group in listed:
            if isinstance(group, str) and len(group) <= MAX_GROUP_CHARS and group in groups and group not in named:
                named.append(group)
    kept_email = email.lower() if verified and isinstance(email, str) and "@" in email and len(email) <= 254 else None
    return Person(principal, tuple(sorted(named)[:MAX_SESSION_GROUPS]), kept_email)
