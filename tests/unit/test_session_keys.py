"""Sealing browser sessions and rotating their keys (app.session_keys)."""

from __future__ import annotations

import base64
import secrets

import pytest

from app.errors import ConfigError
from app.session_keys import MAX_SEALED_CHARS, new_key_line, parse_session_keys


def key_line(raw: bytes | None = None) -> str:
    return base64.urlsafe_b64encode(raw or secrets.token_bytes(32)).decode().rstrip("=")


OLD = key_line()
NEW = key_line()


def opened(keys, sealed):
    result = keys.open(sealed)
    return result if isinstance(result, str) else result[0]


def test_a_sealed_value_opens_to_what_was_sealed_and_hides_it():
    keys = parse_session_keys(OLD + "\n")
    sealed = keys.seal(b'{"u":"alice"}')
    assert opened(keys, sealed) == b'{"u":"alice"}'
    assert "alice" not in sealed and "YWxpY2" not in sealed  # not readable, not even as base64
    assert keys.seal(b"same") != keys.seal(b"same")  # a fresh nonce every time


def test_rotation_with_overlap_then_without():
    old = parse_session_keys(OLD)
    sealed_old = old.seal(b"before")
    rotated = parse_session_keys(f"{NEW}\n{OLD}\n")  # the new key first: it seals, both open
    assert opened(rotated, sealed_old) == b"before"
    sealed_new = rotated.seal(b"after")
    assert old.open(sealed_new) == "unknown_key"  # sealed under the new key, not the old one
    assert opened(rotated, sealed_new) == b"after"
    dropped = parse_session_keys(NEW)  # the old key dropped: what it sealed no longer opens
    assert dropped.open(sealed_old) == "unknown_key"
    assert opened(dropped, sealed_new) == b"after"
    assert rotated.open(sealed_old)[1].line == 2  # the key that opened it, and its tag key differs
    assert rotated.open(sealed_new)[1].tag_key != rotated.open(sealed_old)[1].tag_key


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


def test_keys_in_url_safe_or_standard_base64_with_comments_and_the_cli_form():
    raw = bytes(range(200, 232))  # encodes with - and _ in URL-safe base64
    standard = base64.b64encode(raw).decode()
    keys = parse_session_keys(f"# newest first\n\n{key_line(raw)}\n{key_line()}\n")
    assert len(keys.keys) == 2 and keys.sealing.line == 3
    assert opened(keys, parse_session_keys(standard).seal(b"y")) == b"y"
    assert len(parse_session_keys(new_key_line()).keys) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "lists no key"),
        ("# only a comment\n", "lists no key"),
        ("a b", "expected one key a line"),
        (base64.b64encode(bytes(16)).decode(), "32 random bytes"),
        ("not*base64", "32 random bytes"),
        (f"{key_line(bytes(32))}\n{key_line(bytes(32))}", "same key as line 1"),
    ],
)
def test_bad_files_name_the_line_never_the_key(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_session_keys(text, "secret/session-keys")
    assert message in str(caught.value)
    for field in text.split():
        if len(field) > 20:
            assert field not in str(caught.value)
