"""Envoy's gRPC ext_authz: the CheckRequest's own fields, cross-checked against the client's headers, and
the CheckResponse for each kind of decision (app/doors/envoy_grpc.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from app.decision import Decision
from app.doors.envoy_grpc import GRPC_DOORS, check_response, question
from app.policy import BY_PATH, parse_policy
from tests.unit.doors.wire import FORGED_NGINX, FORGED_TRAEFIK, NGF

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
POLICY = parse_policy({"routes": {"api": {"schemes": ["bearer", "basic"], "realm": "prefect-api"}}}, "test")


def check_request(
    method: str = "POST",
    path: str = "/api/flows/filter?limit=1",
    headers: dict[str, str] | None = None,
    source: str = "198.51.100.7",
    route: str | None = "api",
) -> CheckRequest:
    """What Envoy sends for a client's `POST /api/flows/filter?limit=1` from 198.51.100.7."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = (
        method,
        path,
        "prefect.example.com",
        "https",
        "HTTP/2",
    )
    http.headers.update({":method": method, ":path": path, ":authority": "prefect.example.com", **(headers or {})})
    if source:
        request.attributes.source.address.socket_address.address = source
        request.attributes.source.address.socket_address.port_value = 40123
    request.attributes.destination.address.socket_address.address = "10.0.0.5"
    if route is not None:
        request.attributes.context_extensions["route"] = route
    return request


def read(request: CheckRequest, default_route: str | None = None):
    route, headers, authorization, scope = question(request, default_route)
    return route, authorization, GRPC_DOORS.read(headers, None, scope)


def test_the_original_request_is_the_check_request_s_own_and_the_client_is_the_source_address():
    route, authorization, reading = read(check_request(headers={"x-forwarded-for": "192.0.2.66"}))
    assert route == "api" and authorization == ()
    # The query is not part of the path; the address is Envoy's peer, never the client's X-Forwarded-For.
    assert reading == ("POST", "/api/flows/filter", "198.51.100.7", None, "envoy-grpc", ())


def test_the_route_comes_from_context_extensions_else_the_default_else_the_path():
    assert read(check_request(route="ui"), default_route="api")[0] == "ui"
    assert read(check_request(route=None), default_route="api")[0] == "api"
    # Neither: the route claiming the original path decides (app.policy.BY_PATH; none claims it: 403).
    assert read(check_request(route=None))[0] == BY_PATH
    assert read(check_request(route=""), default_route="api")[0] == "api"


@pytest.mark.parametrize(
    "forged",
    [FORGED_NGINX, FORGED_TRAEFIK, {b"path": b"/api/health", b"method": b"GET"}],
    ids=["nginx", "traefik", "ngf"],
)
def test_a_client_s_forged_front_door_headers_can_only_refuse_never_become_the_reading(forged):
    headers = {name.decode(): value.decode() for name, value in forged.items()}
    _, _, reading = read(check_request(headers=headers))
    assert reading.problem == "conflict" and (reading.method, reading.path) == (None, None)
    assert reading.client == "198.51.100.7"


def test_truthful_copies_of_other_doors_headers_change_nothing():
    truthful = {"x-original-url": "https://prefect.example.com/api/flows/filter", "x-original-method": "POST"}
    assert read(check_request(headers=truthful))[2][:4] == ("POST", "/api/flows/filter", "198.51.100.7", None)
    ngf = {name.decode(): value.decode() for name, value in NGF.items()}
    assert read(check_request(headers=ngf))[2].problem is None


def test_a_check_request_without_http_attributes_is_missing_and_says_why():
    request = CheckRequest()
    request.attributes.source.address.socket_address.address = "198.51.100.7"
    _, _, reading = read(request)
    assert reading.problem == "missing" and (reading.method, reading.path) == (None, None)
    assert "network-level ext_authz filter" in GRPC_DOORS.missing_fix(reading.seen)


def test_without_a_source_address_there_is_no_client_not_envoy_itself():
    assert read(check_request(source=""))[2].client is None


def test_a_target_that_is_no_path_is_an_incomplete_account():
    # CONNECT's authority or `OPTIONS *`: nothing an exception or a path-limited token could match.
    for target in ("*", "prefect.example.com:443", ""):
        reading = read(check_request(method="OPTIONS", path=target))[2]
        assert (reading.method, reading.path, reading.problem) == (None, None, "missing")
        assert reading.client == "198.51.100.7"  # still Envoy's peer: per-address throttling keeps counting


def test_authorization_repeats_are_seen_as_envoy_sends_them():
    # http.headers: Envoy joins a repeated header with ',' into one value (which parse_authorization refuses).
    joined = check_request(headers={"authorization": "Bearer a,Bearer b"})
    assert read(joined)[1] == (b"Bearer a,Bearer b",)
    # http.header_map (encode_raw_headers): one entry per header line; raw_value preferred when set.
    raw = check_request()
    for value in (b"Bearer a", b"Bearer b"):
        raw.attributes.request.http.header_map.headers.add(key="authorization", raw_value=value)
    assert read(raw)[1] == (b"Bearer a", b"Bearer b")
    # A name in another case (not Envoy, which lower-cases) is still the same header.
    mixed = check_request(headers={"Authorization": "Bearer a", "authorization": "Bearer b"})
    assert sorted(read(mixed)[1]) == [b"Bearer a", b"Bearer b"]


def test_an_identified_allow_overwrites_identity_headers_and_removes_none():
    answer = check_response(Decision(200, "allowed", "bearer", "ci"), POLICY, "api", NOW)
    assert answer.status.code == 0 and answer.WhichOneof("http_response") == "ok_response"
    ok = answer.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [
        ("x-auth-request-user", "ci"),
        ("x-auth-request-scheme", "bearer"),
    ]
    # Envoy appends when neither append nor append_action says otherwise: a client's own header would stay.
    assert all(
        h.append_action == HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD and not h.HasField("append") for h in ok.headers
    )
    assert list(ok.headers_to_remove) == []  # removals run after the sets: they would drop ours


def test_an_anonymous_allow_removes_a_client_s_identity_headers():
    ok = check_response(Decision(200, "anonymous"), POLICY, "api", NOW).ok_response
    assert list(ok.headers) == [] and list(ok.headers_to_remove) == ["x-auth-request-user", "x-auth-request-scheme"]


def test_a_challenge_is_401_with_one_www_authenticate_per_scheme_and_a_refusal_403():
    answer = check_response(Decision(401, "missing"), POLICY, "api", NOW)
    assert answer.status.code == 16 and answer.denied_response.status.code == 401
    challenges = [h.header.value for h in answer.denied_response.headers if h.header.key == "www-authenticate"]
    assert challenges == ['Bearer realm="prefect-api"', 'Basic realm="prefect-api", charset="UTF-8"']
    assert all(h.append_action == HeaderValueOption.APPEND_IF_EXISTS_OR_ADD for h in answer.denied_response.headers)
    forbidden = check_response(Decision(403, "route_forbidden", "bearer", "ci"), POLICY, "api", NOW)
    assert forbidden.status.code == 7 and forbidden.denied_response.status.code == 403
    assert [h.header.key for h in forbidden.denied_response.headers] == ["cache-control"]
