"""The Dockerfile read as text: hadolint, and the promises that do not need a build (base from a build arg)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool

pytestmark = pytest.mark.container

DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint")
    proc = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_comes_from_a_build_arg_with_a_public_default_and_the_user_is_the_charts() -> None:
    steps = instructions()
    assert steps[0][0] == "ARG" and re.fullmatch(r"BASE=python:3\.\d+-slim(-\w+)?", steps[0][1]), steps[0]
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) == 2 and all(f.split()[0] == "${BASE}" for f in froms), froms
    users = [args for keyword, args in steps if keyword == "USER"]
    values = yaml.safe_load((REPO_ROOT / "charts" / "authgate" / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert users == [f"{pod['runAsUser']}:{pod['runAsGroup']}"], users
    assert ("ENTRYPOINT", '["authgate"]') in steps and ("CMD", '["serve"]') in steps
