"""JWT bearer tokens through app.decision.decide: every rule of a route's jwt_issuers, with keys these tests
make (a JWKS in the Secret, and one 'fetched' through an injected fetch and clock)."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import yaml

from app.credentials import load_secret_files, token_digest
from app.decision import AllowMemo, Decision, RequestFacts, Snapshot, challenges, decide
from app.jwt_bearer import looks_like_jws
from app.jwt_keys import JwtKeys, remote_key_sets, secret_key_sets
from app.passwords import VerifiedCache
from app.policy import parse_policy
from app.throttle import Throttle
from tests.support.jose import SigningKey, hs256_with_public_key, jwks, unsigned

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
T = int(NOW.timestamp())
STATIC = "ci-token-0123456789abcdef"
CI_ISS = "https://token.actions.example"
REMOTE_ISS = "https://issuer.example"
K1 = SigningKey.rsa("k1")
K2 = SigningKey.rsa("k2")
EC = SigningKey.ec("e1")
STRANGER = SigningKey.rsa("k1")  # same kid, not the issuer's key

POLICY = parse_policy(
    yaml.safe_load(f"""
routes:
  api:
    schemes: [bearer, basic]
    realm: prefect-api
    jwt_issuers:
      - issuer: {CI_ISS}
        jwks_secret_key: jwks-ci.json
        audiences: [authgate]
        algorithms: [RS256, ES256]
        leeway_seconds: 10
        claims: {{repository: org/app, ref: refs/heads/main, sub: "repo:org/app:*"}}
        principal_claim: sub
        principal_prefix: "gha:"
      - issuer: {REMOTE_ISS}
        jwks_url: https://issuer.example/jwks
        audiences: authgate
        min_refresh_seconds: 30
        refresh_seconds: 300
  admins:
    schemes: [bearer]
    principals: ["gha:repo:org/app:ref:refs/heads/main"]
    jwt_issuers:
      - issuer: {CI_ISS}
        jwks_secret_key: jwks-ci.json
        audiences: [authgate]
        claims: {{repository: org/app}}
        principal_prefix: "gha:"
  static:
    schemes: [bearer]
throttle: {{max_failures_per_address: 3}}
decision_cache: {{max_age_seconds: 60}}
"""),
    "test",
)


class FakeIssuer:
    """An issuer's JWKS endpoint: counts fetches, can go down."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    def __call__(self, url: str, issuer: object) -> bytes:
        assert url == "https://issuer.example/jwks"
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return jwks(*self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(remote: FakeIssuer | None = None, clock: Clock | None = None, ci_keys=(K1, EC)) -> Snapshot:
    files = {"tokens": f"ci sha256:{token_digest(STATIC).hex()}\n".encode(), "jwks-ci.json": jwks(*ci_keys)}
    issuers = [i for route in POLICY.routes.values() for i in route.jwt_issuers]
    keys = JwtKeys(
        secret_key_sets(files, {"jwks-ci.json"}, "test"),
        remote_key_sets(issuers, remote or FakeIssuer(K2), clock or Clock()),
    )
    return Snapshot(load_secret_files(files, "test"), POLICY, VerifiedCache(10), jwt=keys)


def gha(**overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": CI_ISS,
        "aud": "authgate",
        "sub": "repo:org/app:ref:refs/heads/main",
        "repository": "org/app",
        "ref": "refs/heads/main",
        "iat": T - 60,
        "nbf": T - 60,
        "exp": T + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def facts(token: str, client: str = "10.0.0.1") -> RequestFacts:
    return RequestFacts("GET", "/api/flows", (f"Bearer {token}".encode(),), client)


def run(route: str, token: str, snap: Snapshot, throttle: Throttle | None = None, now=NOW) -> Decision:
    throttle = throttle or Throttle(POLICY.throttle)
    decision = decide(route, facts(token), snap, throttle, now, slow_ok=False)
    if decision is None:
        decision = decide(route, facts(token), snap, throttle, now, slow_ok=True)
    assert decision is not None
    return decision


def test_a_valid_jwt_is_allowed_as_its_principal_until_its_own_exp():
    snap = snapshot()
    decision = run("api", K1.sign(gha()), snap)
    assert decision == Decision(
        200,
        "allowed",
        scheme="bearer",
        principal="gha:repo:org/app:ref:refs/heads/main",
        expires=dt.datetime.fromtimestamp(T + 300, dt.UTC),
        rememberable=True,
    )
    assert run("api", EC.sign(gha()), snap).allowed  # ES256 from the same JWKS
    assert run("admins", K1.sign(gha()), snap).allowed  # the route's principals hold the JWT's principal


def test_a_remembered_jwt_allow_ends_at_its_exp():
    snap = snapshot()
    token = K1.sign(gha(exp=T + 5))
    decision = run("api", token, snap)
    memo = AllowMemo()
    memo.remember("api", f"Bearer {token}".encode(), decision)
    assert memo.recall("api", f"Bearer {token}".encode(), clock=lambda: T + 4) is not None
    assert memo.recall("api", f"Bearer {token}".encode(), clock=lambda: T + 5) is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (K1.sign(gha(exp=T - 11)), "jwt_expired"),  # past exp + 10 s leeway
        (K1.sign(gha(nbf=T + 11)), "jwt_not_yet_valid"),
        (K1.sign(gha(iat=T + 11)), "jwt_not_yet_valid"),
    ],
    ids=lambda value: value if value.startswith("jwt_") else "token",
)
def test_time_claims_hold_with_the_bounded_leeway(token, reason):
    decision = run("api", token, snapshot())
    assert (decision.status, decision.reason, decision.bearer_error) == (401, reason, "expired")
    # just inside the leeway they pass
    assert run("api", K1.sign(gha(exp=T - 9)), snapshot()).allowed
    assert run("api", K1.sign(gha(nbf=T + 9, iat=T + 9)), snapshot()).allowed


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (K1.sign(gha(aud="someone-else")), "jwt_audience"),
        (K1.sign(gha(aud=["a", "b"])), "jwt_audience"),
        (K1.sign(gha(aud=None)), "jwt_audience"),
        (K1.sign(gha(iss="https://evil.example")), "jwt_unknown_issuer"),
        (K1.sign(gha(iss=None)), "jwt_unknown_issuer"),
        (K1.sign(gha(exp=None)), "jwt_malformed"),  # a token that never expires is not taken
        (K1.sign(gha(exp="tomorrow")), "jwt_malformed"),
        (unsigned(gha()), "jwt_algorithm"),
        (hs256_with_public_key(K1, gha()), "jwt_algorithm"),
        (K1.sign(gha(), alg="RS512"), "jwt_algorithm"),  # a valid RSA algorithm the route does not allow
        (STRANGER.sign(gha()), "jwt_signature"),  # right kid, wrong key
        (K1.sign(gha(), kid="nope"), "jwt_unknown_key"),
        (K1.sign(gha(), kid=None), "jwt_unknown_key"),  # no kid and the set offers a choice
        (EC.sign(gha(), kid="k1"), "jwt_unknown_key"),  # an ES256 token naming an RSA key
        (K1.sign(gha(repository="org/other")), "jwt_claims"),
        (K1.sign(gha(ref="refs/heads/dev")), "jwt_claims"),
        (K1.sign(gha(sub="repo:other/app:ref:refs/heads/main")), "jwt_claims"),
        (K1.sign(gha(ref=None)), "jwt_claims"),
        (K1.sign(gha(sub="bad\nname")), "jwt_claims"),
        ("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "jwt_malformed"),
        ("e30.e30.", "jwt_unknown_issuer"),
    ],
    ids=lambda value: value if value.startswith("jwt_") else "token",  # tokens differ per worker (new keys)
)
def test_every_rule_refuses_with_invalid_token(token, reason):
    decision = run("api", token, snapshot())
    assert (decision.status, decision.reason, decision.scheme, decision.principal) == (401, reason, "bearer", None)
    route = POLICY.routes["api"]
    assert challenges(route, decision)[0] == 'Bearer realm="prefect-api", error="invalid_token"'


def test_a_route_without_issuers_answers_a_jwt_exactly_as_before():
    decision = run("static", K1.sign(gha()), snapshot())
    assert decision == Decision(401, "unknown_token", scheme="bearer", bearer_error="invalid_token")
    assert run("static", STATIC, snapshot()).allowed
    assert not looks_like_jws(STATIC) and looks_like_jws(unsigned(gha()))


def test_a_static_token_still_wins_on_a_jwt_route():
    assert run("api", STATIC, snapshot()).principal == "ci"


def test_route_principals_apply_to_jwt_principals():
    decision = run("admins", K1.sign(gha(sub="repo:org/app:ref:refs/heads/dev", ref="refs/heads/dev")), snapshot())
    assert (decision.status, decision.reason) == (403, "principal_forbidden")


def test_failed_jwts_count_toward_the_address_ban_and_a_valid_one_still_passes():
    snap, throttle = snapshot(), Throttle(POLICY.throttle)
    for _ in range(3):
        assert run("api", STRANGER.sign(gha()), snap, throttle).status == 401
    assert run("api", STRANGER.sign(gha()), snap, throttle).reason == "throttled"
    assert run("api", K1.sign(gha()), snap, throttle).allowed


def test_unknown_kid_fetches_once_then_refuses_within_the_bound():
    issuer, clock = FakeIssuer(K2), Clock()
    snap = snapshot(issuer, clock)
    remote_claims = {"iss": REMOTE_ISS, "aud": "authgate", "sub": "svc", "exp": T + 300}
    # the first token of a remote issuer needs its keys: decide() asks for the worker thread first
    assert decide("api", facts(K2.sign(remote_claims)), snap, Throttle(POLICY.throttle), NOW, slow_ok=False) is None
    assert run("api", K2.sign(remote_claims), snap).principal == "svc"
    assert issuer.fetches == 1
    # known kid: no fetch, decided on the event loop
    assert decide("api", facts(K2.sign(remote_claims)), snap, Throttle(POLICY.throttle), NOW, slow_ok=False)
    # a stream of unknown kids: one refresh, then refusal without fetching until min_refresh_seconds pass
    clock.now += 31
    for n in range(20):
        assert run("api", K2.sign(remote_claims, kid=f"made-up-{n}"), snap).reason == "jwt_unknown_key"
    assert issuer.fetches == 2
    # a rotated-in key is found by the next allowed refresh
    k3 = SigningKey.rsa("k3")
    issuer.keys.append(k3)
    assert run("api", k3.sign(remote_claims), snap).reason == "jwt_unknown_key"
    clock.now += 31
    assert run("api", k3.sign(remote_claims), snap).allowed
    assert issuer.fetches == 3


def test_an_unreachable_issuer_serves_the_last_good_keys_and_never_fails_open(caplog):
    issuer, clock = FakeIssuer(K2), Clock()
    snap = snapshot(issuer, clock)
    claims = {"iss": REMOTE_ISS, "aud": "authgate", "sub": "svc", "exp": T + 300}
    assert run("api", K2.sign(claims), snap).allowed
    issuer.down = True
    clock.now += 301  # the set is stale: a refresh is tried, fails, and the last good keys still verify
    with caplog.at_level(logging.WARNING, "authgate.jwt"):
        assert run("api", K2.sign(claims), snap).allowed
    assert issuer.fetches == 2
    assert "keeping the last good set" in caplog.text and K2.sign(claims) not in caplog.text
    assert run("api", SigningKey.rsa("k2").sign(claims), snap).reason == "jwt_signature"


def test_an_issuer_never_reached_refuses_its_tokens():
    issuer = FakeIssuer(K2)
    issuer.down = True
    claims = {"iss": REMOTE_ISS, "aud": "authgate", "sub": "svc", "exp": T + 300}
    decision = run("api", K2.sign(claims), snapshot(issuer))
    assert (decision.status, decision.reason) == (401, "jwt_keys_unavailable")


def test_a_jwks_in_the_secret_is_checked_like_the_rest_of_it():
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match=r"jwks-ci\.json.*is not in the Secret"):
        secret_key_sets({}, {"jwks-ci.json"}, "test")
    with pytest.raises(ConfigError, match="not JSON"):
        secret_key_sets({"jwks-ci.json": b"{"}, {"jwks-ci.json"}, "test")
    private = K1.public_jwk() | {"d": "AQAB"}
    with pytest.raises(ConfigError, match="private key"):
        secret_key_sets({"jwks-ci.json": json.dumps({"keys": [private]}).encode()}, {"jwks-ci.json"}, "test")
    weak = SigningKey.rsa("weak", bits=1024)
    oct_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}
    doc = json.dumps({"keys": [weak.public_jwk(), oct_key]}).encode()
    with pytest.raises(ConfigError, match="no usable signature key"):
        secret_key_sets({"jwks-ci.json": doc}, {"jwks-ci.json"}, "test")


def test_a_full_allow_memo_makes_room_among_expired_jwt_allows_only():
    snap = snapshot()
    memo = AllowMemo(max_entries=2, clock=lambda: T)
    old = [K1.sign(gha(exp=T - 5, jti=str(n))) for n in range(2)]
    for token in old:  # remembered when still valid (decided a minute earlier)
        memo.remember("api", f"Bearer {token}".encode(), run("api", token, snap, now=NOW - dt.timedelta(minutes=1)))
    assert len(memo) == 2
    fresh = K1.sign(gha(jti="new"))
    memo.remember("api", f"Bearer {fresh}".encode(), run("api", fresh, snap))
    assert len(memo) == 1 and memo.recall("api", f"Bearer {fresh}".encode(), clock=lambda: T) is not None
