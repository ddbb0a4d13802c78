"""The keys that seal browser sessions, from the Secret's ``session-keys`` file, and the sealing itself.

A session is a cookie the browser holds, sealed with AES-256-GCM (the ``cryptography`` package's AEAD, not
hand-made crypto): the browser can neither read nor change it, and nothing is stored server side, so every
replica opens what any other sealed and a reload loses nothing.

The file holds one key per line, newest first (``authgate new-session-key`` prints one)::

    # 32 random bytes each, URL-safe base64; the first seals
    q0e9nX0cQ3aM8k0v1c3Zt6jv0oVq2c4S0Yw5X7p2F1E
    Xb1cY0cV8J6m3Q9y2nK5w7L4t1R8s0p3D6f9h2j5k8M

The first key seals new sessions; every key listed opens them. Rotation with overlap is therefore: add a new
key as the first line (sessions sealed with the old one keep working), and drop the old line once the sessions
it sealed have expired (``session.lifetime_seconds``); dropping it at once signs everyone out. The keys live in
the same Secret as the tokens and htpasswd, so they rotate with them and every replica sees the same list.

A sealed value names its key by an 8-byte digest of the key, so opening costs one dictionary lookup and one
decryption, whichever key sealed it. Each key also yields a second, independent key (``tag_key``) for the keyed
digests a session seals in (app.sessions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import ConfigError

SESSION_KEYS_FILE = "session-keys"
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = b"\x01"
# Bound to every sealed value: a ciphertext made for anything else under the same key never opens as a session.
_AAD = b"authgate session " + VERSION
_HEADER = len(VERSION) + KEY_ID_BYTES + NONCE_BYTES
# A sealed value longer than this is refused before it is decoded (browsers cap a cookie at 4096 bytes).
MAX_SEALED_CHARS = 4096
_BASE64_RE = re.compile(r"[A-Za-z0-9+/_-]+=*")

OpenFailure = Literal["malformed", "unknown_key", "invalid"]


@dataclass(frozen=True, slots=True)
class SessionKey:
    line: int  # where the file lists it (for messages; a key has no name)
    key_id: bytes
    aead: AESGCM = field(repr=False)
    tag_key: bytes = field(repr=False, default=b"")


def _urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys of one snapshot: the first seals, all open."""

    keys: tuple[SessionKey, ...]
    by_id: Mapping[bytes, SessionKey] = field(repr=False)

    @property
    def sealing(self) -> SessionKey:
        return self.keys[0]

    def seal(self, payload: bytes) -> str:
        """``payload`` encrypted and authenticated under the first key, as cookie-safe text."""
        key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)  # 96 random bits per seal: safe for far more than 2^32 seals per key
        header = VERSION + key.key_id + nonce
        return _urlsafe(header + key.aead.encrypt(nonce, payload, _AAD + header))

    def open(self, sealed: str) -> tuple[bytes, SessionKey] | OpenFailure:
        """The payload of a value :meth:`seal` made under any listed key, and that key; or why not: ``malformed`` (not a
        sealed value at all), ``unknown_key`` (sealed under a key no longer listed) or ``invalid`` (changed,
        forged or made for something else)."""
        if len(sealed) > MAX_SEALED_CHARS:
            return "malformed"
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (binascii.Error, ValueError):
            return "malformed"
        if len(raw) < _HEADER + TAG_BYTES or raw[:1] != VERSION:
            return "malformed"
        key = self.by_id.get(raw[1 : 1 + KEY_ID_BYTES])
        if key is None:
            return "unknown_key"
        header, nonce = raw[:_HEADER], raw[1 + KEY_ID_BYTES : _HEADER]
        try:
            return key.aead.decrypt(nonce, raw[_HEADER:], _AAD + header), key
        except InvalidTag:
            return "invalid"


def new_key_line() -> str:
    """A fresh key for the ``session-keys`` file (``authgate new-session-key``)."""
    return _urlsafe(os.urandom(KEY_BYTES))


def key_id(key: bytes) -> bytes:
    """The digest a sealed value names its key by: reveals nothing of the key (SHA-256, truncated)."""
    return hashlib.sha256(b"authgate session key id\0" + key).digest()[:KEY_ID_BYTES]


def _decode_key(text: str) -> bytes | None:
    if not _BASE64_RE.fullmatch(text):
        return None
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_session_keys(text: str, source: str = SESSION_KEYS_FILE) -> SessionKeys:
    """Parses the ``session-keys`` file: one key per line (URL-safe base64 of 32 random bytes; standard base64
    is read too), ``#`` comments and blank lines ignored. Raises ConfigError naming ``file:line`` (never the key)
    on the first error, and when the file lists no key."""
    keys: list[SessionKey] = []
    ids: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = _decode_key(stripped)
        if key is None or len(key) != KEY_BYTES:
            raise ConfigError(
                f"expected one key a line: {KEY_BYTES} random bytes in URL-safe base64 (authgate new-session-key)",
                source,
                number,
            )
        ident = key_id(key)
        if ident in ids:
            raise ConfigError(f"same key as line {ids[ident]}", source, number)
        ids[ident] = number
        tag_key = hashlib.sha256(b"authgate session tag key\0" + key).digest()
        keys.append(SessionKey(line=number, key_id=ident, aead=AESGCM(key), tag_key=tag_key))
    if not keys:
        raise ConfigError("lists no key (one a line; the first seals, every one opens)", source)
    return SessionKeys(keys=tuple(keys), by_id={key.key_id: key for key in keys})
