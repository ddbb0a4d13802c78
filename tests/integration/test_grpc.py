"""``authgate serve --grpc-port`` as a real process (on each HTTP server, grpc.aio on the same uvloop loop) and a
real grpcio client over a real port: the whole decision table as Envoy's gRPC ext_authz asks it, the answers
Envoy acts on, and what HTTP and gRPC share (one snapshot, policy, throttle, metrics)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import PASSWORD, TOKEN_A, basic, nginx_headers, serving, token_line
from tests.support.envoy_grpc import CLIENT, NOT_SERVING, SERVING, Answer, CheckClient, envoy_check
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SERVERS, AuthgateProcess, wait_for

READONLY = "readonly-token-0123456789abcdef"
NOBODY = "unknown-token-0123456789abcdef"
BEARER_A = f"Bearer {TOKEN_A}"
BOTH = ('Bearer realm="prefect-api"', 'Basic realm="prefect-api", charset="UTF-8"')
IDENTITY = ("x-auth-request-user", "x-auth-request-scheme")


@pytest.fixture(scope="module", params=SERVERS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AuthgateProcess, CheckClient]]:
    tokens = token_line("ci-a", TOKEN_A) + token_line("ro", READONLY, "routes=api methods=GET paths=/api/flows")
    with serving(tmp_path_factory.mktemp("grpc"), tokens, grpc=True, server=request.param) as proc:
        assert proc.grpc_port is not None
        client = CheckClient(proc.grpc_port)
        yield proc, client
        client.close()


def allowed(user: str | None, scheme: str | None = None) -> Answer:
    if user is None:  # an anonymous allow: a client's own identity headers are removed, none are set
        return Answer(0, 200, {}, IDENTITY, ())
    return Answer(0, 200, {"x-auth-request-user": user, "x-auth-request-scheme": scheme or "bearer"}, (), ())


def challenged(*challenges: str) -> Answer:
    return Answer(16, 401, {}, (), challenges or BOTH)


FORBIDDEN = Answer(7, 403, {}, (), ())
FORGED_HEALTH = {"x-original-url": "https://prefect.example.com/api/health", "x-original-method": "GET"}

# (what, CheckRequest, answer): every row of the decision table, as Envoy's gRPC filter asks it.
TABLE = [
    ("bearer", envoy_check(headers={"authorization": BEARER_A}), allowed("ci-a")),
    ("bearer-lowercase-scheme", envoy_check(headers={"authorization": f"bearer {TOKEN_A}"}), allowed("ci-a")),
    ("no-credential", envoy_check(), challenged()),
    ("anonymous-exception", envoy_check("GET", "/api/health"), allowed(None)),
    ("anonymous-exception-with-query", envoy_check("GET", "/api/health?verbose=1"), allowed(None)),
    ("anonymous-exception-other-method", envoy_check("POST", "/api/health"), challenged()),
    ("basic-bcrypt", envoy_check(headers={"authorization": basic("alice", PASSWORD)}), allowed("alice", "basic")),
    (
        "basic-on-basic-route",
        envoy_check("GET", "/", {"authorization": basic("alice", PASSWORD)}, route="ui"),
        allowed("alice", "basic"),
    ),
    ("basic-wrong-password", envoy_check(headers={"authorization": basic("alice", "nope")}), challenged()),
    (
        "bearer-unknown",
        envoy_check(headers={"authorization": f"Bearer {NOBODY}"}),
        challenged('Bearer realm="prefect-api", error="invalid_token"', BOTH[1]),
    ),
    (
        "bearer-on-basic-route",
        envoy_check(headers={"authorization": BEARER_A}, route="ui"),
        challenged('Basic realm="prefect", charset="UTF-8"'),
    ),
    ("unknown-route", envoy_check(headers={"authorization": BEARER_A}, route="nope"), FORBIDDEN),
    ("no-route-no-default", envoy_check(headers={"authorization": BEARER_A}, route=None), FORBIDDEN),
    ("repeat-joined-by-envoy", envoy_check(headers={"authorization": f"{BEARER_A},{BEARER_A}"}), challenged()),
    ("repeat-in-header-map", envoy_check(raw_headers=[("authorization", BEARER_A.encode())] * 2), challenged()),
    ("raw-header-map", envoy_check(raw_headers=[("authorization", BEARER_A.encode())]), allowed("ci-a")),
    ("malformed-basic", envoy_check(headers={"authorization": "Basic !!!"}), challenged()),
    ("unsupported-scheme", envoy_check(headers={"authorization": "Digest username=x"}), challenged()),
    ("bearer-without-token", envoy_check(headers={"authorization": "Bearer"}), challenged()),
    ("oversize", envoy_check(headers={"authorization": "Bearer " + "a" * 9000}), challenged()),
    ("forged-x-original-url", envoy_check("POST", "/api/admin", FORGED_HEALTH), challenged()),
    (
        "forged-x-forwarded-uri",
        envoy_check("POST", "/api/admin", {"x-forwarded-uri": "/api/health", "x-forwarded-method": "GET"}),
        challenged(),
    ),
    (
        "limited-token-in-limits",
        envoy_check("GET", "/api/flows?limit=5", {"authorization": f"Bearer {READONLY}"}),
        allowed("ro"),
    ),
    (
        "limited-token-other-method",
        envoy_check("POST", "/api/flows", {"authorization": f"Bearer {READONLY}"}),
        FORBIDDEN,
    ),
    ("limited-token-other-path", envoy_check("GET", "/api/admin", {"authorization": f"Bearer {READONLY}"}), FORBIDDEN),
    (
        "limited-token-dot-segments",
        envoy_check("GET", "/api/flows/../admin", {"authorization": f"Bearer {READONLY}"}),
        FORBIDDEN,
    ),
    # A client's own X-Original-* that disagrees with Envoy's request line: never believed, and it makes the
    # original request unverified, so a method/path-limited token is refused rather than trusted.
    (
        "limited-token-forged-headers",
        envoy_check("GET", "/api/flows", {"authorization": f"Bearer {READONLY}", **FORGED_HEALTH}),
        FORBIDDEN,
    ),
]


@pytest.mark.parametrize(("request_", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_the_decision_table_over_a_real_grpc_connection(served, request_, expected):
    _, client = served
    assert client.check(request_) == expected
    assert client.check(request_) == expected  # again: allows now come from the allow memo


def test_bytes_that_are_no_check_request_are_invalid_argument_not_internal(served):
    import grpc

    _, client = served
    with pytest.raises(grpc.RpcError) as err:
        client.raw(b"\xff\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection(served):
    import grpc

    _, client = served
    assert client.health("") == SERVING
    assert client.health("envoy.service.auth.v3.Authorization") == SERVING
    assert client.health("liveness") == SERVING
    assert client.health("something.Else") == grpc.StatusCode.NOT_FOUND
    reflection = client.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with pytest.raises(grpc.RpcError) as err:
        list(reflection(iter([b""]), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_decisions_are_counted_and_logged_with_http_s(served):
    proc, client = served
    client.check(envoy_check(headers={"authorization": BEARER_A}))
    client.check(envoy_check(headers={"authorization": "Basic !!!"}))
    client.check(envoy_check(headers={"authorization": BEARER_A}, route="nope"))
    client.check(envoy_check("POST", "/api/admin", FORGED_HEALTH))
    metrics = httpx.get(proc.base_url + "/metrics", timeout=5).text
    assert 'authgate_decisions_total{reason="allowed",result="allow",route="api",scheme="bearer"}' in metrics
    assert 'authgate_decisions_total{reason="malformed",result="deny",route="api",scheme="other"}' in metrics
    assert 'authgate_decisions_total{reason="unknown_route",result="deny",route="_unknown",scheme="none"}' in metrics
    # The forged X-Original-* rows are a front-door conflict, counted like HTTP's.
    assert 'authgate_original_request_problems_total{problem="conflict",route="api"}' in metrics
    logs = proc.output()
    assert f'"client": "{CLIENT}"' in logs and '"reason": "malformed"' in logs
    for secret_text in (TOKEN_A, READONLY, PASSWORD, basic("alice", PASSWORD).split()[1]):
        assert secret_text not in logs and secret_text not in metrics


def test_one_throttle_for_both_wires_keyed_by_envoy_s_source_address(tmp_path):
    """Failures over gRPC from one source address ban that address on HTTP too; a client's X-Forwarded-For
    in the CheckRequest's headers is not the address counted."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("routes:\n  api: {}\nthrottle: {max_failures_per_address: 3, ban_seconds: 300}\n")
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": token_line("ci-a", TOKEN_A)})
    proc = AuthgateProcess(secret.path, tmp_path / "authgate.log", config=policy, grpc=True)
    try:
        proc.wait_ready()
        assert proc.grpc_port is not None
        client = CheckClient(proc.grpc_port)
        guess = {"authorization": f"Bearer {NOBODY}"}
        for n in range(3):  # each from a different claimed X-Forwarded-For, all from one source address
            answer = client.check(envoy_check(headers={**guess, "x-forwarded-for": f"192.0.2.{n}"}, source="10.1.2.3"))
            assert answer.http_status == 401
        assert client.check(envoy_check(headers=guess, source="10.1.2.3")) == FORBIDDEN  # banned: throttled
        assert client.check(envoy_check(headers=guess, source="10.9.9.9")).http_status == 401  # another address
        # The same address through the HTTP wire (ingress-nginx's X-Real-IP) is banned as well ...
        http_guess = httpx.get(
            proc.base_url + "/auth/api", headers={**nginx_headers(), "Authorization": f"Bearer {NOBODY}"}, timeout=5
        )
        assert nginx_headers()["X-Real-IP"] == "10.1.2.3" and http_guess.status_code == 403
        # ... while a valid token from it still passes on both wires.
        assert client.check(envoy_check(headers={"authorization": BEARER_A}, source="10.1.2.3")) == allowed("ci-a")
        client.close()
    finally:
        proc.stop()


def test_default_route_and_fail_closed_until_credentials_load(tmp_path):
    """Nothing loaded: Check fails with UNAVAILABLE (Envoy then denies, failure_mode_allow being false by
    default) and the health service says NOT_SERVING; once the Secret appears, both turn."""
    import grpc

    secret_path = tmp_path / "later"
    proc = AuthgateProcess(
        secret_path, tmp_path / "authgate.log", grpc=True, extra_args=["--grpc-default-route", "default"]
    )
    try:
        assert proc.grpc_port is not None
        client = CheckClient(proc.grpc_port)
        wait_for(lambda: client.health("liveness") == SERVING, timeout=20, what="the gRPC port")
        assert client.health("") == NOT_SERVING
        request = envoy_check(headers={"authorization": BEARER_A}, route=None)
        assert client.rpc_error(request) == grpc.StatusCode.UNAVAILABLE
        KubeletSecretDir(secret_path).write({"tokens": token_line("ci-a", TOKEN_A)})
        wait_for(lambda: client.health("") == SERVING, timeout=5, what="SERVING after the load")
        assert client.check(request) == Answer(
            0, 200, {"x-auth-request-user": "ci-a", "x-auth-request-scheme": "bearer"}, (), ()
        )
        assert client.check(envoy_check(headers={"authorization": BEARER_A}, route="nope")) == FORBIDDEN
        client.close()
    finally:
        proc.stop()


def test_a_grpc_port_in_use_fails_the_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        secret = KubeletSecretDir(tmp_path / "secret")
        secret.write({"tokens": token_line("ci-a", TOKEN_A)})
        proc = AuthgateProcess(secret.path, tmp_path / "authgate.log", extra_args=["--grpc-port", str(port)])
        try:
            assert proc.proc.wait(timeout=30) != 0
        finally:
            proc.stop()
    assert f"--grpc-port: cannot listen on 127.0.0.1:{port}" in proc.output()
