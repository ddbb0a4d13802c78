"""The decision: plain functions on plain data, no HTTP. Given what the proxy told us about the original
request and the current snapshot, answer allow (200), challenge (401) or forbid (403).

Only bcrypt-like password checks are slow (app.passwords.SLOW_KINDS); ``decide(..., slow_ok=False)`` returns
``None`` instead of doing one, so the decision core can run exactly that case in a worker thread and keep
the event loop free (app.slow_checks).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from app.allow_memo import AllowMemo
from app.credentials import TOKEN68_RE, Credentials, Token, User, token_digest
from app.jwt_bearer import JwtAllow, JwtRefusal, NeedKeys, looks_like_jws, verify_jwt
from app.jwt_keys import JwtKeys
from app.passwords import Decoys, VerifiedCache, is_slow, verify_hash
from app.policy import BY_PATH, DOMAIN_PREFIX, GROUP_PREFIX, Policy, RoutePolicy
from app.sessions import BrowserFacts, cross_site
from app.sessions import load as load_session
from app.throttle import Throttle

MAX_AUTHORIZATION_BYTES = 8192
# A browser's page load on a session route with no credential: the wire may redirect it to sign in.
SIGN_IN_REQUIRED = "sign_in_required"
# A path that could mean something else to the application than its raw text says: percent-encoded '.',
# '/', '\' or '%' (double encoding), a raw backslash, a raw '#' (not a fragment on the wire: nginx forwards
# it), ';' path parameters, whitespace or control characters.
_AMBIGUOUS_PATH_RE = re.compile(r"%(?:2[eEfF]|5[cC]|25)|[\\#;\s\x00-\x1f\x7f]")
# Control characters, as bytes: in UTF-8 they never occur inside a multi-byte character, so deleting them from
# the decoded bytes and comparing lengths finds them (in about 1/40 of a regex search's time on 6 KB).
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"
TOKEN68_BYTES_RE = re.compile(TOKEN68_RE.pattern.encode())
# What an identified allow tells the application (user, then scheme). A proxy that copies them upstream only
# when the answer has them (Envoy) must be asked to drop a client's own copies on an anonymous allow.
IDENTITY_HEADERS: tuple[bytes, bytes] = (b"x-auth-request-user", b"x-auth-request-scheme")


class RequestFacts(NamedTuple):
    """What the proxy says about the original request. None = the proxy did not say.

    NamedTuples rather than frozen dataclasses: as immutable, and several times cheaper to build, which
    matters for the two objects made on every request."""

    method: str | None
    path: str | None  # raw path, without the query, never decoded or normalised
    authorization: tuple[bytes, ...]  # every Authorization header value received
    client: str | None = None
    preflight: bool = False  # carries Origin and Access-Control-Request-Method
    # Why method and path are unknown, when the front door's account is missing or contradicted
    # (app.doors.reading): then no exception and no method/path-limited token can apply.
    problem: str | None = None
    # On a route that accepts the session cookie, for a request without Authorization: what the browser sent
    # (app.sessions). None everywhere else, so tokens and Basic never pay for cookie parsing.
    browser: BrowserFacts | None = None


class Decision(NamedTuple):
    status: int  # exactly 200, 401, 403 (503 is the HTTP layer's, before any snapshot exists)
    reason: str
    scheme: str = "none"  # bearer, basic, session, none, other
    principal: str | None = None
    expires: dt.datetime | None = None
    bearer_error: str | None = None  # RFC 6750 error for the Bearer challenge
    # True when the same credential on the same route gets this same answer whatever else the request says,
    # until ``expires`` or the next snapshot: a wire may then answer repeats from the allow memo (app.allow_memo).
    rememberable: bool = False
    # A browser's page load refused for want of a (valid) session: a wire whose door passes redirects answers
    # it with the sign-in page (app.http, app.grpc_server) instead of the 401.
    sign_in: bool = False
    # A session allow past half its idle timeout: the refreshed sealed cookie, which the wire adds as a
    # Set-Cookie to this one answer (never remembered or cached: it is this request's).
    set_cookie: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a decision reads. Immutable; a reload builds a new one and swaps one reference.

    ``allows`` and ``answers`` are memos that belong to this snapshot, so a reload or rotation drops them:
    ``allows`` remembers decisions whichever wire asked, ``answers`` each wire's rendering of a decision
    (keyed by wire, route and decision; see app.answers)."""

    credentials: Credentials
    policy: Policy
    verified: VerifiedCache
    decoys: Decoys = field(default_factory=lambda: Decoys({}))
    allows: AllowMemo[Decision] = field(default_factory=lambda: AllowMemo())
    answers: dict[tuple[str, str, Decision], object] = field(default_factory=dict)
    jwt: JwtKeys | None = None  # the keys JWTs are verified with; None when no route names JWT issuers


@dataclass(frozen=True, slots=True)
class BearerCredential:
    token: str


@dataclass(frozen=True, slots=True)
class BasicCredential:
    user: str
    password: str


def parse_authorization(values: tuple[bytes, ...]) -> BearerCredential | BasicCredential | str:
    """The credential in the Authorization header, or the reason it is unusable
    (``missing``, ``malformed``, ``unsupported_scheme``)."""
    if not values:
        return "missing"
    if len(values) > 1 or len(values[0]) > MAX_AUTHORIZATION_BYTES:
        return "malformed"
    value = values[0]
    if value[:7].lower() == b"bearer ":  # the hot path: stay in bytes until the token is known to be clean
        param_bytes = value[7:].strip(b" \t")
        if not TOKEN68_BYTES_RE.fullmatch(param_bytes):
            return "malformed"
        return BearerCredential(param_bytes.decode("ascii"))
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return "malformed"
    scheme, _, param = text.partition(" ")
    param = param.strip()
    scheme = scheme.lower()
    if scheme == "bearer":
        return "malformed"  # "Bearer" with no space-separated token
    if scheme == "basic":
        try:
            raw = base64.b64decode(param, validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            return "malformed"
        user, sep, password = decoded.partition(":")
        if not sep or not user or len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
            return "malformed"
        return BasicCredential(user, password)
    return "unsupported_scheme" if scheme else "malformed"


def is_canonical(authorization: bytes) -> bool:
    """Whether a header is the one spelling of its credential that the allow memo keeps: ``Bearer <token>``
    or ``Basic <base64 of user:password>`` with exactly one space and canonical base64. Other spellings
    ("bearer", extra spaces or tabs, non-zero base64 padding bits) are still decided, just never
    remembered, so one holder of a valid credential cannot fill the memo with variants of it."""
    if authorization.startswith(b"Bearer "):
        param = authorization[7:]
        return bool(param) and TOKEN68_BYTES_RE.fullmatch(param) is not None
    if authorization.startswith(b"Basic "):
        param = authorization[6:]
        try:
            return bool(param) and base64.b64encode(base64.b64decode(param, validate=True)) == param
        except (binascii.Error, ValueError):
            return False
    return False


def matching_prefix(path: str | None, prefixes: Iterable[str]) -> str | None:
    """The longest of the prefixes a raw path falls under, on whole segments, or None. Paths that could be
    read differently after decoding or normalisation (dot segments, encoded separators, ``//``, ``;``...)
    match none. The one path matcher: tokens' ``paths=`` and the routes' ``path_prefixes`` both use it."""
    if path is None or not path.startswith("/") or _AMBIGUOUS_PATH_RE.search(path) or "//" in path:
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    best: str | None = None
    for prefix in prefixes:
        if (prefix == "/" or path == prefix or path.startswith(prefix + "/")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def path_allowed(path: str | None, prefixes: tuple[str, ...]) -> bool:
    """Whether a raw path falls under one of the prefixes (:func:`matching_prefix`)."""
    return matching_prefix(path, prefixes) is not None


def route_for_path(policy: Policy, path: str | None) -> str | None:
    """The route of a request that names none (``BY_PATH``): the one claiming the longest prefix of its raw
    original path; None when no route claims it, the path is unknown or could be read another way."""
    prefix = matching_prefix(path, policy.claims)
    return None if prefix is None else policy.claims[prefix]


def check_password(
    snapshot: Snapshot, throttle: Throttle, client: str | None, name: str, password: str, slow_ok: bool
) -> User | str | None:
    """The user a name and password verify as, or why not (``throttled``, ``unknown_user``, ``bad_password``);
    None only when ``slow_ok`` is False and a slow hash check is needed. Basic credentials and the sign-in form
    (app.browser) are both checked here, under one throttle."""
    user = snapshot.credentials.users.get(name)
    if user is not None and snapshot.verified.contains(user, password):
        return user
    # Every name is counted and banned alike, existing or not, so neither the 11th answer nor its
    # timing tells which names exist; an unknown name costs one check of a decoy hash of a kind and
    # cost that real users in the file have (app.passwords.Decoys).
    checked = user if user is not None else snapshot.decoys.for_name(name)
    # A ban on the *name* must not lock its owner out: a hash cheap enough to check under any load
    # ({SHA}: app.passwords.SLOW_KINDS) is checked anyway, so only a password that verifies passes.
    # A slow one is refused unchecked (its owner passes through the verified cache). An address ban
    # refuses every unverified attempt: it is what bounds guessing at one name from one address.
    if throttle.banned(client, None):
        return "throttled"
    name_banned = throttle.banned(None, name)
    if name_banned and is_slow(checked):
        return "throttled"
    if is_slow(checked) and not slow_ok:
        return None
    if not verify_hash(checked, password) or user is None:
        throttle.record_failure(client, name)
        if name_banned:  # the answer a ban gives, whether or not the name exists
            return "throttled"
        return "unknown_user" if user is None else "bad_password"
    snapshot.verified.add(user, password)
    return user


def _forbidden_by_token(token: Token, route: RoutePolicy, facts: RequestFacts) -> str | None:
    if token.routes is not None and route.name not in token.routes:
        return "route_forbidden"
    if facts.problem is not None and (token.methods is not None or token.paths is not None):
        return "original_request_unverified"
    if token.methods is not None and (facts.method is None or facts.method not in token.methods):
        return "method_forbidden"
    if token.paths is not None and not path_allowed(facts.path, token.paths):
        return "path_forbidden"
    return None


def decide(
    route_name: str,
    facts: RequestFacts,
    snapshot: Snapshot,
    throttle: Throttle,
    now: dt.datetime,
    *,
    slow_ok: bool,
) -> Decision | None:
    """Decides one request. Returns None only when ``slow_ok`` is False and a slow hash check is needed."""
    route = snapshot.policy.routes.get(route_name)
    if route is None:
        # A request that named no route and whose path no route claims (app.decider resolved it): refused,
        # like a route name the policy lacks. 403, not 401: there is no route whose challenge to send.
        return Decision(403, "unclaimed_path" if route_name == BY_PATH else "unknown_route")
    if route.cors_preflight and facts.method == "OPTIONS" and facts.preflight:
        return Decision(200, "preflight")
    if facts.method is not None and facts.path is not None and (facts.method, facts.path) in route.anonymous:
        return Decision(200, "anonymous")

    credential = parse_authorization(facts.authorization)
    if isinstance(credential, str):
        if credential == "missing" and facts.browser is not None and "session" in route.schemes:
            browser_decision = _decide_session(route, facts, facts.browser, snapshot, now)
            if browser_decision is not None:
                return browser_decision
        if credential == "malformed":
            throttle.record_failure(facts.client, None)
        return Decision(401, credential, scheme="none" if credential == "missing" else "other")

    scheme = "bearer" if isinstance(credential, BearerCredential) else "basic"
    if scheme not in route.schemes:
        return Decision(401, "scheme_not_accepted", scheme=scheme)

    token: Token | None = None
    jwt_expires: dt.datetime | None = None
    if isinstance(credential, BearerCredential):
        token = snapshot.credentials.find_token(credential.token)
        if token is None and route.jwt_issuers and looks_like_jws(credential.token):
            jwt_decision = _decide_jwt(credential.token, route, facts, snapshot, throttle, now, slow_ok=slow_ok)
            if not isinstance(jwt_decision, JwtAllow):
                return jwt_decision
            principal, jwt_expires = jwt_decision.principal, jwt_decision.expires
        elif token is None:
            return refuse_unknown_token(throttle, facts.client)
        elif token.expires is not None and now >= token.expires:
            return Decision(401, "expired", scheme=scheme, principal=token.name, bearer_error="expired")
        else:
            principal = token.name
    else:
        outcome = check_password(snapshot, throttle, facts.client, credential.user, credential.password, slow_ok)
        if outcome is None:
            return None
        if outcome == "throttled":
            return Decision(403, "throttled", scheme=scheme)
        if isinstance(outcome, str):
            return Decision(401, outcome, scheme=scheme)
        principal = outcome.name

    if token is not None:
        forbidden = _forbidden_by_token(token, route, facts)
        if forbidden is not None:
            return Decision(403, forbidden, scheme=scheme, principal=principal)
    if route.principals is not None and principal not in route.principals:
        return Decision(403, "principal_forbidden", scheme=scheme, principal=principal)
    return Decision(
        200,
        "allowed",
        scheme=scheme,
        principal=principal,
        expires=token.expires if token is not None else jwt_expires,
        # Per-request limits (methods, paths) make the answer depend on more than the credential.
        rememberable=token is None or (token.methods is None and token.paths is None),
    )


# The two answers to a Bearer token that is no credential at all: built once, so that a flood of them (a
# credential-stuffing attack: every request a new guess) builds no decision.
UNKNOWN_TOKEN = Decision(401, "unknown_token", scheme="bearer", bearer_error="invalid_token")
BEARER_THROTTLED = Decision(403, "throttled", scheme="bearer")


def refuse_unknown_token(throttle: Throttle, client: str | None) -> Decision:
    """A Bearer token matching no credential: a guess. Refused unchecked from a banned address (403), else
    counted against the address (401)."""
    return BEARER_THROTTLED if throttle.banned_else_count(client) else UNKNOWN_TOKEN


def is_unknown_bearer(route: RoutePolicy, authorization: bytes, snapshot: Snapshot) -> bool:
    """Whether :func:`decide` would refuse this one ``Authorization`` value as ``unknown_token`` on a route
    without exceptions (no anonymous paths, no CORS preflights: the caller checks, app.decider): spelt
    ``Bearer <token68>``, on a route accepting Bearer, matching no credential and no JWT the route may trust.
    Such a request is then answered by :func:`refuse_unknown_token`, exactly as ``decide`` answers it, without
    building the request's facts; anything else (a known token, a possible JWT, any other spelling or scheme)
    is False and is decided in full."""
    if not authorization.startswith(b"Bearer ") or len(authorization) > MAX_AUTHORIZATION_BYTES:
        return False
    param = authorization[7:]
    if "bearer" not in route.schemes or TOKEN68_BYTES_RE.fullmatch(param) is None:
        return False
    # The token's bytes are its ASCII text: digested as they are (the same digest as the text's). Only whether
    # some token has this digest matters here (a match is decided in full, where find_token compares it).
    if token_digest(param) in snapshot.credentials.tokens_by_digest:
        return False
    return not (route.jwt_issuers and looks_like_jws(param.decode("ascii")))


def _decide_jwt(
    token: str,
    route: RoutePolicy,
    facts: RequestFacts,
    snapshot: Snapshot,
    throttle: Throttle,
    now: dt.datetime,
    *,
    slow_ok: bool,
) -> JwtAllow | Decision | None:
    """A JWT on a route that trusts issuers (app.jwt_bearer): its principal and expiry, or the denial (None:
    its issuer's keys must be fetched first, in a worker thread)."""
    result: JwtAllow | JwtRefusal
    if snapshot.jwt is None:
        result = JwtRefusal("jwt_keys_unavailable")
    else:
        try:
            result = verify_jwt(token, route.jwt_issuers, snapshot.jwt, now, slow_ok=slow_ok)
        except NeedKeys:
            return None
    if isinstance(result, JwtAllow):
        return result
    if result.reason in ("jwt_expired", "jwt_not_yet_valid"):  # signed by a trusted issuer: no guess
        return Decision(401, result.reason, scheme="bearer", principal=result.principal, bearer_error="expired")
    if throttle.banned(facts.client, None):
        return Decision(403, "throttled", scheme="bearer")
    throttle.record_failure(facts.client, None)
    return Decision(401, result.reason, scheme="bearer", bearer_error="invalid_token")


def _decide_session(
    route: RoutePolicy, facts: RequestFacts, browser: BrowserFacts, snapshot: Snapshot, now: dt.datetime
) -> Decision | None:
    """The third credential kind (app.sessions), for a request without Authorization on a session route; None
    when the request carries no session cookie and is no page load (it is then answered like any request
    without a credential: 401 with the route's challenges)."""
    navigation = browser.is_navigation(facts.method)
    if not browser.cookies:
        return Decision(401, SIGN_IN_REQUIRED, scheme="session", sign_in=True) if navigation else None
    session, reason, refreshed = load_session(
        browser.cookies, snapshot.credentials, snapshot.policy.session, now.timestamp()
    )
    if session is None:
        # Not counted by the throttle: a sealed value cannot be guessed (128-bit tag), and a session that just
        # expired or lost its key is no attack; counting them would ban the office behind one address.
        return Decision(401, reason, scheme="session", sign_in=navigation)
    if cross_site(facts.method, browser):
        return Decision(403, "cross_site", scheme="session", principal=session.user)
    if route.principals is not None and not admits(route.principals, session.user, session.groups, session.email):
        return Decision(403, "principal_forbidden", scheme="session", principal=session.user)
    # Never remembered (the allow memo is keyed by Authorization, which a session request lacks; so no session
    # outlives its expiry there) and never cached by a proxy (not rememberable: no-store). No ``expires``, so
    # that the wire renders one answer per user and snapshot, not one per session.
    return Decision(200, "allowed", scheme="session", principal=session.user, set_cookie=refreshed)


def admits(principals: frozenset[str], name: str, groups: tuple[str, ...] = (), email: str | None = None) -> bool:
    """Whether a route's principals admit a principal: by its name, by one of its groups (``group:<name>``) or
    by the domain of its e-mail address (``domain:<example.com>``). Only OpenID sessions carry groups and an
    e-mail address, and the address only when the provider verified it (app.oidc_client): a free-form name
    (an htpasswd user, a token's name) never matches a ``domain:`` or ``group:`` entry."""
    if name in principals:
        return True
    if any(GROUP_PREFIX + group in principals for group in groups):
        return True
    return email is not None and DOMAIN_PREFIX + email.rpartition("@")[2].lower() in principals


def challenges(route: RoutePolicy, decision: Decision) -> list[str]:
    """One WWW-Authenticate value per scheme the route accepts, in the route's order (none for ``session``:
    cookies have no HTTP challenge)."""
    values = []
    for scheme in route.schemes:
        if scheme == "session":
            continue
        if scheme == "bearer":
            value = f'Bearer realm="{route.realm}"'
            if decision.bearer_error == "expired":
                value += ', error="invalid_token", error_description="token expired"'
            elif decision.bearer_error:
                value += f', error="{decision.bearer_error}"'
        else:
            value = f'Basic realm="{route.realm}", charset="UTF-8"'
        values.append(value)
    return values


def cache_control(decision: Decision, policy: Policy, now: dt.datetime) -> str:
    """How long a proxy may reuse this answer: only allows, never past the configured bound or the
    token's expiry, and never a denial (so a newly added credential works at once). Only an allow that holds
    for its credential whatever the method and path (``rememberable``): a proxy's cache key (ingress-nginx's
    ``auth-cache-key``) names the credential, not the request, so a cached anonymous or path-limited allow
    would let every other request with the same credential (or none) in."""
    max_age = policy.decision_cache_max_age if decision.allowed and decision.rememberable else 0
    if max_age > 0 and decision.expires is not None:
        max_age = min(max_age, int((decision.expires - now).total_seconds()))
    return f"max-age={max_age}" if max_age > 0 else "no-store"


def response_headers(
    decision: Decision, policy: Policy, route_name: str, now: dt.datetime
) -> list[tuple[bytes, bytes]]:
    """The headers of the answer to the proxy (identity for allows, challenges for 401s)."""
    headers = [(b"cache-control", cache_control(decision, policy, now).encode())]
    if decision.status == 200 and decision.principal is not None:
        headers.append((IDENTITY_HEADERS[0], decision.principal.encode()))
        headers.append((IDENTITY_HEADERS[1], decision.scheme.encode()))
    elif decision.status == 401:
        route = policy.routes[route_name]
        headers.extend((b"www-authenticate", value.encode()) for value in challenges(route, decision))
    return headers
