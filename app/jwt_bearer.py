"""JWT bearer tokens: a bearer value that is no static token and reads as a JWS, on a route with
``jwt_issuers``, is verified here (signature by PyJWT, with a key bound to one allowed algorithm; the claims
against the decision's own clock) into a principal and the time the token stops holding.

Denials are results (:class:`JwtRefusal`), never exceptions, and never carry the token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.jwt_keys import JwtKeys, KeySet, RemoteKeySet
from app.jwt_policy import JwtIssuer

# Three base64url parts (the last may be empty: an unsigned token still reads as one, and is refused).
JWS_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
TOKEN_REVIEW_HOLDS = dt.timedelta(seconds=60)
PRINCIPAL_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")
_SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "enforce_minimum_key_length": True,
}


def signed_claims(token: str, candidates: list[jwt.PyJWK], alg: str) -> dict[str, Any] | None:
    """The claims of ``token`` if one of ``candidates`` (keys bound to ``alg``) verifies its signature, else
    None. Only the signature: every claim is checked by the caller against its own clock and policy."""
    for key in candidates:
        try:
            claims: dict[str, Any] = jwt.decode(token, key=key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.PyJWTError:
            continue
        return claims
    return None


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The header and the claims, unverified: only to pick the issuer, the key and to refuse early. PyJWT
    parses the token again, once, as it verifies it (its own parse is the one whose claims are used)."""
    try:
        header_b64, payload_b64, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    except (ValueError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return (header, claims) if isinstance(header, dict) and isinstance(claims, dict) else None


def looks_like_jws(token: str) -> bool:
    return JWS_RE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class JwtAllow:
    principal: str
    expires: dt.datetime


@dataclass(frozen=True, slots=True)
class JwtRefusal:
    reason: str  # a fixed word (a metric label): jwt_malformed, jwt_algorithm, jwt_expired...
    principal: str | None = None


class NeedKeys(Exception):
    """The keys must be fetched, or a TokenReview asked, first (blocking I/O): decide again with ``slow_ok``."""


def _key_set(issuer: JwtIssuer, keys: JwtKeys) -> tuple[KeySet | None, RemoteKeySet | None]:
    if issuer.source == "secret":
        return keys.secret.get(issuer.location), None
    remote = keys.remote.get(issuer.remote_key)
    return (remote.keys if remote is not None else None), remote


def _issuer_for(iss: object, issuers: tuple[JwtIssuer, ...], keys: JwtKeys) -> JwtIssuer | None:
    if not isinstance(iss, str):
        return None
    for issuer in issuers:
        expected = issuer.issuer
        if expected is None:  # kind kubernetes without a configured issuer: the one its discovery names
            remote = keys.remote.get(issuer.remote_key)
            expected = remote.issuer if remote is not None else None
        if expected == iss:
            return issuer
    # A kubernetes issuer not yet discovered may be the one: let the caller fetch it and compare then.
    for issuer in issuers:
        remote = keys.remote.get(issuer.remote_key) if issuer.issuer is None else None
        if remote is not None and remote.issuer is None:
            return issuer
    return None


class _NotANumber(Exception):
    pass


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim; None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1e11 < value < 1e11:
        raise _NotANumber(name)
    return float(value)


def verify_jwt(
    token: str, issuers: tuple[JwtIssuer, ...], keys: JwtKeys, now: dt.datetime, *, slow_ok: bool
) -> JwtAllow | JwtRefusal:
    """Verifies one JWT for a route. Raises :class:`NeedKeys` when ``slow_ok`` is False and the issuer's
    keys should be fetched first; with ``slow_ok`` it fetches them (bounded in rate and time) itself."""
    peeked = _peek(token)
    if peeked is None:
        return JwtRefusal("jwt_malformed")
    header, unverified = peeked
    alg = header.get("alg")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return JwtRefusal("jwt_malformed")
    issuer = _issuer_for(unverified.get("iss"), issuers, keys)
    if issuer is None:
        return JwtRefusal("jwt_unknown_issuer")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        return JwtRefusal("jwt_algorithm")  # none, HS256, or one the route does not allow

    key_set, remote = _key_set(issuer, keys)
    if remote is not None and remote.wants_fetch(kid):
        if not slow_ok:
            raise NeedKeys
        remote.refresh(kid)
        key_set = remote.keys
    expected_iss = issuer.issuer if issuer.issuer is not None else remote.issuer if remote is not None else None
    if key_set is None or expected_iss is None:
        return JwtRefusal("jwt_keys_unavailable")
    if unverified.get("iss") != expected_iss:
        return JwtRefusal("jwt_unknown_issuer")
    candidates = key_set.candidates(kid, alg)
    if not candidates:
        return JwtRefusal("jwt_unknown_key")
    claims = signed_claims(token, candidates, alg)
    if claims is None:
        return JwtRefusal("jwt_signature")
    result = check_claims(claims, issuer, expected_iss, now)
    if isinstance(result, JwtAllow) and issuer.token_review and remote is not None:
        # The API server's word that the token (and the pod it is bound to) still stands: blocking I/O, in
        # the worker thread; remembered for a minute at most, so a deleted pod's token stops within one.
        if not slow_ok:
            raise NeedKeys
        if not remote.review(issuer, token, str(claims.get("sub"))):
            return JwtRefusal("jwt_review", result.principal)
        return JwtAllow(result.principal, min(result.expires, now + TOKEN_REVIEW_HOLDS))
    return result


def check_claims(
    claims: Mapping[str, Any], issuer: JwtIssuer, expected_iss: str, now: dt.datetime
) -> JwtAllow | JwtRefusal:
    """The registered claims against ``now`` (with the issuer's leeway), then the route's own rules."""
    t = now.timestamp()
    leeway = issuer.leeway_seconds
    try:
        exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    except _NotANumber:
        return JwtRefusal("jwt_malformed")
    if exp is None:  # exp is required: a token that never expires is not taken
        return JwtRefusal("jwt_malformed")
    if claims.get("iss") != expected_iss:
        return JwtRefusal("jwt_unknown_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in issuer.audiences for a in audiences):
        return JwtRefusal("jwt_audience")
    raw_principal = claims.get(issuer.principal_claim)
    principal = (
        issuer.principal_prefix + raw_principal
        if isinstance(raw_principal, str) and PRINCIPAL_RE.fullmatch(issuer.principal_prefix + raw_principal)
        else None
    )
    if t >= exp + leeway:
        return JwtRefusal("jwt_expired", principal)
    if nbf is not None and t < nbf - leeway:
        return JwtRefusal("jwt_not_yet_valid", principal)
    if iat is not None and t < iat - leeway:
        return JwtRefusal("jwt_not_yet_valid", principal)
    for rule in issuer.claims:
        if not rule.matches(claims.get(rule.name)):
            return JwtRefusal("jwt_claims", principal)
    if principal is None:
        return JwtRefusal("jwt_principal")
    return JwtAllow(principal, dt.datetime.fromtimestamp(exp, dt.UTC))
