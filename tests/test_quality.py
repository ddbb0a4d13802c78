"""Lint and type checks run as tests, so the README's one test command covers them."""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import REPO_ROOT


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_ruff_lint_is_clean():
    result = run("ruff", "check", "app", "tests", "bench", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_package():
    result = run("mypy", "--no-incremental", "app")
    assert result.returncode == 0, result.stdout + result.stderr
