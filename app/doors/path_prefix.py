"""Path-prefix external auth: Envoy's ext_authz over HTTP, Envoy Gateway ``extAuth.http``, the Gateway API
``ExternalAuth`` filter as Envoy-based controllers implement it (Cilium), and Istio's ``envoyExtAuthzHttp``.
The auth request *is* the original request, re-sent with its method to ``path_prefix + original path``;
here that is ``/auth/<route>`` + the original path. The client address is the last ``X-Forwarded-For``
entry, which Envoy appends itself (list it in ``headersToExtAuth``/``includeRequestHeadersInCheck``).

Envoy copies the auth answer's headers upstream only when the answer has them, so on an allow without
identity a client's own ``X-Auth-Request-User`` would reach the application: such allows ask Envoy to remove
those headers (``x-envoy-auth-headers-to-remove``)."""

from __future__ import annotations

from typing import Any

from app.decision import IDENTITY_HEADERS
from app.doors.base import View, last_hop

_REMOVE_IDENTITY = [(b"x-envoy-auth-headers-to-remove", b", ".join(IDENTITY_HEADERS))]


class PathPrefix:
    name = "path-prefix"
    mark_names = "the original path after /auth/<route>"
    vouches_for_client = True
    redirects_to_sign_in = True

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        if rest is None:
            return None
        return View(scope["method"].encode(), b"/" + rest, last_hop(headers.get(b"x-forwarded-for")))

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        if rest is None:
            return None
        target = b"/" + rest
        # The original query: Envoy re-sends it as is; the server hands it apart from the path (some clients'
        # ASGI transports leave it in raw_path too).
        query: bytes = scope.get("query_string") or b""
        return target + b"?" + query if query and b"?" not in target else target

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        return True  # the request line itself: no client header can make one up

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        return [] if identified else _REMOVE_IDENTITY

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        # Envoy sends the original Host, but no scheme of its own (X-Forwarded-Proto reaches authgate only if
        # listed, and a client's survives unless use_remote_address): relative, which Envoy passes unchanged.
        return None


PATH_PREFIX = PathPrefix()
