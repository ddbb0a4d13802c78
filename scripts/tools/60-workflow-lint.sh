#!/usr/bin/env bash
# shellcheck for the workflow lint (tests/release): actionlint runs it on every `run:` step when given its path.
# actionlint and zizmor themselves are Python test extras (pyproject.toml), installed by scripts/setup.sh.
source "$(dirname "$0")/../lib.sh"
apt_install shellcheck
