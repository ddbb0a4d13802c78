"""Two real ``authgate serve`` processes sharing their throttle through a real ``redis-server``: limits held
by the pair, Redis stopped and restarted under them, a Redis that stops answering, a password, TLS."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.policy import RedisSettings, ThrottleSettings
from app.shared_throttle import shared_digest_key
from app.throttle import Kind, Throttle
from tests.integration.conftest import TOKEN_A, token_line
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess, wait_for
from tests.support.redis_server import RedisServer
from tests.support.tools import require_tool

pytestmark = pytest.mark.redis

USER_LIMIT, ADDRESS_LIMIT, WINDOW, BAN = 4, 6, 60, 120
PREFIX = "it:authgate:"
VALUES: tuple[tuple[Kind, str], ...] = (("user", "mallory"), ("address", "10.2.0.1"))
# A ban reached with failures split across the replicas holds on all of them within this long after the
# failure that reached it was answered (one pipelined script and one pub/sub delivery; milliseconds when
# the machine is quiet, see docs/configuration.md).
PROPAGATION_DEADLINE = 3.0


def member(kind: Kind, value: str) -> str:
    """A ban as Redis holds it: the kind and the digest every replica counts under (keyed by the prefix, and
    the password if any), never the name or address a client sent."""
    key = shared_digest_key(RedisSettings(host="-", key_prefix=PREFIX), None)
    return f"{kind} {Throttle(ThrottleSettings(), digest_key=key).key(kind, value)[1].hex()}"


def policy(path: Path, redis_url: str, **redis: str | float) -> Path:
    options = {"url": redis_url, "key_prefix": PREFIX, "timeout_seconds": 0.3, **redis}
    path.write_text(
        "routes: {api: {}}\n"
        + "throttle: "
        + json.dumps(
            {
                "max_failures_per_user": USER_LIMIT,
                "max_failures_per_address": ADDRESS_LIMIT,
                "window_seconds": WINDOW,
                "ban_seconds": BAN,
                "redis": options,
            }
        )
        + "\n"
    )
    return path


def headers(client: str, authorization: str | None = None) -> dict[str, str]:
    h = {"X-Original-URL": "https://app.example.com/api/flows", "X-Original-Method": "GET", "X-Real-IP": client}
    if authorization is not None:
        h["Authorization"] = authorization
    return h


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ask(proc: AuthgateProcess, client: str, authorization: str | None) -> httpx.Response:
    return httpx.get(f"{proc.base_url}/auth/api", headers=headers(client, authorization), timeout=5)


def metric(proc: AuthgateProcess, sample: str) -> float:
    for line in httpx.get(proc.base_url + "/metrics", timeout=5).text.splitlines():
        if line.split(" ")[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def shared(*procs: AuthgateProcess) -> Callable[[], bool]:
    return lambda: all(metric(p, "authgate_throttle_shared") == 1 for p in procs)


def local(*procs: AuthgateProcess) -> Callable[[], bool]:
    return lambda: all(metric(p, "authgate_throttle_shared") == 0 for p in procs)


def banned_users(*procs: AuthgateProcess) -> list[float]:
    return [metric(p, 'authgate_throttled_clients{kind="user"}') for p in procs]


def log_lines(proc: AuthgateProcess, state: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "shared_throttle" and line.get("state") == state]


@pytest.fixture
def secret(tmp_path: Path) -> KubeletSecretDir:
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": token_line("ci-a", TOKEN_A), "htpasswd": "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"})
    return secret


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start(secret: KubeletSecretDir, tmp_path: Path) -> Iterator[Callable[..., AuthgateProcess]]:
    """``start(name, policy_file, env=None)``: a ready authgate; all are stopped at the end."""
    started: list[AuthgateProcess] = []

    def run(name: str, policy_file: Path, env: dict[str, str] | None = None) -> AuthgateProcess:
        proc = AuthgateProcess(secret.path, tmp_path / f"{name}.log", config=policy_file, env=env)
        started.append(proc)
        proc.wait_ready()
        return proc

    try:
        yield run
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def pair(start: Callable[..., AuthgateProcess], redis_server: RedisServer, tmp_path: Path):
    config = policy(tmp_path / "policy.yaml", redis_server.url)
    a, b = start("a", config), start("b", config)
    wait_for(shared(a, b), timeout=10, what="both replicas sharing through Redis")
    return a, b


def test_failures_split_across_two_replicas_ban_the_client_on_both(
    pair, redis_server: RedisServer, start: Callable[..., AuthgateProcess], tmp_path: Path
):
    a, b = pair
    # A user name guessed from changing addresses: 2 + 2 failures, below each replica's own limit.
    for i in range(USER_LIMIT):
        assert ask((a, b)[i % 2], f"10.1.0.{i}", basic("mallory", f"guess-{i}")).status_code == 401
    reached = time.monotonic()
    wait_for(lambda: banned_users(a, b) == [1, 1], timeout=PROPAGATION_DEADLINE, what="the user banned on both")
    print(f"user ban on both replicas {time.monotonic() - reached:.3f} s after the failure that reached it")
    for proc in (a, b):
        assert ask(proc, "10.1.9.9", basic("mallory", "one-more")).status_code == 403  # refused unchecked
        assert ask(proc, "10.1.9.9", f"Bearer {TOKEN_A}").status_code == 200  # a valid credential never waits

    # One address guessing tokens: 3 + 3 failures.
    for i in range(ADDRESS_LIMIT):
        assert ask((a, b)[i % 2], "10.2.0.1", f"Bearer wrong-token-{i:02d}-0123456789").status_code == 401
    wait_for(
        lambda: all(metric(p, 'authgate_throttled_clients{kind="address"}') == 1 for p in (a, b)),
        timeout=PROPAGATION_DEADLINE,
        what="the address banned on both",
    )
    for proc in (a, b):
        assert ask(proc, "10.2.0.1", "Bearer wrong-token-again-0123456789").status_code == 403
        assert ask(proc, "10.2.0.1", f"Bearer {TOKEN_A}").status_code == 200  # the token passes from there too
    assert metric(a, "authgate_throttle_bans_learnt_total") + metric(b, "authgate_throttle_bans_learnt_total") >= 2

    # A replica that starts later (a scale-up, a restarted pod) has the fleet's bans once it is connected.
    c = start("c", tmp_path / "policy.yaml")
    wait_for(shared(c), timeout=10, what="the new replica sharing")
    assert metric(c, 'authgate_throttled_clients{kind="user"}') == 1
    assert metric(c, 'authgate_throttled_clients{kind="address"}') == 1
    assert ask(c, "10.2.0.1", "Bearer wrong-token-again-0123456789").status_code == 403

    # In Redis: fixed-length counter keys and one set of bans, none without an expiry or outliving its
    # window or ban; no user name or address in a key's name.
    with redis_server.client() as client:
        keys = {key.decode(): client.pttl(key) for key in client.scan_iter(match=PREFIX + "*")}
        bans = {row.decode() for row in client.zrange(PREFIX + "bans", 0, -1)}
    counters = {k: ttl for k, ttl in keys.items() if k != PREFIX + "bans"}
    assert counters and all(k.startswith(PREFIX + "f:") and len(k) == len(PREFIX) + 36 for k in counters), keys
    assert all(0 < ttl <= WINDOW * 1000 for ttl in counters.values()), keys
    assert WINDOW * 1000 < keys[PREFIX + "bans"] <= BAN * 1000
    assert bans == {member(kind, value) for kind, value in VALUES}
    assert not any("mallory" in k or "10.2.0.1" in k for k in [*keys, *bans])


def test_redis_stopped_and_restarted_under_two_replicas(pair, redis_server: RedisServer):
    a, b = pair
    redis_server.stop()
    wait_for(local(a, b), timeout=5, what="both replicas counting locally")
    assert [httpx.get(p.base_url + "/readyz", timeout=5).status_code for p in (a, b)] == [200, 200]

    # Still deciding: allows pass, wrong guesses get 401, never 5xx, and each replica's own limit holds.
    for i in range(USER_LIMIT):
        assert ask(a, f"10.3.0.{i}", f"Bearer {TOKEN_A}").status_code == 200
        assert ask(a, f"10.3.0.{i}", basic("trudy", f"guess-{i}")).status_code == 401  # all on one replica
        assert ask((a, b)[i % 2], f"10.4.0.{i}", basic("eve", f"guess-{i}")).status_code == 401  # split
    assert ask(a, "10.3.9.9", basic("trudy", "again")).status_code == 403
    assert banned_users(a, b) == [1, 0]  # trudy on a only; eve (2 + 2) nowhere: each replica counts alone
    for proc in (a, b):
        assert metric(proc, "authgate_throttle_redis_errors_total") >= 1
        assert len(log_lines(proc, "local")) == 1  # one line, not one per failure or reconnect attempt

    redis_server.start()  # same port, empty: nothing persisted
    wait_for(shared(a, b), timeout=15, what="both replicas sharing again")
    # What waited in the outboxes (within the window) is shared now: trudy's ban from a, eve's 2 + 2.
    wait_for(lambda: banned_users(a, b) == [2, 2], timeout=PROPAGATION_DEADLINE, what="bans from the outage")
    assert ask(b, "10.3.9.8", basic("trudy", "again")).status_code == 403
    assert ask(b, "10.4.9.9", basic("eve", "again")).status_code == 403
    for proc in (a, b):
        assert len(log_lines(proc, "shared")) == 2  # the first connection, then the end of the logged outage

    # And new failures split across the pair ban on both again.
    for i in range(USER_LIMIT):
        assert ask((a, b)[i % 2], f"10.5.0.{i}", basic("zed", f"guess-{i}")).status_code == 401
    wait_for(lambda: banned_users(a, b) == [3, 3], timeout=PROPAGATION_DEADLINE, what="a new ban on both")


def test_a_redis_that_stops_answering_slows_no_answer(
    start: Callable[..., AuthgateProcess], redis_server: RedisServer, tmp_path: Path
):
    # Anything that waited on Redis would take its timeout (2 s) or the whole sleep (12 s); the bound on each
    # answer below sits well under both, and well over a loaded CI machine's worst loopback answer. The sleep
    # is long enough that a loaded machine still sees Redis asleep when it looks for the "local" report (12 s
    # was not, once, with the whole suite and other work on two cores).
    proc = start("a", policy(tmp_path / "policy.yaml", redis_server.url, timeout_seconds=2.0))
    wait_for(shared(proc), timeout=10, what="sharing through Redis")
    sleeper = redis_server.sleep_in_background(20.0)  # DEBUG SLEEP: Redis takes connections, answers nothing
    slowest = 0.0
    for i in range(20):
        for authorization, expected in ((f"Bearer {TOKEN_A}", 200), (basic(f"sleepy-{i}", "guess"), 401)):
            began = time.monotonic()
            assert ask(proc, f"10.6.0.{i}", authorization).status_code == expected
            slowest = max(slowest, time.monotonic() - began)
    wait_for(local(proc), timeout=15, what="the throttle reported local while Redis sleeps")
    assert sleeper.is_alive(), "Redis woke before the test was done with it: the checks above proved nothing"
    assert slowest < 1.0, f"an answer took {slowest:.3f} s while Redis slept"
    assert httpx.get(proc.base_url + "/readyz", timeout=5).status_code == 200
    sleeper.join(30)
    wait_for(shared(proc), timeout=15, what="sharing again once Redis answers")


def test_password_from_a_variable_or_a_file_and_never_in_the_log(start: Callable[..., AuthgateProcess], tmp_path: Path):
    password = "redis-pw-7f3a9c1e5b"
    server = RedisServer(tmp_path / "redis-auth", password=password).start()
    try:
        password_file = tmp_path / "redis-password"
        password_file.write_text(password + "\n")
        a = start(
            "a",
            policy(tmp_path / "a.yaml", server.url, password_env="TEST_REDIS_PASSWORD"),
            env={"TEST_REDIS_PASSWORD": password},
        )
        b = start("b", policy(tmp_path / "b.yaml", server.url, password_file=str(password_file)))
        wrong = start(
            "wrong",
            policy(tmp_path / "w.yaml", server.url, password_env="TEST_REDIS_PASSWORD"),
            env={"TEST_REDIS_PASSWORD": "not-" + password},
        )
        wait_for(shared(a, b), timeout=10, what="both replicas authenticated")
        for i in range(USER_LIMIT):
            assert ask((a, b)[i % 2], f"10.7.0.{i}", basic("mallory", f"guess-{i}")).status_code == 401
        wait_for(lambda: banned_users(a, b) == [1, 1], timeout=PROPAGATION_DEADLINE, what="the ban on both")

        wait_for(lambda: log_lines(wrong, "local"), timeout=10, what="the refused password logged")
        assert metric(wrong, "authgate_throttle_shared") == 0
        assert "AuthenticationError" in str(log_lines(wrong, "local")[0]["message"])
        assert ask(wrong, "10.7.1.1", f"Bearer {TOKEN_A}").status_code == 200
    finally:
        server.stop()
    for proc in (a, b, wrong):
        assert password not in proc.output()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the real openssl."""
    openssl = str(require_tool("openssl"))
    directory.mkdir()
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=authgate test CA",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


def test_tls_verifies_the_server(start: Callable[..., AuthgateProcess], tmp_path: Path):
    ca, cert, key = make_tls_files(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis-tls", tls=(ca, cert, key)).start()
    try:
        trusting = start("trusting", policy(tmp_path / "t.yaml", server.url, tls_ca_file=str(ca)))
        doubting = start("doubting", policy(tmp_path / "d.yaml", server.url))  # the system's CAs only
        wait_for(shared(trusting), timeout=10, what="sharing over TLS")
        wait_for(lambda: log_lines(doubting, "local"), timeout=10, what="the unverified server refused")
        assert "certificate verify failed" in str(log_lines(doubting, "local")[0]["message"]).lower()
        assert metric(doubting, "authgate_throttle_shared") == 0
    finally:
        server.stop()


def test_a_password_variable_that_is_not_set_fails_the_start_naming_it(tmp_path: Path, secret: KubeletSecretDir):
    config = policy(tmp_path / "policy.yaml", "redis://127.0.0.1:1/0", password_env="TEST_REDIS_PASSWORD_UNSET")
    proc = AuthgateProcess(secret.path, tmp_path / "authgate.log", config=config)
    assert proc.proc.wait(timeout=30) == 2
    proc.stop()
    assert "throttle.redis.password_env: $TEST_REDIS_PASSWORD_UNSET is not set or empty" in proc.output()


def test_a_starting_replica_reads_every_live_ban_in_pages(
    start: Callable[..., AuthgateProcess], redis_server: RedisServer, tmp_path: Path
):
    with redis_server.client() as client:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        live = {member("address", f"10.8.{i // 256}.{i % 256}"): now_ms + 60_000 + i for i in range(2500)}
        ended = {member("address", "10.9.0.1"): now_ms - 1000}
        client.zadd(PREFIX + "bans", {**live, **ended})
        client.pexpire(PREFIX + "bans", 120_000)
    proc = start("late", policy(tmp_path / "policy.yaml", redis_server.url))
    wait_for(shared(proc), timeout=10, what="sharing through Redis")
    assert metric(proc, 'authgate_throttled_clients{kind="address"}') == 2500
    assert ask(proc, "10.8.9.195", "Bearer wrong-token-0123456789abcdef").status_code == 403  # the last one
    assert ask(proc, "10.9.0.1", "Bearer wrong-token-0123456789abcdef").status_code == 401  # its ban had ended
