"""One version everywhere, and the checks the release workflow runs on a tag before it publishes anything.

The places: pyproject.toml, Chart.yaml ``version`` and ``appVersion``, ``authgate --version``, the Dockerfile's
``VERSION`` label default, and the image tag the chart pulls by default (``image.tag`` empty -> appVersion).
scripts/release.py reads them with the standard library only (the release workflow runs it before any set-up);
these tests read them with the real parsers, run the CLI and render the chart, so the two readings cannot part.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import app
from tests.chart.render import CHART, Render
from tests.release.conftest import run_release
from tests.support.procs import REPO_ROOT

RELEASE_FILES = (
    "pyproject.toml",
    "charts/authgate/Chart.yaml",
    "charts/authgate/values.yaml",
    "app/__init__.py",
    "Dockerfile",
    "CHANGELOG.md",
)
# Keep a Changelog's kinds of change.
CHANGE_KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def project_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def chart_yaml() -> dict[str, object]:
    return dict(yaml.safe_load((CHART / "Chart.yaml").read_text()))


def values_image() -> dict[str, str]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text())["image"])


def dockerfile_version() -> str:
    [version] = re.findall(r"(?m)^ARG VERSION=(\S+)$", (REPO_ROOT / "Dockerfile").read_text())
    return version


def test_every_version_place_agrees() -> None:
    version = project_version()
    chart = chart_yaml()
    cli = subprocess.run(
        [sys.executable, "-m", "app", "--version"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    found = {
        "Chart.yaml version": chart["version"],
        "Chart.yaml appVersion": chart["appVersion"],
        "app.__version__": app.__version__,
        "authgate --version": cli.stdout.strip().removeprefix("authgate "),
        "Dockerfile ARG VERSION": dockerfile_version(),
    }
    assert found == dict.fromkeys(found, version)
    assert values_image()["tag"] == "", "image.tag must stay empty: the chart then pulls its appVersion"


def test_release_py_versions_agrees_and_reads_what_the_parsers_read(release_module: ModuleType) -> None:
    result = run_release("versions")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"version={project_version()}\n"
    assert release_module.values_image(REPO_ROOT) == {
        "repository": values_image()["repository"],
        "tag": values_image()["tag"],
    }


@pytest.mark.helm
@pytest.mark.xdist_group("chart")
def test_the_chart_pulls_the_image_the_release_workflow_pushes_for_this_version(release_module: ModuleType) -> None:
    [deployment] = [o for o in Render.of("release-defaults", []).objects if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    # The README's owner: the chart's home is github.com/authgate/authgate, so the workflow pushes under authgate.
    image = release_module.expected_image("authgate")
    assert container["image"] == f"{image}:{project_version()}"
    assert chart_yaml()["home"] == "https://github.com/authgate/authgate"


# --- scripts/release.py on a copy of the files, made ready for a release of their version --------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The version files copied, with a CHANGELOG.md the way it must look when the tag is pushed."""
    for name in RELEASE_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "CHANGELOG.md").write_text(
        f"# Changelog\n\n## [Unreleased]\n\n## [{project_version()}] - 2026-12-01\n\n### Added\n\n- Everything.\n\n"
        "## [0.0.1] - 2026-01-01\n\n### Added\n\n- Less.\n"
    )
    return tmp_path


def edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} not in {path}"
    path.write_text(new)


def test_check_passes_for_the_version_tag_and_prints_what_the_workflow_uses(tree: Path) -> None:
    version = project_version()
    result = run_release("check", "--tag", f"v{version}", "--owner", "AuthGate", root=tree)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"version={version}",
        "prerelease=false",
        "image=ghcr.io/authgate/authgate",  # OCI names are lower-case; GitHub owners need not be
        "chart_repository=ghcr.io/authgate/charts",
    ]


@pytest.mark.parametrize(
    ("path", "pattern", "replacement", "named"),
    [
        ("charts/authgate/Chart.yaml", r"^version: .*$", "version: 9.9.9", "chart version"),
        ("charts/authgate/Chart.yaml", r"^appVersion: .*$", 'appVersion: "9.9.9"', "chart appVersion"),
        ("app/__init__.py", r"^__version__ = .*$", '__version__ = "9.9.9"', "__version__ (authgate --version)"),
        ("Dockerfile", r"^ARG VERSION=.*$", "ARG VERSION=9.9.9", "ARG VERSION default"),
        ("pyproject.toml", r'^version = ".*"$', 'version = "9.9.9"', "pyproject.toml says '9.9.9'"),
        ("charts/authgate/values.yaml", r'^  tag: ""$', '  tag: "9.9.9"', "image.tag is '9.9.9'"),
    ],
    ids=["chart-version", "app-version", "package", "dockerfile", "pyproject", "values-tag"],
)
def test_a_version_that_drifts_fails_naming_the_file(
    tree: Path, path: str, pattern: str, replacement: str, named: str
) -> None:
    edit(tree / path, pattern, replacement)
    for args in (["versions"], ["check", "--tag", f"v{project_version()}", "--owner", "authgate"]):
        result = run_release(*args, root=tree)
        assert result.returncode == 1
        assert named in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize("tag", ["v9.9.9", "{version}", "v{version}-rc.1", "refs/tags/v{version}"])
def test_a_tag_that_is_not_v_plus_the_version_fails(tree: Path, tag: str) -> None:
    result = run_release("check", "--tag", tag.format(version=project_version()), "--owner", "authgate", root=tree)
    assert result.returncode == 1
    assert f"tag v{project_version()}" in result.stderr


def test_a_prerelease_version_is_marked(tree: Path) -> None:
    version = project_version() + "-rc.1"
    changelog = tree / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(f"[{project_version()}]", f"[{version}]"))
    assert run_release("bump", version, root=tree).returncode == 0
    result = run_release("check", "--tag", f"v{version}", "--owner", "authgate", root=tree)
    assert result.returncode == 0, result.stderr
    assert "prerelease=true" in result.stdout.splitlines()


def test_an_owner_the_chart_does_not_point_at_fails(tree: Path) -> None:
    """A fork releasing under its own owner would publish a chart that pulls someone else's image."""
    result = run_release("check", "--tag", f"v{project_version()}", "--owner", "someone-else", root=tree)
    assert result.returncode == 1
    assert "charts/authgate/values.yaml" in result.stderr
    assert "'ghcr.io/someone-else/authgate'" in result.stderr


@pytest.mark.parametrize(
    ("changelog", "complaint"),
    [
        (
            "# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n- A thing.\n\n## [{v}] - 2026-12-01\n\n### Added\n\n- X.\n",
            "[Unreleased] still lists changes",
        ),
        ("# Changelog\n\n## [Unreleased]\n\n## [0.0.1] - 2026-01-01\n\n### Added\n\n- X.\n", "no '## [{v}]"),
        ("# Changelog\n\n## [{v}]\n\n### Added\n\n- X.\n", "has no release date"),
        ("# Changelog\n\n## [{v}] - soon\n\n### Added\n\n- X.\n", "has no release date"),
        ("# Changelog\n\n## [{v}] - 2026-12-01\n\n### Added\n\n", "lists no changes"),
    ],
    ids=["unreleased-entries", "missing", "undated", "not-a-date", "empty"],
)
def test_a_changelog_not_ready_for_the_tag_fails(tree: Path, changelog: str, complaint: str) -> None:
    version = project_version()
    (tree / "CHANGELOG.md").write_text(changelog.replace("{v}", version))
    result = run_release("check", "--tag", f"v{version}", "--owner", "authgate", root=tree)
    assert result.returncode == 1
    assert complaint.replace("{v}", version) in result.stderr


def test_bump_writes_every_version_place(tree: Path) -> None:
    result = run_release("bump", "1.2.3", root=tree)
    assert result.returncode == 0, result.stderr
    assert run_release("versions", root=tree).stdout == "version=1.2.3\n"
    chart = yaml.safe_load((tree / "charts/authgate/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == ("1.2.3", "1.2.3")
    assert '__version__ = "1.2.3"' in (tree / "app/__init__.py").read_text()
    assert "ARG VERSION=1.2.3\n" in (tree / "Dockerfile").read_text()
    with (tree / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == "1.2.3"


def test_bump_refuses_what_is_not_a_version(tree: Path) -> None:
    result = run_release("bump", "1.2", root=tree)
    assert result.returncode == 1
    assert "MAJOR.MINOR.PATCH" in result.stderr
    assert run_release("versions", root=tree).stdout == f"version={project_version()}\n"


# --- CHANGELOG.md and the release notes made from it ------------------------------------------------------------


def test_changelog_keeps_a_changelog_and_has_an_entry_for_this_version(release_module: ModuleType) -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    entries = release_module.changelog_entries(REPO_ROOT)
    names = list(entries)
    assert names[0] == "Unreleased"
    assert project_version() in names
    for name in names[1:]:
        date, body = entries[name]
        assert release_module.SEMVER.match(name), name
        assert date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), f"[{name}] needs a YYYY-MM-DD date"
        assert release_module.has_entries(body), f"[{name}] lists no changes"
    for name, (_, body) in entries.items():
        kinds = re.findall(r"(?m)^### (.+)$", body)
        assert kinds and set(kinds) <= CHANGE_KINDS, (name, kinds)
        assert len(kinds) == len(set(kinds)), f"[{name}] repeats a kind of change"
    dates = [entries[name][0] or "" for name in names[1:]]
    assert dates == sorted(dates, reverse=True), "newest version first"


def test_release_notes_are_the_changelog_entry_then_install_and_verify(release_module: ModuleType) -> None:
    version = project_version()
    image = "ghcr.io/authgate/authgate@sha256:" + "a" * 64
    chart = "ghcr.io/authgate/charts/authgate@sha256:" + "b" * 64
    identity = f"https://github.com/authgate/authgate/.github/workflows/release.yml@refs/tags/v{version}"
    platforms = f"linux/amd64=sha256:{'1' * 64} linux/arm64=sha256:{'2' * 64}"
    result = run_release(
        "notes", version, "--image", image, "--chart", chart, "--identity", identity, "--platforms", platforms
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout
    _, entry = release_module.changelog_entries(REPO_ROOT)[version]
    assert notes.startswith(entry + "\n\n## Install\n")
    assert f"helm install authgate oci://ghcr.io/authgate/charts/authgate --version {version}\n" in notes
    assert f"cosign verify {image} \\\n  --certificate-identity '{identity}'" in notes
    assert f"cosign verify {chart} \\\n" in notes
    for digest in ("1" * 64, "2" * 64):
        assert f"cosign verify-attestation --type spdxjson ghcr.io/authgate/authgate@sha256:{digest} \\\n" in notes
    assert notes.count("--certificate-oidc-issuer https://token.actions.githubusercontent.com") == 4


def test_release_notes_for_a_version_without_an_entry_fail() -> None:
    result = run_release("notes", "99.0.0")
    assert result.returncode == 1
    assert "CHANGELOG.md: no entry for 99.0.0" in result.stderr
