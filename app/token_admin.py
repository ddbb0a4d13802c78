"""Pure edits of the Secret's ``tokens`` and ``htpasswd`` text: add, revoke, rotate, list.

Every function takes the file's text and returns new text, so the Kubernetes read-modify-write loop
(``app.kube``) can re-run an edit on a fresh copy after a 409 Conflict, and tests need no API server.
Edits touch only the line they are about: comments, blank lines, column alignment and the order of
every other line survive, because people keep notes in these files.

Only ``sha256:`` digests of generated tokens are ever written; the token itself is returned to the
caller to print once and is never stored.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import bcrypt

from app.credentials import parse_token_line
from app.errors import ConfigError
from app.policy import ROUTE_NAME_RE

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")
MAX_NAME_LENGTH = 128
TOKEN_BYTES = 32  # 256 bits of randomness: 43 characters of base64url
BCRYPT_ROUNDS = 12
ROTATED_SUFFIX = ".until-"  # old name + suffix + expiry, e.g. ci.until-20270131T000000Z
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokenAdminError(ValueError):
    """An edit that cannot be made (unknown or duplicate name, bad value). ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``token list`` shows about one token: never the secret, only whether it is hashed."""

    name: str
    hashed: bool
    attributes: Mapping[str, str]
    line: int

    @property
    def expires(self) -> str | None:
        return self.attributes.get("expires")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The replaced token during a rotation's overlap: the name it now has and when it stops working."""

    name: str
    until: str


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly generated token: ``token`` is shown to the operator once, ``text`` is the new file.

    ``outgoing`` (rotation only) is the old token while it keeps working; None when it stopped at once.
    """

    name: str
    token: str
    text: str
    outgoing: Outgoing | None = None


# --- values ---------------------------------------------------------------------------------------


def generate_token() -> str:
    """A strong random bearer token (base64url, which is valid RFC 6750 ``token68``)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest_field(token: str) -> str:
    """The ``sha256:<hex>`` form stored in the Secret, so reading the Secret does not reveal the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``24h``, ``1h30m``, ``2w``: the only way operators write an overlap or a lifetime."""
    value = text.strip().lower()
    pos, seconds = 0, 0
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise TokenAdminError(f"not a duration (use e.g. 30m, 24h, 90d, 1h30m): {text!r}")
    return dt.timedelta(seconds=seconds)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with ``Z``, to the second: the form the tokens file documents."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time with a zone (``Z`` or an offset)."""
    value = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TokenAdminError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise TokenAdminError(f"time needs a zone (e.g. Z): {text!r}")
    return moment.astimezone(dt.UTC)


def resolve_expiry(text: str, now: dt.datetime) -> str:
    """``--expires`` accepts an RFC 3339 time or a duration from now; returns the file's form."""
    try:
        return format_time(now + parse_duration(text))
    except TokenAdminError:
        pass
    try:
        return format_time(parse_time(text))
    except TokenAdminError as exc:
        if "needs a zone" in str(exc):
            raise TokenAdminError(
                f"{text!r} needs a zone (Z or an offset, as in 2027-01-31T00:00:00Z), or give a duration from now (90d)"
            ) from None
        raise TokenAdminError(
            f"{text!r} is neither a duration from now (30m, 24h, 90d, 1h30m, 2w) nor an RFC 3339 time "
            "(2027-01-31T00:00:00Z, 2027-01-31T01:00:00+01:00)"
        ) from None


def token_attributes(
    now: dt.datetime,
    *,
    expires: str | None = None,
    routes: str | None = None,
    methods: str | None = None,
    paths: str | None = None,
) -> dict[str, str]:
    """A new token's attributes from the command line, checked as the server will parse them.

    Shared by ``new-token`` and ``token create``, so both take the same forms; a bad value is refused
    with the option's name and what it accepts.
    """
    attrs: dict[str, str] = {}
    for key, value in (("routes", routes), ("methods", methods), ("paths", paths)):
        if not value:
            continue
        items = [item.strip() for item in value.split(",")]
        for item in items:
            if key == "routes" and item and not ROUTE_NAME_RE.fullmatch(item):
                raise TokenAdminError(f"--routes: {item!r} is not a route name (1-64 of A-Z a-z 0-9 . _ -)")
            if any(ch.isspace() for ch in item):
                raise TokenAdminError(f"--{key}: {item!r} contains a space (separate items with commas)")
        attrs[key] = ",".join(items)
    if expires:  # last, as the tokens file's documentation writes it
        try:
            attrs["expires"] = resolve_expiry(expires, now)
        except TokenAdminError as exc:
            raise TokenAdminError(f"--expires: {exc}") from None
        if parse_time(attrs["expires"]) <= now:
            raise TokenAdminError(f"--expires: {expires!r} is not in the future: the token would never work")
    try:  # what the server's parser says of the line, with the option's name
        parse_token_line(format_token_line("check", digest_field("check"), attrs), "", 1)
    except ConfigError as exc:
        raise TokenAdminError(f"--{exc.reason}") from None
    return attrs


def route_names(attributes: Mapping[str, str]) -> list[str]:
    value = attributes.get("routes")
    return value.split(",") if value else []


def check_routes(routes: Iterable[str], policy_routes: Collection[str], policy_source: str) -> None:
    """Refuses a route the policy lacks: a token limited to it could never be used."""
    for route in routes:
        if route not in policy_routes:
            raise TokenAdminError(
                f"--routes: {route!r} is not a route of the policy {policy_source} "
                f"(routes: {', '.join(sorted(policy_routes))}){_did_you_mean(route, policy_routes)}"
            )


def unknown_routes(routes: Iterable[str], in_use: Collection[str], secret: str) -> list[str]:
    """Without a policy to check against, what the routes the Secret's tokens use say about ``routes``.

    A name close to one in use, but not in use itself, is most likely a typo: refused. Any other name
    no token uses yet may be a legitimate new route: returned, for a warning.
    """
    new = [route for route in routes if route not in in_use]
    for route in new:
        hint = _did_you_mean(route, in_use)
        if hint:
            raise TokenAdminError(
                f"--routes: no token in secret {secret} uses route {route!r}{hint} "
                "(for a new route, check it against the policy with --config POLICY)"
            )
    return new


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise TokenAdminError(f"name {name!r}: use 1-128 of A-Z a-z 0-9 . _ @ -")
    return name


# --- the tokens file ------------------------------------------------------------------------------


def _split(line: str) -> list[str] | None:
    """The fields of a token line, or None for blank and comment lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.split()


def _attributes(fields: Iterable[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for field in fields:
        key, _, value = field.partition("=")
        attrs[key] = value
    return attrs


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _find(lines: list[str], name: str) -> int | None:
    for index, line in enumerate(lines):
        fields = _split(line)
        if fields and fields[0] == name:
            return index
    return None


def list_tokens(text: str) -> list[TokenInfo]:
    """Names, attributes and whether each token is stored hashed; never the secret field itself."""
    infos: list[TokenInfo] = []
    for number, line in enumerate(_lines(text), start=1):
        fields = _split(line)
        if not fields:
            continue
        hashed = len(fields) > 1 and fields[1].startswith("sha256:")
        infos.append(TokenInfo(fields[0], hashed, _attributes(fields[2:]), number))
    return infos


def format_token_line(name: str, secret_field: str, attributes: Mapping[str, str]) -> str:
    attrs = [f"{key}={value}" for key, value in attributes.items() if value]
    return " ".join([name, secret_field, *attrs])


def add_token(text: str, name: str, attributes: Mapping[str, str], *, token: str | None = None) -> NewToken:
    """Appends a new token's digest line; fails if the name is taken (names are unique in the file)."""
    check_name(name)
    lines = _lines(text)
    if _find(lines, name) is not None:
        raise TokenAdminError(f"token {name!r} already exists (rotate or revoke it)")
    token = token or generate_token()
    lines.append(format_token_line(name, digest_field(token), attributes))
    return NewToken(name, token, _join(lines))


def revoke_token(text: str, name: str) -> str:
    """Removes the token's line; other lines and comments stay as they were."""
    lines = _lines(text)
    index = _find(lines, name)
    if index is None:
        raise TokenAdminError(f"no token named {name!r}")
    del lines[index]
    return _join(lines)


def rotated_name(name: str, until: str) -> str:
    """The name the outgoing token keeps during the overlap.

    Token names are unique in the file, so the old line cannot keep ``name`` while the new one takes
    it. The new token takes ``name`` (the identity that lasts); the old one is renamed so logs and
    ``X-Auth-Request-User`` show it is the outgoing credential and until when.
    """
    suffix = ROTATED_SUFFIX + until.replace("-", "").replace(":", "")
    return name[: MAX_NAME_LENGTH - len(suffix)] + suffix


def rotate_token(text: str, name: str, overlap: dt.timedelta, now: dt.datetime) -> NewToken:
    """A new token under ``name`` with the old one's attributes; the old one expires after ``overlap``.

    The old line is kept (renamed, see ``rotated_name``) right above the new one, with
    ``expires=now+overlap`` unless it expires earlier. With a zero overlap, or an old token that has
    already expired, there is nothing to keep: the new line replaces the old one, which stops working.
    """
    lines = _lines(text)
    index = _find(lines, name)
    if index is None:
        raise TokenAdminError(f"no token named {name!r}")
    fields = _split(lines[index]) or []
    if len(fields) < 2:
        raise TokenAdminError(f"line {index + 1}: token {name!r} has no secret field")
    attrs = _attributes(fields[2:])
    token = generate_token()
    new_line = format_token_line(name, digest_field(token), attrs)
    until = now + overlap
    if overlap > dt.timedelta(0) and "expires" in attrs:
        until = min(until, parse_time(attrs["expires"]))
    if until <= now:  # a zero overlap, or an old token that has already expired: nothing to keep
        lines[index] = new_line
        return NewToken(name, token, _join(lines))
    until_text = format_time(until)
    old_name = rotated_name(name, until_text)
    if _find(lines, old_name) is not None:
        raise TokenAdminError(f"token {old_name!r} already exists; revoke it first")
    old_attrs = {**attrs, "expires": until_text}
    lines[index : index + 1] = [format_token_line(old_name, fields[1], old_attrs), new_line]
    return NewToken(name, token, _join(lines), Outgoing(old_name, until_text))


# --- the htpasswd file ----------------------------------------------------------------------------


def _find_user(lines: list[str], name: str) -> int | None:
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.partition(":")[0] == name:
            return index
    return None


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """bcrypt (``$2b$``), which every proxy's htpasswd reader and authgate verify."""
    if not password:
        raise TokenAdminError("empty password")
    if len(password.encode()) > 72:
        raise TokenAdminError("password longer than 72 bytes (bcrypt ignores the rest)")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def set_user(text: str, name: str, password: str, *, replace: bool = False, rounds: int = BCRYPT_ROUNDS) -> str:
    """Adds ``name:bcrypt`` (or replaces the user's line in place when ``replace``)."""
    check_name(name)
    lines = _lines(text)
    index = _find_user(lines, name)
    line = f"{name}:{hash_password(password, rounds)}"
    if index is None:
        lines.append(line)
    elif replace:
        lines[index] = line
    else:
        raise TokenAdminError(f"user {name!r} already exists (use --replace to set a new password)")
    return _join(lines)


def remove_user(text: str, name: str) -> str:
    lines = _lines(text)
    index = _find_user(lines, name)
    if index is None:
        raise TokenAdminError(f"no user named {name!r}")
    del lines[index]
    return _join(lines)


def list_users(text: str) -> list[str]:
    return [
        line.strip().partition(":")[0] for line in _lines(text) if line.strip() and not line.strip().startswith("#")
    ]
