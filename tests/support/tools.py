"""Finding the real programs the tests drive. A missing tool fails the test: it never skips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT

SEARCH_PATH = os.pathsep.join(
    [
        str(REPO_ROOT / ".tools" / "bin"),
        str(REPO_ROOT / ".venv" / "bin"),
        "/usr/sbin",
        "/usr/bin",
        os.environ.get("PATH", ""),
    ]
)


def require_tool(name: str) -> Path:
    """The path of ``name``; fails the test (not skips) when it is not installed."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/install-tools.sh (the README's test command does)")
    return Path(found)
