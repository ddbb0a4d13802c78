"""Verifying htpasswd hashes, with a cache of successes that holds nothing usable as a credential.

bcrypt is deliberately slow (tens of milliseconds). Browsers and Prefect clients send the same Basic
credential on every request, so after one successful check we remember *that this exact user, password and
stored hash matched* as an HMAC under a random key that lives only in this process. The cache can answer
"seen and good" for the same triple, but its keys cannot be reversed or replayed anywhere else. It is bounded
(least recently used first out) and kept across reloads: the stored hash is part of each key, so a changed
password never hits an old entry, while an unrelated change to the Secret does not log everyone out - which
matters because a verified credential still passes while its user name or address is banned (app.throttle).
A reload drops the entries of users removed or whose hash changed (:meth:`VerifiedCache.retain`).

Every kind is remembered once verified. Only the slow kinds (``SLOW_KINDS``) need it to pass a *name* ban:
the others (``{SHA}``, a couple of microseconds a check, see docs/security.md) are cheap enough to be checked even
under one, on the event loop, whatever the load.

Unknown user names are checked against decoys of the kinds and costs in the file (:class:`Decoys`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

import bcrypt
from passlib.hash import apr_md5_crypt, sha256_crypt, sha512_crypt

from app.credentials import User

# Kinds whose check costs too much to run on the event loop or to run under a name ban: measured with
# bench/hash_costs.py (docs/security.md), {SHA} costs a couple of microseconds, apr1 and sha-crypt at their
# defaults milliseconds, bcrypt milliseconds to over a hundred.
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
    """Remembers successful (user, password, hash) checks as keyed HMACs. Thread-safe, bounded LRU.

    Each entry is the MAC of the triple, with the MAC of (user, hash) as its value, so a reload can drop the
    entries of users who are gone or whose hash changed without knowing any password."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _mac(self, user: User, password: str) -> bytes:
        message = b"\0".join((user.name.encode(), password.encode("utf-8", "surrogatepass"), user.hash.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _user_tag(self, user: User) -> bytes:
        message = b"\1".join((user.name.encode(), user.hash.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()[:16]

    def retain(self, users: Mapping[str, User]) -> int:
        """Keeps only the entries of these users with these hashes (a reload: a user removed, or whose
        password changed, is forgotten; everyone else stays verified). Returns how many were dropped."""
        if not self._entries:
            return 0
        tags = {self._user_tag(user) for user in users.values()}
        with self._lock:
            stale = [mac for mac, tag in self._entries.items() if tag not in tags]
            for mac in stale:
                del self._entries[mac]
        return len(stale)

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
        tag = self._user_tag(user)
        with self._lock:
            self._entries[mac] = tag
            self._entries.move_to_end(mac)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def is_slow(user: User) -> bool:
    """Whether checking this hash is too slow for the event loop and for a check under a name ban."""
    return user.kind in SLOW_KINDS


_BCRYPT_COST_RE = re.compile(r"\$2[aby]\$(\d\d)\$")
_ROUNDS_RE = re.compile(r"\$[56]\$rounds=(\d+)\$")
SHA_CRYPT_DEFAULT_ROUNDS = 5000  # crypt(3)'s default when a $5$/$6$ hash names no rounds


def hash_cost(user: User) -> tuple[str, int]:
    """What a check of this user's hash costs: its kind and work factor (bcrypt cost, sha-crypt rounds)."""
    if user.kind == "bcrypt":
        match = _BCRYPT_COST_RE.match(user.hash)
        return user.kind, int(match.group(1)) if match else 10
    if user.kind in ("sha256-crypt", "sha512-crypt"):
        match = _ROUNDS_RE.match(user.hash)
        return user.kind, int(match.group(1)) if match else SHA_CRYPT_DEFAULT_ROUNDS
    return user.kind, 0


def make_decoy(kind: str, work: int) -> User:
    """A hash of a random password nobody knows, of the given kind and work factor (costs one real check
    to make, so callers keep them: :class:`DecoyFactory`)."""
    secret = secrets.token_urlsafe(24)
    if kind == "bcrypt":
        hashed = bcrypt.hashpw(secret.encode(), bcrypt.gensalt(min(max(work, 4), 31))).decode()
    elif kind == "apr1":
        hashed = apr_md5_crypt.hash(secret)
    elif kind == "sha256-crypt":
        hashed = sha256_crypt.using(rounds=work, relaxed=True).hash(secret)  # type: ignore[no-untyped-call]
    elif kind == "sha512-crypt":
        hashed = sha512_crypt.using(rounds=work, relaxed=True).hash(secret)  # type: ignore[no-untyped-call]
    else:
        hashed = "{SHA}" + base64.b64encode(hashlib.sha1(secret.encode()).digest()).decode()  # noqa: S324
        kind = "sha1"
    return User(name="", hash=hashed, kind=kind)


class DecoyFactory:
    """Decoy hashes by (kind, work factor), made once per process and kept across reloads."""

    def __init__(self) -> None:
        self._decoys: dict[tuple[str, int], User] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, work: int) -> User:
        with self._lock:
            decoy = self._decoys.get((kind, work))
        if decoy is None:
            decoy = make_decoy(kind, work)
            with self._lock:
                decoy = self._decoys.setdefault((kind, work), decoy)
        return decoy


_DEFAULT_FACTORY = DecoyFactory()


class Decoys:
    """What an unknown user name is checked against, so that it costs what a real user's check costs.

    Each unknown name is mapped, by a keyed hash, to one hash kind and work factor *present in the file*,
    in proportion to how many users have it: with 9 bcrypt-cost-12 users and 1 ``{SHA}`` user, 9 names in
    10 cost a bcrypt-12 check. The same name always gets the same decoy (a real user's timing does not
    change between tries either). The key is derived from the stored hashes, so every replica maps a name
    alike and nobody without the Secret can predict the mapping. What holds, exactly: an unknown name's
    check takes as long as some real user's check; a name whose timing matches a rare kind in the file is
    more likely, not certainly, a real user of that kind."""

    def __init__(self, users: Mapping[str, User], factory: DecoyFactory | None = None) -> None:
        factory = factory if factory is not None else _DEFAULT_FACTORY
        costs = Counter(hash_cost(user) for user in users.values())
        self._choices: list[tuple[int, User]] = []  # (cumulative user count, decoy)
        total = 0
        for (kind, work), count in sorted(costs.items()):
            total += count
            self._choices.append((total, factory.get(kind, work)))
        if not self._choices:  # no users: nothing to hide, no work to spend
            self._choices.append((1, factory.get("sha1", 0)))
            total = 1
        self._total = total
        digest = hashlib.sha256(b"authgate decoys")
        for name in sorted(users):
            digest.update(b"\0" + users[name].hash.encode("utf-8", "surrogatepass"))
        self._key = digest.digest()

    def for_name(self, name: str) -> User:
        mac = hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        index = int.from_bytes(mac[:8], "big") % self._total
        for bound, decoy in self._choices:
            if index < bound:
                return decoy
        return self._choices[-1][1]
