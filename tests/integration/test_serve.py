"""``authgate serve`` as a real process, on each server: decisions, rotation as kubelet rotates, health, logs,
metrics, a graceful stop."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.integration.conftest import (
    BCRYPT_ALICE,
    PASSWORD,
    TOKEN_A,
    TOKEN_B,
    basic,
    nginx_headers,
    token_line,
)
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import SHUTDOWN_COMPLETE, AuthgateProcess, wait_for


def status(proc: AuthgateProcess, token: str | None = None, route: str = "api", **headers: str) -> int:
    h = nginx_headers(**headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{proc.base_url}/auth/{route}", headers=h, timeout=5).status_code


def metric(proc: AuthgateProcess, name: str) -> float:
    text = httpx.get(proc.base_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_decisions_through_the_real_server(authgate):
    ok = httpx.get(authgate.base_url + "/auth/api", headers={**nginx_headers(), "Authorization": f"Bearer {TOKEN_A}"})
    assert ok.status_code == 200
    assert ok.headers["x-auth-request-user"] == "ci-a"
    assert ok.content == b""
    denied = httpx.get(authgate.base_url + "/auth/api", headers=nginx_headers())
    assert denied.status_code == 401
    assert denied.headers.get_list("www-authenticate") == [
        'Bearer realm="prefect-api"',
        'Basic realm="prefect-api", charset="UTF-8"',
    ]
    ui = httpx.get(authgate.base_url + "/auth/ui", headers=nginx_headers("/"))
    assert ui.status_code == 401 and ui.headers["www-authenticate"] == 'Basic realm="prefect", charset="UTF-8"'
    for _ in range(2):  # the second one is answered from the verified cache
        alice = httpx.get(
            authgate.base_url + "/auth/ui", headers={**nginx_headers("/"), "Authorization": basic("alice", PASSWORD)}
        )
        assert alice.status_code == 200 and alice.headers["x-auth-request-user"] == "alice"
    assert status(authgate, path="/api/health") == 200
    assert status(authgate, path="/api/health", method="POST") == 401
    # Any method reaches the decision: ingress-nginx may be configured with auth-method.
    assert (
        httpx.post(
            authgate.base_url + "/auth/api", headers={**nginx_headers(), "Authorization": f"Bearer {TOKEN_A}"}
        ).status_code
        == 200
    )
    assert httpx.get(authgate.base_url + "/auth/nope", headers=nginx_headers()).status_code == 403


def test_client_forged_traefik_headers_do_not_change_an_ingress_nginx_decision(authgate):
    # In ingress-nginx mode only X-Original-URL is trusted; X-Forwarded-Uri is whatever the client sent.
    forged = nginx_headers("/api/flows", **{"X-Forwarded-Uri": "/api/health", "X-Forwarded-Method": "GET"})
    assert httpx.get(authgate.base_url + "/auth/api", headers=forged).status_code == 401


def test_rotation_as_kubelet_does_it(authgate, secret: KubeletSecretDir):
    assert status(authgate, TOKEN_A) == 200 and status(authgate, TOKEN_B) == 401
    secret.write(
        {"tokens": token_line("ci-a", TOKEN_A) + token_line("ci-b", TOKEN_B), "htpasswd": f"alice:{BCRYPT_ALICE}\n"}
    )
    wait_for(lambda: status(authgate, TOKEN_B) == 200, timeout=2.0, what="token B accepted within 2 s")
    assert status(authgate, TOKEN_A) == 200

    errors_before = metric(authgate, 'authgate_reloads_total{result="error"}')
    secret.write({"tokens": "ci-c sha256:nothex\n" + token_line("ci-b", TOKEN_B)})
    wait_for(
        lambda: metric(authgate, 'authgate_reloads_total{result="error"}') > errors_before,
        timeout=2.0,
        what="the malformed update to be counted",
    )
    assert status(authgate, TOKEN_A) == 200, "a malformed update must keep the last good credentials"
    assert status(authgate, TOKEN_B) == 200
    log_lines = [json.loads(line) for line in authgate.output().splitlines() if line.startswith("{")]
    failure = next(e for e in log_lines if e.get("event") == "reload" and e.get("result") == "error")
    assert failure["line"] == 1 and failure["file"].endswith("/tokens") and "64 hex digits" in failure["reason"]

    secret.write({"tokens": token_line("ci-b", TOKEN_B)})
    wait_for(lambda: status(authgate, TOKEN_A) == 401, timeout=2.0, what="token A refused within 2 s of removal")
    assert status(authgate, TOKEN_B) == 200
    assert metric(authgate, 'authgate_credentials_loaded{kind="token"}') == 1.0
    assert metric(authgate, 'authgate_credentials_loaded{kind="user"}') == 0.0


def test_logs_and_metrics_never_hold_a_credential(authgate):
    for auth in (
        f"Bearer {TOKEN_A}",
        f"Bearer {TOKEN_A}x",
        basic("alice", PASSWORD),
        basic("alice", "nope"),
        "Basic !!!",
        "Bearer",
    ):
        httpx.get(authgate.base_url + "/auth/api", headers={**nginx_headers(), "Authorization": auth})
    metrics_text = httpx.get(authgate.base_url + "/metrics").text
    assert 'authgate_decisions_total{reason="allowed",result="allow",route="api",scheme="bearer"}' in metrics_text
    assert "authgate_decision_duration_seconds_count" in metrics_text
    logs = authgate.output()
    assert '"reason": "bad_password"' in logs
    for secret_text in (TOKEN_A, PASSWORD, basic("alice", PASSWORD).split()[1], BCRYPT_ALICE, BCRYPT_ALICE[7:]):
        assert secret_text not in logs
        assert secret_text not in metrics_text
    assert '"status": 200' not in logs  # allows are logged only at debug


def test_not_ready_until_credentials_appear_then_ready(tmp_path, policy_file, server_kind):
    secret_path = tmp_path / "later"
    proc = AuthgateProcess(secret_path, tmp_path / "late.log", config=policy_file, server=server_kind)
    try:
        wait_for(
            lambda: httpx.get(proc.base_url + "/healthz", timeout=1).status_code == 200, timeout=20, what="healthz"
        )
        assert httpx.get(proc.base_url + "/readyz").status_code == 503
        assert status(proc, TOKEN_A) == 503  # fail closed: nothing loaded, nothing allowed
        KubeletSecretDir(secret_path).write({"tokens": token_line("ci-a", TOKEN_A)})
        proc.wait_ready(timeout=5)
        assert status(proc, TOKEN_A) == 200
    finally:
        proc.stop()


@pytest.mark.parametrize("proxy", ["traefik", "envoy"])
def test_other_proxies_original_request(tmp_path, secret, policy_file, proxy, server_kind):
    proc = AuthgateProcess(secret.path, tmp_path / f"{proxy}.log", config=policy_file, proxy=proxy, server=server_kind)
    try:
        proc.wait_ready()
        if proxy == "traefik":

            def ask(path: str, method: str = "GET") -> int:
                return httpx.get(
                    proc.base_url + "/auth/api",
                    headers={
                        "X-Forwarded-Uri": path,
                        "X-Forwarded-Method": method,
                        "X-Forwarded-For": "1.2.3.4",
                        # In Traefik mode X-Original-URL is the client's own and must be ignored.
                        "X-Original-URL": "http://h/api/health",
                    },
                ).status_code
        else:

            def ask(path: str, method: str = "GET") -> int:
                return httpx.request(method, proc.base_url + "/auth/api" + path).status_code

        assert ask("/api/health") == 200
        assert ask("/api/health?x=1") == 200
        assert ask("/api/health", "POST") == 401
        assert ask("/api/flows") == 401
        assert ask("/api/health/../flows") == 401
    finally:
        proc.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sigterm_lets_the_request_in_flight_finish_then_stops_cleanly(tmp_path, policy_file, server_kind):
    # A cost-14 bcrypt check takes about a second of CPU: SIGTERM arrives while it runs.
    password = "slow-password"
    slow = KubeletSecretDir(tmp_path / "slow")
    slow.write({"htpasswd": f"slow:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(14)).decode()}\n"})
    proc = AuthgateProcess(slow.path, tmp_path / "term.log", config=policy_file, server=server_kind)
    proc.wait_ready()
    answers: list[int] = []

    def ask() -> None:
        headers = {**nginx_headers(), "Authorization": basic("slow", password)}
        answers.append(httpx.get(proc.base_url + "/auth/api", headers=headers, timeout=30).status_code)

    asking = threading.Thread(target=ask)
    before = cpu_seconds(proc.proc.pid)
    asking.start()
    wait_for(lambda: cpu_seconds(proc.proc.pid) - before > 0.2, timeout=10, what="the bcrypt check under way")
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    asking.join(timeout=10)
    assert answers == [200], "the request in flight was not answered"
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says what ended it.
    assert proc.proc.wait(timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 8
    proc.stop()
    assert SHUTDOWN_COMPLETE[server_kind] in proc.output()
