"""Property-based fuzz of CheckRequest fields against the real ``authgate serve --grpc-port``: whatever a
CheckRequest holds, the RPC answers (never an exception, never INTERNAL or UNKNOWN) with OK and an
ok_response, or a denial with a denied_response of 401 or 403. Bytes that are no CheckRequest at all are
INVALID_ARGUMENT."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import PASSWORD, TOKEN_A, serving, token_line
from tests.support.envoy_grpc import CheckClient

# Any text protobuf can carry (valid Unicode: no lone surrogates).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
authorization = st.one_of(
    text,
    st.sampled_from([f"Bearer {TOKEN_A}", f"bearer  {TOKEN_A}\t", f"Bearer {TOKEN_A},Bearer {TOKEN_A}", "Basic", ""]),
    st.builds(lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(), text, text),
    st.just("Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()),
    st.builds(lambda s, t: s + t, st.sampled_from(["Bearer ", "Basic ", "Digest "]), text),
)
header_names = st.one_of(
    text,
    st.sampled_from(
        [
            "authorization",
            "Authorization",
            "x-original-url",
            "x-original-method",
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-forwarded-for",
            "x-real-ip",
            "path",
            "method",
            "origin",
            "access-control-request-method",
            ":path",
        ]
    ),
)
paths = st.one_of(text, st.sampled_from(["/api/health", "/api/flows?x=1", "/api/%2e%2e/admin", "*", "/a#b", ""]))
methods = st.one_of(text, st.sampled_from(["GET", "POST", "OPTIONS", "CONNECT", ""]))
routes = st.one_of(st.none(), text, st.sampled_from(["api", "ui"]))
addresses = st.one_of(text, st.sampled_from(["198.51.100.7", "::1", "", "10.1.2.3"]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    with serving(tmp_path_factory.mktemp("grpc-fuzz"), token_line("ci-a", TOKEN_A), grpc=True) as proc:
        assert proc.grpc_port is not None
        check_client = CheckClient(proc.grpc_port)
        yield check_client
        check_client.close()
        assert "Traceback" not in proc.output()


def assert_an_answer(client: CheckClient, request: CheckRequest) -> None:
    response = client.stub.Check(request, timeout=10)  # an RPC error (INTERNAL, UNKNOWN...) raises here
    if response.status.code == 0:
        assert response.WhichOneof("http_response") == "ok_response"
    else:
        assert response.status.code in (7, 16)
        assert response.denied_response.status.code == (401 if response.status.code == 16 else 403)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=methods,
    path=paths,
    headers=st.dictionaries(header_names, st.one_of(text, authorization), max_size=6),
    auth=st.lists(authorization, max_size=3),
    raw=st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=4),
    route=routes,
    source=addresses,
    port=st.integers(0, 65535),
)
def test_any_check_request_gets_an_answer(client, method, path, headers, auth, raw, route, source, port):
    request = CheckRequest()
    attributes = request.attributes
    http = attributes.request.http
    http.method, http.path = method, path
    http.headers.update(headers)
    if auth:
        http.headers["authorization"] = auth[0]
    for value in auth[1:]:
        http.header_map.headers.add(key="authorization", value=value)
    for name, value in raw:
        http.header_map.headers.add(key=name, raw_value=value)
    attributes.source.address.socket_address.address = source
    attributes.source.address.socket_address.port_value = port
    if route is not None:
        attributes.context_extensions["route"] = route
    assert_an_answer(client, request)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_any_bytes_are_a_check_request_or_invalid_argument(client, data):
    try:
        client.raw(data, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc


def test_an_empty_check_request_is_refused_not_an_error(client):
    response = client.stub.Check(CheckRequest(), timeout=10)
    assert response.status.code == 7 and response.denied_response.status.code == 403  # no route
