"""OpenID Connect sign-in for people: the policy's ``sign_in.oidc`` block, parsed and checked here.

It names one provider (``issuer``, found by its discovery document), the client authgate is registered as
there (``client_id``; the secret is the Secret's ``oidc-client-secret`` file, read by app.credentials with the
other files so it rotates with them), what to ask for (``scopes``), how to read the ID token (the claim that
names the principal, whether ``email_verified`` must be true, the claim that lists groups, the signature
algorithms allowed: asymmetric only) and where the provider sends the browser back (``redirect_url``, else
``<scheme>://<original host><prefix>oidc/callback``). Unknown keys are errors.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.credentials import OIDC_FILE_RE
from app.errors import ConfigError
from app.jwt_policy import ALGORITHMS, CLAIM_NAME_RE, DEFAULT_ALGORITHMS, MAX_LEEWAY_SECONDS, JwtIssuer
from app.jwt_policy import _https_or_loopback as https_or_loopback

# The Secret key holding the client secret (app.credentials reads keys of this form beside tokens and htpasswd).
CLIENT_SECRET_KEY_RE = OIDC_FILE_RE
DEFAULT_CLIENT_SECRET_KEY = "oidc-client-secret"  # noqa: S105 - a Secret key name, not a secret
SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 scope-token
CLIENT_ID_RE = re.compile(r"[\x20-\x7e]{1,255}")
DISPLAY_NAME_RE = re.compile(r'[^"\\<>&\x00-\x1f\x7f]{1,64}')
# Groups kept in a session: only the ones routes name (``group:<name>``), at most this many.
MAX_SESSION_GROUPS = 64
OIDC_KEYS = {
    "issuer",
    "discovery_url",
    "client_id",
    "client_secret_key",
    "scopes",
    "principal_claim",
    "principal_prefix",
    "require_email_verified",
    "groups_claim",
    "algorithms",
    "leeway_seconds",
    "redirect_url",
    "display_name",
    "end_session",
    "timeout_seconds",
    "ca_file",
}


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str  # the exact ``iss`` of its ID tokens, and where its discovery document is
    client_id: str
    discovery_url: str
    client_secret_key: str = DEFAULT_CLIENT_SECRET_KEY
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    principal_claim: str = "email"
    principal_prefix: str = ""
    require_email_verified: bool = True
    groups_claim: str | None = "groups"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: int = 30
    redirect_url: str | None = None  # None: built from the host the browser used
    display_name: str = ""
    end_session: bool = True  # sign-out also sends the browser to the provider's end_session_endpoint
    timeout_seconds: float = 5.0
    ca_file: str | None = None

    @property
    def config_tag(self) -> bytes:
        """What an OIDC session is tied to: another issuer or client ends every session of the old one."""
        return f"oidc\0{self.issuer}\0{self.client_id}".encode()

    def key_source(self, jwks_uri: str) -> JwtIssuer:
        """The JWT issuer whose keys (app.jwt_keys, fetched from the discovery's ``jwks_uri``) verify ID tokens."""
        return JwtIssuer(
            issuer=self.issuer,
            source="jwks_url",
            location=jwks_uri,
            audiences=frozenset({self.client_id}),
            algorithms=self.algorithms,
            leeway_seconds=self.leeway_seconds,
            principal_claim=self.principal_claim,
            min_refresh_seconds=5.0,
            timeout_seconds=self.timeout_seconds,
            ca_file=self.ca_file,
        )


def _string(data: Mapping[str, Any], key: str, where: str, source: str, pattern: re.Pattern[str]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"{where}.{key}: got {value!r}, expected {pattern.pattern}", source)
    return value


def parse_oidc(raw: Any, prefix: str, source: str) -> OidcSettings | None:
    """``sign_in.oidc``: None when absent. ``prefix`` is the sign-in pages' (``redirect_url`` must end there)."""
    where = "sign_in.oidc"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}", source)
    unknown = sorted(set(raw) - OIDC_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(OIDC_KEYS))})", source
        )
    issuer = raw.get("issuer")
    if issuer is None:
        raise ConfigError(f"{where}.issuer: required (the provider's issuer URL, the exact iss of its tokens)", source)
    issuer = https_or_loopback(issuer, f"{where}.issuer", source)
    discovery = raw.get("discovery_url", issuer.rstrip("/") + "/.well-known/openid-configuration")
    discovery = https_or_loopback(discovery, f"{where}.discovery_url", source)
    client_id = raw.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id):
        raise ConfigError(f"{where}.client_id: required, 1-255 printable characters, got {client_id!r}", source)
    secret_key = raw.get("client_secret_key", DEFAULT_CLIENT_SECRET_KEY)
    if not isinstance(secret_key, str) or not CLIENT_SECRET_KEY_RE.fullmatch(secret_key):
        raise ConfigError(
            f"{where}.client_secret_key: a Secret key named oidc* (such as oidc-client-secret), got {secret_key!r}",
            source,
        )

    scopes_raw = raw.get("scopes", "openid email profile")
    scopes = tuple(scopes_raw.split()) if isinstance(scopes_raw, str) else scopes_raw
    if (
        not isinstance(scopes, list | tuple)
        or not all(isinstance(s, str) and SCOPE_RE.fullmatch(s) for s in scopes)
        or "openid" not in scopes
        or len(set(scopes)) != len(scopes)
    ):
        raise ConfigError(f"{where}.scopes: a list of scopes that includes openid, got {scopes_raw!r}", source)

    principal_claim = raw.get("principal_claim", "email")
    if not isinstance(principal_claim, str) or not CLAIM_NAME_RE.fullmatch(principal_claim):
        raise ConfigError(
            f"{where}.principal_claim: a claim name (email, preferred_username, sub...), got {principal_claim!r}",
            source,
        )
    principal_prefix = raw.get("principal_prefix", "")
    if not isinstance(principal_prefix, str) or len(principal_prefix) > 64 or not principal_prefix.isprintable():
        raise ConfigError(f"{where}.principal_prefix: up to 64 printable characters, got {principal_prefix!r}", source)
    verified = raw.get("require_email_verified", principal_claim == "email")
    if not isinstance(verified, bool):
        raise ConfigError(f"{where}.require_email_verified: true or false, got {verified!r}", source)
    groups_claim = raw.get("groups_claim", "groups")
    if groups_claim is not None and (not isinstance(groups_claim, str) or not CLAIM_NAME_RE.fullmatch(groups_claim)):
        raise ConfigError(f"{where}.groups_claim: a claim name, or null for none, got {groups_claim!r}", source)

    algorithms_raw = raw.get("algorithms", list(DEFAULT_ALGORITHMS))
    if not isinstance(algorithms_raw, list) or not algorithms_raw:
        raise ConfigError(f"{where}.algorithms: a non-empty list of {', '.join(ALGORITHMS)}", source)
    for alg in algorithms_raw:
        if alg not in ALGORITHMS:
            raise ConfigError(
                f"{where}.algorithms: {alg!r} is not allowed (asymmetric only: {', '.join(ALGORITHMS)}; never none "
                "or HMAC)",
                source,
            )
    leeway = raw.get("leeway_seconds", 30)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ConfigError(f"{where}.leeway_seconds: an integer from 0 to {MAX_LEEWAY_SECONDS}, got {leeway!r}", source)

    redirect_url = raw.get("redirect_url")
    callback = f"{prefix}oidc/callback"
    if redirect_url is not None:
        redirect_url = https_or_loopback(redirect_url, f"{where}.redirect_url", source)
        parts = urllib.parse.urlsplit(redirect_url)
        if parts.path != callback or parts.query or parts.fragment:
            raise ConfigError(
                f"{where}.redirect_url: must be the callback https://<host>{callback} (no query), got {redirect_url!r}",
                source,
            )
    display = raw.get("display_name")
    if display is None:
        display = urllib.parse.urlsplit(issuer).hostname or "OpenID Connect"
    if not isinstance(display, str) or not DISPLAY_NAME_RE.fullmatch(display):
        raise ConfigError(f"{where}.display_name: 1-64 printable characters without < > & quotes", source)
    end_session = raw.get("end_session", True)
    if not isinstance(end_session, bool):
        raise ConfigError(f"{where}.end_session: true or false, got {end_session!r}", source)
    timeout = raw.get("timeout_seconds", 5)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 30:
        raise ConfigError(f"{where}.timeout_seconds: more than 0 and at most 30, got {timeout!r}", source)
    ca_file = raw.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not ca_file):
        raise ConfigError(f"{where}.ca_file: a file path", source)
    return OidcSettings(
        issuer=issuer,
        client_id=client_id,
        discovery_url=discovery,
        client_secret_key=secret_key,
        scopes=tuple(scopes),
        principal_claim=principal_claim,
        principal_prefix=principal_prefix,
        require_email_verified=verified,
        groups_claim=groups_claim,
        algorithms=tuple(algorithms_raw),
        leeway_seconds=leeway,
        redirect_url=redirect_url,
        display_name=display,
        end_session=end_session,
        timeout_seconds=float(timeout),
        ca_file=ca_file,
    )
