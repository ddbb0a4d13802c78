#!/usr/bin/env python3
"""One version everywhere, checked before anything is published.

authgate's version is written in five files and implied in a sixth: ``pyproject.toml``, ``Chart.yaml``'s
``version`` and ``appVersion``, ``app/__init__.py`` (what ``authgate --version`` prints), the Dockerfile's
``VERSION`` label default, and the chart's default image tag (``values.yaml`` leaves ``image.tag`` empty, so
the chart pulls ``appVersion``). The release workflow (``.github/workflows/release.yml``) runs ``check`` on a
``v*`` tag before it builds anything, so a tag that disagrees with the files, a chart whose default image is
not where the workflow pushes, or a CHANGELOG.md without the version's entry stops the release. The test
suite runs ``versions`` (tests/release), so drift fails CI long before a tag.

Standard library only: the release workflow runs this with the runner's own python3 before any set-up.

    scripts/release.py versions                        every version place agrees (exit 1 naming the odd one)
    scripts/release.py check --tag v1.2.3 --owner O    ...and the tag, the chart's image for owner O and
                                                       CHANGELOG.md; prints version=, prerelease=,
                                                       image=, chart_repository=
    scripts/release.py notes 1.2.3 [--image REF@DIGEST] [--chart REF@DIGEST] [--identity URL]
                                                       the release notes: the version's CHANGELOG.md entry,
                                                       then how to install and verify what was pushed
    scripts/release.py bump 1.2.3                      writes 1.2.3 into every version place
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "ghcr.io"
IMAGE_NAME = "authgate"
OIDC_ISSUER = "https://token.actions.githubusercontent.com"

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CHANGELOG_HEADER = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>.+))?$")


class ReleaseError(Exception):
    """What is wrong, in one line that names the file to fix."""


@dataclass(frozen=True)
class VersionPlace:
    """One place a version is written: the file, a pattern whose group 1 is the version, and what it means."""

    path: str
    pattern: re.Pattern[str]
    meaning: str

    def read(self, root: Path) -> str:
        text = (root / self.path).read_text()
        found = self.pattern.findall(text)
        if len(found) != 1:
            raise ReleaseError(f"{self.path}: expected exactly one {self.meaning}, found {len(found)}")
        return str(found[0])

    def write(self, root: Path, version: str) -> None:
        path = root / self.path
        text = path.read_text()
        new, count = self.pattern.subn(lambda m: m.group(0).replace(m.group(1), version, 1), text)
        if count != 1:
            raise ReleaseError(f"{self.path}: expected exactly one {self.meaning}, found {count}")
        path.write_text(new)


# pyproject.toml is read with tomllib (below); it is written through this pattern.
PYPROJECT = VersionPlace("pyproject.toml", re.compile(r'(?m)^version = "([^"]*)"$'), "[project] version")
PLACES = (
    VersionPlace("charts/authgate/Chart.yaml", re.compile(r"(?m)^version: *\"?([^\"\s]+)\"?$"), "chart version"),
    VersionPlace("charts/authgate/Chart.yaml", re.compile(r"(?m)^appVersion: *\"?([^\"\s]+)\"?$"), "chart appVersion"),
    VersionPlace("app/__init__.py", re.compile(r'(?m)^__version__ = "([^"]*)"$'), "__version__ (authgate --version)"),
    VersionPlace("Dockerfile", re.compile(r"(?m)^ARG VERSION=(\S+)$"), "ARG VERSION default (image label)"),
)


def pyproject_version(root: Path) -> str:
    with (root / PYPROJECT.path).open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def values_image(root: Path) -> dict[str, str]:
    """``image.repository`` and ``image.tag`` of the chart's values.yaml, read without a YAML library.

    The block is the top-level ``image:`` mapping with its keys two spaces in; tests/release checks this
    reading against PyYAML's, so a change of layout that this misreads fails there.
    """
    found: dict[str, str] = {}
    inside = False
    for line in (root / "charts/authgate/values.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.rstrip() == "image:"
            continue
        m = re.match(r"^  (repository|tag): *(.*?) *$", line)
        if inside and m:
            found[m.group(1)] = m.group(2).strip("\"'")
    if set(found) != {"repository", "tag"}:
        raise ReleaseError("charts/authgate/values.yaml: image.repository and image.tag not found")
    return found


def expected_image(owner: str) -> str:
    """Where the release workflow pushes the image: GHCR under the repository's owner, lower-cased (OCI)."""
    return f"{REGISTRY}/{owner.lower()}/{IMAGE_NAME}"


def chart_repository(owner: str) -> str:
    """Where the release workflow pushes the chart (``oci://`` + this); the chart itself is ``.../authgate``."""
    return f"{REGISTRY}/{owner.lower()}/charts"


def check_versions(root: Path) -> str:
    """The one version, or ReleaseError naming every place that disagrees with pyproject.toml."""
    version = pyproject_version(root)
    if not SEMVER.match(version):
        raise ReleaseError(f"pyproject.toml: version {version!r} is not MAJOR.MINOR.PATCH[-PRE]")
    problems = [
        f"{place.path}: {place.meaning} is {found!r}, pyproject.toml says {version!r}"
        for place in PLACES
        if (found := place.read(root)) != version
    ]
    if PYPROJECT.read(root) != version:
        problems.append("pyproject.toml: the top-level 'version = ' line (what bump rewrites) is not [project]'s")
    tag = values_image(root)["tag"]
    if tag:
        problems.append(
            f"charts/authgate/values.yaml: image.tag is {tag!r}; leave it empty so the chart pulls its appVersion"
        )
    if problems:
        raise ReleaseError("; ".join(problems))
    return version


def changelog_entries(root: Path) -> dict[str, tuple[str | None, str]]:
    """CHANGELOG.md's ``## [name] - date`` entries: name -> (date, body), in file order."""
    entries: dict[str, tuple[str | None, str]] = {}
    name: str | None = None
    date: str | None = None
    body: list[str] = []
    for line in [*(root / "CHANGELOG.md").read_text().splitlines(), "## [end]"]:
        m = CHANGELOG_HEADER.match(line)
        if m is None:
            if name is not None:
                body.append(line)
            continue
        if name is not None:
            entries[name] = (date, "\n".join(body).strip())
        name, date, body = m.group("name"), m.group("date"), []
    entries.pop("end", None)
    return entries


def has_entries(body: str) -> bool:
    return any(line.lstrip().startswith(("- ", "* ")) for line in body.splitlines())


def check_changelog(root: Path, version: str) -> None:
    entries = changelog_entries(root)
    if version not in entries:
        raise ReleaseError(f"CHANGELOG.md: no '## [{version}] - YYYY-MM-DD' entry")
    date, body = entries[version]
    if date is None or not ISO_DATE.match(date):
        raise ReleaseError(f"CHANGELOG.md: [{version}] has no release date ('## [{version}] - YYYY-MM-DD')")
    if not has_entries(body):
        raise ReleaseError(f"CHANGELOG.md: [{version}] lists no changes")
    _, unreleased = entries.get("Unreleased", (None, ""))
    if has_entries(unreleased):
        raise ReleaseError(
            f"CHANGELOG.md: [Unreleased] still lists changes; move them into [{version}], which is what this tag ships"
        )


def check_release(root: Path, tag: str, owner: str) -> dict[str, str]:
    """Everything the release workflow needs agreed before it pushes; its outputs (version, image, chart)."""
    version = check_versions(root)
    if tag != f"v{version}":
        raise ReleaseError(f"tag {tag!r} does not match the version in the files ({version!r}): tag v{version}")
    image = expected_image(owner)
    repository = values_image(root)["repository"]
    if repository != image:
        raise ReleaseError(
            f"charts/authgate/values.yaml: image.repository is {repository!r} but this workflow pushes {image!r}; "
            "change the default (and regenerate: scripts/chart_docs.py, scripts/gen_manifests.py)"
        )
    check_changelog(root, version)
    return {
        "version": version,
        "prerelease": "true" if "-" in version else "false",
        "image": image,
        "chart_repository": chart_repository(owner),
    }


def release_notes(
    root: Path,
    version: str,
    image: str | None = None,
    chart: str | None = None,
    identity: str | None = None,
    platforms: dict[str, str] | None = None,
) -> str:
    """The version's CHANGELOG.md entry, then how to install and verify what the workflow pushed.

    ``image`` and ``chart`` are ``REF@DIGEST``; ``platforms`` maps ``linux/amd64`` and the like to the digest of
    that platform's image, which carries its SBOM attestation.
    """
    entries = changelog_entries(root)
    if version not in entries:
        raise ReleaseError(f"CHANGELOG.md: no entry for {version}")
    parts = [entries[version][1]]
    published = [f"- image `{image}` (linux/amd64, linux/arm64)"] if image else []
    if chart:
        published.append(f"- chart `oci://{chart}`")
        ref = chart.split("@", 1)[0]
        parts.append(f"## Install\n\n```sh\nhelm install authgate oci://{ref} --version {version}\n```")
    if published:
        parts.append("## Published\n\n" + "\n".join(published))
    if identity and published:
        flags = f"--certificate-identity '{identity}' \\\n  --certificate-oidc-issuer {OIDC_ISSUER}"
        commands = [f"cosign verify {ref} \\\n  {flags}" for ref in (image, chart) if ref]
        repository = (image or "").split("@", 1)[0]
        commands += [
            f"cosign verify-attestation --type spdxjson {repository}@{digest} \\\n  {flags}  # {platform}"
            for platform, digest in sorted((platforms or {}).items())
            if image
        ]
        parts.append(
            "## Verify\n\nSigned keylessly (Sigstore) by this repository's release workflow; each platform's SBOM "
            "(SPDX) is a signed attestation on that platform's image.\n\n```sh\n" + "\n".join(commands) + "\n```"
        )
    return "\n\n".join(parts) + "\n"


def bump(root: Path, version: str) -> None:
    if not SEMVER.match(version):
        raise ReleaseError(f"{version!r} is not MAJOR.MINOR.PATCH[-PRE]")
    for place in (PYPROJECT, *PLACES):
        place.write(root, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="every version place agrees")
    check = commands.add_parser("check", help="versions, tag, image repository and CHANGELOG.md before a release")
    check.add_argument("--tag", required=True, help="the pushed tag (github.ref_name), vMAJOR.MINOR.PATCH")
    check.add_argument("--owner", required=True, help="the repository's owner (github.repository_owner)")
    notes = commands.add_parser("notes", help="release notes from CHANGELOG.md")
    notes.add_argument("version")
    notes.add_argument("--image", help="the pushed image, REF@DIGEST")
    notes.add_argument("--chart", help="the pushed chart, REF@DIGEST (without oci://)")
    notes.add_argument("--identity", help="the signing workflow's identity (https://github.com/<workflow_ref>)")
    notes.add_argument("--platforms", default="", help="'linux/amd64=sha256:... linux/arm64=sha256:...'")
    bump_parser = commands.add_parser("bump", help="write a new version into every version place")
    bump_parser.add_argument("version")
    args = parser.parse_args(argv)

    actions: dict[str, Callable[[], str]] = {
        "versions": lambda: f"version={check_versions(args.root)}\n",
        "check": lambda: "".join(f"{k}={v}\n" for k, v in check_release(args.root, args.tag, args.owner).items()),
        "notes": lambda: release_notes(
            args.root, args.version, args.image, args.chart, args.identity, _platforms(args.platforms)
        ),
        "bump": lambda: _bump_message(args.root, args.version),
    }
    try:
        sys.stdout.write(actions[args.command]())
    except (ReleaseError, OSError) as exc:
        print(f"release.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _platforms(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split()]
    if any(len(pair) != 2 for pair in pairs):
        raise ReleaseError(f"--platforms {text!r}: expected PLATFORM=DIGEST pairs")
    return dict((platform, digest) for platform, digest in pairs)


def _bump_message(root: Path, version: str) -> str:
    bump(root, version)
    check_versions(root)
    return (
        f"version={version}\n"
        "next: scripts/gen_manifests.py (the image tag in manifests/), a dated CHANGELOG.md entry, commit, tag "
        f"v{version}\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
