#!/usr/bin/env bash
# Installs every real program the test suite drives (nginx, Traefik, helm, ...).
# Each tool has its own idempotent script in scripts/tools/; they run in name order.
source "$(dirname "$0")/lib.sh"
for tool in "$ROOT"/scripts/tools/*.sh; do
  log "tool: $(basename "$tool" .sh)"
  bash "$tool"
done
