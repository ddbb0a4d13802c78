"""A new token's values and line: durations, expiry, the digest field, attributes and routes, checked as the
server parses them."""

from __future__ import annotations

import datetime as dt

import pytest

from app.credentials import parse_tokens, token_digest
from app.token_lines import (
    TokenAdminError,
    check_routes,
    digest_field,
    parse_duration,
    resolve_expiry,
    token_attributes,
    unknown_routes,
)

NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("1h30m", 5400), ("2w", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "10", "1x", "1h 30m", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(TokenAdminError, match="not a duration"):
        parse_duration(text)


def test_expiry_is_a_time_or_a_duration_from_now() -> None:
    assert resolve_expiry("90d", NOW) == "2027-02-20T06:00:00Z"
    assert resolve_expiry("2027-01-31T01:00:00+01:00", NOW) == "2027-01-31T00:00:00Z"
    with pytest.raises(TokenAdminError, match="needs a zone"):
        resolve_expiry("2027-01-31T00:00:00", NOW)


def test_digest_field_matches_the_parser() -> None:
    (token,) = parse_tokens(f"x {digest_field('tok-0123456789abcdef')}\n")
    assert token.digest == token_digest("tok-0123456789abcdef")


def test_token_attributes_name_the_option_and_keep_the_files_order() -> None:
    attrs = token_attributes(NOW, expires="12h", routes="api, dash", methods="GET", paths="/api")
    assert attrs == {"routes": "api,dash", "methods": "GET", "paths": "/api", "expires": "2026-11-22T18:00:00Z"}
    with pytest.raises(TokenAdminError, match=r"^--expires: 'soon' is neither a duration from now \(30m"):
        token_attributes(NOW, expires="soon")
    with pytest.raises(TokenAdminError, match=r"^--expires: '0s' is not in the future"):
        token_attributes(NOW, expires="0s")
    with pytest.raises(TokenAdminError, match=r"^--routes: 'a/b' is not a route name"):
        token_attributes(NOW, routes="a/b")
    with pytest.raises(TokenAdminError, match=r"^--paths: must start with '/'"):
        token_attributes(NOW, paths="api")


def test_routes_are_checked_against_the_policy_or_what_the_secret_uses() -> None:
    check_routes(["api"], {"api", "default"}, "p.yaml")
    with pytest.raises(TokenAdminError, match=r"'apy' is not a route of the policy p.yaml \(routes: api, default\); "):
        check_routes(["apy"], {"api", "default"}, "p.yaml")
    assert unknown_routes(["api", "prefect-ui"], {"api", "dashboards"}, "ns/s") == ["prefect-ui"]
    assert unknown_routes(["anything"], set(), "ns/s") == ["anything"]  # a brand-new Secret: a warning only
    with pytest.raises(TokenAdminError, match=r"uses route 'dashbords'; did you mean 'dashboards'\?"):
        unknown_routes(["dashbords"], {"api", "dashboards"}, "ns/s")
