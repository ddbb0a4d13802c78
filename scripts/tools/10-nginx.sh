#!/usr/bin/env bash
# nginx (with auth_request), its Lua module (the auth-keepalive path of tests/e2e/nginx.py), wrk for load,
# htpasswd for making test htpasswd files.
source "$(dirname "$0")/../lib.sh"
apt_install nginx-light libnginx-mod-http-lua wrk apache2-utils
