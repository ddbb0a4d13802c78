"""Traefik ForwardAuth (and its ingress-nginx provider): X-Forwarded-* (app/doors/traefik.py)."""

from __future__ import annotations

import pytest

from app.doors.traefik import TRAEFIK as TRAEFIK_DOOR
from tests.unit.doors.wire import TRAEFIK, read


@pytest.mark.parametrize("proxy", [("traefik",), ("ingress-nginx", "traefik")])
def test_behind_traefik_the_original_request_is_traefik_s(proxy):
    reading = read(proxy, TRAEFIK)
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "traefik", ())


@pytest.mark.parametrize(
    ("proto", "host", "origin"),
    [
        (b"https", b"Prefect.Example.com", "https://prefect.example.com"),
        (b"http", b"localhost:8080", "http://localhost:8080"),
        (b"https", b"[2001:db8::1]:443", "https://[2001:db8::1]:443"),
        (b"https", b"evil.example@prefect.example.com", None),  # userinfo
        (b"https", b"evil.example/x", None),  # a path
        (b"https", b"a.example, b.example", None),  # a second value
        (b"https", b"evil.example\r\nx: y", None),  # a header split
        (b"https", b"", None),
        (b"javascript", b"prefect.example.com", None),
        (None, b"prefect.example.com", None),
    ],
)
def test_the_origin_for_a_sign_in_redirect_is_only_what_forwardauth_writes(
    proto: bytes | None, host: bytes, origin: str | None
) -> None:
    headers = {b"x-forwarded-host": host} | ({b"x-forwarded-proto": proto} if proto is not None else {})
    assert TRAEFIK_DOOR.origin(headers, {}) == origin
