"""A route's jwt_issuers: what parses, what each mistake is answered with, and the Secret's JWKS rotating."""

from __future__ import annotations

import pytest
import yaml

from app.credentials import files_fingerprint, read_secret_dir
from app.errors import ConfigError
from app.metrics import Metrics
from app.policy import parse_policy
from app.reload import Reloader, SnapshotStore
from tests.support.jose import SigningKey, jwks


def policy(issuer: str, schemes: str = "[bearer]"):
    return parse_policy(yaml.safe_load(f"routes:\n  api:\n    schemes: {schemes}\n    jwt_issuers:\n{issuer}"), "p")


GOOD = "      - {issuer: https://i.example, jwks_url: https://i.example/jwks, audiences: [authgate]}\n"


def test_an_issuer_parses_with_its_defaults():
    (issuer,) = policy(GOOD).routes["api"].jwt_issuers
    assert (issuer.issuer, issuer.source, issuer.audiences, issuer.algorithms) == (
        "https://i.example",
        "jwks_url",
        frozenset({"authgate"}),
        ("RS256", "ES256"),
    )
    assert (issuer.leeway_seconds, issuer.principal_claim, issuer.min_refresh_seconds) == (30, "sub", 30.0)
    assert parse_policy({"routes": {"api": {}}}, "p").routes["api"].jwt_issuers == ()


def test_a_kubernetes_issuer_defaults_to_the_pods_own_credentials():
    (issuer,) = policy("      - kubernetes: true\n").routes["api"].jwt_issuers
    assert (issuer.issuer, issuer.location, issuer.audiences) == (
        None,
        "https://kubernetes.default.svc",
        frozenset({"authgate"}),
    )
    assert issuer.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert issuer.bearer_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("      - {issuer: x, audiences: [a]}\n", "exactly one key source"),
        ("      - {issuer: x, audiences: [a], jwks_url: 'https://a/j', kubernetes: true}\n", "exactly one key source"),
        ("      - {jwks_url: 'https://a/j', audiences: [a]}\n", r"jwt_issuers\[0\]\.issuer: required"),
        ("      - {issuer: x, jwks_url: 'https://a/j'}\n", r"audiences: required"),
        ("      - {issuer: x, jwks_url: 'http://a.example/j', audiences: [a]}\n", "over https"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], algorithms: [HS256]}\n", "never none or HMAC"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], algorithms: [none]}\n", "never none or HMAC"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], leeway_seconds: 3600}\n", "leeway_seconds"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], min_refresh_seconds: 0}\n", "at least 1"),
        ("      - {issuer: x, jwks_secret_key: tokens, audiences: [a]}\n", "jwks\\*\\.json"),
        ("      - {issuer: x, jwks_secret_key: jwks.json, audiences: [a], ca_file: /ca}\n", "ca_file"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], claims: {ref: []}}\n", r"claims\.ref"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], colour: red}\n", "unknown key"),
        (GOOD + GOOD, "listed twice"),
        ("      - {issuer: x, jwks_url: 'https://a/j', audiences: [a], token_review: true}\n", "only with kubernetes"),
    ],
)
def test_bad_issuers_name_the_key(issuer, message):
    with pytest.raises(ConfigError, match=message):
        policy(issuer)


def test_jwt_issuers_need_the_bearer_scheme():
    with pytest.raises(ConfigError, match="add bearer to the route's schemes"):
        policy(GOOD, schemes="[basic]")


def test_a_jwks_in_the_mounted_secret_is_read_and_rotates_with_it(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "tokens").write_text("")
    (secret / "jwks-ci.json").write_bytes(jwks(SigningKey.rsa("k1")))
    (secret / "unrelated.json").write_text("{}")
    files = read_secret_dir(secret)
    assert sorted(files) == ["jwks-ci.json", "tokens"]
    # an unchanged tokens file with a new JWKS is a change
    assert files_fingerprint(files) != files_fingerprint({"tokens": b""})
    assert files_fingerprint({"tokens": b""}) == files_fingerprint({"tokens": b"", "other": b"x"})

    p = policy("      - {issuer: x, jwks_secret_key: jwks-ci.json, audiences: [a]}\n")
    reloader = Reloader(p, SnapshotStore(), Metrics())
    assert reloader.load_directory(secret)
    first = reloader.store.current
    assert first is not None and first.jwt is not None and set(first.jwt.secret["jwks-ci.json"].keys) == {"k1"}
    (secret / "jwks-ci.json").write_bytes(jwks(SigningKey.rsa("k2")))
    assert reloader.load_directory(secret)
    second = reloader.store.current
    assert second is not first and second is not None and second.jwt is not None
    assert set(second.jwt.secret["jwks-ci.json"].keys) == {"k2"}
    # a broken JWKS keeps the last good snapshot
    (secret / "jwks-ci.json").write_text("{")
    assert not reloader.load_directory(secret)
    assert reloader.store.current is second


def test_routes_without_issuers_load_no_jwt_keys():
    reloader = Reloader(parse_policy({"routes": {"api": {}}}, "p"), SnapshotStore(), Metrics())
    assert reloader.apply({"tokens": b""}, "test")
    assert reloader.store.current is not None and reloader.store.current.jwt is None
