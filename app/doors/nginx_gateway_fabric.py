"""NGINX Gateway Fabric's ``ExternalAuth`` filter (its ``internal/controller/nginx/config/servers.go``): an
internal location per filter does ``auth_request`` to the auth Service + the filter's fixed ``http.path``
(the client's path is *not* appended), with ``proxy_pass_request_headers off`` and exactly ``Host``,
``Path: $request_uri``, ``Method: $request_method`` and ``Authorization: $http_authorization`` set, plus each
``allowedHeaders`` name copied from the client's own request.

So ``Path`` and ``Method`` are its marks (always overwritten). There is no client address it vouches for:
an ``X-Forwarded-For`` listed in ``allowedHeaders`` is the client's own claim. The view has none, so
per-address throttling does not apply behind this door (per-name throttling and the bound on waiting slow
checks still do; docs/security.md)."""

from __future__ import annotations

from typing import Any

from app.doors.base import View, path_of


class NginxGatewayFabric:
    name = "nginx-gateway-fabric"
    mark_names = "Path and Method"
    # The headers whose absence leaves no account of this door (view() is then None).
    marks: tuple[bytes, ...] = (b"method", b"path")
    vouches_for_client = False
    redirects_to_sign_in = False

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        method = headers.get(b"method")
        target = headers.get(b"path")
        if method is None and target is None:
            return None
        path = path_of(target) if target is not None and target.startswith(b"/") else None
        return View(method, path, None)

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        return headers.get(b"path")

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        return False  # nothing only it can send; through ingress-nginx or Traefik a client can write both

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        return []

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        return None  # it never passes a redirect of authgate's


NGINX_GATEWAY_FABRIC = NginxGatewayFabric()
