"""The credential store: parsing the Secret's ``tokens`` and ``htpasswd`` files into an immutable snapshot.

Tokens are held only as SHA-256 digests, whatever form the Secret gave them in: a lookup hashes the
presented token and finds it in a dict keyed by digest. The dict lookup's timing depends on the digest of
what the client sent, not on any stored secret, so it leaks nothing an attacker can use; the final
``hmac.compare_digest`` keeps the match itself constant-time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import importlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError
from app.session_keys import SESSION_KEYS_FILE, SessionKeys, parse_session_keys


def _own_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 constructor (module ``_sha256`` on 3.11, ``_sha2`` from 3.12), else hashlib's
    (OpenSSL's): see :func:`token_digest`."""
    for module in ("_sha256", "_sha2"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(module).sha256  # type: ignore[no-any-return]
    return hashlib.sha256  # pragma: no cover - an interpreter built without its own hashes


_SHA256 = _own_sha256()
TOKENS_FILE = "tokens"
HTPASSWD_FILE = "htpasswd"
SECRET_FILES = (TOKENS_FILE, HTPASSWD_FILE, SESSION_KEYS_FILE)
# Keys that may hold a JWKS a route's JWT issuer names (app.jwt_policy.JWKS_SECRET_KEY_RE): read and
# fingerprinted beside the two files above, so they rotate with them.
JWKS_FILE_RE = re.compile(r"jwks[A-Za-z0-9._-]{0,58}\.json")
# Keys that may hold an OpenID client secret the policy's sign_in.oidc names (app.oidc_policy): read and
# fingerprinted like the JWKS files, so a new secret reaches the running process with the next reload.
OIDC_FILE_RE = re.compile(r"oidc[A-Za-z0-9._-]{0,60}")
MAX_CLIENT_SECRET_BYTES = 4096

MAX_FILE_BYTES = 16 * 1024 * 1024
NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")
# RFC 6750 b64token / RFC 7235 token68
TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
DIGEST_RE = re.compile(r"sha256:([0-9a-fA-F]{64})")
METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
MIN_PLAIN_TOKEN_LENGTH = 16
TOKEN_ATTRIBUTES = ("expires", "routes", "methods", "paths")

# htpasswd hash kinds we verify, by prefix
HASH_KINDS: tuple[tuple[str, str], ...] = (
    ("$2y$", "bcrypt"),
    ("$2b$", "bcrypt"),
    ("$2a$", "bcrypt"),
    ("$apr1$", "apr1"),
    ("{SHA}", "sha1"),
    ("$5$", "sha256-crypt"),
    ("$6$", "sha512-crypt"),
)


def token_digest(token: str | bytes) -> bytes:
    """The SHA-256 digest under which a token is stored and looked up.

    Computed by CPython's own SHA-256 where the interpreter has it (the same digest as ``hashlib.sha256``'s):
    every request with a token pays one, and for a token's few dozen bytes OpenSSL's per-call set-up (its
    provider dispatch, a context allocated and freed) costs more than the hashing. In the served process a
    guess's digest took 2 to 3.6 µs through OpenSSL, 1.0 to 1.8 µs through CPython's (docs/benchmarks.md §11)."""
    digest: bytes = _SHA256(token.encode() if isinstance(token, str) else token).digest()
    return digest


@dataclass(frozen=True, slots=True)
class Token:
    """A named bearer token and the limits on its use. Holds a digest, never the token."""

    name: str
    digest: bytes = field(repr=False)
    expires: dt.datetime | None = None
    routes: frozenset[str] | None = None  # None = every route
    methods: frozenset[str] | None = None  # None = any method
    paths: tuple[str, ...] | None = None  # None = any path
    plain: bool = False  # the Secret held the token itself rather than its digest


@dataclass(frozen=True, slots=True)
class User:
    """An htpasswd entry. ``hash`` is the stored hash string (never logged)."""

    name: str
    hash: str = field(repr=False)
    kind: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """One immutable snapshot of everything the Secret held."""

    tokens_by_digest: Mapping[bytes, Token]
    users: Mapping[str, User]
    source: str = ""
    fingerprint: bytes = b""
    session_keys: SessionKeys | None = None  # the Secret's session-keys (app.session_keys); None: none listed
    # The Secret's oidc* files (app.oidc_policy's client_secret_key), stripped: key -> the client secret.
    oidc_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def tokens(self) -> tuple[Token, ...]:
        return tuple(self.tokens_by_digest.values())

    def find_token(self, token: str | bytes) -> Token | None:
        """The token whose digest matches ``token`` (its text, or that text UTF-8 encoded), compared in constant
        time."""
        digest = token_digest(token)
        found = self.tokens_by_digest.get(digest)
        if found is not None and hmac.compare_digest(found.digest, digest):
            return found
        return None


def _parse_time(value: str, source: str, line: int) -> dt.datetime:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"expires: not an RFC 3339 time: {value!r}", source, line) from None
    if parsed.tzinfo is None:
        raise ConfigError(f"expires: needs a time zone (e.g. Z): {value!r}", source, line)
    return parsed.astimezone(dt.UTC)


def _parse_list(value: str, attr: str, source: str, line: int) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not items or any(not item for item in items):
        raise ConfigError(f"{attr}: empty item in {value!r}", source, line)
    return items


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def parse_token_line(stripped: str, source: str, number: int) -> Token:
    """One ``NAME SECRET [ATTR=VALUE ...]`` line of the tokens file."""
    fields = stripped.split()
    if len(fields) < 2:
        raise ConfigError("expected 'NAME SECRET [ATTRIBUTE=VALUE ...]'", source, number)
    name, secret, *attrs = fields
    if not NAME_RE.fullmatch(name):
        raise ConfigError("name: use 1-128 of A-Z a-z 0-9 . _ @ -", source, number)
    if secret.startswith("sha256:"):
        match = DIGEST_RE.fullmatch(secret)
        if match is None:
            raise ConfigError("secret: 'sha256:' must be followed by 64 hex digits", source, number)
        digest, plain = bytes.fromhex(match.group(1)), False
    else:
        if not TOKEN68_RE.fullmatch(secret):
            raise ConfigError("secret: a plain token may hold only A-Z a-z 0-9 - . _ ~ + / =", source, number)
        if len(secret) < MIN_PLAIN_TOKEN_LENGTH:
            raise ConfigError(
                f"secret: a plain token needs at least {MIN_PLAIN_TOKEN_LENGTH} characters", source, number
            )
        digest, plain = token_digest(secret), True
    options: dict[str, object] = {}
    for attr in attrs:
        key, sep, value = attr.partition("=")
        if not sep or key not in TOKEN_ATTRIBUTES:
            raise ConfigError(f"unknown attribute {key!r} (known: {', '.join(TOKEN_ATTRIBUTES)})", source, number)
        if key in options:
            raise ConfigError(f"attribute {key!r} given twice", source, number)
        if key == "expires":
            options[key] = _parse_time(value, source, number)
        elif key == "routes":
            options[key] = frozenset(_parse_list(value, key, source, number))
        elif key == "methods":
            methods = [m.upper() for m in _parse_list(value, key, source, number)]
            for method in methods:
                if not METHOD_RE.fullmatch(method):
                    raise ConfigError(f"methods: not an HTTP method: {method!r}", source, number)
            options[key] = frozenset(methods)
        else:
            paths = _parse_list(value, key, source, number)
            for path in paths:
                if not path.startswith("/"):
                    raise ConfigError(f"paths: must start with '/': {path!r}", source, number)
                if any(ch in path for ch in "%#;?\\"):
                    raise ConfigError(
                        f"paths: a raw path prefix without % # ; ? or backslash (requests with them never "
                        f"match): {path!r}",
                        source,
                        number,
                    )
            options[key] = tuple(p.rstrip("/") or "/" for p in paths)
    return Token(name=name, digest=digest, plain=plain, **options)  # type: ignore[arg-type]


def parse_tokens(text: str, source: str = TOKENS_FILE) -> tuple[Token, ...]:
    """Parses the tokens file. Raises ConfigError with ``file:line`` (never the secret) on the first error."""
    tokens: list[Token] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, stripped in _logical_lines(text):
        token = parse_token_line(stripped, source, number)
        if token.name in names:
            raise ConfigError(f"token name {token.name!r} already used on line {names[token.name]}", source, number)
        if token.digest in digests:
            raise ConfigError(f"same token as line {digests[token.digest]}", source, number)
        names[token.name] = number
        digests[token.digest] = number
        tokens.append(token)
    return tuple(tokens)


def hash_kind(hashed: str) -> str | None:
    for prefix, kind in HASH_KINDS:
        if hashed.startswith(prefix):
            return kind
    return None


def parse_htpasswd(text: str, source: str = HTPASSWD_FILE) -> tuple[User, ...]:
    """Parses htpasswd lines. Plain-text and DES-crypt entries are rejected (they are not safe to store)."""
    users: list[User] = []
    seen: dict[str, int] = {}
    for number, stripped in _logical_lines(text):
        name, sep, hashed = stripped.partition(":")
        if not sep or not name or not hashed:
            raise ConfigError("expected 'user:hash'", source, number)
        if any(ch.isspace() for ch in name) or len(name) > 255:
            raise ConfigError("user name: no spaces, at most 255 characters", source, number)
        kind = hash_kind(hashed)
        if kind is None:
            raise ConfigError(
                "unsupported hash (use bcrypt 'htpasswd -B', apr1 'htpasswd -m', {SHA} or $5$/$6$)",
                source,
                number,
            )
        if name in seen:
            raise ConfigError(f"user {name!r} already defined on line {seen[name]}", source, number)
        seen[name] = number
        users.append(User(name=name, hash=hashed, kind=kind))
    return tuple(users)


def _decode(files: Mapping[str, bytes], key: str, source: str) -> str | None:
    data = files.get(key)
    if data is None:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES} bytes", f"{source}/{key}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8", f"{source}/{key}", line) from None


def load_secret_files(files: Mapping[str, bytes], source: str) -> Credentials:
    """Builds a Credentials snapshot from the Secret's files (key -> content).

    Raises ConfigError when neither file is present or either is malformed.
    """
    tokens_text = _decode(files, TOKENS_FILE, source)
    htpasswd_text = _decode(files, HTPASSWD_FILE, source)
    keys_text = _decode(files, SESSION_KEYS_FILE, source)
    oidc_secrets: dict[str, str] = {}
    for key in sorted(k for k in files if OIDC_FILE_RE.fullmatch(k)):
        data = files[key]
        if len(data) > MAX_CLIENT_SECRET_BYTES:
            raise ConfigError(f"larger than {MAX_CLIENT_SECRET_BYTES} bytes", f"{source}/{key}")
        try:
            secret = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError("not valid UTF-8", f"{source}/{key}") from None
        if not secret or not secret.isprintable():
            raise ConfigError("empty, or holds a line break or control character", f"{source}/{key}")
        oidc_secrets[key] = secret
    if tokens_text is None and htpasswd_text is None and not oidc_secrets:
        raise ConfigError(f"holds neither {TOKENS_FILE!r} nor {HTPASSWD_FILE!r} (nor an OpenID client secret)", source)
    tokens = parse_tokens(tokens_text, f"{source}/{TOKENS_FILE}") if tokens_text is not None else ()
    users = parse_htpasswd(htpasswd_text, f"{source}/{HTPASSWD_FILE}") if htpasswd_text is not None else ()
    # A token and a user of one name would be one principal to every route's `principals` and to the
    # application (X-Auth-Request-User): whoever holds the token would act as the user.
    user_names = {user.name for user in users}
    for token in tokens:
        if token.name in user_names:
            raise ConfigError(
                f"token name {token.name!r} is also an htpasswd user: a token would act as that user "
                "(rename one of them)",
                f"{source}/{TOKENS_FILE}",
            )
    return Credentials(
        tokens_by_digest={t.digest: t for t in tokens},
        users={u.name: u for u in users},
        source=source,
        fingerprint=files_fingerprint(files),
        session_keys=parse_session_keys(keys_text, f"{source}/{SESSION_KEYS_FILE}") if keys_text is not None else None,
        oidc_secrets=oidc_secrets,
    )


def files_fingerprint(files: Mapping[str, bytes]) -> bytes:
    """A digest of the Secret's content, so an unchanged Secret is not parsed again."""
    fingerprint = hashlib.sha256()
    for key in SECRET_FILES:
        data = files.get(key)
        fingerprint.update(key.encode() + (b"\0" + data if data is not None else b"\1") + b"\0")
    for key in sorted(k for k in files if JWKS_FILE_RE.fullmatch(k) or OIDC_FILE_RE.fullmatch(k)):
        fingerprint.update(b"%d:%s\0%d:%s" % (len(key), key.encode(), len(files[key]), files[key]))
    return fingerprint.digest()


def read_secret_dir(directory: Path) -> dict[str, bytes]:
    """Reads the Secret's files from a mounted directory (following kubelet's ``..data`` symlinks).

    Raises FileNotFoundError when the directory does not exist, ConfigError for unreadable files.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    files: dict[str, bytes] = {}
    jwks_keys = sorted(
        p.name for p in directory.iterdir() if JWKS_FILE_RE.fullmatch(p.name) or OIDC_FILE_RE.fullmatch(p.name)
    )
    for key in (*SECRET_FILES, *jwks_keys):
        path = directory / key
        try:
            data = _read_regular_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", str(path)) from None
        files[key] = data
    return files


def _read_regular_file(path: Path) -> bytes:
    """A regular file's content, never more than MAX_FILE_BYTES read. Opened non-blocking so that a FIFO
    cannot stall the reload thread, and checked with fstat so that a device (``/dev/zero``) or FIFO is
    refused before a byte is read; a file that grows past the cap while being read is refused too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(
                "not a regular file (a Secret key is a file; devices, FIFOs and sockets are refused)", str(path)
            )
        chunks: list[bytes] = []
        remaining = MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining <= 0:
            raise ConfigError(f"larger than {MAX_FILE_BYTES} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)
