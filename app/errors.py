"""The small error hierarchy. Expected denials are Decisions, not exceptions."""

from __future__ import annotations


class AuthgateError(Exception):
    """Base of every error authgate raises on purpose."""


class ConfigError(AuthgateError):
    """A settings value, policy file or Secret file is invalid.

    ``str()`` is one line that names where (``file:line``) and why, and never contains a secret.
    """

    def __init__(self, reason: str, source: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        where = source or ""
        if source is not None and line is not None:
            where = f"{source}:{line}"
        super().__init__(f"{where}: {reason}" if where else reason)
