"""``authgate token`` / ``authgate user`` through the real kubernetes client against the fake API server."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from app.cli import main
from app.credentials import load_secret_files
from tests.kube.conftest import NAMESPACE, SECRET
from tests.kube.fake_apiserver import FakeApiServer
from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.kube
HEADER = b"# tokens for the team: keep this comment\n\n"


def run(capsys: pytest.CaptureFixture[str], kubeconfig: Path, *argv: str) -> tuple[int, str, str]:
    """The CLI in-process; the namespace comes from the kubeconfig context."""
    command, sub, *rest = argv
    code = main([command, sub, "--kubeconfig", str(kubeconfig), *rest])
    out, err = capsys.readouterr()
    return code, out, err


def credentials(fake: FakeApiServer):  # type: ignore[no-untyped-def]
    return load_secret_files(fake.files(NAMESPACE, SECRET), "test")


def test_create_list_rotate_revoke_round_trip(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": HEADER})
    code, out, err = run(capsys, kubeconfig, "token", "create", "ci", "--routes", "api", "--expires", "90d")
    assert code == 0, err
    token = out.strip()
    assert len(out.splitlines()) == 1 and len(token) >= 40
    tokens_text = fake.files(NAMESPACE, SECRET)["tokens"]
    assert tokens_text.startswith(HEADER) and token.encode() not in tokens_text  # only its digest is stored
    found = credentials(fake).find_token(token)
    assert found is not None and found.name == "ci" and found.routes == frozenset({"api"})
    assert found.expires is not None and found.expires - dt.datetime.now(dt.UTC) > dt.timedelta(days=89)

    code, out, err = run(capsys, kubeconfig, "token", "list")
    assert code == 0 and "ci" in out and "routes=api" in out and "sha256" in out
    assert token not in out + err and "sha256:" not in out  # never a secret, not even the digest

    code, out, err = run(capsys, kubeconfig, "token", "rotate", "ci", "--overlap", "1h")
    assert code == 0, err
    new_token = out.strip()
    assert new_token != token
    creds = credentials(fake)
    new, old = creds.find_token(new_token), creds.find_token(token)
    assert new is not None and new.name == "ci" and new.routes == frozenset({"api"})
    assert old is not None and old.name.startswith("ci.until-") and old.expires is not None
    assert dt.timedelta(minutes=59) < old.expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    until = old.expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"the old token keeps working until {until} as {old.name!r}" in err

    code, _, err = run(capsys, kubeconfig, "token", "revoke", "ci")
    assert code == 0, err
    creds = credentials(fake)
    assert creds.find_token(new_token) is None and creds.find_token(token) is not None
    assert fake.files(NAMESPACE, SECRET)["tokens"].startswith(HEADER)
    code, _, err = run(capsys, kubeconfig, "token", "revoke", "ci")
    assert code == 1 and err.strip() == "authgate: error: no token named 'ci'"


def test_rotate_with_zero_overlap_replaces_the_old_token_and_says_it_stopped_working(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": HEADER})
    code, out, err = run(capsys, kubeconfig, "token", "create", "ci", "--routes", "api")
    assert code == 0, err
    old_token = out.strip()
    code, out, err = run(capsys, kubeconfig, "token", "rotate", "ci", "--overlap", "0h")
    assert code == 0, err
    creds = credentials(fake)
    new = creds.find_token(out.strip())
    assert new is not None and new.name == "ci" and new.routes == frozenset({"api"})
    assert creds.find_token(old_token) is None and [t.name for t in creds.tokens] == ["ci"]
    assert b".until-" not in fake.files(NAMESPACE, SECRET)["tokens"]
    assert "the old token was replaced and no longer works" in err and "works for" not in err


def test_conflicting_write_is_retried_and_keeps_both_changes(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": HEADER})
    other = f"other sha256:{'a' * 64}\n".encode()
    fake.conflict_next_patch(lambda files: {**files, "tokens": files["tokens"] + other})
    code, out, err = run(capsys, kubeconfig, "token", "create", "ci")
    assert code == 0, err
    assert fake.requests.count("PATCH") == 2  # the first got 409 Conflict
    creds = credentials(fake)
    assert {t.name for t in creds.tokens} == {"other", "ci"}
    assert creds.find_token(out.strip()) is not None


def test_patch_carries_the_resource_version_precondition(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rv = fake.put_secret(NAMESPACE, SECRET, {"tokens": b""})
    code, _, err = run(capsys, kubeconfig, "token", "create", "ci")
    assert code == 0, err
    assert int(fake.resource_version(NAMESPACE, SECRET)) > int(rv)


@pytest.mark.parametrize(
    ("setup", "argv", "expected"),
    [
        ("missing", ("token", "create", "ci"), f"secret {NAMESPACE}/{SECRET} not found"),
        ("forbid-patch", ("token", "revoke", "ci"), f"permission denied: cannot patch secret {NAMESPACE}/{SECRET}"),
        ("forbid-get", ("token", "list"), f"permission denied: cannot get secret {NAMESPACE}/{SECRET}"),
        ("down", ("token", "list"), "cannot reach the Kubernetes API at http://127.0.0.1:"),
        ("ok", ("token", "create", "ci"), "token 'ci' already exists"),
        ("ok", ("token", "create", "new", "--expires", "tomorrow"), "not an RFC 3339 time: 'tomorrow'"),
        ("ok", ("token", "create", "bad name"), "name 'bad name': use 1-128"),
        ("ok", ("token", "create", "x", "--methods", "G?T"), "methods: not an HTTP method"),
        ("ok", ("token", "rotate", "ci", "--overlap", "soon"), "not a duration"),
    ],
)
def test_failures_are_one_line_and_exit_1(
    fake: FakeApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    argv: tuple[str, ...],
    expected: str,
) -> None:
    if setup != "missing":
        fake.put_secret(NAMESPACE, SECRET, {"tokens": f"ci sha256:{'b' * 64}\n".encode()})
    if setup.startswith("forbid-"):
        fake.forbidden_verbs.add(setup.removeprefix("forbid-"))
    if setup == "down":
        fake.stop()
    before = fake.files(NAMESPACE, SECRET) if setup != "missing" else None
    code, out, err = run(capsys, kubeconfig, *argv)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("authgate: error: ") and expected in err, err
    if before is not None:
        assert fake.files(NAMESPACE, SECRET) == before


def test_user_add_and_remove_with_bcrypt(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"htpasswd": b"# people\n"})
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pass\n"))
    code, out, err = run(capsys, kubeconfig, "user", "add", "alice")
    assert code == 0, err
    line = fake.files(NAMESPACE, SECRET)["htpasswd"].decode().splitlines()[1]
    name, hashed = line.split(":", 1)
    assert name == "alice" and hashed.startswith("$2b$") and "s3cret" not in out + err
    assert bcrypt.checkpw(b"s3cret pass", hashed.encode())
    assert credentials(fake).users["alice"].kind == "bcrypt"
    monkeypatch.setattr(sys, "stdin", io.StringIO("other\n"))
    code, _, err = run(capsys, kubeconfig, "user", "add", "alice")
    assert code == 1 and "already exists" in err
    code, out, _ = run(capsys, kubeconfig, "user", "list")
    assert out == "alice\n"
    code, _, err = run(capsys, kubeconfig, "user", "remove", "alice")
    assert code == 0, err
    assert fake.files(NAMESPACE, SECRET)["htpasswd"] == b"# people\n"


def test_entry_point_with_kubeconfig_from_the_environment(fake: FakeApiServer, kubeconfig: Path) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": b""})
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "app", "token", "create", "deploy", "--routes", "api"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert credentials(fake).find_token(done.stdout.strip()) is not None
    done = subprocess.run(
        [sys.executable, "-m", "app", "token", "list", "--secret", "nope"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "nope not found" in done.stderr
