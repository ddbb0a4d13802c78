"""Sealing browser sessions and rotating their keys (app.session_keys)."""

from __future__ import annotations

import base64
import secrets

import pytest

from app.errors import ConfigError
from app.session_keys import MAX_SEALED_CHARS, parse_session_keys


def key_line(name: str, raw: bytes | None = None) -> str:
    return f"{name} {base64.b64encode(raw or secrets.token_bytes(32)).decode()}"


OLD = key_line("2026-11")
NEW = key_line("2026-12")


def test_a_sealed_value_opens_to_what_was_sealed_and_hides_it():
    keys = parse_session_keys(OLD + "\n")
    sealed = keys.seal(b'{"u":"alice"}')
    assert keys.open(sealed) == b'{"u":"alice"}'
    assert "alice" not in sealed and "YWxpY2" not in sealed  # not readable, not even as base64
    assert keys.seal(b"same") != keys.seal(b"same")  # a fresh nonce every time


def test_rotation_with_overlap_then_without():
    old = parse_session_keys(OLD)
    sealed_old = old.seal(b"before")
    rotated = parse_session_keys(f"{NEW}\n{OLD}\n")  # the new key first: it seals, both open
    assert rotated.open(sealed_old) == b"before"
    sealed_new = rotated.seal(b"after")
    assert old.open(sealed_new) == "unknown_key"  # sealed under the new key, not the old one
    assert rotated.open(sealed_new) == b"after"
    dropped = parse_session_keys(NEW)  # the old key dropped: what it sealed no longer opens
    assert dropped.open(sealed_old) == "unknown_key"
    assert dropped.open(sealed_new) == b"after"


def test_another_key_under_the_same_name_cannot_open():
    sealed = parse_session_keys(OLD).seal(b"x")
    name = OLD.split()[0]
    other = parse_session_keys(key_line(name))
    assert other.open(sealed) == "unknown_key"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),  # the tag
        lambda raw: raw[:30] + bytes([raw[30] ^ 1]) + raw[31:],  # the ciphertext
        lambda raw: raw[:10] + bytes([raw[10] ^ 1]) + raw[11:],  # the nonce
    ],
    ids=["tag", "ciphertext", "nonce"],
)
def test_any_changed_bit_is_refused(tamper):
    keys = parse_session_keys(OLD)
    sealed = keys.seal(b'{"u":"alice","e":1}')
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    changed = base64.urlsafe_b64encode(tamper(raw)).rstrip(b"=").decode()
    assert keys.open(changed) == "invalid"


@pytest.mark.parametrize(
    "value",
    ["", "not base64 !", "AAAA", "A" * (MAX_SEALED_CHARS + 1), base64.urlsafe_b64encode(b"\x02" + bytes(60)).decode()],
    ids=["empty", "not-base64", "short", "too-long", "other-version"],
)
def test_garbage_is_malformed(value):
    assert parse_session_keys(OLD).open(value) == "malformed"


def test_keys_in_standard_or_url_safe_base64_and_comments():
    raw = bytes(range(32))
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    keys = parse_session_keys(f"# newest first\n\na {url_safe}\n{key_line('b')}\n")
    assert keys.names == ("a", "b")
    assert keys.open(parse_session_keys(key_line("x", raw)).seal(b"y")) == b"y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "lists no key"),
        ("# only a comment\n", "lists no key"),
        ("k", "expected 'NAME KEY'"),
        ("k a b", "expected 'NAME KEY'"),
        ("k/1 " + base64.b64encode(bytes(32)).decode(), "name:"),
        ("k " + base64.b64encode(bytes(16)).decode(), "32 random bytes"),
        ("k not*base64", "32 random bytes"),
        (f"{key_line('k', bytes(32))}\n{key_line('k', b'1' * 32)}", "already used on line 1"),
        (f"{key_line('a', bytes(32))}\n{key_line('b', bytes(32))}", "same key as line 1"),
    ],
)
def test_bad_files_name_the_line_never_the_key(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_session_keys(text, "secret/session-keys")
    assert message in str(caught.value)
    for field in text.split():
        if len(field) > 20:
            assert field not in str(caught.value)
