"""Verifying htpasswd hashes, with a cache of successes that holds nothing usable as a credential.

bcrypt is deliberately slow (tens of milliseconds). Browsers and Prefect clients send the same Basic
credential on every request, so after one successful check we remember *that this exact user, password and
stored hash matched* as an HMAC under a random key that lives only in this process. The cache can answer
"seen and good" for the same triple, but its keys cannot be reversed or replayed anywhere else. It is bounded
(least recently used first out), lives in one credentials snapshot and so is emptied on every reload, and a
changed hash in the Secret changes the key, so a rotated password never hits an old entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from typing import Any

import bcrypt
from passlib.hash import apr_md5_crypt, sha256_crypt, sha512_crypt

from app.credentials import User

SLOW_KINDS = frozenset({"bcrypt", "apr1", "sha256-crypt", "sha512-crypt"})
MAX_PASSWORD_BYTES = 1024


def verify_hash(user: User, password: str) -> bool:
    """Checks ``password`` against the user's stored hash. May take tens of milliseconds (bcrypt)."""
    secret = password.encode("utf-8")
    if len(secret) > MAX_PASSWORD_BYTES:
        return False
    if user.kind == "bcrypt":
        # The bcrypt library verifies $2b$/$2a$; $2y$ (PHP/Apache) is the same algorithm under another name.
        stored = user.hash.encode("ascii", "replace")
        if stored.startswith(b"$2y$"):
            stored = b"$2b$" + stored[4:]
        if len(secret) > 72:  # bcrypt ignores bytes past 72; refuse instead of silently truncating
            return False
        try:
            return bcrypt.checkpw(secret, stored)
        except ValueError:
            return False
    if user.kind == "sha1":
        expected = user.hash[len("{SHA}") :].encode("ascii", "replace")
        actual = base64.b64encode(hashlib.sha1(secret).digest())  # noqa: S324 - the format is SHA-1
        return hmac.compare_digest(expected, actual)
    handler: Any = {"apr1": apr_md5_crypt, "sha256-crypt": sha256_crypt, "sha512-crypt": sha512_crypt}.get(user.kind)
    if handler is None:
        return False
    try:
        return bool(handler.verify(secret, user.hash))
    except ValueError:
        return False


class VerifiedCache:
    """Remembers successful (user, password, hash) checks as keyed HMACs. Thread-safe, bounded LRU."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _mac(self, user: User, password: str) -> bytes:
        message = b"\0".join((user.name.encode(), password.encode("utf-8", "surrogatepass"), user.hash.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, user: User, password: str) -> bool:
        if self.max_entries <= 0:
            return False
        mac = self._mac(user, password)
        with self._lock:
            if mac in self._entries:
                self._entries.move_to_end(mac)
                return True
        return False

    def add(self, user: User, password: str) -> None:
        if self.max_entries <= 0:
            return
        mac = self._mac(user, password)
        with self._lock:
            self._entries[mac] = None
            self._entries.move_to_end(mac)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def is_slow(user: User) -> bool:
    return user.kind in SLOW_KINDS
