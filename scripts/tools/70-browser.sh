#!/usr/bin/env bash
# A real browser for the sign-in tests: Debian's chromium, driven by Playwright (PyPI `playwright`, the Python
# driver only: tests/support/browser.py launches /usr/bin/chromium; Playwright's own browser download is never
# used) with openssl for the tests' self-signed certificates.
source "$(dirname "$0")/../lib.sh"
apt_install chromium openssl fonts-liberation
if ! "$VENV/bin/python" -m pip show -q playwright >/dev/null 2>&1; then
  log "pip install playwright"
  pip_install 'playwright>=1.49,<2'
fi
