from app.policy import ThrottleSettings
from app.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw) -> tuple[Throttle, Clock]:
    clock = Clock()
    settings = ThrottleSettings(
        **{"window_seconds": 60, "max_failures_per_user": 3, "max_failures_per_address": 5, "ban_seconds": 300, **kw}
    )
    return Throttle(settings, clock), clock


def test_address_is_banned_after_its_limit_and_released_after_the_ban():
    throttle, clock = make()
    for _ in range(4):
        throttle.record_failure("10.0.0.1", None)
    assert not throttle.banned("10.0.0.1", None)
    throttle.record_failure("10.0.0.1", None)
    assert throttle.banned("10.0.0.1", None)
    assert not throttle.banned("10.0.0.2", None)
    assert throttle.banned_counts() == {"address": 1, "user": 0}
    clock.now += 299
    assert throttle.banned("10.0.0.1", None)
    clock.now += 2
    assert not throttle.banned("10.0.0.1", None)


def test_failures_outside_the_window_do_not_add_up():
    throttle, clock = make()
    for _ in range(4):
        throttle.record_failure("a", None)
        clock.now += 20  # 4 failures spread over 80 s: the window restarts
    throttle.record_failure("a", None)
    assert not throttle.banned("a", None)


def test_user_ban_applies_from_any_address():
    throttle, _ = make()
    for i in range(3):
        throttle.record_failure(f"10.0.0.{i}", "alice")
    assert throttle.banned("192.168.1.1", "alice")
    assert not throttle.banned("192.168.1.1", "bob")


def test_disabled_or_zero_limits_never_ban():
    throttle, _ = make(enabled=False)
    for _ in range(100):
        throttle.record_failure("a", "u")
    assert not throttle.banned("a", "u")
    throttle, _ = make(max_failures_per_user=0)
    for _ in range(4):
        throttle.record_failure(None, "u")
    assert not throttle.banned(None, "u")


def test_table_stays_bounded_under_many_addresses():
    throttle, _clock = make(max_tracked=100, max_failures_per_address=1)
    for i in range(1000):
        throttle.record_failure(f"addr-{i}", None)
    assert len(throttle._counters) <= 101
