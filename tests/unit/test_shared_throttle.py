"""The shared throttle's parts that need no Redis: the outbox, the key budget, the password, ban messages, the
connection's state and log lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.metrics import Metrics
from app.policy import RedisSettings, ThrottleSettings
from app.shared_throttle import SharedThrottle, make_throttle, redis_password
from app.shared_throttle.budget import KeyBudget
from app.shared_throttle.connection import RedisConnection
from app.shared_throttle.outbox import Outbox
from app.throttle import Throttle

REDIS = RedisSettings(host="127.0.0.1", port=6379)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shared(**kw: object) -> tuple[SharedThrottle, Metrics, Clock]:
    clock, metrics = Clock(), Metrics()
    settings = ThrottleSettings(
        **{"max_failures_per_user": 3, "max_failures_per_address": 5, "ban_seconds": 300, "redis": REDIS, **kw}  # type: ignore[arg-type]
    )
    return SharedThrottle(settings, REDIS, None, metrics, clock), metrics, clock


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_the_outbox_coalesces_per_key_and_is_bounded():
    outbox = Outbox(max_keys=2)
    assert outbox.add(("user", "a"), 1.0)
    assert outbox.add(("user", "a"), 2.0, banned_until=300.0)
    assert outbox.add(("user", "a"), 3.0)
    assert outbox.add(("address", "b"), 4.0)
    assert not outbox.add(("address", "c"), 5.0)  # full: a new key stays local
    assert outbox.add(("address", "b"), 6.0)  # a key already waiting still counts
    taken = outbox.take()
    assert {key: (e.failures, e.first_seen, e.banned_until) for key, e in taken.items()} == {
        ("user", "a"): (3, 1.0, 300.0),
        ("address", "b"): (2, 4.0, 0.0),
    }
    assert len(outbox) == 0 and outbox.add(("address", "c"), 7.0)


def test_the_key_budget_allows_max_tracked_new_keys_per_window():
    budget = KeyBudget(capacity=10, window=60.0, now=0.0)
    assert all(budget.allows(("user", f"u{i}"), 0.0) for i in range(10))
    assert not budget.allows(("user", "new"), 0.0)
    assert not budget.allows(("user", "new"), 5.9)  # refills at 10 per 60 s: one token after 6 s
    assert budget.allows(("user", "new"), 6.0) and not budget.allows(("user", "newer"), 6.0)
    assert all(budget.allows(("user", f"u{i}"), 59.9) for i in range(10))  # created this window: free
    assert sum(budget.allows(("user", f"u{i}"), 60.0) for i in range(10)) == 9  # expired in Redis: new again
    assert sum(budget.allows(("address", f"a{i}"), 1000.0) for i in range(20)) == 10  # never past the capacity


def test_the_key_budget_remembers_a_bounded_number_of_keys():
    budget = KeyBudget(capacity=100, window=600.0, now=0.0, remembered=3)  # refills one token per 6 s
    for i in range(5):
        assert budget.allows(("user", f"u{i}"), 0.0)
    assert len(budget._created) == 3
    assert budget.tokens == 95
    assert budget.allows(("user", "u4"), 6.0) and budget.tokens == 95  # remembered: no token spent
    assert budget.allows(("user", "u0"), 6.0) and budget.tokens == pytest.approx(95 + 1 - 1)  # forgotten: costs one


def test_failures_are_counted_locally_and_queued_without_redis():
    throttle, metrics, clock = shared()
    for _ in range(3):
        throttle.record_failure("10.0.0.1", "alice")
    assert throttle.banned(None, "alice")  # the local table decides, at once
    pending = throttle.outbox.take()
    alice, address = throttle.key("user", "alice"), throttle.key("address", "10.0.0.1")
    assert set(pending) == {alice, address}  # fixed-size digests, never the name or address
    assert pending[alice].failures == 3
    assert pending[alice].banned_until == clock.now + 300  # banned here: pushed as a ban
    assert pending[address].banned_until == 0.0
    assert sample(metrics, "authgate_throttle_shared") == 0


def test_a_full_outbox_leaves_failures_local_and_counts_them():
    throttle, metrics, _ = shared()
    throttle.outbox.max_keys = 1
    throttle.record_failure("10.0.0.1", "alice")
    assert sample(metrics, "authgate_throttle_failures_not_shared_total") == 1  # the user key found no room
    assert len(throttle.outbox) == 1


def test_published_bans_are_imposed_unless_they_are_our_own_or_malformed():
    throttle, metrics, _ = shared()
    throttle.ban_sync.on_message(f"120000 {throttle.origin} user mine".encode())
    throttle.ban_sync.on_message(b"120000 other user")  # too few fields
    throttle.ban_sync.on_message(b"soon other user x")
    throttle.ban_sync.on_message(b"120000 other group x")
    throttle.ban_sync.on_message(b"\xff\xfe")
    throttle.ban_sync.on_message(b"nan other user x")  # anyone who can write to Redis could send these
    throttle.ban_sync.on_message(b"inf other user x")
    assert throttle.banned_counts() == {"address": 0, "user": 0}
    mallory = throttle.key("user", "mallory with spaces")[1].hex()
    address = throttle.key("address", "10.0.0.9")[1].hex()
    throttle.ban_sync.on_message(b"120000 other user mallory with spaces")  # a raw name: no digest, ignored
    throttle.ban_sync.on_message(f"120000 other user {mallory[:-2]}".encode())  # a digest cut short
    throttle.ban_sync.on_message(f"120000 other user {mallory} x".encode())
    assert throttle.banned_counts() == {"address": 0, "user": 0}
    throttle.ban_sync.on_message(f"120000 other user {mallory}".encode())
    throttle.ban_sync.on_message(f"9e9 other address {address}".encode())  # never longer than this replica's own ban
    assert throttle.banned(None, "mallory with spaces") and throttle.banned("10.0.0.9", None)
    assert sample(metrics, "authgate_throttle_bans_learnt_total") == 2
    throttle.ban_sync.on_message(f"1000 other user {mallory}".encode())  # shorter than the ban it has: no change
    assert sample(metrics, "authgate_throttle_bans_learnt_total") == 2


def test_the_connection_says_whether_it_shares_and_logs_one_line_per_outage(caplog: pytest.LogCaptureFixture):
    metrics, clock = Metrics(), Clock()
    connection = RedisConnection(REDIS, None, metrics, clock)
    assert not connection.shared and sample(metrics, "authgate_throttle_shared") == 0
    with caplog.at_level(logging.INFO, logger="authgate.shared_throttle"):
        connection.up()
        assert connection.shared and sample(metrics, "authgate_throttle_shared") == 1
        connection.down(ConnectionError("refused"))
        clock.now += 5
        connection.down(TimeoutError())  # within the minute: counted, not logged
        clock.now += 7.5
        connection.up()
    assert sample(metrics, "authgate_throttle_redis_errors_total") == 2
    lines = [(r.levelname, getattr(r, "state", None), r.getMessage()) for r in caplog.records]
    assert lines == [
        ("INFO", "shared", "shared throttle: failures and bans are shared through redis://127.0.0.1:6379/0"),
        (
            "ERROR",
            "local",
            "shared throttle: Redis at redis://127.0.0.1:6379/0 is unusable (ConnectionError: refused); counting "
            "failures on this replica only, so the limits hold per replica until it is back; reconnecting with backoff",
        ),
        (
            "WARNING",
            "shared",
            "shared throttle: Redis at redis://127.0.0.1:6379/0 answers again after 12.5 s; failures and bans are "
            "shared again",
        ),
    ]
    connection.set_shared(False)
    assert sample(metrics, "authgate_throttle_shared") == 0


def test_the_password_comes_from_the_named_variable_or_file(tmp_path: Path):
    assert redis_password(REDIS, {}) is None
    env = RedisSettings(host="h", password_env="REDIS_PW")
    assert redis_password(env, {"REDIS_PW": "s3cret"}) == "s3cret"
    for environ in ({}, {"REDIS_PW": ""}):
        with pytest.raises(ConfigError, match=r"throttle\.redis\.password_env: \$REDIS_PW is not set or empty"):
            redis_password(env, environ)
    path = tmp_path / "password"
    path.write_text("s3cret-from-file\n")
    assert redis_password(RedisSettings(host="h", password_file=str(path)), {}) == "s3cret-from-file"
    path.write_text("\n")
    with pytest.raises(ConfigError, match=r"throttle\.redis\.password_file: .* is empty"):
        redis_password(RedisSettings(host="h", password_file=str(path)), {})
    with pytest.raises(ConfigError, match=r"throttle\.redis\.password_file: cannot read") as err:
        redis_password(RedisSettings(host="h", password_file=str(tmp_path / "absent")), {})
    assert "absent" in str(err.value)


def test_make_throttle_shares_only_when_the_policy_names_redis(tmp_path: Path):
    assert type(make_throttle(ThrottleSettings(), Metrics())) is Throttle
    throttle = make_throttle(ThrottleSettings(redis=REDIS), Metrics())
    assert isinstance(throttle, SharedThrottle)
    assert (throttle.bans_key, throttle.channel) == ("authgate:bans", "authgate:banned")
    missing_ca = RedisSettings(host="h", tls=True, tls_ca_file=str(tmp_path / "ca.crt"))
    with pytest.raises(ConfigError, match=r"throttle\.redis\.tls_ca_file: no such file"):
        make_throttle(ThrottleSettings(redis=missing_ca), Metrics())
    with pytest.raises(ConfigError, match=r"\$PW is not set"):
        make_throttle(ThrottleSettings(redis=RedisSettings(host="h", password_env="PW")), Metrics(), environ={})


def test_redis_is_imported_only_when_the_policy_names_one():
    """Like the Kubernetes client (watch mode only): without throttle.redis no process pays for the client."""
    import subprocess
    import sys

    from tests.support.procs import REPO_ROOT

    check = "import sys, app.service, app.cli; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_replicas_sharing_a_redis_count_a_name_under_the_same_digest_and_others_do_not():
    """Every replica must derive the same digest for the same name (a ban reached on one holds on the
    others); the key comes from the prefix and the password, so another password or prefix gives others."""
    metrics = Metrics()
    settings = ThrottleSettings(redis=REDIS)

    def digest(redis: RedisSettings, password: str | None) -> bytes:
        return SharedThrottle(settings, redis, password, metrics).key("user", "alice")[1]

    assert digest(REDIS, "pw") == digest(REDIS, "pw")
    assert len({digest(REDIS, "pw"), digest(REDIS, "other"), digest(REDIS, None)}) == 3
    assert digest(RedisSettings(host="h", key_prefix="other:"), "pw") != digest(REDIS, "pw")
    local = Throttle(settings)  # without Redis: a random key per process
    assert local.key("user", "alice") != Throttle(settings).key("user", "alice")


def test_a_guess_counted_in_one_call_is_queued_too():
    """banned_else_count (a guess's throttle call) counts locally and queues like record_failure; once the
    address is banned it answers banned and queues nothing more."""
    throttle, _, clock = shared()
    limit = throttle.settings.max_failures_per_address
    assert not any(throttle.banned_else_count("10.0.0.1") for _ in range(limit))
    pending = throttle.outbox.take()
    address = throttle.key("address", "10.0.0.1")
    assert set(pending) == {address} and pending[address].failures == limit
    assert pending[address].banned_until == clock.now + throttle.settings.ban_seconds
    assert throttle.banned_else_count("10.0.0.1") and len(throttle.outbox) == 0
