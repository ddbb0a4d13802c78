#!/usr/bin/env bash
# Creates .venv and installs authgate with its test dependencies (editable).
source "$(dirname "$0")/lib.sh"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
pip_install --upgrade pip >/dev/null
pip_install -e "$ROOT[test]"
log "authgate installed in $VENV"
