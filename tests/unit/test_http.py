"""The Litestar app in-process: health truth, metrics exposition, 503 before any load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import anyio
import pytest
from litestar.testing import AsyncTestClient

from app.credentials import load_secret_files, token_digest
from app.decision import Snapshot
from app.health import Heartbeat
from app.passwords import VerifiedCache
from app.service import create_app
from app.settings import Settings
from app.state import build_state

TOKEN = "in-process-token-0123456789"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def state(tmp_path: Path):
    return build_state(Settings(secret_dir=tmp_path / "absent"))


async def test_fail_closed_and_not_ready_before_credentials(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert (await client.get("/readyz")).status_code == 503
        answer = await client.get("/auth/default", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 503


async def test_metrics_after_a_load(state):
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as client:
        assert state.reloader.apply(
            {"tokens": f"ci sha256:{token_digest(TOKEN).hex()} expires={expires}\n".encode()}, "test"
        )
        assert (await client.get("/readyz")).status_code == 200
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Original-URL": "http://h/x", "X-Original-Method": "GET"}
        assert (await client.get("/auth/default", headers=headers)).status_code == 200
        for _ in range(60):
            await client.get("/auth/default", headers={**headers, "Authorization": "Bearer wrong-0123456789abcdef"})
        text = (await client.get("/metrics")).text
    registry = state.metrics.registry
    assert (
        registry.get_sample_value(
            "authgate_decisions_total", {"route": "default", "result": "allow", "reason": "allowed", "scheme": "bearer"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "authgate_decisions_total",
            {"route": "default", "result": "deny", "reason": "unknown_token", "scheme": "bearer"},
        )
        == 50
    )
    assert (
        registry.get_sample_value(
            "authgate_decisions_total",
            {"route": "default", "result": "deny", "reason": "throttled", "scheme": "bearer"},
        )
        == 10
    )
    assert registry.get_sample_value("authgate_throttled_clients", {"kind": "address"}) == 1
    left = registry.get_sample_value("authgate_token_expires_in_seconds", {"name": "ci"})
    assert left is not None and 3500 < left <= 3600
    assert registry.get_sample_value("authgate_credentials_loaded", {"kind": "token"}) == 1
    assert registry.get_sample_value("authgate_last_reload_success_timestamp_seconds") > 0
    assert "authgate_decision_duration_seconds_bucket" in text


async def test_healthz_fails_when_a_loop_stops_beating(state):
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        stuck = Heartbeat("stuck-loop", max_age=0.0)
        stuck._last -= 10
        state.heartbeats.append(stuck)
        answer = await client.get("/healthz")
        assert answer.status_code == 503 and "stuck-loop" in answer.text


async def test_snapshot_swap_is_one_reference(state):
    creds = load_secret_files({"tokens": f"a sha256:{token_digest(TOKEN).hex()}\n".encode()}, "x")
    before = Snapshot(creds, state.policy, VerifiedCache(1))
    state.store.current = before
    assert state.reloader.apply({"tokens": f"b sha256:{token_digest(TOKEN).hex()}\n".encode()}, "y")
    assert state.store.current is not before and before.credentials.find_token(TOKEN).name == "a"
    # An identical Secret is not parsed again and keeps the verified cache.
    current = state.store.current
    assert state.reloader.apply({"tokens": f"b sha256:{token_digest(TOKEN).hex()}\n".encode()}, "y")
    assert state.store.current is current


async def test_two_authorization_headers_are_refused_through_the_app(state):
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        base = [("X-Original-URL", "http://h/x"), ("X-Original-Method", "GET")]
        one = await client.get("/auth/default", headers=[*base, ("Authorization", f"Bearer {TOKEN}")])
        assert one.status_code == 200
        two = await client.get(
            "/auth/default",
            headers=[*base, ("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")],
        )
        assert two.status_code == 401


async def test_remembered_allows_keep_exceptions_exact_and_die_with_the_snapshot(tmp_path):
    from app.policy import parse_policy

    policy = parse_policy(
        {"routes": {"api": {"anonymous": ["GET /api/health"]}, "cors": {"cors_preflight": True}}}, "test"
    )
    state = build_state(Settings(secret_dir=tmp_path / "absent"), policy=policy)
    line = f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()

    def nginx(path: str, method: str = "GET", **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {TOKEN}",
            "X-Original-URL": f"http://h{path}",
            "X-Original-Method": method,
            **extra,
        }

    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": line}, "test")
        for _ in range(3):
            answer = await client.get("/auth/api", headers=nginx("/api/flows"))
            assert answer.status_code == 200 and answer.headers["x-auth-request-user"] == "ci"
        snapshot = state.store.current
        assert len(snapshot.allows) == 1
        # The anonymous exception still answers as an anonymous allow (no identity), memo or not.
        health = await client.get("/auth/api", headers=nginx("/api/health"))
        assert health.status_code == 200 and "x-auth-request-user" not in health.headers
        # A preflight on a route that lets preflights through is decided in full, too.
        await client.get("/auth/cors", headers=nginx("/x"))
        preflight = await client.get(
            "/auth/cors",
            headers=nginx("/x", "OPTIONS", Origin="https://ui", **{"Access-Control-Request-Method": "POST"}),
        )
        assert preflight.status_code == 200 and "x-auth-request-user" not in preflight.headers
        # Rotation: the token is removed, the new snapshot remembers nothing, the token is refused.
        assert state.reloader.apply({"tokens": b"# nobody\n"}, "test")
        assert (await client.get("/auth/api", headers=nginx("/api/flows"))).status_code == 401
    registry = state.metrics.registry
    assert (
        registry.get_sample_value(
            "authgate_decisions_total", {"route": "api", "result": "allow", "reason": "allowed", "scheme": "bearer"}
        )
        == 3
    )


async def test_a_remembered_allow_bounded_by_its_token_expiry_is_rendered_afresh(tmp_path):
    """A repeat from the allow memo renders nothing when the answer cannot change; when its Cache-Control
    max-age is bounded by the token's expiry it is rendered for each request, so the bound keeps shrinking."""
    from app.policy import parse_policy

    policy = parse_policy({"routes": {"api": {}}, "decision_cache": {"max_age_seconds": 7200}}, "test")
    state = build_state(Settings(secret_dir=tmp_path / "absent"), policy=policy)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = [now]
    state.clock = lambda: clock[0]
    expires = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = (
        f"soon sha256:{token_digest(TOKEN).hex()} expires={expires}\nlong sha256:{token_digest(TOKEN[::-1]).hex()}\n"
    )
    nginx = {"X-Original-URL": "http://h/api/flows", "X-Original-Method": "GET"}
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": lines.encode()}, "test")
        ages = []
        for _ in range(3):
            answer = await client.get("/auth/api", headers={**nginx, "Authorization": f"Bearer {TOKEN}"})
            ages.append(answer.headers["cache-control"])
            clock[0] += dt.timedelta(seconds=100)
        assert ages == ["max-age=3600", "max-age=3500", "max-age=3400"]
        assert len(state.store.current.allows) == 1  # the repeats were memo hits, rendered afresh
        for _ in range(2):
            answer = await client.get("/auth/api", headers={**nginx, "Authorization": f"Bearer {TOKEN[::-1]}"})
            assert answer.headers["cache-control"] == "max-age=7200"


async def test_the_served_app_answers_repeats_from_its_fast_lane_exactly_as_in_full(tmp_path, monkeypatch):
    """What `authgate serve` runs (create_asgi): a repeat on a route without exceptions skips the general
    path, with the same answer, counted the same; anything else still goes the general way."""
    import httpx

    from app.service import create_asgi

    config = tmp_path / "policy.yaml"
    config.write_text("routes:\n  api: {}\n  ui:\n    anonymous: [GET /health]\n")
    app = create_asgi(Settings(secret_dir=tmp_path / "absent", config=config))
    decider = app.decider
    assert decider.plain_routes == {"api"} and set(app.plain_paths) == {b"/auth/api"}
    assert decider.state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
    full, general = [], []
    monkeypatch.setattr(decider, "decide", _counting(decider.decide, full))
    recall = decider.recall
    monkeypatch.setattr(decider, "recall", lambda *args: general.append(args[1]) or recall(*args))
    nginx = {"X-Original-URL": "http://h/api/flows", "X-Original-Method": "GET", "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://authgate") as client:
        answers = [await client.get("/auth/api", headers=nginx) for _ in range(4)]
        # Decided in full once, every repeat from the fast lane: the general path never asks the memo again.
        assert (len(full), len(general)) == (1, 0)
        assert {(a.status_code, tuple(a.headers.items())) for a in answers} == {
            (
                200,
                (
                    ("cache-control", "no-store"),
                    ("x-auth-request-user", "ci"),
                    ("x-auth-request-scheme", "bearer"),
                    ("content-length", "0"),
                ),
            )
        }
        # Two Authorization headers never take the fast lane (nor get in); nor does a route with exceptions.
        two = [*nginx.items(), ("Authorization", f"Bearer {TOKEN}")]
        assert (await client.get("/auth/api", headers=two)).status_code == 401
        for _ in range(2):
            assert (await client.get("/auth/ui", headers=nginx)).status_code == 200
        anonymous = {"X-Original-URL": "http://h/health", "X-Original-Method": "GET"}
        assert (await client.get("/auth/ui", headers=anonymous)).status_code == 200
        assert (len(full), len(general)) == (4, 4)  # the two-header request, and the three on ui
        assert (await client.get("/healthz")).text == "ok\n"  # not under /auth/: Litestar's
    registry = decider.state.metrics.registry
    labels = {"route": "api", "result": "allow", "reason": "allowed", "scheme": "bearer"}
    assert registry.get_sample_value("authgate_decisions_total", labels) == 4


async def test_at_debug_level_every_allow_is_decided_in_full_and_logged(tmp_path, caplog):
    """No memo and no fast lane at debug level: each allow is logged with the method and path it was for."""
    import logging

    import httpx

    from app.service import create_asgi

    caplog.set_level(logging.DEBUG, logger="authgate.decision")
    app = create_asgi(Settings(secret_dir=tmp_path / "absent"))
    assert app.decider.plain_routes == frozenset() and app.plain_paths == {}
    assert app.decider.state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://authgate") as client:
        for path in ("/api/a", "/api/b", "/api/b"):
            nginx = {
                "X-Original-URL": f"http://h{path}",
                "X-Original-Method": "GET",
                "Authorization": f"Bearer {TOKEN}",
            }
            assert (await client.get("/auth/default", headers=nginx)).status_code == 200
    allowed = [r for r in caplog.records if r.getMessage() == "allowed"]
    assert [(r.principal, r.path) for r in allowed] == [("ci", "/api/a"), ("ci", "/api/b"), ("ci", "/api/b")]


def _counting(decide, calls):
    async def counted(*args, **kwargs):
        calls.append(args[1])
        return await decide(*args, **kwargs)

    return counted


async def test_spellings_of_one_credential_never_fill_the_allow_memo(state):
    """One holder of a valid token sending its header in a thousand spellings gets a thousand allows and
    leaves one memo entry: only the canonical spelling is remembered."""
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        base = {"X-Original-URL": "http://h/x", "X-Original-Method": "GET"}
        spellings = [
            f"{scheme}{' ' * spaces}{TOKEN}{tail}"
            for scheme in ("Bearer", "bearer", "BEARER", "bEaReR")
            for spaces in range(1, 26)
            for tail in ("", " ", "\t", "  ")
        ]
        assert len(set(spellings)) == 400
        for value in spellings:
            assert (await client.get("/auth/default", headers={**base, "Authorization": value})).status_code == 200
        assert len(state.store.current.allows) <= 1
        assert (
            await client.get("/auth/default", headers={**base, "Authorization": f"Bearer {TOKEN}"})
        ).status_code == 200
        assert len(state.store.current.allows) == 1


async def test_envoy_anonymous_allow_asks_envoy_to_drop_client_identity_headers(tmp_path):
    from app.policy import parse_policy

    policy = parse_policy({"routes": {"api": {"anonymous": ["GET /api/health"]}}}, "test")
    state = build_state(Settings(secret_dir=tmp_path / "absent", proxy=("envoy",)), policy=policy)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        anonymous = await client.get("/auth/api/api/health", headers={"X-Auth-Request-User": "admin"})
        assert anonymous.status_code == 200
        assert anonymous.headers["x-envoy-auth-headers-to-remove"] == "x-auth-request-user, x-auth-request-scheme"
        identified = await client.get("/auth/api/api/flows", headers={"Authorization": f"Bearer {TOKEN}"})
        assert identified.status_code == 200 and identified.headers["x-auth-request-user"] == "ci"
        assert "x-envoy-auth-headers-to-remove" not in identified.headers


async def test_a_front_door_mismatch_is_counted_and_logged_once_a_minute(tmp_path, caplog):
    """--proxy ingress-nginx behind Traefik: every request lacks X-Original-*. The anonymous exception is
    refused, a metric counts each request, and one error line names the fix."""
    from app.policy import parse_policy

    policy = parse_policy({"routes": {"api": {"anonymous": ["GET /api/health"]}}}, "test")
    state = build_state(Settings(secret_dir=tmp_path / "absent", proxy=("ingress-nginx",)), policy=policy)
    traefik = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/health", "X-Forwarded-Proto": "https"}
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        for _ in range(5):
            assert (await client.get("/auth/api", headers=traefik)).status_code == 401
        forged = {**traefik, "X-Original-URL": "http://h/api/health", "X-Original-Method": "GET"}
        assert (await client.get("/auth/api", headers={**forged, "X-Forwarded-Method": "POST"})).status_code == 401
    registry = state.metrics.registry
    missing = {"route": "api", "problem": "missing"}
    assert registry.get_sample_value("authgate_original_request_problems_total", missing) == 5
    errors = [r for r in caplog.records if getattr(r, "event", None) == "front_door" and r.problem == "missing"]
    assert len(errors) == 1 and errors[0].levelname == "ERROR"
    assert "Fix: --proxy traefik" in errors[0].getMessage()
    conflict = {"route": "api", "problem": "conflict"}
    assert registry.get_sample_value("authgate_original_request_problems_total", conflict) == 1


async def test_slow_checks_waiting_are_bounded(tmp_path):
    import bcrypt

    from app.policy import parse_policy

    policy = parse_policy({"routes": {"ui": {"schemes": ["basic"]}}, "throttle": {"max_pending_slow_checks": 2}}, "t")
    state = build_state(Settings(secret_dir=tmp_path / "absent"), policy=policy)
    app = create_app(state.settings, state)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    headers = {"X-Original-URL": "http://h/", "X-Original-Method": "GET", "Authorization": "Basic YWxpY2U6cHc="}
    async with AsyncTestClient(app) as client:
        assert state.reloader.apply({"htpasswd": f"alice:{hashed}\n".encode()}, "test")
        decider = app.state.decider
        decider.pending_slow_checks = 2  # two checks already waiting
        refused = await client.get("/auth/ui", headers=headers)
        assert refused.status_code == 403
        decider.pending_slow_checks = 1
        assert (await client.get("/auth/ui", headers=headers)).status_code == 200
        assert decider.pending_slow_checks == 1
    assert (
        state.metrics.registry.get_sample_value(
            "authgate_decisions_total",
            {"route": "ui", "result": "deny", "reason": "slow_checks_saturated", "scheme": "basic"},
        )
        == 1
    )


async def test_an_unreachable_redis_neither_delays_readiness_nor_decisions(tmp_path):
    """The shared throttle starts in the lifespan without waiting for Redis; with nothing listening, authgate is
    ready, decides with its local table (a ban still bans) and says the throttle is local."""
    from app.policy import parse_policy
    from app.shared_throttle import SharedThrottle
    from tests.support.procs import free_port

    policy = parse_policy(
        {
            "routes": {"api": {}},
            "throttle": {"max_failures_per_address": 2, "redis": {"url": f"redis://127.0.0.1:{free_port()}"}},
        },
        "test",
    )
    state = build_state(Settings(secret_dir=tmp_path / "absent"), policy=policy)
    assert isinstance(state.throttle, SharedThrottle)
    headers = {"X-Original-URL": "http://h/x", "X-Original-Method": "GET", "X-Real-IP": "10.0.0.1"}
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        assert (await client.get("/readyz")).status_code == 200
        assert (
            await client.get("/auth/api", headers={**headers, "Authorization": f"Bearer {TOKEN}"})
        ).status_code == 200
        wrong = {**headers, "Authorization": "Bearer wrong-0123456789abcdef"}
        assert [(await client.get("/auth/api", headers=wrong)).status_code for _ in range(3)] == [401, 401, 403]
        assert (
            await client.get("/auth/api", headers={**headers, "Authorization": f"Bearer {TOKEN}"})
        ).status_code == 200
        for _ in range(200):  # the first connection attempt fails at once (connection refused)
            if state.metrics.registry.get_sample_value("authgate_throttle_redis_errors_total"):
                break
            await anyio.sleep(0.01)
    registry = state.metrics.registry
    assert registry.get_sample_value("authgate_throttle_redis_errors_total") >= 1
    assert registry.get_sample_value("authgate_throttle_shared") == 0


async def test_auth_tilde_decides_on_the_route_claiming_the_original_path(tmp_path):
    """``/auth/~`` names no route: the route claiming the longest prefix of the original path decides, with
    its challenge and exceptions, from the allow memo too; a path no route claims is refused (403)."""
    from app.policy import parse_policy

    policy = parse_policy(
        {
            "routes": {
                "api": {"path_prefixes": ["/api"], "anonymous": ["GET /api/health"], "realm": "prefect-api"},
                "ui": {"path_prefixes": ["/ui"], "schemes": ["basic"], "realm": "prefect"},
            }
        },
        "test",
    )
    state = build_state(Settings(secret_dir=tmp_path / "absent", proxy=("path-prefix", "ingress-nginx")), policy)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "test")
        for _ in range(3):  # decided in full, then remembered: the same answer
            answer = await client.get("/auth/~/api/flows", headers=bearer)
            assert answer.status_code == 200 and answer.headers["x-auth-request-user"] == "ci"
        assert len(state.store.current.allows) == 1
        # The memo never hides the claiming route's exception: the health check stays anonymous.
        health = await client.get("/auth/~/api/health", headers=bearer)
        assert health.status_code == 200 and "x-auth-request-user" not in health.headers
        # The ui route decides /ui: Basic only, its own challenge.
        ui = await client.get("/auth/~/ui/flows", headers=bearer)
        assert ui.status_code == 401 and ui.headers.get_list("www-authenticate") == [
            'Basic realm="prefect", charset="UTF-8"'
        ]
        for unclaimed in ("/auth/~/other", "/auth/~/", "/auth/~/ui%2F..%2Fapi/flows", "/auth/~//api/flows"):
            answer = await client.get(unclaimed, headers=bearer)
            assert answer.status_code == 403 and "www-authenticate" not in answer.headers, unclaimed
        # Any door's account works: ingress-nginx's X-Original-URL with a fixed /auth/~.
        nginx = {**bearer, "X-Original-URL": "https://h/api/flows", "X-Original-Method": "GET"}
        assert (await client.get("/auth/~", headers=nginx)).status_code == 200
        nginx_ui = {**nginx, "X-Original-URL": "https://h/ui/"}
        assert (await client.get("/auth/~", headers=nginx_ui)).status_code == 401
    registry = state.metrics.registry
    labels = {"route": "_unknown", "result": "deny", "reason": "unclaimed_path", "scheme": "none"}
    assert registry.get_sample_value("authgate_decisions_total", labels) == 4


async def test_guesses_are_refused_counted_banned_and_logged_once_per_kind(tmp_path, caplog):
    """A credential-stuffing flood (a new wrong Bearer token each request) on the served app: refused without
    building the request's facts (app.decider.Decider.refuse_guess) yet exactly as decide() refuses it — the
    challenge, the throttle counting per address and banning, a valid token passing from a banned address, the
    front-door problem counted, every denial in the metrics, and one log line per kind, never a token."""
    import logging

    import httpx

    from app.service import create_asgi

    caplog.set_level(logging.INFO, logger="authgate.decision")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("routes:\n  api: {realm: r}\nthrottle: {max_failures_per_address: 3}\n")
    app = create_asgi(Settings(secret_dir=tmp_path / "absent", config=policy_file, proxy=("ingress-nginx",)))
    assert app.plain_paths == {b"/auth/api": "api"}
    state = app.decider.state
    assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(TOKEN).hex()}\n".encode()}, "t")
    nginx = {"X-Original-URL": "http://h/api/x", "X-Original-Method": "GET"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://authgate") as client:

        async def ask(token: str, address: str, extra: dict[str, str] | None = None) -> httpx.Response:
            headers = {**nginx, "X-Real-IP": address, "Authorization": f"Bearer {token}", **(extra or {})}
            return await client.get("/auth/api", headers=headers)

        answers = [await ask(f"guess-{n}", "198.51.100.1") for n in range(5)]
        assert [a.status_code for a in answers] == [401, 401, 401, 403, 403]
        assert answers[0].headers.get_list("www-authenticate") == [
            'Bearer realm="r", error="invalid_token"',
            'Basic realm="r", charset="UTF-8"',
        ]
        assert answers[0].headers["cache-control"] == "no-store" and "x-auth-request-user" not in answers[0].headers
        assert (await ask(TOKEN, "198.51.100.1")).status_code == 200  # a valid token from the banned address
        assert (await ask("guess-x", "198.51.100.2")).status_code == 401  # another address is not banned
        # Behind a door authgate was not told of: still refused, and the problem counted.
        traefik = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/x", "X-Forwarded-Proto": "https"}
        answer = await client.get("/auth/api", headers={**traefik, "Authorization": "Bearer guess-y"})
        assert answer.status_code == 401
    assert state.throttle.banned("198.51.100.1", None) and not state.throttle.banned("198.51.100.2", None)
    registry = state.metrics.registry

    def denials(reason: str) -> float | None:
        labels = {"route": "api", "result": "deny", "reason": reason, "scheme": "bearer"}
        return registry.get_sample_value("authgate_decisions_total", labels)

    assert (denials("unknown_token"), denials("throttled")) == (5, 2)
    problems = {"route": "api", "problem": "missing"}
    assert registry.get_sample_value("authgate_original_request_problems_total", problems) == 1
    logged = [r for r in caplog.records if r.name == "authgate.decision" and r.getMessage() == "denied"]
    assert [(r.reason, r.client) for r in logged] == [("unknown_token", "198.51.100.1"), ("throttled", "198.51.100.1")]
    app.decider.decision_log.denials.close_window()
    summary = [r for r in caplog.records if getattr(r, "event", None) == "denials_not_logged"]
    assert [(r.reason, r.not_logged) for r in summary] == [("unknown_token", 4), ("throttled", 1)]
    assert not any("guess-" in r.getMessage() or "guess-" in str(vars(r)) for r in caplog.records)


async def test_a_guess_answers_and_counts_what_decide_does_on_each_snapshot(tmp_path):
    """Decider.refuse_guess keeps each route's two guess denials resolved (metrics cell, rendered answer) for
    the current snapshot: its answers are decide()'s, unknown_token and throttled alike, counted under the same
    labels, and a reload (a new snapshot) resolves them afresh."""
    from app.http import WIRE
    from app.service import create_asgi

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("routes:\n  api: {realm: r}\nthrottle: {max_failures_per_address: 4}\n")
    app = create_asgi(Settings(secret_dir=tmp_path / "absent", config=policy_file, proxy=("ingress-nginx",)))
    state, decider = app.decider.state, app.decider
    registry = state.metrics.registry
    for n, realm_token in enumerate((TOKEN, TOKEN + "-rotated")):
        assert state.reloader.apply({"tokens": f"ci sha256:{token_digest(realm_token).hex()}\n".encode()}, "t")
        snapshot = state.store.current
        for reason, status in (("unknown_token", 401), ("unknown_token", 401), ("throttled", 403)):
            address = f"198.51.100.{n}"
            headers = {
                b"x-original-url": b"http://h/api/x",
                b"x-original-method": b"GET",
                b"x-real-ip": address.encode(),
            }
            scope = {"type": "http", "client": ("10.0.0.1", 1)}
            before = registry.get_sample_value(
                "authgate_decisions_total", {"route": "api", "result": "deny", "reason": reason, "scheme": "bearer"}
            )
            lane = decider.refuse_guess(app.doors, "api", headers, b"Bearer guess-lane", scope, WIRE, app.render)
            assert lane is not None and lane["status"] == status and decider._guess_snapshot is snapshot
            # Then decide() on the same address: the lane and decide() alternate, the 4th failure bans.
            verdict = await decider.decide(app.doors, "api", headers, (b"Bearer guess-full",), None, scope)
            assert verdict is not None and verdict.decision.reason == reason
            assert decider.answer(verdict, WIRE, app.render) == lane
            after = registry.get_sample_value(
                "authgate_decisions_total", {"route": "api", "result": "deny", "reason": reason, "scheme": "bearer"}
            )
            assert after is not None and after - (before or 0) == 2  # the lane's and decide()'s, under the same labels
    assert set(decider._guesses) == {(WIRE, "api")}  # only the current snapshot's routes
