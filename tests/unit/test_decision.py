import base64
import datetime as dt

import bcrypt
import pytest
import yaml

from app.allow_memo import AllowMemo
from app.credentials import load_secret_files, token_digest
from app.decision import (
    Decision,
    RequestFacts,
    Snapshot,
    cache_control,
    challenges,
    decide,
    is_unknown_bearer,
    parse_authorization,
    path_allowed,
    refuse_unknown_token,
    response_headers,
    route_for_path,
)
from app.passwords import VerifiedCache
from app.policy import BY_PATH, ROUTE_NAME_RE, ThrottleSettings, parse_policy
from app.throttle import Throttle

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
CI = "ci-token-0123456789abcdef"
RO = "readonly-token-0123456789"
SOON = "expiring-token-0123456789"
OLD = "expired-token-0123456789"
BCRYPT = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()

POLICY = parse_policy(
    yaml.safe_load("""
routes:
  api:
    schemes: [bearer, basic]
    realm: prefect-api
    anonymous: ["GET /api/health", "GET /api/ready"]
  ui:
    schemes: [basic]
    realm: prefect
  admins:
    principals: [alice]
  cors:
    cors_preflight: true
throttle: {max_failures_per_address: 3, max_failures_per_user: 2}
decision_cache: {max_age_seconds: 60}
"""),
    "test",
)


def snapshot(policy=POLICY) -> Snapshot:
    tokens = (
        f"ci sha256:{token_digest(CI).hex()} routes=api,admins,cors\n"
        f"ro sha256:{token_digest(RO).hex()} routes=api methods=GET,HEAD paths=/api/flows,/api/flow_runs "
        f"expires=2026-11-22T12:00:30Z\n"
        f"old sha256:{token_digest(OLD).hex()} expires=2026-01-01T00:00:00Z\n"
        f"soon sha256:{token_digest(SOON).hex()} routes=api expires=2026-11-22T12:00:30Z\n"
    )
    creds = load_secret_files(
        {"tokens": tokens.encode(), "htpasswd": f"alice:{BCRYPT}\nbob:{{SHA}}x\n".encode()}, "test"
    )
    return Snapshot(creds, policy, VerifiedCache(100))


def bearer(token: str) -> tuple[bytes, ...]:
    return (f"Bearer {token}".encode(),)


def basic(user: str, password: str) -> tuple[bytes, ...]:
    return (b"Basic " + base64.b64encode(f"{user}:{password}".encode()),)


def facts(auth=(), method="GET", path="/api/flows", client="10.0.0.1", preflight=False) -> RequestFacts:
    return RequestFacts(method=method, path=path, authorization=auth, client=client, preflight=preflight)


def run(route: str, f: RequestFacts, snap: Snapshot | None = None, throttle: Throttle | None = None) -> Decision:
    snap = snap or snapshot()
    throttle = throttle or Throttle(POLICY.throttle)
    decision = decide(route, f, snap, throttle, NOW, slow_ok=False)
    if decision is None:
        decision = decide(route, f, snap, throttle, NOW, slow_ok=True)
    assert decision is not None
    return decision


def test_valid_bearer_is_allowed_with_identity():
    d = run("api", facts(bearer(CI)))
    assert (d.status, d.reason, d.principal, d.scheme) == (200, "allowed", "ci", "bearer")
    headers = dict(response_headers(d, POLICY, "api", NOW))
    assert headers[b"x-auth-request-user"] == b"ci"
    assert headers[b"cache-control"] == b"max-age=60"


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ((), "missing"),
        (bearer("wrong-token-0123456789"), "unknown_token"),
        ((b"Bearer " + CI.encode(), b"Bearer " + CI.encode()), "malformed"),
        ((b"Bearer",), "malformed"),
        ((b"Bearer a b",), "malformed"),
        ((b"Basic !!!notbase64",), "malformed"),
        ((b"Basic " + base64.b64encode(b"nocolon"),), "malformed"),
        ((b"Basic " + base64.b64encode(b"\xff\xfe:x"),), "malformed"),
        ((b"Basic " + base64.b64encode(b"a\x00b:x"),), "malformed"),
        ((b"Basic " + base64.b64encode("\u00e9l\u00e8ve:pa\x7fss".encode()),), "malformed"),
        ((b"Basic " + base64.b64encode(b"alice:\x1f"),), "malformed"),
        ((b"Bearer \xc3\xa9t\xc3\xa9",), "malformed"),
        ((b"Bearer " + b"a" * 9000,), "malformed"),
        ((b"Digest username=x",), "unsupported_scheme"),
        ((b"",), "malformed"),
    ],
)
def test_bad_credentials_get_401_with_challenges(auth, reason):
    d = run("api", facts(auth))
    assert (d.status, d.reason) == (401, reason)
    headers = response_headers(d, POLICY, "api", NOW)
    values = [v for k, v in headers if k == b"www-authenticate"]
    assert values[0].startswith(b'Bearer realm="prefect-api"')
    assert values[1] == b'Basic realm="prefect-api", charset="UTF-8"'
    assert dict(headers)[b"cache-control"] == b"no-store"


def test_basic_bcrypt_then_cached():
    snap = snapshot()
    first = decide("ui", facts(basic("alice", "right")), snap, Throttle(POLICY.throttle), NOW, slow_ok=False)
    assert first is None  # needs the slow check, which the HTTP layer runs off the event loop
    d = run("ui", facts(basic("alice", "right")), snap)
    assert (d.status, d.principal, d.scheme) == (200, "alice", "basic")
    again = decide("ui", facts(basic("alice", "right")), snap, Throttle(POLICY.throttle), NOW, slow_ok=False)
    assert again is not None and again.allowed  # now answered from the verified cache, no bcrypt
    assert run("ui", facts(basic("alice", "wrong")), snap).reason == "bad_password"
    assert run("ui", facts(basic("mallory", "right")), snap).reason == "unknown_user"


def test_ui_route_takes_only_basic_and_challenges_only_basic():
    d = run("ui", facts(bearer(CI)))
    assert (d.status, d.reason) == (401, "scheme_not_accepted")
    assert challenges(POLICY.routes["ui"], d) == ['Basic realm="prefect", charset="UTF-8"']


def test_expired_token_is_401_invalid_token():
    d = run("default-free", facts(bearer(OLD)))
    assert d.reason == "unknown_route" and d.status == 403
    policy = parse_policy({"routes": {"r": {}}}, "t")
    d = run("r", facts(bearer(OLD)), snapshot(policy))
    assert (d.status, d.reason) == (401, "expired")
    (value, _) = challenges(policy.routes["r"], d)
    assert 'error="invalid_token"' in value and "expired" in value


@pytest.mark.parametrize(
    ("route", "auth", "method", "path", "reason"),
    [
        ("ui", (), "GET", "/", "missing"),
        ("admins", bearer(RO), "GET", "/x", "route_forbidden"),
        ("admins", bearer(CI), "GET", "/x", "principal_forbidden"),
        ("api", bearer(RO), "POST", "/api/flows", "method_forbidden"),
        ("api", bearer(RO), None, "/api/flows", "method_forbidden"),
        ("api", bearer(RO), "GET", "/api/deployments", "path_forbidden"),
        ("api", bearer(RO), "GET", "/api/flowsx", "path_forbidden"),
        ("api", bearer(RO), "GET", "/api/flows/../deployments", "path_forbidden"),
        ("api", bearer(RO), "GET", "/api/flows/%2e%2e/deployments", "path_forbidden"),
        ("api", bearer(RO), "GET", None, "path_forbidden"),
    ],
)
def test_valid_but_not_allowed_here_is_403(route, auth, method, path, reason):
    d = run(route, facts(auth, method=method, path=path))
    assert d.reason == reason
    assert d.status == (401 if reason == "missing" else 403)


def test_limited_token_inside_its_limits():
    d = run("api", facts(bearer(RO), method="HEAD", path="/api/flow_runs/123"))
    assert d.allowed and d.principal == "ro"
    # A proxy's cache key names the credential, not the request: this allow holds for HEAD on this path only,
    # so it must not be cached at all.
    assert cache_control(d, POLICY, NOW) == "no-store"


def test_a_cached_allow_never_outlives_its_token_and_exceptions_are_never_cached():
    d = run("api", facts(bearer(SOON), method="POST", path="/api/anything"))
    assert d.allowed and d.principal == "soon"
    # The proxy may cache this allow at most until the token expires (30 s), not the configured 60 s.
    assert cache_control(d, POLICY, NOW) == "max-age=30"
    anonymous = run("api", facts((), path="/api/health"))
    assert anonymous.reason == "anonymous" and cache_control(anonymous, POLICY, NOW) == "no-store"
    preflight = run("cors", facts((), method="OPTIONS", path="/x", preflight=True))
    assert preflight.reason == "preflight" and cache_control(preflight, POLICY, NOW) == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/health", True),
        ("GET", "/api/ready", True),
        ("POST", "/api/health", False),
        ("GET", "/api/healthz", False),
        ("GET", "/api/health/", False),
        ("GET", "/api/health/../flows", False),
        ("GET", "/api/health%2F..%2Fflows", False),
        ("GET", "/api//health", False),
        ("get", "/api/health", False),
        (None, "/api/health", False),
        ("GET", None, False),
    ],
)
def test_anonymous_exceptions_are_exact(method, path, allowed):
    d = run("api", facts((), method=method, path=path))
    assert d.allowed is allowed
    if allowed:
        assert d.reason == "anonymous" and d.principal is None
        assert b"x-auth-request-user" not in dict(response_headers(d, POLICY, "api", NOW))


def test_cors_preflight_only_where_enabled():
    assert run("cors", facts((), method="OPTIONS", preflight=True)).reason == "preflight"
    assert run("cors", facts((), method="OPTIONS", preflight=False)).status == 401
    assert run("api", facts((), method="OPTIONS", preflight=True)).status == 401


def test_throttle_bans_guessers_but_not_known_good_credentials():
    snap = snapshot()
    throttle = Throttle(POLICY.throttle)
    run("ui", facts(basic("alice", "right"), client="1.1.1.1"), snap, throttle)  # alice logs in first
    for _ in range(2):
        assert run("ui", facts(basic("alice", "guess"), client="6.6.6.6"), snap, throttle).reason == "bad_password"
    # alice's name is now banned: guesses get 403 without a check...
    assert run("ui", facts(basic("alice", "right2"), client="6.6.6.6"), snap, throttle).reason == "throttled"
    # ...but alice's known-good credential still works, from anywhere.
    assert run("ui", facts(basic("alice", "right"), client="6.6.6.6"), snap, throttle).allowed
    # The guesser's address is banned for tokens too, yet a valid token from it still passes.
    for _ in range(3):
        run("api", facts(bearer("guess-0123456789abcdef"), client="6.6.6.6"), snap, throttle)
    assert run("api", facts(bearer("guess-0123456789abcdeg"), client="6.6.6.6"), snap, throttle).reason == "throttled"
    assert run("api", facts(bearer(CI), client="6.6.6.6"), snap, throttle).allowed
    # Missing credentials never count.
    fresh = Throttle(ThrottleSettings(max_failures_per_address=1))
    for _ in range(5):
        run("api", facts((), client="2.2.2.2"), snap, fresh)
    assert not fresh.banned("2.2.2.2", None)


def test_path_allowed_rules():
    assert path_allowed("/api/flows", ("/api/flows",))
    assert path_allowed("/anything", ("/",))
    assert not path_allowed("/api/flows\\..\\x", ("/api/flows",))
    assert not path_allowed("relative", ("/",))


def test_parse_authorization_accepts_case_insensitive_scheme():
    assert parse_authorization((b"bEaReR " + CI.encode(),)).token == CI  # type: ignore[union-attr]
    cred = parse_authorization((b"basic " + base64.b64encode(b"bob:pa:ss"),))
    assert (cred.user, cred.password) == ("bob", "pa:ss")  # type: ignore[union-attr]


def test_only_answers_that_depend_on_nothing_but_the_credential_are_rememberable():
    assert run("api", facts(bearer(CI))).rememberable
    assert run("ui", facts(basic("alice", "right"))).rememberable
    assert not run("api", facts(bearer(RO), method="GET", path="/api/flows")).rememberable  # method/path limits
    assert not run("api", facts((), path="/api/health")).rememberable  # anonymous
    assert not run("api", facts(bearer("guess-0123456789abcdef"))).rememberable  # denials never


def test_allow_memo_keys_hold_no_credential_and_expire():
    memo = AllowMemo(max_entries=10)
    allowed = run("api", facts(bearer(CI)))
    header = b"Bearer " + CI.encode()
    key = memo.key("api", header)
    assert len(key) == 16
    assert CI.encode() not in key and token_digest(CI) != key
    assert key != AllowMemo().key("api", header)  # a secret per memo: not an unsalted hash
    assert key != memo.key("ui", header)  # the route is part of the key
    assert memo.key("a", b"1:b" + header) != memo.key("a1:b", header)  # route names cannot run into the value
    memo.remember("api", header, allowed)
    assert memo.recall("api", header, lambda: NOW.timestamp()).decision is allowed
    assert memo.recall("ui", header) is None
    assert memo.recall("api", header + b"x") is None
    expiring = run("api", facts(bearer(RO), method="GET", path="/api/flows"))._replace(rememberable=True)
    soon = b"Bearer " + RO.encode()
    memo.remember("api", soon, expiring)
    assert memo.recall("api", soon, lambda: NOW.timestamp() + 29) is not None
    assert memo.recall("api", soon, lambda: NOW.timestamp() + 30) is None  # the token expires at 12:00:30


def test_allow_memo_refuses_what_is_not_rememberable_and_is_capped():
    memo = AllowMemo(max_entries=2)
    limited = run("api", facts(bearer(RO), method="GET", path="/api/flows"))
    memo.remember("api", b"a", limited)
    assert len(memo) == 0
    allowed = run("api", facts(bearer(CI)))
    for spelling in (b"Bearer ", b"bearer ", b"BEARER "):
        memo.remember("api", spelling + CI.encode(), allowed)
    assert len(memo) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/api/flows#/../admin",  # a raw '#' is no fragment on the wire: nginx forwards it to the app
        "/api/flows;/../admin",  # path parameters
        "/api/flows/%252e%252e/admin",  # double encoding
        "/api/flows%25",
        "/api/flows/x y",
        "/api/flows/\x00",
    ],
)
def test_paths_that_could_mean_something_else_never_match(path):
    assert not path_allowed(path, ("/api/flows",))
    assert not path_allowed(path, ("/",))


def test_a_raw_hash_after_the_anonymous_path_needs_credentials():
    assert run("api", facts((), path="/api/health#/../flows")).status == 401
    assert run("api", facts((), path="/api/health;x")).status == 401


@pytest.mark.parametrize("problem", ["missing", "conflict"])
def test_an_untrusted_original_request_refuses_exceptions_and_limited_tokens_only(problem):
    def unsure(auth=(), preflight=False):
        return RequestFacts(None, None, auth, client="10.0.0.1", preflight=preflight, problem=problem)

    assert run("api", unsure()).status == 401  # no anonymous exception without a trusted method and path
    assert run("cors", unsure(preflight=True)).status == 401  # nor a preflight
    limited = run("api", unsure(bearer(RO)))
    assert (limited.status, limited.reason) == (403, "original_request_unverified")
    assert run("api", unsure(bearer(CI))).status == 200  # no limits: the path does not matter
    assert run("api", unsure(basic("bob", "x"))).status in (200, 401)


def test_the_nth_failure_answers_alike_for_existing_and_unknown_user_names():
    """Counting per name must not reveal which names exist: both get banned (403) at the same count."""
    snap, throttle = snapshot(), Throttle(ThrottleSettings(max_failures_per_address=0, max_failures_per_user=2))
    answers = {}
    for name in ("alice", "nobody-by-this-name"):
        statuses = []
        for _ in range(3):
            decision = decide("api", facts(basic(name, "wrong")), snap, throttle, NOW, slow_ok=True)
            assert decision is not None
            statuses.append(decision.status)
        answers[name] = statuses
    assert answers["alice"] == answers["nobody-by-this-name"] == [401, 401, 403]


def test_an_unknown_name_costs_a_check_of_a_kind_in_the_file():
    """With only {SHA} users, an unknown name is checked against a {SHA} decoy — not a bcrypt one that
    would take 100 ms where every real user takes microseconds."""
    from app.passwords import Decoys

    sha = "{SHA}" + base64.b64encode(__import__("hashlib").sha1(b"pw").digest()).decode()
    creds = load_secret_files({"htpasswd": f"bob:{sha}\ncarol:{sha}\n".encode()}, "t")
    snap = Snapshot(creds, POLICY, VerifiedCache(10), Decoys(creds.users))
    for name in ("bob", "nobody", "x" * 40):
        decision = decide("api", facts(basic(name, "wrong")), snap, Throttle(POLICY.throttle), NOW, slow_ok=False)
        assert decision is not None and decision.status == 401  # decided at once: no slow check needed
    # ... while with a bcrypt user in the file, unknown names need a slow check like that user.
    creds = load_secret_files({"htpasswd": f"alice:{BCRYPT}\n".encode()}, "t")
    snap = Snapshot(creds, POLICY, VerifiedCache(10), Decoys(creds.users))
    assert decide("api", facts(basic("nobody", "x")), snap, Throttle(POLICY.throttle), NOW, slow_ok=False) is None


def test_a_verified_password_survives_an_unrelated_reload_and_still_passes_a_ban():
    """Lockout on demand: ten wrong passwords for a name ban it; the real user's verified password still
    passes — also after a reload that did not change that user's hash."""
    from app.settings import Settings
    from app.state import build_state

    state = build_state(Settings(), policy=POLICY)
    htpasswd = f"alice:{BCRYPT}\n".encode()
    assert state.reloader.apply({"htpasswd": htpasswd, "tokens": f"ci sha256:{token_digest(CI).hex()}\n".encode()}, "t")
    first = decide("api", facts(basic("alice", "right")), state.store.current, state.throttle, NOW, slow_ok=True)
    assert first is not None and first.status == 200
    # An unrelated change: a token is added.
    assert state.reloader.apply({"htpasswd": htpasswd, "tokens": f"ro sha256:{token_digest(RO).hex()}\n".encode()}, "t")
    for client in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        decide(
            "api", facts(basic("alice", "guess"), client=client), state.store.current, state.throttle, NOW, slow_ok=True
        )
    assert state.throttle.banned(None, "alice")
    again = decide("api", facts(basic("alice", "right")), state.store.current, state.throttle, NOW, slow_ok=False)
    assert again is not None and again.status == 200
    # A changed hash is a changed password: the old verification no longer counts.
    new_hash = bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()
    assert state.reloader.apply({"htpasswd": f"alice:{new_hash}\n".encode()}, "t")
    after = decide("api", facts(basic("alice", "right")), state.store.current, state.throttle, NOW, slow_ok=True)
    assert after is not None and after.status == 403


def test_only_the_canonical_spelling_of_a_credential_is_rememberable():
    from app.decision import is_canonical

    assert is_canonical(b"Bearer " + CI.encode())
    assert is_canonical(b"Basic " + base64.b64encode(b"alice:right"))
    for variant in (
        b"bearer " + CI.encode(),
        b"Bearer  " + CI.encode(),
        b"Bearer\t" + CI.encode(),
        b"Bearer " + CI.encode() + b" ",
        b"BASIC " + base64.b64encode(b"alice:right"),
        b"Basic YWxpY2U6cmlnaHR=",  # non-zero padding bits: decodes to the same bytes as ...aHQ=
        b"Basic ",
        b"Digest x",
    ):
        assert not is_canonical(variant), variant


CLAIMING = parse_policy(
    yaml.safe_load("""
routes:
  api: {schemes: [bearer, basic], realm: prefect-api, path_prefixes: [/api], anonymous: ["GET /api/health"]}
  admin: {principals: [alice], path_prefixes: [/api/admin]}
  ui: {schemes: [basic], realm: prefect, path_prefixes: [/]}
  machines: {schemes: [bearer]}
"""),
    "test",
)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api", "api"),
        ("/api/flows", "api"),
        ("/api/admin", "admin"),  # the longest claimed prefix decides
        ("/api/admin/version", "admin"),
        ("/api/administrators", "api"),  # whole segments only
        ("/apix", "ui"),
        ("/", "ui"),
        ("/flows/abc", "ui"),
        # Paths another reader could take for a different one: no route, whichever would have matched.
        ("/api%2F..%2Fui", None),
        ("/ui/..%2Fapi/admin", None),
        ("/api/%2e%2e/admin", None),
        ("/api//admin", None),
        ("//api/admin", None),
        ("/api/./admin", None),
        ("/api/../admin", None),
        ("/api;x/admin", None),
        ("/api\\admin", None),
        ("/api/admin#x", None),
        ("/api/%252e", None),
        ("/api/ admin", None),
        ("api/flows", None),
        ("", None),
        (None, None),  # the front door's account is missing or contradicted
    ],
)
def test_a_request_naming_no_route_is_decided_by_the_longest_claimed_prefix(path, route):
    assert route_for_path(CLAIMING, path) == route


def test_a_path_no_route_claims_is_refused_without_a_challenge():
    unclaimed = parse_policy(yaml.safe_load("routes: {api: {path_prefixes: [/api]}}"), "test")
    d = run(BY_PATH, facts(bearer(CI), path="/ui"), snapshot(unclaimed))
    assert (d.status, d.reason) == (403, "unclaimed_path")
    assert [k for k, _ in response_headers(d, unclaimed, BY_PATH, NOW)] == [b"cache-control"]
    assert BY_PATH not in unclaimed.routes and not ROUTE_NAME_RE.fullmatch(BY_PATH)  # never a route's name


def sha_user(name: str, password: str) -> str:
    return f"{name}:{{SHA}}" + base64.b64encode(__import__("hashlib").sha1(password.encode()).digest()).decode()


def test_a_name_ban_never_locks_out_a_cheap_hash_that_verifies_even_on_a_first_login():
    """Lockout on demand of a {SHA} user: ten wrong passwords ban the name, yet the right password passes at
    once — never verified before (no cache, no memo) — while every wrong one still gets the ban's 403, for
    existing and unknown names alike."""
    from app.passwords import Decoys

    creds = load_secret_files({"htpasswd": (sha_user("admin", "right") + "\n").encode()}, "t")
    snap = Snapshot(creds, POLICY, VerifiedCache(10), Decoys(creds.users))
    throttle = Throttle(ThrottleSettings(max_failures_per_address=0, max_failures_per_user=3))
    for name in ("admin", "nobody"):
        statuses = [
            run("api", facts(basic(name, f"guess-{i}"), client=f"10.9.0.{i}"), snap, throttle).status for i in range(5)
        ]
        assert statuses == [401, 401, 401, 403, 403]  # banned by the 3rd failure: the same for both names
        assert throttle.banned(None, name)
    allowed = decide("ui", facts(basic("admin", "right"), client="10.9.1.1"), snap, throttle, NOW, slow_ok=False)
    assert allowed is not None and (allowed.status, allowed.principal) == (200, "admin")
    wrong = decide("ui", facts(basic("admin", "wrong"), client="10.9.1.1"), snap, throttle, NOW, slow_ok=False)
    assert wrong is not None and (wrong.status, wrong.reason) == (403, "throttled")


def test_an_address_ban_still_refuses_unverified_passwords_and_a_name_ban_slow_ones():
    """What still holds: from a banned address only verified passwords pass (a cheap one, once verified,
    like a slow one); under a name ban a slow hash is not checked, so its owner passes only verified."""
    from app.passwords import Decoys

    htpasswd = f"alice:{BCRYPT}\n{sha_user('admin', 'right')}\n".encode()
    creds = load_secret_files({"htpasswd": htpasswd}, "t")
    snap = Snapshot(creds, POLICY, VerifiedCache(10), Decoys(creds.users))
    throttle = Throttle(ThrottleSettings(max_failures_per_address=2, max_failures_per_user=2))
    assert run("api", facts(basic("admin", "right"), client="6.6.6.6"), snap, throttle).status == 200  # verified
    for i in range(2):
        run("api", facts(basic(f"x{i}", "guess"), client="6.6.6.6"), snap, throttle)
    assert throttle.banned("6.6.6.6", None)
    assert run("api", facts(basic("admin", "right"), client="6.6.6.6"), snap, throttle).status == 200
    assert run("api", facts(basic("alice", "right"), client="6.6.6.6"), snap, throttle).status == 403  # unverified
    for i in range(2):
        run("api", facts(basic("alice", "guess"), client=f"7.7.7.{i}"), snap, throttle)
    assert throttle.banned(None, "alice")
    unverified = decide("api", facts(basic("alice", "right"), client="8.8.8.8"), snap, throttle, NOW, slow_ok=False)
    assert unverified is not None and unverified.reason == "throttled"  # refused without a slow check


def test_the_verified_cache_survives_reloads_but_forgets_changed_and_removed_users():
    from app.settings import Settings
    from app.state import build_state

    state = build_state(Settings(), policy=POLICY)
    alice, bob = f"alice:{BCRYPT}\n", sha_user("bob", "bob-pw") + "\n"
    assert state.reloader.apply({"htpasswd": (alice + bob).encode()}, "t")
    for name, password in (("alice", "right"), ("bob", "bob-pw")):
        assert run("api", facts(basic(name, password)), state.store.current, state.throttle).status == 200
    verified = state.store.current.verified
    assert len(verified) == 2  # every kind is remembered once verified
    tokens = f"ci sha256:{token_digest(CI).hex()}\n".encode()
    assert state.reloader.apply({"htpasswd": (alice + bob).encode(), "tokens": tokens}, "t")  # unrelated change
    assert state.store.current.verified is verified and len(verified) == 2
    assert state.reloader.apply({"htpasswd": (alice + sha_user("bob", "new-pw") + "\n").encode()}, "t")
    assert len(verified) == 1  # bob's hash changed: his entry is gone
    assert state.reloader.apply({"htpasswd": bob.encode()}, "t")
    assert len(verified) == 0  # alice removed


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {CI}",  # a known token: decided in full
        "Bearer guess-0123456789abcdef",  # the guess
        "Bearer guess-0123456789abcdef==",
        "bearer guess-0123456789abcdef",  # other spellings: decided in full
        "Bearer  guess-0123456789abcdef",
        "Bearer guess 0123",
        "Bearer " + "g" * 9000,  # over MAX_AUTHORIZATION_BYTES: malformed, in full
        "Basic Z3Vlc3M6Z3Vlc3M=",
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    ],
)
@pytest.mark.parametrize("route", ["ui", "admins"])
def test_the_guess_lane_decides_exactly_what_decide_decides(value, route):
    """app.decider refuses a guess with is_unknown_bearer + refuse_unknown_token on routes without exceptions;
    wherever it applies, the decision and the failures counted are decide()'s own."""
    snap = snapshot()
    policy_route = POLICY.routes[route]
    lane_throttle, full_throttle = Throttle(POLICY.throttle), Throttle(POLICY.throttle)
    for _ in range(POLICY.throttle.max_failures_per_address + 1):
        full = run(route, facts((value.encode(),), client="6.6.6.6"), snap, full_throttle)
        if is_unknown_bearer(policy_route, value.encode(), snap):
            assert refuse_unknown_token(lane_throttle, "6.6.6.6") == full
    # The guess itself takes the lane wherever the route accepts Bearer.
    if value == "Bearer guess-0123456789abcdef":
        assert is_unknown_bearer(policy_route, value.encode(), snap) == ("bearer" in policy_route.schemes)
    assert lane_throttle.banned("6.6.6.6", None) == (
        is_unknown_bearer(policy_route, value.encode(), snap) and full_throttle.banned("6.6.6.6", None)
    )
