"""OpenID sign-in's pure parts: the policy's ``sign_in.oidc`` (app.oidc_policy), the sealed flow cookie
(app.oidc_flow), discovery, the authorization request and the ID token's checks (app.oidc_client) with keys
the tests make, and ``group:``/``domain:`` principals on sessions (app.decision, app.sessions)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import urllib.parse
from typing import Any

import pytest

from app import oidc_client
from app.credentials import load_secret_files
from app.decision import RequestFacts, admits, decide
from app.errors import ConfigError
from app.oidc_client import OidcClient, Person, Refusal, parse_discovery, pkce_challenge
from app.oidc_flow import FlowState, open_flow, seal_flow, state_matches
from app.oidc_policy import parse_oidc
from app.policy import parse_policy
from app.session_keys import parse_session_keys
from app.sessions import BrowserFacts, issue, issue_oidc
from app.sessions import load as load_session
from app.settings import Settings
from app.state import build_state
from tests.support.jose import SigningKey, hs256_with_public_key, jwks, unsigned

ISSUER = "https://id.example.com"
NOW = 1_800_000_000.0
KEY = SigningKey.rsa("k1")
OTHER = SigningKey.rsa("k2")
SESSION_KEYS = base64.urlsafe_b64encode(b"s" * 32).decode()
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "end_session_endpoint": f"{ISSUER}/logout",
    "code_challenge_methods_supported": ["S256"],
}


def settings(**extra: Any):
    parsed = parse_oidc({"issuer": ISSUER, "client_id": "authgate", **extra}, "/authgate/", "t")
    assert parsed is not None
    return parsed


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": "authgate",
        "sub": "u-1",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "nonce": "the-nonce",
        "email": "Alice@Example.com",
        "email_verified": True,
        "preferred_username": "alice",
        "groups": ["ops", "staff", "unrelated"],
        **extra,
    }


def client(**extra: Any) -> OidcClient:
    documents = {
        f"{ISSUER}/.well-known/openid-configuration": json.dumps(DISCOVERY).encode(),
        f"{ISSUER}/jwks": jwks(KEY),
    }
    made = OidcClient(settings(**extra), fetch=lambda url, _issuer: documents[url], clock=lambda: 1000.0)
    assert made.discover() is not None
    return made


GROUPS = frozenset({"ops", "staff"})


def verify(token: str, nonce: str = "the-nonce", now: float = NOW, **extra: Any) -> Person | Refusal:
    return client(**extra).verify_id_token(token, nonce, now, GROUPS)


# -- policy --------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert s.discovery_url == f"{ISSUER}/.well-known/openid-configuration"
    assert (s.scopes, s.principal_claim, s.require_email_verified, s.groups_claim) == (
        ("openid", "email", "profile"),
        "email",
        True,
        "groups",
    )
    assert s.algorithms == ("RS256", "ES256") and s.client_secret_key == "oidc-client-secret"
    assert s.display_name == "id.example.com"
    assert settings(principal_claim="sub").require_email_verified is False


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"issuer": "http://id.example.com"}, "https"),
        ({"client_id": None}, "client_id"),
        ({"scopes": ["email"]}, "openid"),
        ({"algorithms": ["HS256"]}, "never none or HMAC"),
        ({"algorithms": ["none"]}, "never none or HMAC"),
        ({"client_secret_key": "tokens"}, "oidc*"),
        ({"redirect_url": "https://app.example.com/elsewhere"}, "callback"),
        ({"require_email_verified": "yes"}, "true or false"),
        ({"surprise": 1}, "unknown key"),
        ({"display_name": "<b>"}, "display_name"),
    ],
)
def test_bad_oidc_settings_are_named(extra: dict[str, Any], words: str) -> None:
    raw = {"issuer": ISSUER, "client_id": "authgate", **extra}
    with pytest.raises(ConfigError, match=words):
        parse_oidc(raw, "/authgate/", "t")


def test_group_and_domain_principals_need_openid_sign_in_and_are_checked() -> None:
    base = {"routes": {"ui": {"schemes": ["session"], "principals": ["group:ops", "domain:Example.COM"]}}}
    with pytest.raises(ConfigError, match="only from OpenID sign-in"):
        parse_policy({**base, "sign_in": {}}, "t")
    policy = parse_policy({**base, "sign_in": {"oidc": {"issuer": ISSUER, "client_id": "authgate"}}}, "t")
    assert policy.routes["ui"].principals == frozenset({"group:ops", "domain:example.com"})
    assert policy.session.groups == frozenset({"ops"})
    for bad in ("domain:", "domain:not a domain", "group:"):
        with pytest.raises(ConfigError, match="principals"):
            parse_policy(
                {
                    "routes": {"ui": {"schemes": ["session"], "principals": [bad]}},
                    "sign_in": {"oidc": {"issuer": ISSUER, "client_id": "authgate"}},
                },
                "t",
            )


# -- the flow cookie -----------------------------------------------------------------------------------------


def test_the_flow_cookie_opens_once_sealed_and_not_when_changed_expired_or_a_session() -> None:
    keys = parse_session_keys(SESSION_KEYS)
    flow = FlowState("st", "no", "ve", "/flows", "https://h/authgate/oidc/callback", int(NOW) + 600)
    sealed = seal_flow(keys, flow)
    assert open_flow(keys, (sealed,), NOW) == flow
    assert open_flow(keys, (sealed,), NOW + 600) == "flow_expired"
    assert open_flow(keys, (), NOW) == "flow_missing"
    assert open_flow(keys, (sealed, sealed), NOW) == "flow_invalid"
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert open_flow(keys, (flipped,), NOW) == "flow_invalid"
    assert open_flow(parse_session_keys(base64.urlsafe_b64encode(b"o" * 32).decode()), (sealed,), NOW) == "flow_invalid"
    session = keys.seal(json.dumps({"u": "alice", "v": "form", "i": 1, "e": 2, "x": 2, "h": "x"}).encode())
    assert open_flow(keys, (session,), NOW) == "flow_invalid"
    assert state_matches(flow, "st") and not state_matches(flow, "sT") and not state_matches(flow, None)


# -- discovery and the authorization request -----------------------------------------------------------------


def test_discovery_must_name_the_configured_issuer_and_https_endpoints() -> None:
    s = settings()
    assert parse_discovery(json.dumps(DISCOVERY).encode(), s).end_session_endpoint == f"{ISSUER}/logout"
    for change in (
        {"issuer": "https://evil.example"},
        {"token_endpoint": "http://id.example.com/token"},
        {"jwks_uri": None},
    ):
        with pytest.raises(oidc_client.DiscoveryError):
            parse_discovery(json.dumps({**DISCOVERY, **change}).encode(), s)
    with pytest.raises(oidc_client.DiscoveryError, match="S256"):
        parse_discovery(json.dumps({**DISCOVERY, "code_challenge_methods_supported": ["plain"]}).encode(), s)


def test_an_unreachable_provider_is_asked_again_at_a_bounded_rate() -> None:
    calls: list[str] = []
    now = [1000.0]

    def down(url: str, _issuer: Any) -> bytes:
        calls.append(url)
        raise OSError("refused")

    made = OidcClient(settings(), fetch=down, clock=lambda: now[0])
    assert made.discover() is None and made.discover() is None
    assert len(calls) == 1
    now[0] += oidc_client.DISCOVERY_RETRY_SECONDS
    assert made.discover() is None and len(calls) == 2


def test_the_authorization_request_carries_pkce_s256_state_and_nonce() -> None:
    made = client()
    assert made.metadata is not None
    url = made.authorization_url(made.metadata, "https://h/authgate/oidc/callback", "st", "no", "verifier-" * 6)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query == {
        "response_type": "code",
        "client_id": "authgate",
        "redirect_uri": "https://h/authgate/oidc/callback",
        "scope": "openid email profile",
        "state": "st",
        "nonce": "no",
        "code_challenge": pkce_challenge("verifier-" * 6),
        "code_challenge_method": "S256",
    }
    # RFC 7636 appendix B's example
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_the_end_session_url_only_where_the_provider_lists_one() -> None:
    made = client()
    url = made.end_session_url("https://h/authgate/sign_in")
    assert url == f"{ISSUER}/logout?client_id=authgate&post_logout_redirect_uri=https%3A%2F%2Fh%2Fauthgate%2Fsign_in"
    assert client(end_session=False).end_session_url("https://h/") is None


# -- the ID token --------------------------------------------------------------------------------------------


def test_a_good_id_token_gives_the_principal_verified_email_and_admitted_groups() -> None:
    assert verify(KEY.sign(claims())) == Person("alice@example.com", ("ops", "staff"), "alice@example.com")
    assert verify(KEY.sign(claims()), principal_claim="preferred_username") == Person(
        "alice", ("ops", "staff"), "alice@example.com"
    )
    unverified = verify(KEY.sign(claims(email_verified=False)), principal_claim="sub")
    assert unverified == Person("u-1", ("ops", "staff"), None)  # an unverified address is never kept


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: KEY.sign(claims())[:-6] + "AAAAAA", "id_token_signature", id="id_token_signature-3"),
        pytest.param(lambda: OTHER.sign(claims(), kid="k1"), "id_token_signature", id="id_token_signature-4"),
        pytest.param(lambda: unsigned(claims()), "id_token_algorithm", id="id_token_algorithm-5"),
        pytest.param(lambda: hs256_with_public_key(KEY, claims()), "id_token_algorithm", id="id_token_algorithm-6"),
        pytest.param(lambda: KEY.sign(claims(iss="https://evil.example")), "id_token_issuer", id="id_token_issuer-7"),
        pytest.param(lambda: KEY.sign(claims(aud="someone-else")), "id_token_audience", id="id_token_audience-8"),
        pytest.param(
            lambda: KEY.sign(claims(aud=["authgate", "other"])), "id_token_audience", id="id_token_audience-9"
        ),  # several audiences, no azp
        pytest.param(lambda: KEY.sign(claims(exp=NOW - 31)), "id_token_expired", id="id_token_expired-10"),
        pytest.param(lambda: KEY.sign(claims(iat=NOW + 600)), "id_token_not_yet_valid", id="id_token_not_yet_valid-11"),
        pytest.param(lambda: KEY.sign(claims(nonce="another")), "id_token_nonce", id="id_token_nonce-12"),
        pytest.param(
            lambda: KEY.sign({k: v for k, v in claims().items() if k != "nonce"}),
            "id_token_nonce",
            id="id_token_nonce-13",
        ),
        pytest.param(lambda: KEY.sign(claims(email_verified=False)), "email_unverified", id="email_unverified-14"),
        pytest.param(lambda: KEY.sign(claims(email_verified="true")), "email_unverified", id="email_unverified-15"),
        pytest.param(
            lambda: KEY.sign({k: v for k, v in claims().items() if k != "exp"}),
            "id_token_malformed",
            id="id_token_malformed-16",
        ),
        pytest.param(lambda: "not.a.jwt", "id_token_malformed", id="id_token_malformed-17"),
    ],
)
def test_a_bad_id_token_is_refused_with_its_reason(make: Any, reason: str) -> None:
    assert verify(make()) == Refusal(reason)


def test_an_id_token_with_its_azp_for_several_audiences_passes() -> None:
    assert isinstance(verify(KEY.sign(claims(aud=["authgate", "other"], azp="authgate"))), Person)


def test_the_exchange_posts_the_code_with_the_verifier_and_maps_invalid_grant() -> None:
    made = client()
    sent: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def post(answer: tuple[int, dict[str, Any]]) -> Any:
        def _post(url: str, form: dict[str, str], headers: dict[str, str], _settings: Any) -> Any:
            sent.append((url, form, headers))
            return oidc_client._Response(answer[0], json.dumps(answer[1]).encode())

        return _post

    made.post = post((200, {"id_token": KEY.sign(claims()), "access_token": "x", "token_type": "Bearer"}))
    assert isinstance(made.exchange("c0de", "https://h/cb", "ver", "the-nonce", "s3cret", NOW, GROUPS), Person)
    url, form, headers = sent[0]
    assert url == f"{ISSUER}/token"
    assert form == {
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": "https://h/cb",
        "code_verifier": "ver",
    }
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"authgate:s3cret").decode()
    made.post = post((400, {"error": "invalid_grant"}))
    assert made.exchange("c0de", "https://h/cb", "ver", "the-nonce", "s3cret", NOW, GROUPS) == Refusal("code_refused")
    made.post = post((500, {"error": "server_error"}))
    assert made.exchange("c0de", "https://h/cb", "ver", "the-nonce", "s3cret", NOW, GROUPS) == Refusal("provider_error")


# -- sessions and principals ---------------------------------------------------------------------------------

POLICY = parse_policy(
    {
        "routes": {
            "ui": {"schemes": ["session"]},
            "ops": {"schemes": ["session"], "principals": ["group:ops"]},
            "corp": {"schemes": ["session", "basic"], "principals": ["domain:example.com", "carol@example.com"]},
        },
        "sign_in": {"oidc": {"issuer": ISSUER, "client_id": "authgate"}},
    },
    "t",
)


def test_admits_by_name_group_or_verified_domain_only() -> None:
    principals = frozenset({"bob", "group:ops", "domain:example.com"})
    assert admits(principals, "bob")
    assert admits(principals, "x", ("ops",))
    assert admits(principals, "x", (), "x@Example.com")
    assert not admits(principals, "alice@example.com")  # a name that merely looks like an address
    assert not admits(principals, "x", ("staff",), "x@example.com.evil")


def _decide(route: str, cookie: str, htpasswd: str = "") -> Any:
    state = build_state(Settings(), policy=POLICY)
    files = {"session-keys": SESSION_KEYS.encode(), "oidc-client-secret": b"s3cret\n"}
    if htpasswd:
        files["htpasswd"] = htpasswd.encode()
    assert state.reloader.apply(files, "t")
    snapshot = state.store.current
    assert snapshot is not None
    browser = BrowserFacts((cookie,), "same-origin", "navigate", None, "h", True)
    facts = RequestFacts(method="GET", path="/", authorization=(), browser=browser)
    return decide(route, facts, snapshot, state.throttle, dt.datetime.fromtimestamp(NOW, dt.UTC), slow_ok=True)


def _oidc_cookie(principal: str, groups: tuple[str, ...], email: str | None, policy: Any = POLICY) -> str:
    credentials = load_secret_files({"session-keys": SESSION_KEYS.encode(), "oidc-client-secret": b"x"}, "t")
    value, _ = issue_oidc(credentials, principal, groups, email, NOW, policy.session)
    return value


def test_oidc_sessions_pass_group_and_domain_rules() -> None:
    alice = _oidc_cookie("alice@example.com", ("ops",), "alice@example.com")
    bob = _oidc_cookie("bob@elsewhere.example", (), "bob@elsewhere.example")
    assert [_decide(route, alice).status for route in ("ui", "ops", "corp")] == [200, 200, 200]
    assert [_decide(route, bob).status for route in ("ui", "ops", "corp")] == [200, 403, 403]
    assert _decide("ui", alice).principal == "alice@example.com"


def test_a_changed_provider_ends_oidc_sessions() -> None:
    cookie = _oidc_cookie("alice@example.com", ("ops",), "alice@example.com")
    other = parse_policy(
        {"routes": {"ui": {"schemes": ["session"]}}, "sign_in": {"oidc": {"issuer": ISSUER, "client_id": "other"}}},
        "t",
    )
    credentials = load_secret_files({"session-keys": SESSION_KEYS.encode(), "oidc-client-secret": b"x"}, "t")
    assert load_session((cookie,), credentials, POLICY.session, NOW)[1] == "allowed"
    assert load_session((cookie,), credentials, other.session, NOW)[1] == "session_provider_changed"
    form_only = parse_policy({"routes": {"ui": {"schemes": ["session"]}}, "sign_in": {}}, "t")
    assert load_session((cookie,), credentials, form_only.session, NOW)[1] == "session_provider_changed"


def test_a_form_session_never_matches_a_domain_rule() -> None:
    # An htpasswd user named like an address has no address the provider verified: domain: never admits it.
    line = "dave@example.com:{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
    credentials = load_secret_files({"session-keys": SESSION_KEYS.encode(), "htpasswd": line.encode()}, "t")
    form, _ = issue(credentials, credentials.users["dave@example.com"], NOW, POLICY.session)
    assert _decide("ui", form, htpasswd=line).status == 200
    assert _decide("corp", form, htpasswd=line).status == 403
    # An OIDC session without a verified address passes by its name only.
    carol = _oidc_cookie("carol@example.com", (), None)
    assert _decide("corp", carol).status == 200
    assert _decide("ops", carol).status == 403


def test_a_refreshed_oidc_session_keeps_its_groups_and_address() -> None:
    cookie = _oidc_cookie("alice@example.com", ("ops",), "alice@example.com")
    credentials = load_secret_files({"session-keys": SESSION_KEYS.encode(), "oidc-client-secret": b"x"}, "t")
    later = NOW + POLICY.session.idle_timeout_seconds * 0.75
    _, reason, refreshed = load_session((cookie,), credentials, POLICY.session, later)
    assert reason == "allowed" and refreshed is not None
    again, _, _ = load_session((refreshed,), credentials, POLICY.session, later)
    assert again is not None and (again.via, again.groups, again.email) == ("oidc", ("ops",), "alice@example.com")
