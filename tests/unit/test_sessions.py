"""The session credential kind (app.sessions) in the decision (app.decision) and the core (app.decider)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
import yaml

from app import sessions
from app.credentials import token_digest
from app.decision import SIGN_IN_REQUIRED, RequestFacts, decide, response_headers
from app.policy import parse_policy
from app.settings import Settings
from app.state import AppState, build_state

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
KEY_A = base64.urlsafe_b64encode(b"A" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"B" * 32).decode()
TOKEN = "machine-token-0123456789"
POLICY = parse_policy(
    yaml.safe_load("""
routes:
  ui: {schemes: [session, basic], realm: prefect}
  api: {schemes: [bearer, basic, session]}
  tokens-only: {schemes: [bearer]}
  admins: {schemes: [session], principals: [alice]}
sign_in: {lifetime: 1h, idle_timeout: 1h}
throttle: {max_failures_per_address: 3}
"""),
    "test",
)
HOST = "prefect.example.com"


def sha_user(name: str, password: str) -> str:
    return f"{name}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}"


ALICE, BOB = sha_user("alice", "alice-pw"), sha_user("bob", "bob-pw")


def files(htpasswd: str = f"{ALICE}\n{BOB}\n", keys: str = KEY_A, tokens: str = "") -> dict[str, bytes]:
    out = {"htpasswd": htpasswd.encode(), "session-keys": keys.encode()}
    if tokens:
        out["tokens"] = tokens.encode()
    return out


@pytest.fixture
def state() -> AppState:
    state = build_state(Settings(), policy=POLICY)
    assert state.reloader.apply(files(), "test")
    return state


def cookie_for(state: AppState, name: str = "alice", at: dt.datetime = NOW) -> str:
    snapshot = state.store.current
    assert snapshot is not None
    value, _ = sessions.issue(
        snapshot.credentials, snapshot.credentials.users[name], at.timestamp(), state.policy.session
    )
    return value


def browser(
    cookies: tuple[str, ...] = (),
    fetch_site: str | None = "same-origin",
    fetch_mode: str | None = "cors",
    origin: str | None = None,
    accepts_html: bool = False,
) -> sessions.BrowserFacts:
    return sessions.BrowserFacts(cookies, fetch_site, fetch_mode, origin, HOST, accepts_html, "https")


def run(state: AppState, route: str, b: sessions.BrowserFacts | None, method: str = "GET", auth=(), now=NOW):
    facts = RequestFacts(method=method, path="/x", authorization=auth, client="10.0.0.1", browser=b)
    snapshot = state.store.current
    assert snapshot is not None
    decision = decide(route, facts, snapshot, state.throttle, now, slow_ok=True)
    assert decision is not None
    return decision


def test_a_session_allows_with_identity_and_is_never_cached(state):
    d = run(state, "ui", browser((cookie_for(state),)))
    assert (d.status, d.reason, d.scheme, d.principal, d.rememberable) == (200, "allowed", "session", "alice", False)
    headers = dict(response_headers(d, POLICY, "ui", NOW))
    assert headers[b"x-auth-request-user"] == b"alice"
    assert headers[b"x-auth-request-scheme"] == b"session"
    assert headers[b"cache-control"] == b"no-store"


def test_a_session_ends_at_its_lifetime_by_the_injected_clock(state):
    cookie = (cookie_for(state),)
    assert run(state, "ui", browser(cookie), now=NOW + dt.timedelta(seconds=3599)).status == 200
    d = run(state, "ui", browser(cookie), now=NOW + dt.timedelta(seconds=3600))
    assert (d.status, d.reason) == (401, "session_expired")
    future = (cookie_for(state, at=NOW + dt.timedelta(minutes=5)),)
    assert run(state, "ui", browser(future)).reason == "session_expired"  # issued in the future: refused


def test_a_shorter_lifetime_ends_older_sessions_at_once(state):
    cookie = (cookie_for(state),)
    shorter = parse_policy(
        {"routes": {"ui": {"schemes": ["session"]}}, "sign_in": {"lifetime": "10m", "idle_timeout": "10m"}}, "t"
    )
    short_state = build_state(Settings(), policy=shorter)
    assert short_state.reloader.apply(files(), "t")
    assert run(short_state, "ui", browser(cookie), now=NOW + dt.timedelta(seconds=599)).status == 200
    assert run(short_state, "ui", browser(cookie), now=NOW + dt.timedelta(seconds=601)).reason == "session_expired"


def test_idle_sessions_end_and_used_ones_slide_but_never_past_the_lifetime(tmp_path):
    policy = parse_policy(
        {"routes": {"ui": {"schemes": ["session"]}}, "sign_in": {"lifetime": "1h", "idle_timeout": "10m"}}, "t"
    )
    state = build_state(Settings(), policy=policy)
    assert state.reloader.apply(files(), "t")
    cookie = cookie_for(state)
    at = lambda seconds: NOW + dt.timedelta(seconds=seconds)  # noqa: E731
    fresh = run(state, "ui", browser((cookie,)), now=at(240))
    assert (fresh.status, fresh.set_cookie) == (200, None)  # under half the idle timeout: nothing to refresh
    assert run(state, "ui", browser((cookie,)), now=at(600)).reason == "session_idle"
    refreshed = run(state, "ui", browser((cookie,)), now=at(400))  # past half: a refreshed cookie
    assert refreshed.status == 200 and refreshed.set_cookie is not None
    slid = refreshed.set_cookie
    assert run(state, "ui", browser((slid,)), now=at(900)).status == 200  # 400 + 600 > 900: still alive
    assert run(state, "ui", browser((slid,)), now=at(1000)).reason == "session_idle"
    for step in range(400, 3600, 400):  # used every 400 s: slides to the absolute end and no further
        decision = run(state, "ui", browser((slid,)), now=at(step))
        assert decision.status == 200, step
        slid = decision.set_cookie or slid
    assert run(state, "ui", browser((slid,)), now=at(3600)).reason == "session_expired"


def test_sessions_survive_an_unrelated_reload_and_die_with_the_user(state):
    alice, bob = (cookie_for(state, "alice"),), (cookie_for(state, "bob"),)
    tokens = f"ci sha256:{token_digest(TOKEN).hex()}\n"
    assert state.reloader.apply(files(tokens=tokens), "t")  # a token added: nothing about alice or bob
    assert run(state, "ui", browser(alice)).status == 200
    assert run(state, "ui", browser(bob)).status == 200
    assert state.reloader.apply(files(htpasswd=f"{ALICE}\n{sha_user('bob', 'new-pw')}\n"), "t")
    assert (run(state, "ui", browser(bob)).status, run(state, "ui", browser(bob)).reason) == (
        401,
        "session_password_changed",
    )
    assert run(state, "ui", browser(alice)).status == 200
    assert state.reloader.apply(files(htpasswd=f"{BOB}\n"), "t")  # alice removed
    d = run(state, "ui", browser(alice))
    assert (d.status, d.reason, d.principal) == (401, "session_user_gone", None)


def test_key_rotation_with_overlap(state):
    old = (cookie_for(state),)
    assert state.reloader.apply(files(keys=f"{KEY_B}\n{KEY_A}\n"), "t")  # new key first, old kept
    new = (cookie_for(state),)
    assert run(state, "ui", browser(old)).status == 200
    assert run(state, "ui", browser(new)).status == 200
    assert state.reloader.apply(files(keys=KEY_B), "t")  # the old key dropped
    assert run(state, "ui", browser(old)).reason == "session_unknown_key"
    assert run(state, "ui", browser(new)).status == 200


def test_a_policy_with_session_routes_refuses_a_secret_without_keys():
    state = build_state(Settings(), policy=POLICY)
    assert not state.reloader.apply({"htpasswd": f"{ALICE}\n".encode()}, "t")
    assert state.store.current is None  # not ready: fails closed rather than accepting no session
    plain = build_state(Settings(), policy=parse_policy({"routes": {"api": {}}}, "t"))
    assert plain.reloader.apply({"htpasswd": f"{ALICE}\n".encode()}, "t")  # sessions off: keys not needed


@pytest.mark.parametrize(
    ("cookies", "reason"),
    [
        (("garbage",), "session_malformed"),
        (("",), "session_malformed"),
        ("two", "session_malformed"),
        ("tampered", "session_invalid"),
        ("other-key", "session_unknown_key"),
        ("not-json", "session_malformed"),
        ("wrong-types", "session_malformed"),
    ],
)
def test_bad_cookies_are_refused_with_the_route_s_challenges(state, cookies, reason):
    snapshot = state.store.current
    keys = snapshot.credentials.session_keys
    good = cookie_for(state)
    if cookies == "two":
        cookies = (good, good)
    elif cookies == "tampered":
        cookies = (good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],)
    elif cookies == "other-key":
        from app.session_keys import parse_session_keys

        cookies = (parse_session_keys(KEY_B).seal(b'{"u":"alice"}'),)
    elif cookies == "not-json":
        cookies = (keys.seal(b"alice"),)
    elif cookies == "wrong-types":
        cookies = (keys.seal(b'{"u":"alice","v":"form","h":"x","i":"0","e":9999999999,"x":9999999999}'),)
    d = run(state, "ui", browser(cookies))
    assert (d.status, d.reason, d.scheme) == (401, reason, "session")
    assert dict(response_headers(d, POLICY, "ui", NOW))[b"www-authenticate"].startswith(b"Basic")
    assert not state.throttle.banned("10.0.0.1", None)


def test_forged_sessions_are_not_counted_by_the_throttle(state):
    for _ in range(10):
        assert run(state, "ui", browser(("forged",))).reason == "session_malformed"
    assert not state.throttle.banned("10.0.0.1", None)


def test_authorization_decides_alone_when_present(state):
    cookie = (cookie_for(state),)
    bad = (b"Bearer wrong-token-0123456789",)
    d = run(state, "api", None, auth=bad)  # the core reads no cookie when Authorization is present
    assert (d.status, d.reason) == (401, "unknown_token")
    sessionless = run(state, "tokens-only", browser(cookie))  # a route without session ignores the cookie
    assert (sessionless.status, sessionless.reason, sessionless.scheme) == (401, "missing", "none")


def test_without_a_cookie_a_page_load_is_sent_to_sign_in_and_scripts_get_no_basic_prompt(state):
    nav = run(state, "ui", browser(fetch_mode="navigate"))
    assert (nav.status, nav.reason, nav.scheme, nav.sign_in) == (401, SIGN_IN_REQUIRED, "session", True)
    stale = run(state, "ui", browser(("stale",), fetch_mode="navigate"))
    assert (stale.status, stale.reason, stale.sign_in) == (401, "session_malformed", True)
    old_browser = run(state, "ui", browser(fetch_site=None, fetch_mode=None, accepts_html=True))
    assert old_browser.reason == SIGN_IN_REQUIRED
    xhr = run(state, "ui", browser(fetch_mode="cors"))  # an API call: 401 with the route's challenges, as today
    assert (xhr.status, xhr.reason, xhr.scheme, xhr.sign_in) == (401, "missing", "none", False)
    assert dict(response_headers(xhr, POLICY, "ui", NOW))[b"www-authenticate"].startswith(b"Basic")
    stale_xhr = run(state, "ui", browser(("stale",), fetch_mode="cors"))
    assert (stale_xhr.reason, stale_xhr.sign_in) == ("session_malformed", False)
    assert dict(response_headers(stale_xhr, POLICY, "ui", NOW))[b"www-authenticate"].startswith(b"Basic")
    post_nav = run(state, "ui", browser(fetch_mode="navigate"), method="POST")
    assert post_nav.reason == "missing"  # a form post cannot be resumed after sign-in: no redirect
    script = run(state, "ui", browser(fetch_site=None, fetch_mode=None))  # curl: challenged as before
    assert (script.reason, script.scheme) == ("missing", "none")
    assert dict(response_headers(script, POLICY, "ui", NOW))[b"www-authenticate"].startswith(b"Basic")


@pytest.mark.parametrize(
    ("method", "fetch_site", "origin", "status"),
    [
        ("POST", "same-origin", None, 200),
        ("POST", "same-site", None, 200),
        ("POST", "none", None, 403),
        ("DELETE", "cross-site", None, 403),
        ("DELETE", "cross-site", f"https://{HOST}", 200),  # the Origin is this very origin
        ("GET", "cross-site", None, 200),  # a link from elsewhere: safe methods pass
        ("HEAD", "cross-site", None, 200),
        ("OPTIONS", None, None, 200),
        ("POST", None, f"https://{HOST}", 200),
        ("POST", None, f"https://{HOST.upper()}", 200),
        ("POST", None, f"http://{HOST}", 403),  # another scheme is another origin
        ("POST", None, "https://evil.example", 403),
        ("POST", None, f"https://{HOST}.evil.example", 403),
        ("PUT", None, "null", 403),
        ("POST", None, None, 403),  # neither header: nothing says it comes from here
        (None, "cross-site", None, 403),  # the method is unknown: treated as unsafe
    ],
)
def test_unsafe_methods_from_other_sites_are_refused(state, method, fetch_site, origin, status):
    b = browser((cookie_for(state),), fetch_site=fetch_site, origin=origin)
    d = run(state, "ui", b, method=method)
    assert d.status == status
    if status == 403:
        assert (d.reason, d.principal) == ("cross_site", "alice")


def test_route_principals_hold_for_sessions(state):
    assert run(state, "admins", browser((cookie_for(state, "alice"),))).status == 200
    d = run(state, "admins", browser((cookie_for(state, "bob"),)))
    assert (d.status, d.reason) == (403, "principal_forbidden")


def test_reading_the_browser():
    headers = {
        b"cookie": b"a=1; __Host-authgate-session=v1; b=2",
        b"sec-fetch-site": b"same-origin",
        b"sec-fetch-mode": b"navigate",
        b"x-original-url": f"https://{HOST.upper()}/ui?x=1".encode(),
        b"accept": b"text/html,*/*",
    }
    facts = sessions.read_browser(headers, b"__Host-authgate-session")
    assert facts == sessions.BrowserFacts(("v1",), "same-origin", "navigate", None, HOST, True, "https")
    assert facts.own_origin == f"https://{HOST}"
    assert sessions.read_browser({b"x-forwarded-proto": b"http", b"host": b"h"}, b"s").own_origin == "http://h"
    assert sessions.read_browser({b":scheme": b"https", b":authority": b"h"}, b"s").own_origin == "https://h"
    assert sessions.read_browser({b"x-forwarded-host": b"h.example, x", b"host": b"auth"}, b"s").host == "h.example"
    assert sessions.read_browser({b"host": b"H.example:8443"}, b"s").host == "h.example:8443"
    assert sessions.cookie_values(b"x__Host-authgate-session=v; y=2", b"__Host-authgate-session") == ()
    assert sessions.cookie_values(b's="q"; s=r', b"s") == ("q", "r")


def test_the_core_reads_cookies_only_on_session_routes_without_authorization(state, monkeypatch):
    import asyncio

    from app import decider as decider_module
    from app.decider import Decider
    from app.doors import front_doors

    state.clock = lambda: NOW
    reads: list[bytes] = []
    real = decider_module.read_browser

    def counting(headers, name):
        reads.append(name)
        return real(headers, name)

    monkeypatch.setattr(decider_module, "read_browser", counting)
    core = Decider(state)
    assert core.session_routes == frozenset({"ui", "api", "admins"})
    doors = front_doors(("ingress-nginx",))
    headers = {
        b"x-original-url": f"https://{HOST}/x".encode(),
        b"x-original-method": b"GET",
        b"cookie": f"__Host-authgate={cookie_for(state)}".encode(),
        b"sec-fetch-mode": b"navigate",
    }

    async def ask(route: str, authorization: tuple[bytes, ...]):
        verdict = await core.decide(doors, route, headers, authorization, None, {"client": ("10.0.0.1", 1)})
        assert verdict is not None
        return verdict.decision

    assert asyncio.run(ask("tokens-only", ())).reason == "missing"
    assert asyncio.run(ask("api", (f"Bearer {TOKEN}".encode(),))).reason == "unknown_token"
    assert reads == []  # neither a route without session nor a request with Authorization read the cookie
    d = asyncio.run(ask("ui", ()))
    assert (d.status, d.principal, reads) == (200, "alice", [b"__Host-authgate"])
