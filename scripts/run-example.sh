#!/usr/bin/env bash
# Sets up authgate and serves it on the example credentials shipped in examples/.
# Try it:  curl -i -H 'Authorization: Bearer example-api-token-0123456789abcdef' localhost:8080/auth/api
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
exec "$VENV/bin/authgate" serve \
  --secret-dir "$ROOT/examples/secret" \
  --config "$ROOT/examples/policy-prefect.yaml" \
  --host 127.0.0.1 --port "${PORT:-8080}" "$@"
