#!/usr/bin/env bash
# A real OpenID provider for the JWT tests (tests/e2e/test_jwt_oidc.py) and the sign-in of people
# (tests/oidc/people.mjs: tests/integration/test_oidc_sign_in.py, tests/e2e/test_oidc_sign_in_doors.py): the npm package oidc-provider, pinned by
# tests/oidc/package-lock.json, run on the machine's Node.js (20 works; the package prefers 22 and says so).
# `npm ci` only when node_modules does not already match the lock file.
source "$(dirname "$0")/../lib.sh"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
OIDC="$ROOT/tests/oidc"
if ! cmp -s "$OIDC/package-lock.json" "$OIDC/node_modules/.package-lock.authgate" 2>/dev/null; then
  log "npm ci (tests/oidc)"
  (cd "$OIDC" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$OIDC/package-lock.json" "$OIDC/node_modules/.package-lock.authgate"
fi
