"""A kubeconfig that is not YAML, or not shaped like a kubeconfig: one line naming the file, exit 2.

The kubernetes client's own loader answers such files with a YAML parser error or a TypeError from deep
inside, which would reach the user as a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.kube

MALFORMED = {
    "invalid-yaml": ("apiVersion: v1\nclusters: [\n  - name: fake\n", ":3: kubeconfig is not valid YAML: "),
    "a-list": ("- apiVersion: v1\n- kind: Config\n", ": a kubeconfig is a YAML mapping (apiVersion, clusters,"),
    "contexts-not-a-list": (
        "apiVersion: v1\nkind: Config\ncontexts: {fake: {cluster: fake}}\ncurrent-context: fake\n",
        ": kubeconfig 'contexts' must be a list of mappings, each with a 'name'",
    ),
}


def write(tmp_path: Path, case: str) -> tuple[Path, str]:
    text, expected = MALFORMED[case]
    path = tmp_path / f"{case}.kubeconfig"
    path.write_text(text)
    return path, f"{path}{expected}"


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize(
    "argv",
    [("token", "list"), ("token", "create", "ci", "-n", "auth"), ("user", "list", "-n", "auth")],
    ids=["namespace-from-kubeconfig", "explicit-namespace", "user-command"],
)
def test_cli_names_the_kubeconfig_and_exits_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: tuple[str, ...],
) -> None:
    path, expected = write(tmp_path, case)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"authgate: error: {expected}"), err


@pytest.mark.parametrize("case", ["invalid-yaml", "a-list"])
def test_serve_watch_secret_names_the_kubeconfig_and_exits_2(tmp_path: Path, case: str) -> None:
    path, expected = write(tmp_path, case)
    env = {**os.environ, "KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": ""}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--watch-secret", "auth/authgate", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"authgate: error: --watch-secret: {expected}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


CLUSTER = {"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}
USER = {"name": "u", "user": {"token": "t"}}


def kubeconfig_text(contexts: list[dict[str, object]], current: str | None) -> str:
    config: dict[str, object] = {"apiVersion": "v1", "kind": "Config", "clusters": [CLUSTER], "users": [USER]}
    config["contexts"] = contexts
    if current is not None:
        config["current-context"] = current
    return json.dumps(config)


FAKE_CONTEXT = {"name": "fake", "context": {"cluster": "c", "user": "u"}}
FAULTS = {
    # case: (file text or None for no file, extra arguments, what the one line says after "authgate: error: ")
    "missing": (None, (), "no usable Kubernetes configuration: the kubeconfig {path} does not exist"),
    "empty": ("", (), "no usable Kubernetes configuration: the kubeconfig {path} is empty"),
    "unknown-context": (
        kubeconfig_text([FAKE_CONTEXT], "fake"),
        ("--context", "nope"),
        "{path}: context 'nope' is not in the kubeconfig (contexts: fake)",
    ),
    "no-current-context": (
        kubeconfig_text([FAKE_CONTEXT], None),
        (),
        "{path}: the kubeconfig sets no current-context: choose one with --context (contexts: fake)",
    ),
    "current-context-missing": (
        kubeconfig_text([FAKE_CONTEXT], "gone"),
        (),
        "{path}: current-context 'gone' is not in the kubeconfig (contexts: fake)",
    ),
    "context-without-its-cluster": (
        kubeconfig_text([{"name": "fake", "context": {"cluster": "elsewhere", "user": "u"}}], "fake"),
        ("-n", "auth"),
        "{path}: context 'fake' names cluster 'elsewhere', which is not in the kubeconfig (clusters: c)",
    ),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
@pytest.mark.parametrize("command", [("token", "list"), ("user", "remove", "bob")])
def test_every_kubeconfig_fault_is_one_line_naming_the_file_or_context_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    command: tuple[str, ...],
) -> None:
    text, extra, expected = FAULTS[case]
    path = tmp_path / "kubeconfig"
    if text is not None:
        path.write_text(text)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit) as exited:
        main([*command, "--kubeconfig", str(path), *extra])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("authgate: error: " + expected.format(path=path)), err
    assert "Invalid kube-config" not in err


def test_serve_watch_secret_names_an_empty_kubeconfig_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("")
    env = {**os.environ, "KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": ""}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--watch-secret", "auth/authgate", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"authgate: error: --watch-secret: no usable Kubernetes configuration: the kubeconfig {path} is empty\n"
    )
