"""ingress-nginx auth-url: X-Original-URL/-Method, X-Real-IP (app/doors/ingress_nginx.py)."""

from __future__ import annotations

import pytest

from app.doors.base import last_hop, path_of
from tests.unit.doors.wire import NGINX, read


@pytest.mark.parametrize("proxy", [("ingress-nginx",), ("ingress-nginx", "traefik"), ("traefik", "ingress-nginx")])
def test_behind_nginx_the_original_request_is_nginx_s(proxy):
    reading = read(proxy, NGINX)
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "ingress-nginx", ())


def test_a_raw_hash_stays_in_the_path_and_only_the_query_is_cut():
    headers = {**NGINX, b"x-original-url": b"http://h/api/health#/../flows?x=1", b"x-original-method": b"GET"}
    assert read(("ingress-nginx",), headers).path == "/api/health#/../flows"
    assert path_of(b"/a?b#c") == b"/a" and last_hop(b"1.1.1.1, 2.2.2.2 ") == b"2.2.2.2" and last_hop(b"") is None
