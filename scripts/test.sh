#!/usr/bin/env bash
# The whole test suite from a fresh clone: set up, install the real tools, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/install-tools.sh"
cd "$ROOT"
set +e
"$VENV/bin/python" -m pytest -n "${AUTHGATE_TEST_WORKERS:-4}" --dist loadgroup "$@"
rc=$?
set -e
exit $rc
