"""ingress-nginx ``auth-url`` (and anything rendering its template): a ``GET`` to the fixed auth-url with
``X-Original-URL: $scheme://$http_host$request_uri`` and ``X-Original-Method``, both always overwritten;
``X-Real-IP`` is the client address it saw. It clears ``X-Forwarded-Proto`` on the auth request, which no
other door does, and passes every other client header through (a client's ``X-Forwarded-Uri`` too)."""

from __future__ import annotations

from typing import Any

from app.doors.base import View, path_of


class IngressNginx:
    name = "ingress-nginx"
    mark_names = "X-Original-URL and X-Original-Method"
    # The headers whose absence leaves no account of this door (view() is then None).
    marks: tuple[bytes, ...] = (b"x-original-method", b"x-original-url")
    vouches_for_client = True
    redirects_to_sign_in = False

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        method = headers.get(b"x-original-method")
        url = headers.get(b"x-original-url")
        if method is None and url is None:
            return None
        path: bytes | None = None
        if url is not None:
            scheme_end = url.find(b"://")
            if scheme_end >= 0:
                slash = url.find(b"/", scheme_end + 3)
                path = path_of(url[slash:]) if slash >= 0 else b"/"
            elif url.startswith(b"/"):
                path = path_of(url)
        return View(method, path, headers.get(b"x-real-ip"))

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        return headers.get(b"x-original-url")

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        return b"x-forwarded-proto" not in headers

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        return []

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        return None  # it never passes a redirect of authgate's (auth-signin redirects the 401 itself)


INGRESS_NGINX = IngressNginx()
