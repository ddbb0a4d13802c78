"""Traefik ForwardAuth (and its ingress-nginx provider): X-Forwarded-* (app/doors/traefik.py)."""

from __future__ import annotations

import pytest

from tests.unit.doors.wire import TRAEFIK, read


@pytest.mark.parametrize("proxy", [("traefik",), ("ingress-nginx", "traefik")])
def test_behind_traefik_the_original_request_is_traefik_s(proxy):
    reading = read(proxy, TRAEFIK)
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "traefik", ())
