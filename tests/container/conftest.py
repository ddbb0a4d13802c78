"""The image, built for real from a local Debian base with podman, and run the way the chart runs it.

One session fixture (one xdist worker: the tests share ``xdist_group("container")``) makes the debootstrap base
(cached under .tools/cache by its inputs), imports it into a private store, builds the repository's Dockerfile
with ``--build-arg BASE=localhost/base-python:bookworm --pull=never``, and at the end removes every container and
image, the whole store, the default-location state podman created, and checks the host's networking is as it was.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.container.engine import (
    BASE_IMAGE,
    DEFAULT_STATE_PATHS,
    HostNetworkState,
    PodmanStore,
    base_rootfs_tarball,
    existing,
    mounts_under,
    remove_created_state,
)
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import REPO_ROOT, free_port, wait_for
from tests.support.tools import require_tool

IMAGE = "localhost/authgate:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCK = Path("/tmp/authgate-container-tests.lock")
EXAMPLES = REPO_ROOT / "examples"
# The chart's container: `serve` with these args, the Secret and the policy ConfigMap mounted read-only.
CHART_ARGS = (
    "serve",
    "--secret-dir",
    "/etc/authgate/secret",
    "--config",
    "/etc/authgate/policy/policy.yaml",
    "--proxy",
    "ingress-nginx",
    # grpc.enabled=true: the image's trimmed Envoy protos must still serve Authorization/Check
    "--grpc-port",
    "9001",
    "--health-port",
    "8081",
)


@dataclass
class BuiltImage:
    store: PodmanStore
    tag: str
    size_bytes: int
    base_size_bytes: int
    revision: str
    timings: dict[str, float] = field(default_factory=dict)

    def inspect(self) -> dict[str, object]:
        return json.loads(self.store.podman("image", "inspect", self.tag).stdout)[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    if os.geteuid() != 0:
        pytest.fail("the container tests run podman as root (REFERENCE §5): run them as root")
    podman, buildah = require_tool("podman"), require_tool("buildah")
    debootstrap = require_tool("debootstrap")
    require_tool("runc")
    require_tool("slirp4netns")

    # One session at a time on a host: another test run's containers would show up in this one's before/after
    # comparison of the host's networking, and its clean-up could remove state this one is using.
    with HOST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield from _image_session(tmp_path_factory, podman, buildah, debootstrap)


def _image_session(
    tmp_path_factory: pytest.TempPathFactory, podman: Path, buildah: Path, debootstrap: Path
) -> Iterator[BuiltImage]:
    network_before = HostNetworkState.snapshot()
    state_before = existing(DEFAULT_STATE_PATHS)
    workdir = tmp_path_factory.mktemp("container")
    # A short path: podman refuses a runroot longer than 50 characters (pytest's tmp paths are longer).
    store = PodmanStore(Path(tempfile.mkdtemp(prefix="authgate-ctr-", dir="/tmp")), podman, buildah)
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        tarball = base_rootfs_tarball(debootstrap, workdir)
        timings["base rootfs (debootstrap or cache)"] = time.monotonic() - started

        started = time.monotonic()
        store.import_rootfs(tarball, BASE_IMAGE)
        timings["podman import"] = time.monotonic() - started

        revision = (
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            or "unknown"
        )
        volumes = [f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.is_file() else []  # pip behind a TLS-inspecting proxy
        started = time.monotonic()
        store.build(REPO_ROOT, IMAGE, {"BASE": BASE_IMAGE, "REVISION": revision}, volumes)
        timings["podman build"] = time.monotonic() - started

        size = int(store.podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
        base_size = int(store.podman("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE).stdout)
        yield BuiltImage(store, IMAGE, size, base_size, revision, timings)
    finally:
        store.destroy()
        remove_created_state(state_before)
        leftovers = {
            "mounts under the store": mounts_under(store.path),
            "processes naming the store": store.processes(),
            "store directory": [str(store.path)] if store.path.exists() else [],
            "default-location state created": sorted(map(str, existing(DEFAULT_STATE_PATHS) - state_before)),
        }
        network_after = HostNetworkState.snapshot()
        assert not any(leftovers.values()), f"the container tests left things behind: {leftovers}"
        assert network_after == network_before, (
            f"host networking changed:\nbefore {network_before}\nafter  {network_after}"
        )


class AuthgateContainer:
    """One authgate container run like the chart runs it, its port published on loopback only."""

    def __init__(self, image: BuiltImage, secret_dir: Path, policy_dir: Path) -> None:
        self.image = image
        self.name = f"authgate-test-{uuid.uuid4().hex[:12]}"
        self.secret_dir = secret_dir
        self.policy_dir = policy_dir
        self.port = 0
        self.grpc_port = 0
        self.health_port = 0

    def start(self, args: tuple[str, ...] = CHART_ARGS) -> None:
        last_error = ""
        for _attempt in range(3):  # another worker may take the free port between the probe and the bind
            self.port, self.grpc_port, self.health_port = free_port(), free_port(), free_port()
            proc = self.image.store.podman(
                "run",
                "--detach",
                "--name",
                self.name,
                "--read-only",  # readOnlyRootFilesystem: true
                "--tmpfs",
                "/tmp:rw,size=16m,mode=1777",  # the chart's emptyDir at /tmp (sizeLimit 16Mi)
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",  # the chart's container securityContext
                "--network",
                "slirp4netns",  # user-mode network: no host bridge, no firewall rules
                "--publish",
                f"127.0.0.1:{self.port}:8080",
                "--publish",
                f"127.0.0.1:{self.grpc_port}:9001",
                "--publish",
                f"127.0.0.1:{self.health_port}:8081",
                "--volume",
                f"{self.secret_dir}:/etc/authgate/secret:ro",
                "--volume",
                f"{self.policy_dir}:/etc/authgate/policy:ro",
                self.image.tag,
                *args,
                check=False,
            )
            if proc.returncode == 0:
                return
            last_error = proc.stderr
            self.image.store.podman("rm", "--force", "--time", "0", self.name, check=False)
            if "address already in use" not in proc.stderr:
                break
        raise AssertionError(f"podman run failed: {last_error}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> Mapping[str, object]:
        return json.loads(self.image.store.podman("inspect", "--format", "{{json .State}}", self.name).stdout)  # type: ignore[no-any-return]

    def logs(self) -> str:
        proc = self.image.store.podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            try:
                return httpx.get(self.base_url + "/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                if self.state().get("Status") == "exited":
                    raise AssertionError(f"authgate exited early:\n{self.logs()}") from None
                raise

        try:
            wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.name} /readyz")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def remove(self) -> None:
        self.image.store.podman("rm", "--force", "--time", "0", self.name, check=False)


def example_files() -> dict[str, str]:
    return {name: (EXAMPLES / "secret" / name).read_text() for name in ("tokens", "htpasswd")}


@pytest.fixture
def container(built_image: BuiltImage, tmp_path: Path) -> Iterator[tuple[AuthgateContainer, KubeletSecretDir]]:
    """A running authgate container with the example credentials in a kubelet-style Secret directory."""
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write(example_files())
    policy = KubeletSecretDir(tmp_path / "policy")  # a ConfigMap volume has the same layout
    policy.write({"policy.yaml": (EXAMPLES / "policy-prefect.yaml").read_text()})
    ctr = AuthgateContainer(built_image, secret.path, policy.path)
    ctr.start()
    try:
        ctr.wait_ready()
        yield ctr, secret
    finally:
        ctr.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Prints the measured image size (recorded by the image test) at the end of the run."""
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        for key, value in report.user_properties:
            if key == "container_image":
                terminalreporter.write_line(f"container image: {value}")
