from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.procs import REPO_ROOT

RELEASE_PY = REPO_ROOT / "scripts" / "release.py"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def load_release_module() -> ModuleType:
    """scripts/release.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("release_script", RELEASE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_release(*args: str, root: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """scripts/release.py run the way the release workflow runs it: a plain python3 process."""
    return subprocess.run(
        [sys.executable, str(RELEASE_PY), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def release_module() -> ModuleType:
    return load_release_module()
