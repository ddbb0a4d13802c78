"""The policy: named routes (what each accepts, for whom, which exact requests pass anonymously) and knobs.

Loaded once from YAML at start (the chart rolls the pods when its ConfigMap changes). Unknown keys are
errors, so a typo never silently widens access.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from app.errors import ConfigError
from app.jwt_policy import JwtIssuer, parse_jwt_issuers
from app.oidc_policy import MAX_SESSION_GROUPS, OidcSettings, parse_oidc

Scheme = Literal["bearer", "basic", "session"]
SCHEMES: tuple[Scheme, ...] = ("bearer", "basic")  # a route's default: machines' schemes only
# Every scheme a route may list. ``session`` (app.sessions) is the browser's sealed cookie, issued by the sign-in
# form (app.browser); it is off unless a route lists it.
KNOWN_SCHEMES: tuple[Scheme, ...] = ("bearer", "basic", "session")
ROUTE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The name a request gives when it names no route (``/auth/~/<original path>``; over gRPC, a CheckRequest with
# no route context and no --grpc-default-route): the route is then the one whose ``path_prefixes`` claim the
# longest prefix of the original path (app.decision.route_for_path). No route can be called this: ``~`` is
# not in ROUTE_NAME_RE, so ``/auth/~`` can never be read as a route's own path.
BY_PATH = "~"
METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
REALM_RE = re.compile(r'[^"\\\x00-\x1f\x7f]{1,128}')
# What a claimed path prefix must not contain (besides // and dot segments): app.decision never matches a
# path holding any of it.
PATH_PREFIX_RE = re.compile(r"[?*%#;\\\s\x00-\x1f\x7f]")
KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9:._-]{1,64}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
REDIS_URL_FORM = "redis://[USER@]HOST[:PORT][/DB] (or rediss:// for TLS)"
# RFC 6265 cookie-name (an RFC 7230 token).
COOKIE_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
PREFIX_RE = re.compile(r"/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]/")
MAX_SESSION_LIFETIME = 30 * 24 * 3600
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PART_RE = re.compile(r"([0-9]{1,7})([smhd])")
DURATION_RE = re.compile(r"(?:[0-9]{1,7}[smhd])+")
# A route's principals: plain names, ``group:<name>`` (a group the OpenID provider lists, app.oidc_client) and
# ``domain:<example.com>`` (the domain of an e-mail address the provider has verified).
GROUP_PREFIX, DOMAIN_PREFIX = "group:", "domain:"
GROUP_NAME_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,127}")
DOMAIN_RE = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    name: str
    schemes: tuple[Scheme, ...] = SCHEMES
    realm: str = "authgate"
    principals: frozenset[str] | None = None  # None = any valid credential
    anonymous: frozenset[tuple[str, str]] = frozenset()  # exact (method, raw path)
    cors_preflight: bool = False
    path_prefixes: tuple[str, ...] = ()  # the original paths this route decides when a request names no route
    jwt_issuers: tuple[JwtIssuer, ...] = ()  # whose JWT bearer tokens it accepts (app.jwt_policy); () = none


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the shared throttle keeps its counters and bans (app.shared_throttle). The policy is a ConfigMap,
    not a secret: it names where the password is (a file or an environment variable), never the password."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    tls: bool = False  # rediss://
    key_prefix: str = "authgate:"
    password_file: str | None = None
    password_env: str | None = None
    tls_ca_file: str | None = None  # verify the server against this CA bundle (default: the system's)
    tls_cert_file: str | None = None  # client certificate, with tls_key_file
    tls_key_file: str | None = None
    timeout_seconds: float = 0.5  # connect and each command; past it Redis counts as down

    @property
    def url(self) -> str:
        """The address for logs: never a password (there is none in the policy)."""
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}/{self.db}"


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    enabled: bool = True
    window_seconds: float = 60.0
    max_failures_per_user: int = 10
    max_failures_per_address: int = 50
    ban_seconds: float = 300.0
    max_tracked: int = 100_000
    max_pending_slow_checks: int = 64  # slow hash checks (bcrypt...) waiting at once; more are refused
    redis: RedisSettings | None = None  # counters and bans shared by every replica (app.shared_throttle)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The policy's ``sign_in`` block: the browser session (app.sessions) and its pages (app.browser).

    Needed by, and inert without, a route that lists the ``session`` scheme. The cookie is always ``Secure``,
    ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and without ``Domain`` (so ``__Host-`` names work): the
    protected host's own, which no sibling subdomain can set or overwrite."""

    prefix: str = "/authgate/"  # where authgate serves sign_in, sign_out and userinfo
    cookie_name: str = "__Host-authgate"
    lifetime_seconds: int = 12 * 3600  # absolute: a session ends this long after sign-in, used or not
    idle_timeout_seconds: int = 3600  # ... and this long after its last use (refreshed where a door can)
    title: str | None = None  # the sign-in page's title; None: the realm of the route offering the session first
    configured: bool = False  # whether the policy has a sign_in block
    oidc: OidcSettings | None = None  # sign-in with an OpenID provider (app.oidc_policy); None: the form only
    # Every group some route admits (``group:<name>``): the only groups an OIDC session keeps.
    groups: frozenset[str] = frozenset()

    @property
    def csrf_cookie_name(self) -> str:
        """The sign-in and sign-out forms' double-submit cookie, beside the session cookie."""
        return f"{self.cookie_name}-csrf"

    @property
    def sign_in_path(self) -> str:
        return f"{self.prefix}sign_in"

    @property
    def sign_out_path(self) -> str:
        return f"{self.prefix}sign_out"

    @property
    def userinfo_path(self) -> str:
        return f"{self.prefix}userinfo"

    @property
    def oidc_start_path(self) -> str:
        return f"{self.prefix}oidc/start"

    @property
    def oidc_callback_path(self) -> str:
        return f"{self.prefix}oidc/callback"

    @property
    def flow_cookie_name(self) -> str:
        """The short-lived cookie that carries one OpenID sign-in's state, nonce and PKCE verifier."""
        return f"{self.cookie_name}-oidc"


@dataclass(frozen=True, slots=True)
class Policy:
    routes: Mapping[str, RoutePolicy]
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    decision_cache_max_age: int = 0
    verify_cache_max_entries: int = 10_000
    source: str = "built-in default"
    # Every route's path_prefixes: prefix -> route name (no prefix is claimed twice).
    claims: Mapping[str, str] = field(default_factory=dict)
    session: SessionSettings = field(default_factory=SessionSettings)

    @property
    def session_routes(self) -> frozenset[str]:
        """The routes that accept the session cookie: only their requests have their cookies read."""
        return frozenset(name for name, route in self.routes.items() if "session" in route.schemes)


DEFAULT_POLICY = Policy(routes={"default": RoutePolicy(name="default")})


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(allowed))})", source
        )


def _mapping(value: Any, where: str, source: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}", source)
    return value


def _number(
    data: Mapping[str, Any],
    key: str,
    default: float,
    where: str,
    source: str,
    *,
    minimum: float = 0,
    integer: bool = False,
) -> Any:
    value = data.get(key, default)
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}.{key}: must be {kind} >= {minimum}, got {value!r}", source)
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool, where: str, source: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}", source)
    return value


def _parse_route(name: str, raw: Any, source: str) -> RoutePolicy:
    where = f"routes.{name}"
    if not ROUTE_NAME_RE.fullmatch(str(name)):
        raise ConfigError(f"{where}: a route name is 1-64 of A-Z a-z 0-9 . _ -", source)
    data = _mapping(raw, where, source)
    _check_keys(
        data,
        {"schemes", "realm", "principals", "anonymous", "cors_preflight", "path_prefixes", "jwt_issuers"},
        where,
        source,
    )

    schemes_raw = data.get("schemes", list(SCHEMES))
    if not isinstance(schemes_raw, list) or not schemes_raw:
        raise ConfigError(f"{where}.schemes: a non-empty list of bearer, basic, session", source)
    schemes: list[Scheme] = []
    for item in schemes_raw:
        scheme = str(item).lower()
        if scheme not in KNOWN_SCHEMES or scheme in schemes:
            raise ConfigError(f"{where}.schemes: {item!r} is not bearer or basic, nor session (or is repeated)", source)
        schemes.append(scheme)

    realm = data.get("realm", "authgate")
    if not isinstance(realm, str) or not REALM_RE.fullmatch(realm):
        raise ConfigError(f"{where}.realm: 1-128 printable characters without quotes or backslashes", source)

    principals_raw = data.get("principals", ["*"])
    if not isinstance(principals_raw, list) or not principals_raw:
        raise ConfigError(f'{where}.principals: a non-empty list of names, or ["*"]', source)
    principals = frozenset(_principal(p, where, source) for p in principals_raw)
    if "*" in principals and len(principals) > 1:
        raise ConfigError(f'{where}.principals: "*" already allows everyone; list names or "*"', source)

    anonymous: set[tuple[str, str]] = set()
    anonymous_raw = data.get("anonymous", [])
    if not isinstance(anonymous_raw, list):
        raise ConfigError(f"{where}.anonymous: a list of 'METHOD /exact/path'", source)
    for entry in anonymous_raw:
        parts = str(entry).split()
        if len(parts) != 2 or not METHOD_RE.fullmatch(parts[0]) or not parts[1].startswith("/"):
            raise ConfigError(f"{where}.anonymous: {entry!r} is not 'METHOD /exact/path'", source)
        if any(ch in parts[1] for ch in "?*%#;\\"):
            raise ConfigError(
                f"{where}.anonymous: {entry!r}: an exact raw path, without query, wildcard, % # ; or backslash",
                source,
            )
        anonymous.add((parts[0], parts[1]))

    jwt_issuers = parse_jwt_issuers(data.get("jwt_issuers"), where, source)
    if jwt_issuers and "bearer" not in schemes:
        raise ConfigError(f"{where}.jwt_issuers: JWTs are bearer tokens; add bearer to the route's schemes", source)

    return RoutePolicy(
        name=name,
        schemes=tuple(schemes),
        realm=realm,
        principals=None if "*" in principals else principals,
        anonymous=frozenset(anonymous),
        cors_preflight=_bool(data, "cors_preflight", False, where, source),
        path_prefixes=_parse_path_prefixes(data.get("path_prefixes", []), where, source),
        jwt_issuers=jwt_issuers,
    )


def _principal(raw: Any, where: str, source: str) -> str:
    """One entry of a route's principals: a name, ``group:<name>`` or ``domain:<example.com>`` (lower-cased)."""
    text = str(raw)
    if text.startswith(GROUP_PREFIX) and not GROUP_NAME_RE.fullmatch(text[len(GROUP_PREFIX) :]):
        raise ConfigError(f"{where}.principals: {text!r}: group:<name>, 1-128 printable characters", source)
    if text.startswith(DOMAIN_PREFIX):
        domain = text[len(DOMAIN_PREFIX) :].lower().rstrip(".")
        if not DOMAIN_RE.fullmatch(domain):
            raise ConfigError(f"{where}.principals: {text!r}: domain:<a DNS domain such as example.com>", source)
        return DOMAIN_PREFIX + domain
    return text


def _parse_path_prefixes(raw: Any, where: str, source: str) -> tuple[str, ...]:
    """A route's claimed path prefixes: raw paths that the one path matcher (app.decision.matching_prefix)
    can match at all — a prefix it would never match (``%``, ``;``, ``//``, dot segments...) is an error
    here rather than a route nobody reaches."""
    where = f"{where}.path_prefixes"
    form = "a list of raw path prefixes such as /api (or / for every path)"
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: {form}", source)
    prefixes: list[str] = []
    for item in raw:
        text = str(item) if isinstance(item, str) else None
        if text is None or not text.startswith("/"):
            raise ConfigError(f"{where}: {item!r} does not start with /; {form}", source)
        if PATH_PREFIX_RE.search(text) or "//" in text or any(seg in (".", "..") for seg in text.split("/")):
            raise ConfigError(
                f"{where}: {item!r}: a raw path prefix, without query, wildcard, % # ; backslash, whitespace, "
                "// or . and .. segments",
                source,
            )
        if text != "/" and text.endswith("/"):
            raise ConfigError(f"{where}: {item!r}: without a trailing / (it matches whole segments)", source)
        if text in prefixes:
            raise ConfigError(f"{where}: {item!r} is listed twice", source)
        prefixes.append(text)
    return tuple(prefixes)


def _claims(routes: Mapping[str, RoutePolicy], source: str) -> dict[str, str]:
    claims: dict[str, str] = {}
    for route in routes.values():
        for prefix in route.path_prefixes:
            other = claims.get(prefix)
            if other is not None:
                raise ConfigError(
                    f"routes.{route.name}.path_prefixes: {prefix!r} is already claimed by routes.{other}; "
                    "a path prefix decides for one route",
                    source,
                )
            claims[prefix] = route.name
    return claims


def _optional_str(data: Mapping[str, Any], key: str, where: str, source: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key}: must be a non-empty string, got {value!r}", source)
    return value


def _parse_redis(raw: Any, source: str) -> RedisSettings:
    where = "throttle.redis"
    data = _mapping(raw, where, source)
    _check_keys(
        data,
        {
            "url",
            "key_prefix",
            "password_file",
            "password_env",
            "tls_ca_file",
            "tls_cert_file",
            "tls_key_file",
            "timeout_seconds",
        },
        where,
        source,
    )
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}.url: required, {REDIS_URL_FORM}", source)
    # The URL is never echoed: a mistaken one may hold a password.
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(f"{where}.url: not a URL of the form {REDIS_URL_FORM}", source) from None
    if parts.password is not None:
        raise ConfigError(
            f"{where}.url: must not carry a password (the policy is no secret): name it with "
            f"{where}.password_file or {where}.password_env",
            source,
        )
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"{where}.url: the scheme must be redis or rediss, got {parts.scheme!r}", source)
    if not parts.hostname:
        raise ConfigError(f"{where}.url: no host, expected {REDIS_URL_FORM}", source)
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}.url: no ?options or #fragment; options are keys of {where}", source)
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"{where}.url: the path is a database number (/0), got {parts.path!r}", source)
    tls = parts.scheme == "rediss"

    prefix = data.get("key_prefix", "authgate:")
    if not isinstance(prefix, str) or not KEY_PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{where}.key_prefix: 1-64 of A-Z a-z 0-9 : . _ -, got {prefix!r}", source)
    password_file = _optional_str(data, "password_file", where, source)
    password_env = _optional_str(data, "password_env", where, source)
    if password_file is not None and password_env is not None:
        raise ConfigError(f"{where}: set password_file or password_env, not both", source)
    if password_env is not None and not ENV_NAME_RE.fullmatch(password_env):
        raise ConfigError(f"{where}.password_env: not an environment variable name: {password_env!r}", source)
    tls_files = {
        key: _optional_str(data, key, where, source) for key in ("tls_ca_file", "tls_cert_file", "tls_key_file")
    }
    named = sorted(key for key, value in tls_files.items() if value is not None)
    if named and not tls:
        raise ConfigError(f"{where}: {', '.join(named)} need a rediss:// url (TLS)", source)
    if (tls_files["tls_cert_file"] is None) != (tls_files["tls_key_file"] is None):
        raise ConfigError(f"{where}: tls_cert_file and tls_key_file go together (a client certificate)", source)
    return RedisSettings(
        host=parts.hostname,
        port=port,
        db=int(db_text),
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        tls=tls,
        key_prefix=prefix,
        password_file=password_file,
        password_env=password_env,
        tls_ca_file=tls_files["tls_ca_file"],
        tls_cert_file=tls_files["tls_cert_file"],
        tls_key_file=tls_files["tls_key_file"],
        timeout_seconds=_number(data, "timeout_seconds", 0.5, where, source, minimum=0.01),
    )


def _duration(data: Mapping[str, Any], key: str, default: int, where: str, source: str) -> int:
    """Seconds from ``12h``, ``30m``, ``1h30m``, ``7d`` (or a number of seconds), at least a minute."""
    value = data.get(key, default)
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and DURATION_RE.fullmatch(value.strip().lower()):
        seconds = sum(
            int(number) * DURATION_UNITS[unit] for number, unit in DURATION_PART_RE.findall(value.strip().lower())
        )
    if seconds is None or not 60 <= seconds <= MAX_SESSION_LIFETIME:
        raise ConfigError(f"{where}.{key}: a duration from 1m to 30d such as 12h, 30m or 1h30m, got {value!r}", source)
    return seconds


def _parse_session(raw: Any, source: str) -> SessionSettings:
    where = "sign_in"
    data = _mapping(raw, where, source)
    _check_keys(data, {"prefix", "cookie_name", "lifetime", "idle_timeout", "title", "oidc"}, where, source)
    defaults = SessionSettings()
    prefix = data.get("prefix", defaults.prefix)
    if (
        not isinstance(prefix, str)
        or not PREFIX_RE.fullmatch(prefix)
        or "//" in prefix
        or any(seg in (".", "..") for seg in prefix.split("/"))
        or prefix.startswith("/auth/")
    ):
        raise ConfigError(
            f"{where}.prefix: a path that starts and ends with / such as /authgate/ (of A-Z a-z 0-9 . _ ~ - /, not "
            f"/ alone nor under /auth/, the decision endpoint), got {prefix!r}",
            source,
        )
    name = data.get("cookie_name", defaults.cookie_name)
    if not isinstance(name, str) or not COOKIE_NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}.cookie_name: 1-64 of A-Z a-z 0-9 and !#$%&'*+-.^_`|~, got {name!r}", source)
    lifetime = _duration(data, "lifetime", defaults.lifetime_seconds, where, source)
    idle = _duration(data, "idle_timeout", defaults.idle_timeout_seconds, where, source)
    if idle > lifetime:
        raise ConfigError(f"{where}.idle_timeout: longer than {where}.lifetime ({idle} s > {lifetime} s)", source)
    title = data.get("title")
    if title is not None and (not isinstance(title, str) or not REALM_RE.fullmatch(title)):
        raise ConfigError(f"{where}.title: 1-128 printable characters without quotes or backslashes", source)
    return SessionSettings(
        prefix=prefix,
        cookie_name=name,
        lifetime_seconds=lifetime,
        idle_timeout_seconds=idle,
        title=title,
        configured=raw is not None,
        oidc=parse_oidc(data.get("oidc"), prefix, source),
    )


def parse_policy(data: Any, source: str) -> Policy:
    """Validates a policy document (already parsed from YAML)."""
    top = _mapping(data, "policy", source)
    _check_keys(top, {"routes", "throttle", "decision_cache", "verify_cache", "sign_in"}, "policy", source)
    routes_raw = _mapping(top.get("routes"), "routes", source)
    if not routes_raw:
        raise ConfigError("routes: define at least one route", source)
    routes = {str(name): _parse_route(str(name), raw, source) for name, raw in routes_raw.items()}

    t = _mapping(top.get("throttle"), "throttle", source)
    _check_keys(
        t,
        {
            "enabled",
            "window_seconds",
            "max_failures_per_user",
            "max_failures_per_address",
            "ban_seconds",
            "max_tracked",
            "max_pending_slow_checks",
            "redis",
        },
        "throttle",
        source,
    )
    defaults = ThrottleSettings()
    throttle = ThrottleSettings(
        enabled=_bool(t, "enabled", defaults.enabled, "throttle", source),
        window_seconds=_number(t, "window_seconds", defaults.window_seconds, "throttle", source, minimum=1),
        max_failures_per_user=_number(
            t, "max_failures_per_user", defaults.max_failures_per_user, "throttle", source, integer=True
        ),
        max_failures_per_address=_number(
            t, "max_failures_per_address", defaults.max_failures_per_address, "throttle", source, integer=True
        ),
        ban_seconds=_number(t, "ban_seconds", defaults.ban_seconds, "throttle", source, minimum=1),
        max_tracked=_number(t, "max_tracked", defaults.max_tracked, "throttle", source, minimum=100, integer=True),
        max_pending_slow_checks=_number(
            t, "max_pending_slow_checks", defaults.max_pending_slow_checks, "throttle", source, minimum=1, integer=True
        ),
        redis=_parse_redis(t.get("redis"), source) if t.get("redis") is not None else None,
    )
    if throttle.redis is not None and not throttle.enabled:
        raise ConfigError("throttle.redis: the throttle is off (throttle.enabled: false); drop one of them", source)

    session = _parse_session(top.get("sign_in"), source)
    needing = sorted(name for name, route in routes.items() if "session" in route.schemes)
    if needing and not session.configured:
        raise ConfigError(
            f"routes.{needing[0]}.schemes: session needs a sign_in block (sign_in: {{}} takes every default)", source
        )
    named_groups = frozenset(
        entry[len(GROUP_PREFIX) :]
        for route in routes.values()
        for entry in route.principals or ()
        if entry.startswith(GROUP_PREFIX)
    )
    for name, route in sorted(routes.items()):
        rules = sorted(e for e in route.principals or () if e.startswith((GROUP_PREFIX, DOMAIN_PREFIX)))
        if rules and ("session" not in route.schemes or session.oidc is None):
            raise ConfigError(
                f"routes.{name}.principals: {rules[0]!r}: groups and e-mail domains come only from OpenID sign-in "
                "(a route with session, and sign_in.oidc)",
                source,
            )
    if len(named_groups) > MAX_SESSION_GROUPS:
        raise ConfigError(f"routes: more than {MAX_SESSION_GROUPS} distinct group:<name> principals", source)
    session = dataclasses.replace(session, groups=named_groups)
    dc = _mapping(top.get("decision_cache"), "decision_cache", source)
    _check_keys(dc, {"max_age_seconds"}, "decision_cache", source)
    vc = _mapping(top.get("verify_cache"), "verify_cache", source)
    _check_keys(vc, {"max_entries"}, "verify_cache", source)
    return Policy(
        routes=routes,
        throttle=throttle,
        decision_cache_max_age=_number(dc, "max_age_seconds", 0, "decision_cache", source, integer=True),
        verify_cache_max_entries=_number(vc, "max_entries", 10_000, "verify_cache", source, integer=True),
        source=source,
        claims=_claims(routes, source),
        session=session,
    )


def load_policy(path: Path | None) -> Policy:
    """The policy from a YAML file, or the built-in default when ``path`` is None."""
    if path is None:
        return DEFAULT_POLICY
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source, line) from None
    return parse_policy(data, source)
