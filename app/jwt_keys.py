"""The keys JWTs are verified with: JSON Web Key Sets from the mounted Secret or fetched from an issuer.

A Secret's JWKS rotates with the Secret (parsed with everything else into the snapshot). A fetched one lives
across snapshots in a :class:`RemoteKeySet`: fetched when first needed, again when older than the issuer's
``refresh_seconds`` or when a token names a ``kid`` it lacks, but never more often than ``min_refresh_seconds``,
so a stream of made-up ``kid`` values causes one fetch per interval, not one per request. A failed fetch keeps
the last good set (never fail open: a token its keys do not verify is refused either way).

Fetching is blocking I/O with a short timeout: the decision asks for it only with ``slow_ok`` (in a worker
thread, app.decider), never on the event loop.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from app.errors import ConfigError
from app.jwt_policy import JwtIssuer

log = logging.getLogger("authgate.jwt")

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 64
MIN_RSA_BITS = 2048
# Which algorithms a key may verify, by its type (and curve): a key is never used with another family.
_FAMILY = {
    ("RSA", None): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
    ("OKP", "Ed448"): ("EdDSA",),
}


class JwksError(Exception):
    """A JWKS that cannot be used at all (not JSON, no usable key)."""


@dataclass(frozen=True)
class KeySet:
    """Verification keys by ``kid`` (``""`` for keys without one). Only signature keys of an asymmetric type
    are kept: an ``oct`` (HMAC) key in a JWKS is ignored, so no token can be checked against a shared secret."""

    keys: Mapping[str, tuple[dict[str, Any], ...]]
    _prepared: dict[tuple[int, str], jwt.PyJWK] = field(default_factory=dict, compare=False, repr=False)

    def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys that may verify a token of this ``kid`` and ``alg``, bound to that algorithm."""
        if kid is not None:
            raw = self.keys.get(kid, ())
        else:  # no kid: only a set that leaves no choice (one key) is tried
            every = [k for group in self.keys.values() for k in group]
            raw = tuple(every) if len(every) == 1 else ()
        found = []
        for jwk in raw:
            if alg not in _algorithms_of(jwk):
                continue
            cache_key = (id(jwk), alg)
            prepared = self._prepared.get(cache_key)
            if prepared is None:
                try:
                    prepared = jwt.PyJWK(jwk, algorithm=alg)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                    continue
                self._prepared[cache_key] = prepared
            found.append(prepared)
        return found

    def has_kid(self, kid: str | None) -> bool:
        return kid in self.keys if kid is not None else bool(self.keys)


def _algorithms_of(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if not isinstance(kty, str) or not isinstance(crv, str | None):
        return ()
    family = _FAMILY.get((kty, None) if kty == "RSA" else (kty, crv), ())
    declared = jwk.get("alg")
    return tuple(a for a in family if declared is None or a == declared)


def parse_jwks(data: bytes, where: str) -> KeySet:
    """A JWKS document's usable keys. Raises JwksError when it is not a JWKS or holds no usable key."""
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"{where}: larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise JwksError(f"{where}: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f'{where}: not a JWKS (no "keys" list)')
    keys: dict[str, list[dict[str, Any]]] = {}
    for jwk in doc["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or not _algorithms_of(jwk):
            continue
        if "d" in jwk:
            raise JwksError(f"{where}: holds a private key; publish only the public keys")
        kid = jwk.get("kid", "")
        if not isinstance(kid, str):
            continue
        try:
            public = jwt.PyJWK(jwk, algorithm=_algorithms_of(jwk)[0]).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            continue
        keys.setdefault(kid, []).append(jwk)
    if not keys:
        raise JwksError(f"{where}: no usable signature key (RSA >= {MIN_RSA_BITS} bits, EC P-256/384/521, Ed25519)")
    return KeySet({kid: tuple(group) for kid, group in keys.items()})


def secret_key_sets(files: Mapping[str, bytes], needed: Iterable[str], source: str) -> dict[str, KeySet]:
    """The Secret's JWKS files that the policy names. A named one that is missing or unusable is an error,
    like a malformed tokens file: the reload keeps the last good snapshot."""
    sets = {}
    for key in sorted(set(needed)):
        data = files.get(key)
        if data is None:
            raise ConfigError(f"the policy's jwks_secret_key {key!r} is not in the Secret", source)
        try:
            sets[key] = parse_jwks(data, key)
        except JwksError as exc:
            raise ConfigError(str(exc), f"{source}/{key}") from None
    return sets


Fetch = Callable[[str, JwtIssuer], bytes]


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A key server that redirects is refused: a redirect could lead the fetch (and a bearer token) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_fetch(url: str, issuer: JwtIssuer) -> bytes:
    """GETs one document, bounded in time and size, never following a redirect; the issuer's CA bundle if any,
    and its bearer token file only to the origin it was configured for (not to a jwks_uri elsewhere)."""
    context = ssl.create_default_context(cafile=issuer.ca_file) if url.startswith("https:") else None
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
    if issuer.bearer_token_file is not None and _origin(url) == _origin(issuer.location):
        token = Path(issuer.bearer_token_file).read_text().strip()
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=issuer.timeout_seconds) as response:
        data: bytes = response.read(MAX_JWKS_BYTES + 1)
    return data


REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def http_token_review(issuer: JwtIssuer, token: str, subject: str) -> bool:
    """Whether the API server still vouches for a ServiceAccount token (a TokenReview): False on any failure,
    so an unreachable API server refuses, never allows. Blocking; the token goes only to the API server."""
    body = json.dumps(
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": sorted(issuer.audiences)},
        }
    ).encode()
    url = issuer.location.rstrip("/") + REVIEW_PATH
    context = ssl.create_default_context(cafile=issuer.ca_file) if url.startswith("https:") else None
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - scheme checked
    request.add_unredirected_header("Content-Type", "application/json")
    if issuer.bearer_token_file is not None:
        pod_token = Path(issuer.bearer_token_file).read_text().strip()
        request.add_unredirected_header("Authorization", f"Bearer {pod_token}")
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=issuer.timeout_seconds) as response:
            status = json.loads(response.read(MAX_JWKS_BYTES)).get("status", {})
    except Exception as exc:  # any failure refuses
        log.warning(
            "TokenReview failed; refusing",
            extra={"event": "token_review", "result": "error", "error": type(exc).__name__},
        )
        return False
    user = status.get("user") if isinstance(status, dict) else None
    return (
        isinstance(status, dict)
        and status.get("authenticated") is True
        and isinstance(user, dict)
        and user.get("username") == subject
    )


Review = Callable[[JwtIssuer, str, str], bool]


class RemoteKeySet:
    """One issuer's fetched keys, shared by every snapshot and every route that trusts the same source."""

    def __init__(
        self,
        issuer: JwtIssuer,
        fetch: Fetch = http_fetch,
        clock: Callable[[], float] = time.monotonic,
        review: Review = http_token_review,
    ):
        self.config = issuer
        self.fetch_document = fetch
        self.review = review
        self.clock = clock
        self.keys: KeySet | None = None
        self.issuer: str | None = issuer.issuer  # kind kubernetes without issuer: learnt from discovery
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    def wants_fetch(self, kid: str | None) -> bool:
        """Whether a fetch would help this token now and the rate bound allows one."""
        now = self.clock()
        if self.attempted_at is not None and now - self.attempted_at < self.config.min_refresh_seconds:
            return False
        if self.keys is None or not self.keys.has_kid(kid):
            return True
        return self.fetched_at is None or now - self.fetched_at >= self.config.refresh_seconds

    def refresh(self, kid: str | None) -> None:
        """Fetches the keys if still wanted (one thread at a time; the others then find them). Blocking."""
        with self._lock:
            if not self.wants_fetch(kid):
                return
            self.attempted_at = self.clock()
            try:
                keys, issuer = self._fetch()
            except Exception as exc:  # any failure keeps the last good keys
                self.failures += 1
                log.warning(
                    "cannot fetch JWT keys; keeping the last good set",
                    extra={
                        "event": "jwks",
                        "result": "error",
                        "source": self.config.location,
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                        "have_keys": self.keys is not None,
                    },
                )
                return
            self.keys, self.issuer, self.fetched_at = keys, issuer, self.clock()
            log.info(
                "JWT keys fetched",
                extra={"event": "jwks", "result": "success", "source": self.config.location, "kids": len(keys.keys)},
            )

    def _fetch(self) -> tuple[KeySet, str | None]:
        config = self.config
        if config.source == "jwks_url":
            return parse_jwks(self.fetch_document(config.location, config), config.location), config.issuer
        base = config.location.rstrip("/")
        discovery_url = f"{base}/.well-known/openid-configuration" if config.source == "kubernetes" else base
        doc = json.loads(self.fetch_document(discovery_url, config)[:MAX_JWKS_BYTES])
        if not isinstance(doc, dict) or not isinstance(doc.get("issuer"), str):
            raise JwksError(f"{discovery_url}: not an OpenID discovery document")
        if config.issuer is not None and doc["issuer"] != config.issuer:
            raise JwksError(f"{discovery_url}: issuer {doc['issuer']!r} is not the configured {config.issuer!r}")
        if config.source == "kubernetes":
            # The API server serves its keys itself, whatever host jwks_uri names (often one unreachable from a pod).
            jwks_url = f"{base}/openid/v1/jwks"
        else:
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or urllib.parse.urlsplit(jwks_uri).scheme not in ("https", "http"):
                raise JwksError(f"{discovery_url}: no usable jwks_uri")
            jwks_url = jwks_uri
            if jwks_url.startswith("http:") and not base.startswith("http:"):
                raise JwksError(f"{discovery_url}: jwks_uri is plain http")
        return parse_jwks(self.fetch_document(jwks_url, config), jwks_url), doc["issuer"]


@dataclass(frozen=True)
class JwtKeys:
    """What a snapshot verifies JWTs with: the Secret's key sets (this snapshot's) and the fetched ones
    (shared with every other snapshot)."""

    secret: Mapping[str, KeySet]
    remote: Mapping[tuple[str, str, str | None, str | None], RemoteKeySet]


def remote_key_sets(
    issuers: Iterable[JwtIssuer], fetch: Fetch = http_fetch, clock: Callable[[], float] = time.monotonic
) -> dict[tuple[str, str, str | None, str | None], RemoteKeySet]:
    sets: dict[tuple[str, str, str | None, str | None], RemoteKeySet] = {}
    for issuer in issuers:
        if issuer.source != "secret" and issuer.remote_key not in sets:
            sets[issuer.remote_key] = RemoteKeySet(issuer, fetch, clock)
    return sets
