"""What a route trusts in a JWT bearer token: its ``jwt_issuers`` in the policy, parsed and checked here.

Each issuer names where its keys come from (a JWKS in the mounted Secret, a JWKS URL, an OpenID discovery URL
or the cluster's own ServiceAccount issuer), the audiences a token must carry, the signature algorithms it may
use (asymmetric only: ``none`` and the HMAC algorithms are refused here, so a public key can never be used as
an HMAC secret), the clock leeway, the claims it must carry and the claim that names the principal.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from app.credentials import JWKS_FILE_RE
from app.errors import ConfigError

# Asymmetric JWS algorithms only (RFC 7518 and RFC 8037): the key type each needs is checked per key
# (app.jwt_keys). No "none", no HS256/384/512.
ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
MAX_LEEWAY_SECONDS = 300
# A Secret key holding a JWKS: app.credentials reads these beside tokens and htpasswd.
JWKS_SECRET_KEY_RE = JWKS_FILE_RE
CLAIM_NAME_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
# Where a pod reaches its own API server, and the credentials it does so with (app.jwt_keys).
KUBERNETES_API = "https://kubernetes.default.svc"
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

KeySource = Literal["secret", "jwks_url", "discovery_url", "kubernetes"]


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """A claim a token must carry: a string equal to one of ``values``, where ``*`` in a value matches any
    run of characters (``repo:org/app:*``)."""

    name: str
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and any(p.fullmatch(value) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class JwtIssuer:
    issuer: str | None  # the exact ``iss``; None only for kind "kubernetes" (learnt from discovery)
    source: KeySource
    location: str  # the Secret key, the JWKS or discovery URL, or the API server's base URL
    audiences: frozenset[str]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: int = 30
    principal_claim: str = "sub"
    principal_prefix: str = ""
    claims: tuple[ClaimRule, ...] = ()
    refresh_seconds: float = 300.0  # a fetched key set is fetched again when this old
    min_refresh_seconds: float = 30.0  # never fetched more often than this, whatever the requests say
    timeout_seconds: float = 2.0
    ca_file: str | None = None  # verify the key server against this bundle (default: the system's)
    bearer_token_file: str | None = None  # sent as Authorization: Bearer (kind kubernetes: the pod's token)
    token_review: bool = False  # kind kubernetes: each token also passes a TokenReview, again every minute

    @property
    def remote_key(self) -> tuple[str, str, str | None, str | None]:
        """Issuers that fetch the same keys the same way share one key set (app.jwt_keys)."""
        return (self.source, self.location, self.ca_file, self.bearer_token_file)


def _glob(value: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


def _https_or_loopback(url: Any, where: str, source: str) -> str:
    """Keys are fetched over https; plain http only from this host (a test's provider, a local proxy)."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: an https:// URL", source)
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{where}: not a URL: {url!r}", source) from None
    if not host or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{where}: an https:// URL with a host, got {url!r}", source)
    if parts.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(f"{where}: keys are fetched over https (http only from localhost), got {url!r}", source)
    return url


def _strings(raw: Any, where: str, source: str) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where}: a non-empty string or list of non-empty strings", source)
    return tuple(items)


def _seconds(data: Mapping[str, Any], key: str, default: float, where: str, source: str, maximum: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise ConfigError(f"{where}.{key}: a number of seconds from 0 to {maximum}, got {value!r}", source)
    return float(value)


ISSUER_KEYS = {
    "issuer",
    "jwks_secret_key",
    "jwks_url",
    "discovery_url",
    "kubernetes",
    "audiences",
    "algorithms",
    "leeway_seconds",
    "principal_claim",
    "principal_prefix",
    "claims",
    "refresh_seconds",
    "min_refresh_seconds",
    "timeout_seconds",
    "ca_file",
    "bearer_token_file",
    "token_review",
}


def parse_issuer(raw: Any, where: str, source: str) -> JwtIssuer:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}", source)
    unknown = sorted(set(raw) - ISSUER_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(ISSUER_KEYS))})",
            source,
        )
    kinds = [
        k for k in ("jwks_secret_key", "jwks_url", "discovery_url", "kubernetes") if raw.get(k) not in (None, False)
    ]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}: name exactly one key source: jwks_secret_key, jwks_url, discovery_url or kubernetes: true",
            source,
        )
    kind: KeySource
    ca_file = raw.get("ca_file")
    token_file = raw.get("bearer_token_file")
    if kinds[0] == "jwks_secret_key":
        kind, location = "secret", raw["jwks_secret_key"]
        if not isinstance(location, str) or not JWKS_SECRET_KEY_RE.fullmatch(location):
            raise ConfigError(
                f"{where}.jwks_secret_key: a Secret key named jwks*.json (such as jwks-ci.json), got {location!r}",
                source,
            )
    elif kinds[0] == "kubernetes":
        value = raw["kubernetes"]
        if value is True:
            location = KUBERNETES_API
        elif isinstance(value, Mapping) and set(value) <= {"api_server"}:
            location = _https_or_loopback(
                value.get("api_server", KUBERNETES_API), f"{where}.kubernetes.api_server", source
            )
        else:
            raise ConfigError(f"{where}.kubernetes: true, or a mapping with api_server", source)
        kind = "kubernetes"
        ca_file = ca_file if ca_file is not None else f"{SERVICEACCOUNT_DIR}/ca.crt"
        token_file = token_file if token_file is not None else f"{SERVICEACCOUNT_DIR}/token"
    else:
        kind = "jwks_url" if kinds[0] == "jwks_url" else "discovery_url"
        location = _https_or_loopback(raw[kinds[0]], f"{where}.{kinds[0]}", source)
    for key, value in (("ca_file", ca_file), ("bearer_token_file", token_file)):
        if value is not None and (kind == "secret" or not isinstance(value, str) or not value):
            raise ConfigError(f"{where}.{key}: a file path, and only for keys fetched over the network", source)

    token_review = raw.get("token_review", False)
    if not isinstance(token_review, bool) or (token_review and kind != "kubernetes"):
        raise ConfigError(f"{where}.token_review: true or false, and only with kubernetes", source)

    issuer = raw.get("issuer")
    if issuer is None and kind != "kubernetes":
        raise ConfigError(f"{where}.issuer: required (the exact iss of the tokens)", source)
    if issuer is not None and (not isinstance(issuer, str) or not issuer):
        raise ConfigError(f"{where}.issuer: a non-empty string, got {issuer!r}", source)

    audiences_raw = raw.get("audiences", ["authgate"] if kind == "kubernetes" else None)
    if audiences_raw is None:
        raise ConfigError(f"{where}.audiences: required (a token must name this service in aud)", source)
    audiences = frozenset(_strings(audiences_raw, f"{where}.audiences", source))

    algorithms = _strings(raw.get("algorithms", list(DEFAULT_ALGORITHMS)), f"{where}.algorithms", source)
    for alg in algorithms:
        if alg not in ALGORITHMS:
            raise ConfigError(
                f"{where}.algorithms: {alg!r} is not allowed (asymmetric only: {', '.join(ALGORITHMS)}; "
                "never none or HMAC)",
                source,
            )

    leeway = raw.get("leeway_seconds", 30)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ConfigError(f"{where}.leeway_seconds: an integer from 0 to {MAX_LEEWAY_SECONDS}, got {leeway!r}", source)

    principal_claim = raw.get("principal_claim", "sub")
    if not isinstance(principal_claim, str) or not CLAIM_NAME_RE.fullmatch(principal_claim):
        raise ConfigError(f"{where}.principal_claim: a claim name, got {principal_claim!r}", source)
    prefix = raw.get("principal_prefix", "")
    if not isinstance(prefix, str) or len(prefix) > 64 or not prefix.isprintable():
        raise ConfigError(f"{where}.principal_prefix: up to 64 printable characters, got {prefix!r}", source)

    claims_raw = raw.get("claims", {})
    if not isinstance(claims_raw, Mapping):
        raise ConfigError(f"{where}.claims: a mapping of claim name to a value or list of values", source)
    claims = []
    for name, values in claims_raw.items():
        if not isinstance(name, str) or not CLAIM_NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}.claims: {name!r} is not a claim name", source)
        claims.append(ClaimRule(name, tuple(_glob(v) for v in _strings(values, f"{where}.claims.{name}", source))))

    refresh = _seconds(raw, "refresh_seconds", 300, where, source, 86400)
    min_refresh = _seconds(raw, "min_refresh_seconds", 30, where, source, 3600)
    if min_refresh < 1:
        raise ConfigError(f"{where}.min_refresh_seconds: at least 1 (it bounds fetches an attacker can cause)", source)
    timeout = _seconds(raw, "timeout_seconds", 2, where, source, 10)
    if timeout <= 0:
        raise ConfigError(f"{where}.timeout_seconds: more than 0", source)
    return JwtIssuer(
        issuer=issuer,
        source=kind,
        location=location,
        audiences=audiences,
        algorithms=algorithms,
        leeway_seconds=leeway,
        principal_claim=principal_claim,
        principal_prefix=prefix,
        claims=tuple(claims),
        refresh_seconds=refresh,
        min_refresh_seconds=min_refresh,
        timeout_seconds=timeout,
        ca_file=ca_file,
        bearer_token_file=token_file,
        token_review=token_review,
    )


def parse_jwt_issuers(raw: Any, where: str, source: str) -> tuple[JwtIssuer, ...]:
    """A route's ``jwt_issuers``: absent or empty means the route takes no JWTs (and pays nothing for them)."""
    where = f"{where}.jwt_issuers"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: a list of issuers", source)
    issuers = tuple(parse_issuer(item, f"{where}[{i}]", source) for i, item in enumerate(raw))
    named = [i.issuer for i in issuers if i.issuer is not None]
    if len(named) != len(set(named)):
        raise ConfigError(f"{where}: an issuer is listed twice", source)
    return issuers
