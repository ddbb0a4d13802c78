"""The image built from the repository's Dockerfile and run as the chart runs it, checked from outside."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest
import yaml

from app.settings import DEFAULT_SERVER
from tests.container.conftest import AuthgateContainer, BuiltImage, example_files
from tests.support.envoy_grpc import SERVING, CheckClient, envoy_check
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import REPO_ROOT, SHUTDOWN_COMPLETE, wait_for

# The first test also pays for the session's base image and build (~1.5 min idle, more on a loaded machine).
pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container"), pytest.mark.timeout(1200)]

CI_DEPLOY_TOKEN = "example-api-token-0123456789abcdef"  # examples/secret/tokens, route api
ROTATED_TOKEN = "rotated-container-token-0123456789"
ORIGINAL = {"X-Original-Method": "GET", "X-Original-URL": "http://prefect.test/api/flows"}
# What authgate adds on top of its base (its venv); the base is whatever BASE names. grpcio's C core alone is
# 17 MB of it and granian's 22 MB (docs/container.md).
MAX_LAYERS_BYTES = 200_000_000
COMPILER = re.compile(r"^(?:[\w.-]+-)?(?:gcc|g\+\+|cc|c\+\+|cpp|clang|clang\+\+|ld|as|make)(?:-\d+(?:\.\d+)*)?$")


def chart_values() -> dict[str, dict[str, object]]:
    return yaml.safe_load((REPO_ROOT / "charts" / "authgate" / "values.yaml").read_text())  # type: ignore[no-any-return]


def process_ids(pid: int) -> tuple[list[int], list[int]]:
    """Real, effective, saved and filesystem UIDs and GIDs of a host PID."""
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.MULTILINE)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.MULTILINE)
    assert uids and gids
    return [int(x) for x in uids.group(1).split()], [int(x) for x in gids.group(1).split()]


def check_metadata_contents_and_size(built_image: BuiltImage, record_property: Callable[[str, object], None]) -> None:
    """Config, labels, what the final filesystem holds (and not), every module importable, the size."""
    config = built_image.inspect()["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["authgate"]
    assert config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "authgate"
    assert labels["org.opencontainers.image.revision"] == built_image.revision
    for key in ("version", "licenses", "description"):
        assert labels[f"org.opencontainers.image.{key}"], key

    # The final filesystem, read from the host: no compiler, no pip, no pip cache, no build directory.
    root = Path(built_image.store.podman("image", "mount", built_image.tag).stdout.strip())
    try:
        compilers = [
            str(p.relative_to(root))
            for d in ("usr/bin", "usr/local/bin", "bin", "usr/sbin")
            if (root / d).is_dir()
            for p in (root / d).iterdir()
            if COMPILER.match(p.name)
        ]
        pip_caches = [str(p.relative_to(root)) for p in root.rglob("pip") if p.parent.name == ".cache"]
        venv_pip = sorted(
            str(p.relative_to(root))
            for p in [
                *(root / "opt/venv/bin").glob("pip*"),
                *(root / "opt/venv/lib").glob("python3*/site-packages/pip"),
            ]
        )
        assert compilers == [], compilers
        assert pip_caches == [], pip_caches
        assert venv_pip == [], venv_pip
        assert not (root / "root/.cache").exists()
        assert not (root / "src").exists(), "the builder's source directory leaked into the final image"
        assert (root / "opt/venv/bin/authgate").is_file()
        # Bytecode was compiled at build time: with a read-only root nothing could cache it at run time.
        assert list((root / "opt/venv/lib").glob("python3*/site-packages/app/__pycache__/cli.*.pyc"))
        assert not list((root / "opt/venv/lib").glob("python3*/site-packages/kubernetes/aio")), "trim lost"
    finally:
        built_image.store.podman("image", "unmount", built_image.tag)

    # Every authgate module (and so every dependency it imports) loads in the image with a read-only root:
    # nothing it needs was trimmed away.
    imports = built_image.store.podman(
        "run",
        "--rm",
        "--read-only",
        "--network",
        "none",
        "--entrypoint",
        "python3",
        built_image.tag,
        "-c",
        "import importlib, pkgutil, app\n"
        "names = [m.name for m in pkgutil.walk_packages(app.__path__, 'app.') if m.name != 'app.__main__']\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names))",
    )
    assert int(imports.stdout.strip()) >= 10

    layers = built_image.size_bytes - built_image.base_size_bytes
    summary = (
        f"{built_image.size_bytes / 1e6:.0f} MB ({built_image.base_size_bytes / 1e6:.0f} MB Debian "
        f"bookworm python3 base + {layers / 1e6:.0f} MB authgate); set-up "
        + ", ".join(f"{k} {v:.0f} s" for k, v in built_image.timings.items())
    )
    print(f"container image: {summary}")
    record_property("container_image", summary)
    assert layers < MAX_LAYERS_BYTES, summary


def check_serves_decisions_as_non_root_with_a_read_only_root(ctr: AuthgateContainer) -> None:
    assert httpx.get(ctr.base_url + "/readyz", timeout=5).status_code == 200
    assert httpx.get(ctr.base_url + "/healthz", timeout=5).status_code == 200
    health = f"http://127.0.0.1:{ctr.health_port}"  # where the chart's probes and ServiceMonitor look
    assert [httpx.get(health + path, timeout=5).status_code for path in ("/readyz", "/healthz", "/metrics")] == [
        200
    ] * 3

    bearer = httpx.get(
        ctr.base_url + "/auth/api", timeout=5, headers={**ORIGINAL, "Authorization": f"Bearer {CI_DEPLOY_TOKEN}"}
    )
    assert bearer.status_code == 200
    assert bearer.headers["X-Auth-Request-User"] == "ci-deploy"
    assert bearer.headers["X-Auth-Request-Scheme"] == "bearer"

    basic = httpx.get(
        ctr.base_url + "/auth/ui",
        timeout=5,
        auth=("admin", "admin-password"),
        headers={"X-Original-Method": "GET", "X-Original-URL": "http://prefect.test/"},
    )
    assert basic.status_code == 200
    assert basic.headers["X-Auth-Request-User"] == "admin"
    assert basic.headers["X-Auth-Request-Scheme"] == "basic"

    wrong = httpx.get(
        ctr.base_url + "/auth/api", timeout=5, headers={**ORIGINAL, "Authorization": "Bearer nope-" + "x" * 20}
    )
    assert wrong.status_code == 401
    assert "authgate_decisions_total" in httpx.get(ctr.base_url + "/metrics", timeout=5).text

    # The process, seen from the host: the image's user, the chart's runAsUser/runAsGroup, never root.
    pid = int(ctr.state()["Pid"])  # type: ignore[call-overload]
    uids, gids = process_ids(pid)
    pod = chart_values()["podSecurityContext"]
    assert set(uids) == {pod["runAsUser"]} and uids[0] != 0, uids
    assert set(gids) == {pod["runAsGroup"]}, gids

    # Read-only root, writable /tmp (the chart's emptyDir): the only writable place is the one the chart gives.
    root_write = ctr.image.store.podman("exec", ctr.name, "python3", "-c", "open('/opt/venv/x', 'w')", check=False)
    assert root_write.returncode != 0 and "Read-only file system" in root_write.stderr, root_write.stderr
    ctr.image.store.podman("exec", ctr.name, "python3", "-c", "open('/tmp/x', 'w').write('ok')")
    assert (
        ctr.image.store.podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", ctr.name).stdout.strip()
        == "true"
    )


def check_kubelet_swap_is_seen_within_two_seconds(ctr: AuthgateContainer, secret: KubeletSecretDir) -> None:
    files = example_files()
    digest = hashlib.sha256(ROTATED_TOKEN.encode()).hexdigest()
    # The new version drops ci-deploy and adds a token named "rotated".
    kept = "".join(line + "\n" for line in files["tokens"].splitlines() if not line.startswith("ci-deploy"))
    secret.write({"tokens": kept + f"rotated sha256:{digest} routes=api\n", "htpasswd": files["htpasswd"]})
    swapped = time.monotonic()

    def status(token: str) -> int:
        headers = {**ORIGINAL, "Authorization": f"Bearer {token}"}
        return httpx.get(ctr.base_url + "/auth/api", headers=headers, timeout=1).status_code

    wait_for(
        lambda: status(ROTATED_TOKEN) == 200 and status(CI_DEPLOY_TOKEN) == 401,
        timeout=2.0,
        interval=0.05,
        what="the swapped Secret to be in force inside the container",
    )
    print(f"swap seen after {time.monotonic() - swapped:.2f} s")
    answer = httpx.get(ctr.base_url + "/auth/api", headers={**ORIGINAL, "Authorization": f"Bearer {ROTATED_TOKEN}"})
    assert answer.headers["X-Auth-Request-User"] == "rotated"


def check_sigterm_stops_it_cleanly_within_seconds(ctr: AuthgateContainer) -> None:
    ctr.image.store.podman("kill", "--signal", "TERM", ctr.name)
    sent = time.monotonic()

    # A process that ignored SIGTERM (PID 1 without a handler ignores it) would still be running at the deadline.
    def exited() -> Mapping[str, object] | None:
        state = ctr.state()
        return state if state["Status"] == "exited" else None

    state = wait_for(exited, timeout=10.0, interval=0.05, what=f"{ctr.name} to exit after SIGTERM")
    elapsed = time.monotonic() - sent
    exit_code = state["ExitCode"]
    assert exit_code == 0, f"exit {exit_code}:\n{ctr.logs()}"
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert SHUTDOWN_COMPLETE[DEFAULT_SERVER] in ctr.logs()  # the image runs the default server


def check_serves_envoy_grpc_checks(ctr: AuthgateContainer) -> None:
    """The same decisions over gRPC from the image, whose Envoy protos were trimmed to what it imports."""
    client = CheckClient(ctr.grpc_port)
    try:
        assert client.health("") == SERVING
        allowed = client.check(envoy_check(headers={"authorization": f"Bearer {CI_DEPLOY_TOKEN}"}, route="api"))
        assert allowed.upstream == {"x-auth-request-user": "ci-deploy", "x-auth-request-scheme": "bearer"}
        assert client.check(envoy_check(route="api")).http_status == 401
    finally:
        client.close()


def check_chart_security_context_agrees_with_the_image(built_image: BuiltImage) -> None:
    values = chart_values()
    pod, ctr = values["podSecurityContext"], values["securityContext"]
    user = built_image.inspect()["Config"]["User"]  # type: ignore[index]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}" == f"{ctr['runAsUser']}:{ctr['runAsGroup']}"
    assert pod["fsGroup"] == pod["runAsGroup"]
    assert pod["runAsNonRoot"] is True and ctr["runAsNonRoot"] is True
    assert ctr["readOnlyRootFilesystem"] is True
    # The run flags in conftest mirror the chart's mounts: the Secret directory (never subPath) and /tmp.
    deployment = (REPO_ROOT / "charts" / "authgate" / "templates" / "deployment.yaml").read_text()
    assert "mountPath: /etc/authgate/secret" in deployment
    assert "mountPath: /tmp" in deployment
    assert not re.search(r"^\s*subPath:", deployment, re.MULTILINE)


def test_image_builds_and_runs_like_the_chart(
    built_image: BuiltImage,
    container: tuple[AuthgateContainer, KubeletSecretDir],
    record_property: Callable[[str, object], None],
) -> None:
    """One test, in steps, so one worker builds the image once (xdist_group does not group under pytest 9.2)."""
    ctr, secret = container
    check_metadata_contents_and_size(built_image, record_property)
    check_chart_security_context_agrees_with_the_image(built_image)
    check_serves_decisions_as_non_root_with_a_read_only_root(ctr)
    check_serves_envoy_grpc_checks(ctr)
    check_kubelet_swap_is_seen_within_two_seconds(ctr, secret)
    check_sigterm_stops_it_cleanly_within_seconds(ctr)  # last: it stops the container
