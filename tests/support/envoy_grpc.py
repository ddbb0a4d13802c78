"""A real grpcio client of ``envoy.service.auth.v3.Authorization/Check``, and CheckRequests shaped the way
Envoy's HTTP ext_authz filter builds them (its ``check_request_utils.cc``): the request line in
``attributes.request.http`` (method, raw path with query, host, scheme, protocol), every request header in
``http.headers`` with lower-case names (pseudo-headers included, repeats joined with ','), the downstream
peer in ``attributes.source``, the listener in ``attributes.destination``, and the route's
``context_extensions``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub

CLIENT = "198.51.100.7"
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"


def envoy_check(
    method: str = "GET",
    path: str = "/api/flows",
    headers: Mapping[str, str] | None = None,
    *,
    route: str | None = "api",
    source: str = CLIENT,
    raw_headers: list[tuple[str, bytes]] | None = None,
) -> CheckRequest:
    """The CheckRequest for a client's ``method path`` with ``headers`` from ``source`` on ``route``;
    ``raw_headers``: sent in ``http.header_map`` instead (Envoy's ``encode_raw_headers: true``)."""
    request = CheckRequest()
    attributes = request.attributes
    http = attributes.request.http
    http.id, http.method, http.path = "1234567890", method, path
    http.host, http.scheme, http.protocol = "prefect.example.com", "https", "HTTP/1.1"
    pseudo = {":method": method, ":path": path, ":authority": "prefect.example.com", ":scheme": "https"}
    if raw_headers is None:
        http.headers.update(
            {**pseudo, "user-agent": "curl/8.5.0", **{k.lower(): v for k, v in (headers or {}).items()}}
        )
    else:
        for name, value in [*((k, v.encode()) for k, v in pseudo.items()), *raw_headers]:
            http.header_map.headers.add(key=name, raw_value=value)
    if source:
        attributes.source.address.socket_address.address = source
        attributes.source.address.socket_address.port_value = 40123
    attributes.destination.address.socket_address.address = "10.0.0.5"
    attributes.destination.address.socket_address.port_value = 8443
    if route is not None:
        attributes.context_extensions["route"] = route
    return request


class Answer(NamedTuple):
    """One Check: the CheckResponse reduced to what Envoy acts on."""

    code: int  # CheckResponse.status.code (google.rpc.Code): 0 allows
    http_status: int  # 200 for OK, else denied_response.status.code
    upstream: dict[str, str]  # ok_response.headers (set on the upstream request)
    removed: tuple[str, ...]  # ok_response.headers_to_remove
    challenges: tuple[str, ...]  # WWW-Authenticate values of the denial

    @classmethod
    def of(cls, response: CheckResponse) -> Answer:
        if response.status.code == 0:
            ok = response.ok_response
            upstream = {h.header.key: h.header.value for h in ok.headers}
            return cls(0, 200, upstream, tuple(ok.headers_to_remove), ())
        denied = response.denied_response
        challenges = tuple(h.header.value for h in denied.headers if h.header.key == "www-authenticate")
        return cls(response.status.code, denied.status.code, {}, (), challenges)


class CheckClient:
    """One HTTP/2 channel to authgate's gRPC port, as one Envoy keeps per cluster."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = AuthorizationStub(self.channel)
        self.health_stub = HealthStub(self.channel)
        self.raw = self.channel.unary_unary(CHECK_METHOD)  # bytes in, bytes out

    def check(self, request: CheckRequest, timeout: float = 10.0) -> Answer:
        return Answer.of(self.stub.Check(request, timeout=timeout))

    def rpc_error(self, request: CheckRequest) -> grpc.StatusCode | None:
        """The RPC's own status when it failed (UNAVAILABLE before any load), None when it answered."""
        try:
            self.stub.Check(request, timeout=10.0)
        except grpc.RpcError as exc:
            return exc.code()
        return None

    def health(self, service: str = "") -> int | grpc.StatusCode:
        try:
            return self.health_stub.Check(HealthCheckRequest(service=service), timeout=5.0).status
        except grpc.RpcError as exc:
            return exc.code()

    def close(self) -> None:
        self.channel.close()


SERVING, NOT_SERVING = HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING
