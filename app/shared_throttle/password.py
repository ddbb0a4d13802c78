"""What the replicas sharing one Redis share besides it: its password, read once at start, and the key of
the digests they all count under.

Every replica must derive the same digest for the same address or user name (a ban reached on one holds on
the others), so the key comes from what they all have: ``key_prefix`` and, when set, the Redis password. With
a password, a reader of Redis's data (a dump, a backup, a replica of it) who lacks the password cannot test a
guessed name or address against it; without one, anyone who can read it can (as anyone who can read it can
also write bans).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from app.errors import ConfigError
from app.policy import RedisSettings


def redis_password(settings: RedisSettings, environ: Mapping[str, str]) -> str | None:
    """The password the policy names (a file or an environment variable), read once at start. Errors name the
    key and the file or variable, never what it holds."""
    if settings.password_env is not None:
        value = environ.get(settings.password_env, "")
        if not value:
            raise ConfigError(f"throttle.redis.password_env: ${settings.password_env} is not set or empty")
        return value
    if settings.password_file is not None:
        try:
            value = Path(settings.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"throttle.redis.password_file: cannot read {settings.password_file}: {type(exc).__name__}"
            ) from None
        if not value:
            raise ConfigError(f"throttle.redis.password_file: {settings.password_file} is empty")
        return value
    return None


def shared_digest_key(redis: RedisSettings, password: str | None) -> bytes:
    """The key of the digests every replica sharing this Redis counts under (the same on each of them)."""
    material = b"\0".join((b"authgate shared throttle", redis.key_prefix.encode(), (password or "").encode()))
    return hashlib.blake2b(material, digest_size=32).digest()
