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
    assert policy.claims == {"/api": "api", "/": "ui"}  # one auth path, /auth/~, serves both parts


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


def test_shared_throttle_settings_parse():
    policy = parse_policy(
        yaml.safe_load("""
routes: {api: {}}
throttle:
  redis:
    url: rediss://authgate@redis.example.svc:6380/2
    key_prefix: "prod:authgate:"
    password_env: AUTHGATE_REDIS_PASSWORD
    tls_ca_file: /etc/authgate/redis-tls/ca.crt
    timeout_seconds: 0.2
"""),
        "p.yaml",
    )
    redis = policy.throttle.redis
    assert redis is not None
    assert (redis.host, redis.port, redis.db, redis.username, redis.tls) == (
        "redis.example.svc",
        6380,
        2,
        "authgate",
        True,
    )
    assert redis.key_prefix == "prod:authgate:" and redis.password_env == "AUTHGATE_REDIS_PASSWORD"
    assert redis.tls_ca_file == "/etc/authgate/redis-tls/ca.crt" and redis.timeout_seconds == 0.2
    assert redis.url == "rediss://authgate@redis.example.svc:6380/2"
    plain = parse_policy(yaml.safe_load("routes: {api: {}}\nthrottle: {redis: {url: 'redis://[::1]'}}"), "p.yaml")
    assert plain.throttle.redis is not None and plain.throttle.redis.url == "redis://[::1]:6379/0"
    assert parse_policy(yaml.safe_load("routes: {api: {}}"), "p.yaml").throttle.redis is None


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ("{}", "throttle.redis.url: required"),
        ("{url: 'redis://h', db: 1}", "throttle.redis: unknown key(s) 'db'"),
        ("{url: 'http://h'}", "throttle.redis.url: the scheme must be redis or rediss"),
        ("{url: 'redis:///0'}", "throttle.redis.url: no host"),
        ("{url: 'redis://h:70000'}", "throttle.redis.url: not a URL"),
        ("{url: 'redis://h/x'}", "throttle.redis.url: the path is a database number"),
        ("{url: 'redis://h?ssl_cert_reqs=none'}", "throttle.redis.url: no ?options"),
        ("{url: 'redis://h', key_prefix: 'a b'}", "throttle.redis.key_prefix"),
        ("{url: 'redis://h', password_env: X, password_file: /p}", "password_file or password_env, not both"),
        ("{url: 'redis://h', password_env: 'A-B'}", "throttle.redis.password_env: not an environment variable"),
        ("{url: 'redis://h', tls_ca_file: /ca}", "tls_ca_file need a rediss:// url"),
        ("{url: 'rediss://h', tls_cert_file: /c}", "tls_cert_file and tls_key_file go together"),
        ("{url: 'redis://h', timeout_seconds: 0}", "throttle.redis.timeout_seconds: must be a number >= 0.01"),
        ("[redis://h]", "throttle.redis: expected a mapping"),
    ],
)
def test_bad_shared_throttle_settings_name_the_key(redis, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load(f"routes: {{api: {{}}}}\nthrottle: {{redis: {redis}}}"), "p.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize("url", ["redis://:hunter2-secret@h", "rediss://user:hunter2-secret@h:6380/0"])
def test_a_password_in_the_redis_url_is_refused_and_never_echoed(url):
    with pytest.raises(ConfigError) as err:
        parse_policy({"routes": {"api": {}}, "throttle": {"redis": {"url": url}}}, "p.yaml")
    assert "must not carry a password" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # nor in any other complaint about the URL
        parse_policy({"routes": {"api": {}}, "throttle": {"redis": {"url": url + ":x:"}}}, "p.yaml")
    assert "hunter2" not in str(err.value)


def test_a_shared_store_for_a_disabled_throttle_is_a_contradiction():
    with pytest.raises(ConfigError, match=r"throttle\.redis: the throttle is off"):
        parse_policy(yaml.safe_load("routes: {api: {}}\nthrottle: {enabled: false, redis: {url: 'redis://h'}}"), "p")


def test_routes_claim_path_prefixes_for_requests_that_name_no_route():
    policy = parse_policy(
        yaml.safe_load("routes: {api: {path_prefixes: [/api, /api-v2]}, ui: {path_prefixes: [/]}, ops: {}}"), "p"
    )
    assert policy.routes["api"].path_prefixes == ("/api", "/api-v2")
    assert policy.routes["ops"].path_prefixes == ()
    assert policy.claims == {"/api": "api", "/api-v2": "api", "/": "ui"}


@pytest.mark.parametrize(
    ("prefixes", "message"),
    [
        ("api", "routes.api.path_prefixes: a list of raw path prefixes"),
        ("[api]", "routes.api.path_prefixes: 'api' does not start with /"),
        ("[1]", "routes.api.path_prefixes: 1 does not start with /"),
        ("['/api/']", "routes.api.path_prefixes: '/api/': without a trailing /"),
        ("['/api/*']", "routes.api.path_prefixes: '/api/*': a raw path prefix, without query, wildcard"),
        ("['/api%2F']", "routes.api.path_prefixes: '/api%2F': a raw path prefix"),
        ("['/api;x']", "routes.api.path_prefixes: '/api;x': a raw path prefix"),
        ("['/api?x']", "a raw path prefix"),
        ("['//api']", "a raw path prefix"),
        ("['/api/../ui']", "a raw path prefix"),
        ("['/./api']", "a raw path prefix"),
        ("['/a b']", "a raw path prefix"),
        ("[/api, /api]", "routes.api.path_prefixes: '/api' is listed twice"),
    ],
)
def test_bad_path_prefixes_name_the_key(prefixes, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load(f"routes: {{api: {{path_prefixes: {prefixes}}}}}"), "p.yaml")
    assert message in str(err.value)


def test_a_path_prefix_decides_for_one_route_only():
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load("routes: {api: {path_prefixes: [/x]}, ui: {path_prefixes: [/, /x]}}"), "p.yaml")
    assert "routes.ui.path_prefixes: '/x' is already claimed by routes.api" in str(err.value)


def test_sessions_are_off_unless_a_route_lists_them():
    policy = parse_policy(yaml.safe_load("routes: {api: {}, ui: {schemes: [session, basic]}}\nsign_in: {}"), "p.yaml")
    assert policy.session_routes == frozenset({"ui"})
    assert policy.routes["api"].schemes == ("bearer", "basic")
    assert parse_policy(yaml.safe_load("routes: {api: {}}"), "p.yaml").session_routes == frozenset()
    session = policy.session
    assert (session.prefix, session.cookie_name, session.lifetime_seconds, session.idle_timeout_seconds) == (
        "/authgate/",
        "__Host-authgate",
        12 * 3600,
        3600,
    )
    assert session.csrf_cookie_name == "__Host-authgate-csrf"
    assert (session.sign_in_path, session.sign_out_path, session.userinfo_path) == (
        "/authgate/sign_in",
        "/authgate/sign_out",
        "/authgate/userinfo",
    )


def test_a_session_route_needs_a_sign_in_block():
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load("routes: {api: {}, ui: {schemes: [session]}}"), "p.yaml")
    assert "routes.ui.schemes: session needs a sign_in block" in str(err.value)


def test_a_sign_in_block_is_read():
    doc = """
routes: {ui: {schemes: [session]}}
sign_in:
  prefix: /prefect/auth/
  cookie_name: __Host-prefect
  lifetime: 1h30m
  idle_timeout: 900
  title: Prefect
"""
    session = parse_policy(yaml.safe_load(doc), "p.yaml").session
    assert (session.prefix, session.cookie_name, session.title) == ("/prefect/auth/", "__Host-prefect", "Prefect")
    assert (session.lifetime_seconds, session.idle_timeout_seconds) == (5400, 900)


@pytest.mark.parametrize(
    ("sign_in", "message"),
    [
        ("{cookie_name: 'a b'}", "sign_in.cookie_name"),
        ("{cookie_name: 'a;b'}", "sign_in.cookie_name"),
        ("{prefix: /authgate}", "sign_in.prefix"),
        ("{prefix: authgate/}", "sign_in.prefix"),
        ("{prefix: /}", "sign_in.prefix"),
        ("{prefix: /auth/x/}", "sign_in.prefix"),
        ("{prefix: '/a//b/'}", "sign_in.prefix"),
        ("{prefix: /a/../b/}", "sign_in.prefix"),
        ("{prefix: '/a?b/'}", "sign_in.prefix"),
        ("{lifetime: 10s}", "sign_in.lifetime"),
        ("{lifetime: 31d}", "sign_in.lifetime"),
        ("{lifetime: soon}", "sign_in.lifetime"),
        ("{lifetime: true}", "sign_in.lifetime"),
        ("{idle_timeout: 2h, lifetime: 1h}", "sign_in.idle_timeout: longer than sign_in.lifetime"),
        ("{title: 'a\"b'}", "sign_in.title"),
        ("{cookie: x}", "unknown key(s) 'cookie'"),
        ("[]", "expected a mapping"),
    ],
)
def test_bad_sign_in_blocks_name_the_key(sign_in, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_load(f"routes: {{ui: {{schemes: [session]}}}}\nsign_in: {sign_in}"), "p.yaml")
    assert message in str(err.value)
