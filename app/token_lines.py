"""A new token and its line in the Secret's ``tokens`` file: the token, its ``sha256:`` digest field, its
attributes (``--expires`` as a duration or a time, ``--routes``, ``--methods``, ``--paths``) checked as the
server will parse them, and the line itself.

``authgate new-token`` uses these without Kubernetes (it prints the line), and the token CLI through the
API (``app.kube.cli``) uses the same ones, so both take the same forms and write the same lines.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import secrets
from collections.abc import Collection, Iterable, Mapping

from app.credentials import parse_token_line
from app.errors import ConfigError
from app.policy import ROUTE_NAME_RE

TOKEN_BYTES = 32  # 256 bits of randomness: 43 characters of base64url
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokenAdminError(ValueError):
    """An edit that cannot be made (unknown or duplicate name, bad value). ``str()`` is one line."""


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


def format_token_line(name: str, secret_field: str, attributes: Mapping[str, str]) -> str:
    attrs = [f"{key}={value}" for key, value in attributes.items() if value]
    return " ".join([name, secret_field, *attrs])
