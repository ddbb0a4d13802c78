#!/usr/bin/env bash
# nginx (with auth_request), its Lua module (the auth-keepalive path of tests/e2e/nginx.py), set-misc
# (`set_escape_uri`, which ingress-nginx renders for `auth-signin`), wrk for load,
# htpasswd for making test htpasswd files.
source "$(dirname "$0")/../lib.sh"
apt_install nginx-light libnginx-mod-http-lua libnginx-mod-http-set-misc wrk apache2-utils
