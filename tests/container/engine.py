"""podman and buildah on a private store, a Debian base image made with debootstrap, and the host state they touch.

No Docker engine runs here, but Debian's podman and buildah do, as root, with runc (REFERENCE §5). Everything a
test session makes lives under one directory: the image store (``--root``), its run state (``--runroot``), libpod's
tmp dir, the events log and the network config dir, all named in a ``containers.conf`` written there and passed
through ``CONTAINERS_CONF``; no registry is configured, and every build says ``--pull=never``. Removing the
containers and images, unmounting what is left and deleting that directory removes everything the session made.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import REPO_ROOT

DEBIAN_SUITE = "bookworm"  # python3 3.11, the oldest Python authgate supports
DEBIAN_FALLBACK_MIRROR = "http://deb.debian.org/debian"
# python3-venv brings ensurepip (the builder stage makes /opt/venv with it); no pip, no compiler.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What a slim image leaves out: documentation, translations and apt's downloaded packages and lists.
BASE_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt/archives",
    "var/lib/apt/lists",
)
BASE_IMAGE = f"localhost/base-python:{DEBIAN_SUITE}"
BASE_CACHE_DIR = REPO_ROOT / ".tools" / "cache" / "container-base"

# Paths podman/buildah create on first use even with a private store and config (the blob-info cache, netavark's
# run dir, libpod's default tmp dir, CNI's lock, and /run/netns, which podman bind-mounts onto itself as a shared
# mount for the container's named netns). A session removes the ones that did not exist before it.
DEFAULT_STATE_PATHS = (
    Path("/var/lib/containers"),
    Path("/run/containers"),
    Path("/run/libpod"),
    Path("/etc/containers/networks"),
    Path("/etc/cni/net.d/cni.lock"),
    Path("/run/netns"),
)


def debian_mirror(
    sources_dir: Path = Path("/etc/apt/sources.list.d"), sources_list: Path = Path("/etc/apt/sources.list")
) -> str:
    """The Debian mirror this host's apt uses for ``DEBIAN_SUITE`` (deb822 ``.sources`` or one-line ``.list``)."""
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
            if DEBIAN_SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return str(fields["URIs"].split()[0]).rstrip("/")
    for path in [sources_list, *sorted(sources_dir.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and match.group(2) == DEBIAN_SUITE:
                return match.group(1).rstrip("/")
    return DEBIAN_FALLBACK_MIRROR


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    stdin: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a command; on failure the error carries its output (what a failed build said)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, stdin=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def base_cache_key(mirror: str) -> str:
    """Names the cached base tarball by everything that goes into it, so a changed input makes a new one."""
    inputs = {
        "suite": DEBIAN_SUITE,
        "mirror": mirror,
        "packages": BASE_PACKAGES,
        "trim": BASE_TRIM,
        "arch": platform.machine(),
        "variant": "minbase",
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def base_rootfs_tarball(debootstrap: Path, workdir: Path) -> Path:
    """A tarball of a minimal Debian root with python3, made with debootstrap (~45 s) and cached by its inputs."""
    mirror = debian_mirror()
    tarball = BASE_CACHE_DIR / f"{DEBIAN_SUITE}-{base_cache_key(mirror)}.tar"
    if tarball.is_file():
        return tarball
    rootfs = workdir / "rootfs"
    try:
        run(
            [
                str(debootstrap),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            timeout=600,
        )
        for rel in BASE_TRIM:
            target = rootfs / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        BASE_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=BASE_CACHE_DIR, suffix=".partial", delete=False) as partial:
            partial_path = Path(partial.name)
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial_path), "."], timeout=300)
        os.replace(partial_path, tarball)
    finally:
        unmount_all(rootfs)  # debootstrap mounts /proc and /sys inside; a failed run can leave them
        shutil.rmtree(rootfs, ignore_errors=True)
        for leftover in BASE_CACHE_DIR.glob("*.partial"):
            leftover.unlink()
    return tarball


@dataclass(frozen=True)
class HostNetworkState:
    """What podman could change in the host's networking: links, named netns, forwarding, firewall rules."""

    links: tuple[str, ...]
    netns: tuple[str, ...] | None  # None: no /run/netns at all
    netns_mounts: tuple[str, ...]
    ip_forward: str
    firewall: str

    @classmethod
    def snapshot(cls) -> HostNetworkState:
        links = run(["ip", "-o", "link", "show"], timeout=30).stdout
        names = tuple(sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()))
        netns_dir = Path("/run/netns")
        netns = tuple(sorted(p.name for p in netns_dir.iterdir())) if netns_dir.is_dir() else None
        firewall = ""
        for argv in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
            if shutil.which(argv[0], path="/usr/sbin:/usr/bin:/sbin:/bin"):
                out = run(argv, timeout=30, check=False).stdout
                firewall += "\n".join(l for l in out.splitlines() if not l.startswith("#"))  # noqa: E741
        return cls(
            names,
            netns,
            tuple(mounts_under(netns_dir)),
            Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
            firewall,
        )


class PodmanStore:
    """podman and buildah confined to one directory: store, run state, config, events, network config."""

    def __init__(self, path: Path, podman: Path, buildah: Path) -> None:
        self.path = path
        self.podman_bin = podman
        self.buildah_bin = buildah
        self.root = path / "root"
        self.runroot = path / "run"
        path.mkdir(parents=True, exist_ok=True)
        self.conf = path / "containers.conf"
        # The limits this sandbox allows `podman run` (REFERENCE §5); runc (crun fails on these mixed cgroups).
        self.conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{path}/events.log"\n'
            f'tmp_dir = "{path}/libpod-tmp"\n'
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{path}/networks"\n'
        )
        self.registries = path / "registries.conf"
        self.registries.write_text("unqualified-search-registries = []\n")  # no registry, ever
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf), "CONTAINERS_REGISTRIES_CONF": str(self.registries)}
        self._store_flags = ["--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "overlay"]

    def podman(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [str(self.podman_bin), *self._store_flags, *args], timeout=timeout, env=self.env, check=check, stdin=stdin
        )

    def buildah(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([str(self.buildah_bin), *self._store_flags, *args], timeout=timeout, env=self.env, check=check)

    def import_rootfs(self, tarball: Path, name: str) -> None:
        with tarball.open("rb") as stream:
            proc = subprocess.run(
                [str(self.podman_bin), *self._store_flags, "import", "-", name],
                stdin=stream,
                capture_output=True,
                text=True,
                timeout=300,
                env=self.env,
            )
        if proc.returncode != 0:
            raise AssertionError(f"podman import failed:\n{proc.stderr[-4000:]}")

    def build(self, context: Path, tag: str, build_args: dict[str, str], volumes: Iterable[str] = ()) -> None:
        argv = [
            "build",
            "--pull=never",
            "--layers=false",
            "--network",
            "host",
            "--runtime",
            "runc",
            "-t",
            tag,
            "-f",
            str(context / "Dockerfile"),
        ]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for volume in volumes:
            argv += ["-v", volume]
        self.podman(*argv, str(context), timeout=900)

    def processes(self) -> list[int]:
        """PIDs whose command line names this store (conmon, slirp4netns, rootlessport, podman itself)."""
        marker = str(self.path).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def destroy(self) -> None:
        """Removes every container, build container and image, unmounts what is left and deletes the store."""
        try:
            self.podman("rm", "--all", "--force", "--time", "0", timeout=120, check=False)
            self.buildah("rm", "--all", timeout=120, check=False)
            self.podman("rmi", "--all", "--force", timeout=120, check=False)
        finally:
            unmount_all(self.path)
            shutil.rmtree(self.path, ignore_errors=True)


def existing(paths: Iterable[Path]) -> set[Path]:
    return {p for p in paths if p.exists() or p.is_symlink()}


def remove_created_state(before: set[Path]) -> None:
    """Removes the default-location paths podman created during the session (those absent before it)."""
    for path in existing(DEFAULT_STATE_PATHS) - before:
        unmount_all(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
