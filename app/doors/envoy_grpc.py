"""Envoy's gRPC external authorization (``envoy.service.auth.v3.Authorization/Check``), as Contour, Istio
(``envoyExtAuthzGrpc``), Envoy Gateway (``extAuth.grpc``), Cilium and the Gateway API ``ExternalAuth`` filter
with ``protocol: GRPC`` send it: one CheckRequest per client request, on one multiplexed HTTP/2 connection
per proxy.

What Envoy fills in itself, and a client cannot write: ``attributes.request.http.method`` and ``.path`` (the
request line's target, raw, query included), ``attributes.source.address`` (the peer Envoy took the request
from) and ``attributes.context_extensions`` (per route, from the proxy's own configuration: Envoy Gateway
``contextExtensions``, Contour ``authPolicy.context``). Those are this door's account. What the *client*
wrote: every entry of ``http.headers`` — an ``X-Original-URL`` or ``X-Forwarded-Uri`` in there is the
client's claim. The header doors' marks found there are therefore cross-checked like any other untrusted
account (app.doors.reading): a forgery can at most refuse an exception, never allow one.

The answer: an allow is ``OK`` with the identity headers set on the upstream request (overwriting a
client's own, never appended to them: Envoy appends by default) and, on an anonymous allow, a
``headers_to_remove`` for a client's copies (Envoy applies removals after the sets); a denial is a
``denied_response`` with 401 and its ``WWW-Authenticate`` challenges, or 403.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc.status_pb2 import Status

from app.decision import IDENTITY_HEADERS, Decision, response_headers
from app.doors import HEADER_DOORS
from app.doors.base import View, origin_of, path_of
from app.doors.reading import FrontDoors
from app.policy import BY_PATH, Policy

WIRE = "envoy-grpc"  # this wire's key among the snapshot's rendered answers
ROUTE_KEY = "route"  # the context extension naming the route
# google.rpc.Code: what Envoy logs and counts; only OK allows.
_OK, _PERMISSION_DENIED, _UNAUTHENTICATED = 0, 7, 16
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_REMOVE_IDENTITY = [name.decode() for name in IDENTITY_HEADERS]


class EnvoyGrpc:
    name = "envoy-grpc"
    mark_names = "the CheckRequest's attributes.request.http method and path"
    vouches_for_client = True
    redirects_to_sign_in = True

    def view(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> View | None:
        http: tuple[bytes, bytes, bytes] | None = scope.get("envoy_http")
        if http is None:
            return None
        method, target, source = http
        if not method and not target:
            return None  # no HTTP attributes: Envoy's network (TCP) filter, or not Envoy at all
        path = path_of(target) if target.startswith(b"/") else None
        return View(method or None, path, source or None)

    def raw_target(self, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> bytes | None:
        http: tuple[bytes, bytes, bytes] | None = scope.get("envoy_http")
        return http[1] if http is not None else None

    def signed(self, headers: dict[bytes, bytes]) -> bool:
        return True  # fields of the CheckRequest itself: no header can make them up

    def allow_headers(self, identified: bool) -> list[tuple[bytes, bytes]]:
        return []  # its answer is a CheckResponse: see check_response

    def origin(self, headers: dict[bytes, bytes], scope: dict[str, Any]) -> str | None:
        # attributes.request.http.scheme and .host: fields Envoy fills from the request it received.
        origin: tuple[bytes, bytes] | None = scope.get("envoy_origin")
        return origin_of(*origin) if origin is not None else None


ENVOY_GRPC = EnvoyGrpc()
# Envoy's account is the one believed; the header doors' marks in http.headers are the client's own.
GRPC_DOORS = FrontDoors(
    (ENVOY_GRPC,),
    HEADER_DOORS,
    missing="the CheckRequests carry no attributes.request.http method and path, or a target that is no path "
    "(CONNECT, OPTIONS *): Envoy's network-level ext_authz filter, or a client that is not its HTTP filter",
)


def question(
    request: CheckRequest, default_route: str | None
) -> tuple[str, dict[bytes, bytes], tuple[bytes, ...], dict[str, Any]]:
    """(route, headers, authorization values, scope) of one CheckRequest, for app.decider.Decider.decide.

    Headers come from ``http.headers`` (repeats joined with ``,`` by Envoy: a repeated Authorization is then
    one malformed value) and from ``http.header_map`` (``encode_raw_headers``: one entry per header line, so a
    repeat is two values); names are lower-cased, values taken as UTF-8 bytes, as Envoy sent them."""
    attributes = request.attributes
    http = attributes.request.http
    headers: dict[bytes, bytes] = {}
    authorization: list[bytes] = []
    for name, text in http.headers.items():
        key, value = name.lower().encode(), text.encode()
        headers[key] = value
        if key == b"authorization":
            authorization.append(value)
    for entry in http.header_map.headers:
        key, value = entry.key.lower().encode(), entry.raw_value or entry.value.encode()
        headers[key] = value
        if key == b"authorization":
            authorization.append(value)
    # No route context and no default: the route is the one claiming the original path (app.policy.BY_PATH).
    route = attributes.context_extensions.get(ROUTE_KEY) or default_route or BY_PATH
    socket_address = attributes.source.address.socket_address
    source = socket_address.address
    scope: dict[str, Any] = {
        "envoy_http": (http.method.encode(), http.path.encode(), source.encode()),
        "envoy_origin": (http.scheme.encode(), http.host.encode()),
    }
    if source:
        # Envoy's peer stands for the client even when the request line says nothing usable (app.doors.reading).
        scope["client"] = (source, socket_address.port_value)
    return route, headers, tuple(authorization), scope


def _option(name: bytes, value: bytes, action: int) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=name.decode(), value=value.decode()), append_action=action)


def redirect_response(location: str) -> CheckResponse:
    """A denial Envoy answers the browser with as a redirect (302 and Location): the sign-in page."""
    denied = DeniedHttpResponse(
        status=HttpStatus(code=302),  # envoy.type.v3.StatusCode.Found
        headers=[
            _option(b"location", location.encode("latin-1"), _OVERWRITE),
            _option(b"cache-control", b"no-store", _OVERWRITE),
        ],
    )
    return CheckResponse(status=Status(code=_UNAUTHENTICATED), denied_response=denied)


def with_response_cookie(answer: bytes, cookie: str) -> bytes:
    """An allow (serialized, as :func:`check_response_bytes` renders it) plus a Set-Cookie for the browser
    (``ok_response.response_headers_to_add``), on a copy: the answer itself may be one the core keeps for
    repeats."""
    response = CheckResponse.FromString(answer)
    response.ok_response.response_headers_to_add.append(
        _option(b"set-cookie", cookie.encode("latin-1"), HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)
    )
    serialized: bytes = response.SerializeToString()
    return serialized


def check_response(decision: Decision, policy: Policy, route_name: str, now: dt.datetime) -> CheckResponse:
    """The CheckResponse for a decision (app.answers.Render)."""
    headers = response_headers(decision, policy, route_name, now)
    if decision.allowed:
        # Cache-Control is for a proxy's cache of HTTP answers; upstream it would only confuse.
        ok = OkHttpResponse(headers=[_option(n, v, _OVERWRITE) for n, v in headers if n != b"cache-control"])
        if decision.principal is None:
            ok.headers_to_remove.extend(_REMOVE_IDENTITY)
        return CheckResponse(status=Status(code=_OK), ok_response=ok)
    # A local reply has no headers to overwrite: each challenge is added, one header line per scheme.
    denied = DeniedHttpResponse(
        status=HttpStatus(code=decision.status),  # 401 and 403 are envoy.type.v3.StatusCode values
        headers=[_option(n, v, HeaderValueOption.APPEND_IF_EXISTS_OR_ADD) for n, v in headers],
    )
    code = _UNAUTHENTICATED if decision.status == 401 else _PERMISSION_DENIED
    return CheckResponse(status=Status(code=code), denied_response=denied)


def check_response_bytes(decision: Decision, policy: Policy, route_name: str, now: dt.datetime) -> bytes:
    """:func:`check_response` serialized: the wire's render (app.answers.Render), so that an answer kept for
    the snapshot is kept as the very bytes the RPC sends, and a repeat serializes nothing."""
    serialized: bytes = check_response(decision, policy, route_name, now).SerializeToString()
    return serialized
