import pytest
import yaml

from app.errors import ConfigError
from app.policy import DEFAULT_POLICY, load_policy, parse_policy
from tests.support.procs import REPO_ROOT


def test_default_policy_is_one_route_taking_both_schemes():
    assert load_policy(None) is DEFAULT_POLICY
    route = DEFAULT_POLICY.routes["default"]
    assert route.schemes == ("bearer", "basic") and route.principals is None and not route.anonymous


def test_prefect_example_policy():
    policy = load_policy(REPO_ROOT / "examples" / "policy-prefect.yaml")
    assert set(policy.routes) == {"api", "ui"}
    assert policy.routes["api"].anonymous == {("GET", "/api/health"), ("GET", "/api/ready")}
    assert policy.routes["ui"].schemes == ("basic",)
    assert policy.throttle.enabled


def test_full_policy_parses():
    policy = parse_policy(
        yaml.safe_load("""
routes:
  api:
    schemes: [Basic, bearer]
    realm: r
    principals: [ci, alice]
    anonymous: ["GET /api/health"]
    cors_preflight: true
throttle: {enabled: false, window_seconds: 10, max_failures_per_user: 3, max_failures_per_address: 0, ban_seconds: 5}
decision_cache: {max_age_seconds: 30}
verify_cache: {max_entries: 5}
"""),
        "p.yaml",
    )
    api = policy.routes["api"]
    assert api.schemes == ("basic", "bearer") and api.principals == {"ci", "alice"} and api.cors_preflight
    assert policy.throttle.max_failures_per_user == 3 and not policy.throttle.enabled
    assert policy.decision_cache_max_age == 30 and policy.verify_cache_max_entries == 5


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("routes: {}", "define at least one route"),
        ("routes: {api: {}}\nextra: 1", "unknown key(s) 'extra'"),
        ("routes: {api: {schemes: [digest]}}", "'digest' is not bearer or basic"),
        ("routes: {api: {schemes: []}}", "non-empty list"),
        ("routes: {api: {anonymous: ['/api/health']}}", "is not 'METHOD /exact/path'"),
        ("routes: {api: {anonymous: ['GET /api/*']}}", "without query, wildcard"),
        ("routes: {api: {anonymous: ['GET /api/health#x']}}", "without query, wildcard, % # ;"),
        ("routes: {api: {anonymous: ['GET /api/h%65alth']}}", "without query, wildcard, % # ;"),
        ("routes: {api: {anonymous: ['GET /api/health;x']}}", "without query, wildcard, % # ;"),
        ("routes: {api: {}}\nthrottle: {max_pending_slow_checks: 0}", "throttle.max_pending_slow_checks"),
        ("routes: {api: {anonymous: ['GET api/health']}}", "is not 'METHOD /exact/path'"),
        ("routes: {api: {realm: 'a\"b'}}", "realm"),
        ("routes: {api: {principals: ['*', x]}}", "already allows everyone"),
        ("routes: {api: {cors_preflight: 'yes'}}", "must be true or false"),
        ("routes: {api: {shemes: [basic]}}", "unknown key(s) 'shemes'"),
        ("routes: {'a/b': {}}", "route name"),
        ("routes: {api: {}}\nthrottle: {ban_seconds: -1}", "throttle.ban_seconds"),
        ("routes: {api: {}}\ndecision_cache: {max_age_seconds: 1.5}", "must be an integer"),
        ("routes: [api]", "expected a mapping"),
    ],
)
def test_bad_policies_name_the_key(doc, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load(doc), "p.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("p.yaml:")


def test_yaml_errors_carry_the_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("routes:\n  api:\n    schemes: [bearer\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:\d+: not valid YAML"):
        load_policy(path)
