"""Pure edits of the tokens and htpasswd text: only the line concerned changes, and the result parses."""

from __future__ import annotations

import datetime as dt

import bcrypt
import pytest

from app.credentials import parse_htpasswd, parse_tokens, token_digest
from app.kube.tokens import (
    Outgoing,
    add_token,
    list_tokens,
    remove_user,
    revoke_token,
    rotate_token,
    rotated_name,
    set_user,
)
from app.token_lines import TokenAdminError

NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
FILE = (
    "# name   secret   attributes\n"
    "\n"
    f"ci       sha256:{'a' * 64}    routes=api expires=2027-01-31T00:00:00Z\n"
    "   # an indented note about dashboards\n"
    f"dash     sha256:{'b' * 64}    methods=GET,HEAD\n"
)


def test_add_appends_a_digest_line_and_keeps_everything_else() -> None:
    new = add_token(FILE, "deploy", {"routes": "api", "paths": "/api/flows"})
    assert new.text.startswith(FILE)
    (token,) = [t for t in parse_tokens(new.text) if t.name == "deploy"]
    assert token.digest == token_digest(new.token) and not token.plain
    assert token.paths == ("/api/flows",) and new.token not in new.text
    assert len(new.token) >= 43


def test_add_refuses_a_taken_or_bad_name() -> None:
    with pytest.raises(TokenAdminError, match="already exists"):
        add_token(FILE, "ci", {})
    with pytest.raises(TokenAdminError, match="use 1-128"):
        add_token(FILE, "has space", {})


def test_revoke_removes_only_that_line() -> None:
    text = revoke_token(FILE, "ci")
    assert text == FILE.replace(FILE.splitlines(keepends=True)[2], "")
    with pytest.raises(TokenAdminError, match="no token named 'nope'"):
        revoke_token(FILE, "nope")


def test_rotate_gives_the_name_to_the_new_token_and_expires_the_old_one() -> None:
    new = rotate_token(FILE, "dash", dt.timedelta(hours=24), NOW)
    tokens = {t.name: t for t in parse_tokens(new.text)}
    assert tokens["dash"].digest == token_digest(new.token)
    assert tokens["dash"].methods == frozenset({"GET", "HEAD"}) and tokens["dash"].expires is None
    old = tokens["dash.until-20261123T060000Z"]
    assert old.digest == bytes.fromhex("b" * 64) and old.expires == NOW + dt.timedelta(hours=24)
    assert old.methods == frozenset({"GET", "HEAD"})
    assert "# an indented note about dashboards" in new.text


def test_rotate_never_extends_an_earlier_expiry_and_zero_overlap_replaces() -> None:
    soon = rotate_token(FILE, "ci", dt.timedelta(days=365), NOW)
    old = next(t for t in parse_tokens(soon.text) if t.name.startswith("ci.until-"))
    assert old.expires == dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
    now = rotate_token(FILE, "ci", dt.timedelta(0), NOW)
    assert [t.name for t in parse_tokens(now.text)] == ["ci", "dash"]
    assert f"sha256:{'a' * 64}" not in now.text


def test_rotate_says_whether_and_until_when_the_old_token_keeps_working() -> None:
    kept = rotate_token(FILE, "dash", dt.timedelta(hours=24), NOW)
    assert kept.outgoing == Outgoing("dash.until-20261123T060000Z", "2026-11-23T06:00:00Z")
    assert rotate_token(FILE, "dash", dt.timedelta(0), NOW).outgoing is None


def test_rotate_replaces_an_old_token_that_has_already_expired() -> None:
    after_expiry = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)  # ci expires=2027-01-31T00:00:00Z
    new = rotate_token(FILE, "ci", dt.timedelta(hours=24), after_expiry)
    assert new.outgoing is None
    assert [t.name for t in parse_tokens(new.text)] == ["ci", "dash"]
    assert f"sha256:{'a' * 64}" not in new.text


def test_rotated_name_stays_within_128_characters() -> None:
    name = rotated_name("x" * 128, "2026-11-23T06:00:00Z")
    assert len(name) == 128 and name.endswith(".until-20261123T060000Z")


def test_list_never_shows_the_secret_field() -> None:
    infos = list_tokens(FILE + "legacy plain-token-0123456789\n")
    assert [(i.name, i.hashed, i.expires) for i in infos] == [
        ("ci", True, "2027-01-31T00:00:00Z"),
        ("dash", True, None),
        ("legacy", False, None),
    ]
    assert all("sha256" not in repr(i) and "plain-token" not in repr(i) for i in infos)


def test_users_are_bcrypt_and_edits_keep_other_lines() -> None:
    text = set_user("# team\nbob:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n", "alice", "pw one", rounds=4)
    users = {u.name: u for u in parse_htpasswd(text)}
    assert users["alice"].kind == "bcrypt" and bcrypt.checkpw(b"pw one", users["alice"].hash.encode())
    with pytest.raises(TokenAdminError, match="already exists"):
        set_user(text, "alice", "pw two", rounds=4)
    replaced = set_user(text, "alice", "pw two", replace=True, rounds=4)
    assert replaced.splitlines()[:2] == text.splitlines()[:2]
    assert bcrypt.checkpw(b"pw two", parse_htpasswd(replaced)[1].hash.encode())
    assert remove_user(text, "alice") == "# team\nbob:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n"
    with pytest.raises(TokenAdminError, match="72 bytes"):
        set_user(text, "carol", "x" * 73, rounds=4)
