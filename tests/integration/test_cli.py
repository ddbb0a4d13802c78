"""The ``authgate`` command as users run it: a real subprocess, real files."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import httpx

from app.credentials import parse_tokens
from tests.integration.conftest import nginx_headers
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import REPO_ROOT, AuthgateProcess


def authgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_check_prints_what_loaded_without_secrets():
    result = authgate(
        "check",
        "--secret-dir",
        str(REPO_ROOT / "examples/secret"),
        "--config",
        str(REPO_ROOT / "examples/policy-prefect.yaml"),
    )
    assert result.returncode == 0, result.stderr
    assert "ci-deploy digest routes=api" in result.stdout
    # Which route decides a request naming none (/auth/~): the one claiming its path.
    assert "route api:" in result.stdout and "path_prefixes=/api\n" in result.stdout
    assert "route ui:" in result.stdout and "path_prefixes=/\n" in result.stdout
    assert "admin bcrypt" in result.stdout and "viewer apr1" in result.stdout
    assert "sha256:" not in result.stdout and "$2y$" not in result.stdout


def test_check_reports_file_and_line(tmp_path):
    (tmp_path / "tokens").write_text("# fine\nok sha256:" + "a" * 64 + "\nbroken sha256:zz\n")
    result = authgate("check", "--secret-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path}/tokens:3: secret: 'sha256:' must be followed by 64 hex digits" in result.stderr
    bad_policy = tmp_path / "p.yaml"
    bad_policy.write_text("routes: {api: {schemes: [kerberos]}}\n")
    result = authgate("check", "--secret-dir", str(tmp_path), "--config", str(bad_policy))
    assert result.returncode == 1 and "routes.api.schemes" in result.stderr


def test_check_validates_and_lists_jwt_issuers(tmp_path):
    from tests.support.jose import SigningKey, jwks

    (tmp_path / "tokens").write_text("")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "routes:\n  api:\n    jwt_issuers:\n"
        "      - {issuer: https://ci.example, jwks_secret_key: jwks-ci.json, audiences: [authgate]}\n"
    )
    result = authgate("check", "--secret-dir", str(tmp_path), "--config", str(policy))
    assert result.returncode == 1 and "jwks-ci.json' is not in the Secret" in result.stderr
    (tmp_path / "jwks-ci.json").write_bytes(jwks(SigningKey.rsa("k1"), SigningKey.ec("e1")))
    result = authgate("check", "--secret-dir", str(tmp_path), "--config", str(policy))
    assert result.returncode == 0, result.stderr
    assert (
        "    jwt issuer https://ci.example: keys=secret:jwks-ci.json (2 kid(s)) audiences=authgate "
        "algorithms=RS256,ES256\n"
    ) in result.stdout


def test_check_requires_session_keys_when_a_route_accepts_sessions(tmp_path):
    (tmp_path / "htpasswd").write_text("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
    policy = tmp_path / "p.yaml"
    policy.write_text("routes: {ui: {schemes: [session, basic]}}\nsign_in: {}\n")
    result = authgate("check", "--secret-dir", str(tmp_path), "--config", str(policy))
    assert result.returncode == 1 and "holds no 'session-keys', and routes ui accept sessions" in result.stderr
    made = authgate("new-session-key")
    assert made.returncode == 0
    keys = [made.stdout.strip(), authgate("new-session-key").stdout.strip()]
    assert len(keys[0]) == 43 and keys[0] != keys[1]
    (tmp_path / "session-keys").write_text("\n".join(keys) + "\n")
    result = authgate("check", "--secret-dir", str(tmp_path), "--config", str(policy))
    assert result.returncode == 0, result.stderr
    assert "session keys: 2 (the first, line 1, seals; every one opens)" in result.stdout
    assert keys[0] not in result.stdout + result.stderr


def test_bad_arguments_name_themselves():
    result = authgate("serve", "--port", "http")
    assert result.returncode == 2 and "--port: must be an integer from 1 to 65535, got 'http'" in result.stderr
    result = authgate("serve", "--proxy", "nginx")
    assert result.returncode == 2 and "--proxy" in result.stderr
    result = authgate("serve", "--bogus")
    assert result.returncode == 2 and "--bogus" in result.stderr
    result = authgate("new-token", "bad name")
    assert result.returncode == 2 and "name" in result.stderr


def test_watch_mode_without_kubernetes_configuration_fails_at_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--watch-secret", "ns/name", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **__import__("os").environ,
            "KUBECONFIG": str(tmp_path / "missing-kubeconfig"),
            "KUBERNETES_SERVICE_HOST": "",
        },
    )
    assert result.returncode == 2
    assert "--watch-secret: no usable Kubernetes configuration" in result.stderr


def test_serve_refuses_a_grpc_default_route_the_policy_lacks(tmp_path):
    result = authgate("serve", "--secret-dir", str(tmp_path), "--grpc-port", "9001", "--grpc-default-route", "apy")
    assert result.returncode == 2
    assert "--grpc-default-route: 'apy' is not a route of the policy (routes: default)" in result.stderr


def test_serve_refuses_a_bad_policy_before_listening(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("routes: {api: {realm: 5, typo: 1}}\n")
    result = authgate("serve", "--config", str(policy), "--port", "1")
    assert result.returncode == 2 and "unknown key(s) 'typo'" in result.stderr


def test_hash_token_matches_sha256():
    result = authgate("hash-token", stdin="my-token-0123456789abcdef\n")
    assert result.returncode == 0
    assert result.stdout.strip() == "sha256:" + __import__("hashlib").sha256(b"my-token-0123456789abcdef").hexdigest()
    assert authgate("hash-token", stdin="short\n").returncode == 1


def test_new_token_line_works_in_a_running_server(tmp_path):
    result = authgate("new-token", "ci-deploy", "--routes", "default", "--expires", "2099-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    token, line = result.stdout.strip().splitlines()
    assert len(token) >= 40 and token not in line
    assert line.startswith("ci-deploy sha256:") and line.endswith("routes=default expires=2099-01-01T00:00:00Z")
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": line + "\n"})
    proc = AuthgateProcess(secret.path, tmp_path / "log")
    try:
        proc.wait_ready()
        allowed = httpx.get(
            proc.base_url + "/auth/default", headers={**nginx_headers(), "Authorization": f"Bearer {token}"}
        )
        assert allowed.status_code == 200 and allowed.headers["x-auth-request-user"] == "ci-deploy"
    finally:
        proc.stop()


def test_file_mode_server_does_not_load_the_kubernetes_client():
    # ~30 MB of RSS and a second of start-up that only the token/user commands and --watch-secret need.
    code = (
        "import sys, app.cli, app.server, app.service\n"
        "from app.service import create_app\nfrom app.settings import Settings\n"
        "create_app(Settings())\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported'\n"
        "app.cli.build_parser().parse_args(['token', 'list'])\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported by the parser'\n"
        "assert 'grpc' not in sys.modules, 'grpc imported without --grpc-port'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_check_refuses_a_token_named_like_a_user(tmp_path):
    (tmp_path / "tokens").write_text("admin sha256:" + "0" * 64 + "\n")
    (tmp_path / "htpasswd").write_text("admin:{SHA}x\n")
    result = authgate("check", "--secret-dir", str(tmp_path))
    assert result.returncode == 1
    assert "token name 'admin' is also an htpasswd user" in result.stderr


def test_nothing_the_image_leaves_out_is_imported_by_the_service_its_watch_mode_or_the_cli():
    # docker/not-in-image.txt names what the Dockerfile uninstalls; the image would break the day one of them
    # is imported. The server path (both servers), watch mode's Kubernetes client and the CLI are loaded here.
    names = [
        line.strip()
        for line in (REPO_ROOT / "docker" / "not-in-image.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    code = (
        "import importlib.metadata as md, sys, json\n"
        "import app.cli, app.server, app.granian_server, app.service, app.kube.api, app.kube.watch, app.kube.cli\n"
        "import app.grpc_server, app.shared_throttle\n"
        "from app.service import create_asgi\nfrom app.settings import Settings\n"
        "create_asgi(Settings())\n"
        "app.cli.build_parser().parse_args(['token', 'list'])\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        "owners = md.packages_distributions()\n"
        "print(json.dumps(sorted({d.lower() for top in loaded for d in owners.get(top, [])})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout))
    assert "kubernetes" in imported and "granian" in imported  # the check sees what it should
    assert imported.isdisjoint(name.lower() for name in names), sorted(imported & {n.lower() for n in names})


def test_new_token_takes_what_token_create_takes(tmp_path):
    result = authgate(
        "new-token", "ci", "--expires", "30d", "--routes", "api", "--methods", "GET,HEAD", "--paths", "/api"
    )
    assert result.returncode == 0, result.stderr
    token, line = result.stdout.strip().splitlines()
    assert token not in line
    (parsed,) = parse_tokens(line + "\n")
    assert parsed.routes == frozenset({"api"}) and parsed.methods == frozenset({"GET", "HEAD"})
    assert parsed.paths == ("/api",) and parsed.expires is not None
    remaining = parsed.expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < remaining <= dt.timedelta(days=30)
    policy = tmp_path / "policy.yaml"
    policy.write_text("routes: {api: {}, dashboards: {}}\n")
    result = authgate("new-token", "ci", "--routes", "dashbords", "--config", str(policy))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"authgate: error: --routes: 'dashbords' is not a route of the policy {policy} (routes: api, dashboards); "
        "did you mean 'dashboards'?\n"
    )


def test_new_token_bad_values_name_the_option_and_every_accepted_form():
    result = authgate("new-token", "ci", "--expires", "garbage")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "authgate: error: --expires: 'garbage' is neither a duration from now (30m, 24h, 90d, 1h30m, 2w) nor an "
        "RFC 3339 time (2027-01-31T00:00:00Z, 2027-01-31T01:00:00+01:00)\n"
    )
    result = authgate("new-token", "ci", "--methods", "G?T")
    assert result.returncode == 2 and result.stderr == "authgate: error: --methods: not an HTTP method: 'G?T'\n"
