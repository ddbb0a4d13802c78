#!/usr/bin/env bash
# nginx (with auth_request), wrk for load, htpasswd for making test htpasswd files.
source "$(dirname "$0")/../lib.sh"
apt_install nginx-light wrk apache2-utils
