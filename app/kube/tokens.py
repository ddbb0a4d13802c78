"""Pure edits of the Secret's ``tokens`` and ``htpasswd`` text: add, revoke, rotate, list.

The token CLI's operations (``app.kube.cli``). Every function takes the file's text and returns new text,
so the Kubernetes read-modify-write loop (``app.kube.api``) can re-run an edit on a fresh copy after a 409
Conflict, and tests need no API server. Edits touch only the line they are about: comments, blank lines,
column alignment and the order of every other line survive, because people keep notes in these files.

Only ``sha256:`` digests of generated tokens are ever written (``app.token_lines``); the token itself is
returned to the caller to print once and is never stored.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import bcrypt

from app.token_lines import TokenAdminError, digest_field, format_time, format_token_line, generate_token, parse_time

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")
MAX_NAME_LENGTH = 128
BCRYPT_ROUNDS = 12
ROTATED_SUFFIX = ".until-"  # old name + suffix + expiry, e.g. ci.until-20270131T000000Z


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


# --- names ----------------------------------------------------------------------------------------


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
