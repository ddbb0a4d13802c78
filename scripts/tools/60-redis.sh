#!/usr/bin/env bash
# Redis for the shared-throttle tests (tests/integration/test_shared_throttle*.py): Debian's redis-server (7.0,
# built with TLS). The tests start their own instances on free loopback ports, without persistence; a
# distribution service on 6379, if the machine runs one, is left alone. openssl makes the TLS test's certificates.
source "$(dirname "$0")/../lib.sh"
apt_install redis-server openssl
