"""Traefik ForwardAuth (and its ingress-nginx provider, which turns ``auth-url`` into ForwardAuth; Caddy's
``forward_auth`` sends the same): a ``GET`` to the fixed address with ``X-Forwarded-Method``,
``X-Forwarded-Uri``, ``-Host``, ``-Proto`` and ``-For`` overwritten (``trustForwardHeader: false``, the
default), and every other client header copied — a client's own ``X-Original-URL`` too."""

from __future__ import annotations

from typing import Any

from app.doors.base import View, last_hop, origin_of, path_of


class Traefik:
    name = "traefik"
    mark_names = "X-Forwarded-Method and X-Forwarded-Uri"
    # The headers whose absence leaves no account of this door (view() is then None).
    marks: tuple[bytes, ...] = (b"x-forwarded-method", b"x-forwarded-uri")
    vouches_for_client = True
    redirects_to_sign_in = True

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        method = headers.get(b"x-forwarded-method")
        uri = headers.get(b"x-forwarded-uri")
        if method is None and uri is None:
            return None
        return View(method, path_of(uri) if uri is not None else None, last_hop(headers.get(b"x-forwarded-for")))

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        return headers.get(b"x-forwarded-uri")

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        return b"x-forwarded-proto" in headers  # ingress-nginx would have cleared it

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        return []

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        # Both overwritten by ForwardAuth from the request it received (a client's own are not kept), and
        # needed: Traefik resolves a relative Location against the auth address (test_sign_in_wiring.py).
        return origin_of(headers.get(b"x-forwarded-proto"), headers.get(b"x-forwarded-host"))


TRAEFIK = Traefik()
