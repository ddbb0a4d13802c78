"""Decisions through real proxies: nginx as ingress-nginx renders auth-url, and Traefik ForwardAuth.

Every test here runs once per proxy (the ``stack``/``gateway`` fixture is parametrised).
"""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    ALICE_TOKEN,
    READER_TOKEN,
    Gateway,
    basic,
    bearer,
    new_test_id,
)
from tests.e2e.nginx import nginx_version

pytestmark = pytest.mark.e2e


def test_bearer_allowed_upstream_sees_user_and_never_a_forged_one(gateway: Gateway) -> None:
    test_id = new_test_id()
    answer = gateway.request(
        "GET", "/api/flows?limit=1", {**bearer(ALICE_TOKEN), "X-Test-Id": test_id, "X-Auth-Request-User": "mallory"}
    )
    assert answer.status == 200
    [record] = gateway.upstream.records(test_id)
    assert record["raw_path"] == "/api/flows?limit=1"
    assert record["headers"]["x-auth-request-user"] == ["alice"]


def test_anonymous_exception_drops_a_forged_user(gateway: Gateway) -> None:
    test_id = new_test_id()
    answer = gateway.request("GET", "/api/health", {"X-Test-Id": test_id, "X-Auth-Request-User": "admin"})
    assert answer.status == 200
    [record] = gateway.upstream.records(test_id)
    assert "x-auth-request-user" not in record["headers"]


def test_basic_on_the_api_is_allowed(gateway: Gateway) -> None:
    test_id = new_test_id()
    answer = gateway.request("GET", "/api/flows", {**basic(ADMIN_USER, ADMIN_PASSWORD), "X-Test-Id": test_id})
    assert answer.status == 200
    [record] = gateway.upstream.records(test_id)
    assert record["headers"]["x-auth-request-user"] == ["admin"]


def test_no_credential_gets_401_and_the_challenge(gateway: Gateway) -> None:
    test_id = new_test_id()
    answer = gateway.request("GET", "/api/flows", {"X-Test-Id": test_id})
    assert answer.status == 401
    challenges = answer.headers.get_all("WWW-Authenticate") or []
    expected = ['Bearer realm="prefect-api"', 'Basic realm="prefect-api", charset="UTF-8"']
    if gateway.name == "nginx" and nginx_version() < (1, 23):
        # nginx < 1.23 auth_request passes only the first WWW-Authenticate line (policy order: Bearer first)
        expected = expected[:1]
    assert challenges == expected
    assert gateway.upstream.records(test_id) == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(bearer("not-a-valid-token-0123456789abcdef"), id="unknown-token"),
        pytest.param(bearer(ALICE_TOKEN + "x"), id="token-plus-one-char"),
        pytest.param(basic(ADMIN_USER, "wrong-password"), id="wrong-password"),
        pytest.param({"Authorization": "Bearer"}, id="malformed"),
    ],
)
def test_wrong_credential_gets_401(gateway: Gateway, headers: dict[str, str]) -> None:
    test_id = new_test_id()
    answer = gateway.request("GET", "/api/flows", {**headers, "X-Test-Id": test_id})
    assert answer.status == 401
    assert answer.headers.get_all("WWW-Authenticate")
    assert gateway.upstream.records(test_id) == []


@pytest.mark.parametrize(
    ("method", "target"),
    [("GET", "/api/deployments"), ("POST", "/api/flows"), ("GET", "/api/flowsx")],
)
def test_valid_but_forbidden_gets_403(gateway: Gateway, method: str, target: str) -> None:
    test_id = new_test_id()
    # reader may only GET /api/flows...
    assert gateway.request("GET", "/api/flows/abc", {**bearer(READER_TOKEN)}).status == 200
    answer = gateway.request(method, target, {**bearer(READER_TOKEN), "X-Test-Id": test_id})
    assert answer.status == 403
    assert gateway.upstream.records(test_id) == []


def test_anonymous_health_is_exact(gateway: Gateway) -> None:
    assert gateway.request("GET", "/api/health").status == 200
    assert gateway.request("GET", "/api/ready").status == 200


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/api/health/../flows"),
        ("GET", "/api/health%2F..%2Fflows"),
        ("GET", "/api/health/%2e%2e/flows"),
        ("GET", "/api/healthz"),
        ("GET", "/api/health/"),
        ("GET", "/api/health/x"),
        ("POST", "/api/health"),
        ("DELETE", "/api/health"),
    ],
)
def test_near_misses_of_the_anonymous_path_need_credentials(gateway: Gateway, method: str, target: str) -> None:
    test_id = new_test_id()
    answer = gateway.request(method, target, {"X-Test-Id": test_id})
    assert gateway.upstream.records(test_id) == []
    assert answer.status == 401, answer.body


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Forwarded-Uri": "/api/health", "X-Forwarded-Method": "GET"},
        {"X-Original-URL": "http://prefect.test/api/health", "X-Original-Method": "GET"},
        {
            "X-Forwarded-Uri": "/api/health",
            "X-Original-URL": "http://prefect.test/api/health",
            "X-Forwarded-Method": "GET",
            "X-Original-Method": "GET",
            "X-Forwarded-Host": "prefect.test",
        },
    ],
    ids=["x-forwarded-uri", "x-original-url", "all"],
)
def test_forged_original_request_headers_do_not_change_the_decision(gateway: Gateway, forged: dict[str, str]) -> None:
    test_id = new_test_id()
    answer = gateway.request("DELETE", "/api/flows/abc", {**forged, "X-Test-Id": test_id})
    assert answer.status == 401
    # ...and a forbidden use stays forbidden when it pretends to be an allowed one.
    answer = gateway.request(
        "POST",
        "/api/deployments",
        {
            **forged,
            **bearer(READER_TOKEN),
            "X-Test-Id": test_id,
            "X-Forwarded-Uri": "/api/flows",
            "X-Original-URL": "http://prefect.test/api/flows",
        },
    )
    assert answer.status == 403
    assert gateway.upstream.records(test_id) == []


def test_ui_route_challenges_basic_so_browsers_prompt(gateway: Gateway) -> None:
    test_id = new_test_id()
    answer = gateway.request("GET", "/", {"X-Test-Id": test_id, "Accept": "text/html"})
    assert answer.status == 401
    assert answer.headers.get_all("WWW-Authenticate") == ['Basic realm="prefect", charset="UTF-8"']
    # Bearer is not a UI scheme: still the Basic prompt.
    answer = gateway.request("GET", "/flows", {**bearer(ALICE_TOKEN), "X-Test-Id": test_id})
    assert answer.status == 401
    assert gateway.upstream.records(test_id) == []
    answer = gateway.request("GET", "/flows", {**basic(ADMIN_USER, ADMIN_PASSWORD), "X-Test-Id": test_id})
    assert answer.status == 200
    [record] = gateway.upstream.records(test_id)
    assert record["headers"]["x-auth-request-user"] == ["admin"]


def test_websocket_with_bearer_is_accepted_and_echoes(gateway: Gateway) -> None:
    test_id = new_test_id()
    with gateway.websocket(
        "/api/events/in", {**bearer(ALICE_TOKEN), "X-Test-Id": test_id, "X-Auth-Request-User": "mallory"}
    ) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send("headers")
        handshake = json.loads(ws.recv(timeout=10))
    assert handshake["kind"] == "websocket"
    assert handshake["headers"]["x-auth-request-user"] == ["alice"]
    [record] = gateway.upstream.records(test_id)
    assert record["kind"] == "websocket"


@pytest.mark.parametrize("headers", [{}, bearer("not-a-valid-token-0123456789abcdef")], ids=["none", "wrong"])
def test_websocket_without_valid_credential_gets_401(gateway: Gateway, headers: dict[str, str]) -> None:
    test_id = new_test_id()
    with pytest.raises(InvalidStatus) as raised:
        gateway.websocket("/api/events/out", {**headers, "X-Test-Id": test_id}).close()
    assert raised.value.response.status_code == 401
    assert raised.value.response.headers.get_all("WWW-Authenticate")
    assert gateway.upstream.records(test_id) == []
