"""``authgate token`` / ``authgate user`` through the real kubernetes client against the fake API server."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from app.cli import main
from app.credentials import load_secret_files
from tests.kube.conftest import NAMESPACE, SECRET
from tests.kube.fake_apiserver import FakeApiServer, write_kubeconfig
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
        (
            "ok",
            ("token", "create", "new", "--expires", "tomorrow"),
            "--expires: 'tomorrow' is neither a duration from now (30m, 24h, 90d, 1h30m, 2w) nor an RFC 3339 time "
            "(2027-01-31T00:00:00Z, 2027-01-31T01:00:00+01:00)",
        ),
        ("ok", ("token", "create", "bad name"), "name 'bad name': use 1-128"),
        ("ok", ("token", "create", "x", "--methods", "G?T"), "methods: not an HTTP method"),
        (
            "ok",
            ("token", "rotate", "ci", "--overlap", "soon"),
            "--overlap: not a duration (use e.g. 30m, 24h, 90d, 1h30m): 'soon'",
        ),
        (
            "ok",
            ("token", "create", "x", "--expires", "2020-01-01T00:00:00Z"),
            "--expires: '2020-01-01T00:00:00Z' is not in",
        ),
        ("ok", ("token", "create", "x", "--paths", "/a b"), "--paths: '/a b' contains a space"),
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


POLICY = "routes:\n  api: {}\n  dashboards: {}\n"
IN_USE = f"ci sha256:{'b' * 64} routes=api\ndash sha256:{'c' * 64} routes=dashboards\n".encode()


@pytest.mark.parametrize(
    ("with_policy", "routes", "expected"),
    [
        (
            True,
            "nosuchroute",
            "--routes: 'nosuchroute' is not a route of the policy {policy} (routes: api, dashboards)",
        ),
        (True, "api,dashbords", "(routes: api, dashboards); did you mean 'dashboards'?"),
        (False, "dashbords", "--routes: no token in secret auth/authgate uses route 'dashbords'; did you mean"),
        (False, "bad route!", "--routes: 'bad route!' is not a route name (1-64 of A-Z a-z 0-9 . _ -)"),
    ],
)
def test_create_refuses_a_route_that_cannot_work(
    fake: FakeApiServer,
    kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_policy: bool,
    routes: str,
    expected: str,
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": IN_USE})
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    extra = ("--config", str(policy)) if with_policy else ()
    code, out, err = run(capsys, kubeconfig, "token", "create", "y", "--routes", routes, *extra)
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("authgate: error: ") and expected.format(policy=policy) in err, err
    assert fake.files(NAMESPACE, SECRET) == {"tokens": IN_USE}


def test_create_takes_a_route_of_the_policy_from_the_environment(
    fake: FakeApiServer,
    kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": b""})  # no token names a route yet
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    monkeypatch.setenv("AUTHGATE_CONFIG", str(policy))  # as in the server's own pod
    code, out, err = run(capsys, kubeconfig, "token", "create", "y", "--routes", "dashboards")
    assert code == 0 and "warning" not in err, err
    assert credentials(fake).find_token(out.strip()).routes == frozenset({"dashboards"})
    code, out, err = run(capsys, kubeconfig, "token", "create", "z", "--routes", "dashbord")
    assert code == 1 and "is not a route of the policy" in err
    monkeypatch.setenv("AUTHGATE_CONFIG", str(tmp_path / "absent.yaml"))
    code, out, err = run(capsys, kubeconfig, "token", "create", "z", "--routes", "dashboards")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"authgate: error: {tmp_path / 'absent.yaml'}: cannot read: ") and "$AUTHGATE_CONFIG" in err


def test_create_without_a_policy_accepts_a_new_route_and_warns_once(
    fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": IN_USE})
    code, out, err = run(capsys, kubeconfig, "token", "create", "y", "--routes", "api,prefect-ui")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("authgate: warning:")]
    assert warnings == [
        "authgate: warning: --routes: no other token in secret auth/authgate uses 'prefect-ui' and no policy was "
        "given to check it: a token for a route the policy lacks never works (check with --config POLICY)"
    ]
    assert credentials(fake).find_token(out.strip()).routes == frozenset({"api", "prefect-ui"})


def test_list_json_is_one_json_array(fake: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.put_secret(NAMESPACE, SECRET, {"tokens": b""})
    code, out, err = run(capsys, kubeconfig, "token", "list", "--json")
    assert code == 0 and json.loads(out) == [], err
    fake.put_secret(
        NAMESPACE, SECRET, {"tokens": IN_USE + b"old sha256:" + b"d" * 64 + b" expires=2020-01-01T00:00:00Z\n"}
    )
    code, out, err = run(capsys, kubeconfig, "token", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == [
        {"name": "ci", "stored": "sha256", "expired": False, "routes": "api"},
        {"name": "dash", "stored": "sha256", "expired": False, "routes": "dashboards"},
        {"name": "old", "stored": "sha256", "expired": True, "expires": "2020-01-01T00:00:00Z"},
    ]


def test_an_unverified_tls_connection_is_one_warning_line_per_call(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    with FakeApiServer(tls=tls_files) as fake:
        fake.put_secret(NAMESPACE, SECRET, {"tokens": b""})
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url, namespace=NAMESPACE, insecure=True)
        for argv in (("token", "create", "ci"), ("token", "list")):  # a read and a patch; a read
            done = subprocess.run(
                [sys.executable, "-m", "app", *argv, "--kubeconfig", str(kubeconfig)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert "InsecureRequestWarning" not in done.stderr and "warnings.warn" not in done.stderr
            assert [line for line in done.stderr.splitlines() if "warning" in line.lower()] == [
                f"authgate: warning: the TLS certificate of {fake.url} is not verified (insecure-skip-tls-verify "
                "in the kubeconfig): whoever is in between can read and change the Secret"
            ]
