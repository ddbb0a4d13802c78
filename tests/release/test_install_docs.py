"""The README's install paths: the one that works before any release, and the one a release makes work.

"From source" is run here as far as it goes without a registry: its VERSION line, then its own `helm install`
command as `helm template`, to see that the pods would pull the image that block built and pushed. "From a
release" must name exactly the chart and image the release workflow pushes (scripts/release.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool

README = REPO_ROOT / "README.md"


def section(text: str, heading: str) -> str:
    """From ``heading`` to the next heading of its level or above (outside code blocks)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n")
    fenced = False
    for end in range(start + 1, len(lines)):
        fenced ^= lines[end].startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", lines[end]):
            return "".join(lines[start:end])
    return "".join(lines[start:])


def shell_block(text: str) -> str:
    [block] = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return str(block)


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [
        line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_the_readme_says_no_release_exists_yet_and_leads_with_what_works_today() -> None:
    install = section(README.read_text(), "## Install")
    assert "No release has been published yet" in install
    assert install.index("### From source, with your own image") < install.index("### From a release")


@pytest.mark.helm
@pytest.mark.xdist_group("chart")
def test_from_source_installs_the_image_it_built_and_pushed() -> None:
    helm = require_tool("helm")
    steps = commands(shell_block(section(README.read_text(), "### From source, with your own image (works today)")))
    [image_line] = [c for c in steps if c.startswith("IMAGE=")]
    [version_line] = [c for c in steps if c.startswith("VERSION=")]
    [build] = [c for c in steps if c.startswith("docker build ")]
    [push] = [c for c in steps if c.startswith("docker push ")]
    [install] = [c for c in steps if c.startswith("helm install authgate charts/authgate ")]
    assert '-t "$IMAGE:$VERSION"' in build and build.endswith(" .")
    assert push == 'docker push "$IMAGE:$VERSION"'
    assert '--set image.repository="$IMAGE"' in install

    script = "\n".join(
        [
            "set -euo pipefail",
            image_line,
            version_line,
            'printf "%s:%s\\n" "$IMAGE" "$VERSION"',
            install.replace("helm install", f"{helm} template", 1),
        ]
    )
    result = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    pushed, rendered = result.stdout.split("\n", 1)
    images = {
        c["image"]
        for o in yaml.safe_load_all(rendered)
        if o and o["kind"] in {"Deployment", "Pod"}
        for c in pod_spec(o)["containers"]
    }
    assert images == {pushed}
    assert pushed.startswith("registry.example.com/") and not pushed.endswith(":")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    return spec


def test_from_a_release_names_what_the_release_workflow_pushes(release_module: ModuleType) -> None:
    block = shell_block(section(README.read_text(), "### From a release"))
    chart = f"oci://{release_module.chart_repository('authgate')}/authgate"
    image = release_module.expected_image("authgate")
    assert f"helm install authgate {chart} --version X.Y.Z" in block
    assert f"cosign verify {image}:X.Y.Z" in block
    assert "release\\.yml@refs/tags/v" in block
    assert f"--certificate-oidc-issuer {release_module.OIDC_ISSUER}" in block


@pytest.mark.helm
def test_the_manifests_overlay_points_the_pods_at_your_image(tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    text = (REPO_ROOT / "manifests" / "README.md").read_text()
    [overlay] = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    (tmp_path / "my-authgate").mkdir()
    (tmp_path / "my-authgate" / "kustomization.yaml").write_text(textwrap.dedent(overlay))
    result = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path / "my-authgate")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    [deployment] = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "Deployment"]
    [container] = pod_spec(deployment)["containers"]
    version = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "release.py"), "versions"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert container["image"] == f"registry.example.com/you/authgate:{version.removeprefix('version=')}"
