import gc
import math
import secrets
import threading
import time
from collections.abc import Callable

import pytest

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
    assert throttle.tracked() <= 100


def test_failures_while_banned_extend_the_ban():
    throttle, clock = make()
    for _ in range(5):
        throttle.record_failure("a", None)
    clock.now += 100
    for _ in range(5):  # e.g. malformed headers, which are recorded without asking banned() first
        throttle.record_failure("a", None)
    clock.now += 299
    assert throttle.banned("a", None)
    clock.now += 1
    assert not throttle.banned("a", None)


def test_any_user_name_is_counted_and_banned_like_an_existing_one():
    throttle, _ = make()
    name = secrets.token_hex(8)  # a name no credential store holds
    for i in range(3):
        throttle.record_failure(f"10.0.0.{i}", name)
    assert throttle.banned("192.168.1.1", name)
    assert throttle.banned_counts() == {"address": 0, "user": 1}


@pytest.mark.parametrize("limit", [1, 3])
def test_the_table_never_holds_more_than_max_tracked(limit):
    throttle, clock = make(max_tracked=1000, max_failures_per_address=limit, max_failures_per_user=limit)
    for i in range(3000):  # distinct addresses and random names, each failing up to its limit
        clock.now += 0.01
        for _ in range(limit):
            throttle.record_failure(f"10.{i // 256}.{i % 256}.1", secrets.token_hex(4))
        assert throttle.tracked() <= 1000
    assert sum(throttle.banned_counts().values()) == 500  # bans take at most half of the table
    assert throttle.tracked() == (500 if limit == 1 else 1000)  # limit 3: the names (one failure each) count on


def test_an_active_ban_survives_a_flood_of_new_addresses_and_names_and_still_expires():
    throttle, clock = make(max_tracked=1000)
    banned_at = clock.now
    for _ in range(5):
        throttle.record_failure("6.6.6.6", None)
    for i in range(3):
        throttle.record_failure(f"7.7.7.{i}", "alice")
    for i in range(3000):  # 3 x max_tracked new failing addresses and names
        clock.now += 0.01
        throttle.record_failure(f"flood-{i}", f"name-{i}")
    assert throttle.banned("6.6.6.6", None)
    assert throttle.banned(None, "alice")
    assert throttle.banned_counts() == {"address": 1, "user": 1}  # 7.7.7.x failed once each: counted, not banned
    clock.now = banned_at + 299.9
    assert throttle.banned("6.6.6.6", "alice")
    clock.now = banned_at + 300
    assert not throttle.banned("6.6.6.6", None)
    assert not throttle.banned(None, "alice")
    assert throttle.banned_counts() == {"address": 0, "user": 0}


def test_a_live_ban_is_cut_short_only_after_half_of_max_tracked_later_bans():
    throttle, clock = make(max_tracked=100, max_failures_per_address=1)
    throttle.record_failure("first", None)
    for i in range(49):
        clock.now += 1
        throttle.record_failure(f"later-{i}", None)
    assert throttle.banned("first", None)
    throttle.record_failure("one-more", None)  # the 51st live ban: the one closest to expiry makes room
    assert not throttle.banned("first", None)
    assert throttle.banned("later-0", None) and throttle.banned("one-more", None)
    assert throttle.banned_counts() == {"address": 50, "user": 0}


def test_record_failure_says_which_keys_it_counted_and_banned():
    throttle, _ = make(max_failures_per_address=2, max_failures_per_user=0)
    assert throttle.record_failure("a", "alice") == [(throttle.key("address", "a"), False)]  # user limit 0: not counted
    assert throttle.record_failure("a", "alice") == [(throttle.key("address", "a"), True)]
    assert throttle.record_failure("a", None) == [(throttle.key("address", "a"), False)]
    assert throttle.record_failure("a", None) == [(throttle.key("address", "a"), True)]  # the ban is extended
    disabled, _ = make(enabled=False)
    assert disabled.record_failure("a", "alice") == []


def test_an_imposed_ban_keeps_the_time_it_was_given_and_never_shortens_one():
    throttle, clock = make()
    throttle.record_failure("a", None)  # a plain counter becomes a ban
    assert throttle.impose_ban(throttle.key("address", "a"), 10)
    assert throttle.banned("a", None) and throttle.tracked() == 1
    assert throttle.banned_counts() == {"address": 1, "user": 0}
    assert not throttle.impose_ban(throttle.key("address", "a"), 5)  # shorter than the ban it has: nothing changes
    assert throttle.impose_ban(throttle.key("address", "a"), 20)
    clock.now += 19.9
    assert throttle.banned("a", None)
    clock.now += 0.1
    assert not throttle.banned("a", None)
    assert throttle.banned_counts() == {"address": 0, "user": 0}
    assert not throttle.impose_ban(throttle.key("user", "x"), 0)
    disabled, _ = make(enabled=False)
    assert not disabled.impose_ban(disabled.key("user", "x"), 10) and not disabled.banned(None, "x")


def test_imposed_bans_keep_expiry_order_at_either_end():
    throttle, clock = make(ban_seconds=300)
    for _ in range(5):
        throttle.record_failure("local", None)  # expires at +300
    throttle.impose_ban(throttle.key("user", "soon"), 10)  # expires first: goes to the front
    throttle.impose_ban(throttle.key("user", "late"), 300.5)  # expires last: goes to the end
    order = [throttle.key("user", "soon"), throttle.key("address", "local"), throttle.key("user", "late")]
    assert list(throttle._bans) == order
    clock.now += 10
    assert throttle.banned_counts() == {"address": 1, "user": 1}  # "soon" swept from the front at once
    clock.now += 291
    assert throttle.banned_counts() == {"address": 0, "user": 0}


def test_imposed_bans_stay_within_the_table_bounds():
    throttle, _ = make(max_tracked=100)
    for i in range(100):
        throttle.record_failure(f"counting-{i}", None)
    for i in range(300):
        throttle.impose_ban(throttle.key("user", f"remote-{i}"), 60 + i)
        assert throttle.tracked() <= 100
    assert throttle.banned_counts() == {"address": 0, "user": 50}  # bans take at most half
    assert throttle.banned(None, "remote-299") and not throttle.banned(None, "remote-0")


def test_counts_stay_consistent_under_threads():
    throttle, _ = make(max_tracked=10_000)

    def ban_range(offset: int) -> None:
        for i in range(200):  # every thread bans the same 200 addresses, interleaved with the others
            for _ in range(2):
                throttle.record_failure(f"a{(i + offset) % 200}", None)
            throttle.banned(f"a{i}", None)
            throttle.banned_counts()

    threads = [threading.Thread(target=ban_range, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.banned_counts() == {"address": 200, "user": 0}
    assert throttle.tracked() == 200


# Complexity, measured as CPU time relative to a small table rather than as absolute time, so a slow or busy
# machine does not fail it. The large run stops once it is clearly over the ratio, so an O(table) throttle fails
# in about a second instead of running for minutes.
SMALL, LARGE, RATIO = 1_000, 100_000, 5


def full_table(max_tracked: int) -> Throttle:
    throttle, clock = make(max_tracked=max_tracked)
    for i in range(max_tracked - 2):
        throttle.record_failure(f"old-{i}", None)  # one failure each: counters, none banned
    for _ in range(5):
        throttle.record_failure("banned", None)  # so banned() does not take its no-ban shortcut
    clock.now += 1
    return throttle


def cpu_seconds(call: Callable[[int], object], n: int, budget: float = math.inf) -> float:
    """CPU time of call(0..n-1), best of 3 runs; inf as soon as a run goes over ``budget``."""
    best = math.inf
    for run in range(3):
        gc.collect()
        start = time.process_time()
        for i in range(run * n, (run + 1) * n):
            call(i)
            if i % 64 == 0 and time.process_time() - start > budget:
                return math.inf
        best = min(best, time.process_time() - start)
    return best


def compare(small: Throttle, large: Throttle, call: Callable[[Throttle, int], object], n: int) -> float:
    small_cost = cpu_seconds(lambda i: call(small, i), n)
    large_cost = cpu_seconds(lambda i: call(large, i), n, budget=RATIO * small_cost)
    return large_cost / small_cost


@pytest.fixture(scope="module")
def tables() -> tuple[Throttle, Throttle]:
    return full_table(SMALL), full_table(LARGE)


def test_a_failure_from_a_new_address_costs_the_same_whatever_the_table_size(tables):
    names = [f"new-{i}" for i in range(3 * 5000)]
    ratio = compare(*tables, lambda t, i: t.record_failure(names[i], None), 5000)
    assert ratio < RATIO


def test_banned_for_an_untracked_key_costs_the_same_whatever_the_table_size(tables):
    names = [f"untracked-{i}" for i in range(3 * 5000)]
    ratio = compare(*tables, lambda t, i: t.banned(names[i], names[i]), 5000)
    assert ratio < RATIO


def test_banned_counts_costs_the_same_whatever_the_table_size(tables):
    ratio = compare(*tables, lambda t, i: t.banned_counts(), 300)
    assert ratio < RATIO


def test_the_table_holds_fixed_size_digests_never_what_the_client_sent():
    """Bounded in bytes, not only in entries: a full table of 6,000-character user names (and of long
    addresses) costs what a table of short ones costs, and holds none of them."""
    import tracemalloc

    throttle, _ = make(max_tracked=1000, max_failures_per_user=1, max_failures_per_address=10**6)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):  # each name made afresh, as a request's would be: kept only if the table keeps it
            name = f"{i:06d}" + "n" * 5994
            throttle.record_failure(f"2001:db8::{i:x}" + "a" * 40, name)  # names banned, addresses counting
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 900 < throttle.tracked() <= 1000  # full
    assert grown <= 1000 * 400, f"{grown / 1000:.0f} bytes per entry"
    keys = [*throttle._counters, *throttle._bans]
    assert all(isinstance(value, bytes) and len(value) == 16 for _, value in keys)
    assert throttle.banned(None, f"{1999:06d}" + "n" * 5994) and not throttle.banned(None, "n" * 6000)


@pytest.mark.parametrize("enabled", [True, False])
def test_banned_else_count_is_banned_then_record_failure(enabled):
    """A guess's one call (app.decision.refuse_unknown_token): the same answers and the same table as asking
    ``banned`` and then, when not banned, ``record_failure``, across counting, bans, expiry and no address."""
    one, one_clock = make(enabled=enabled, max_tracked=8)
    two, two_clock = make(enabled=enabled, max_tracked=8)
    two._hashers = one._hashers  # the same digest key: the same keys in both tables
    steps = [f"10.0.0.{i % 3}" for i in range(40)] + [None, ""] + [f"10.0.1.{i}" for i in range(20)]
    for step, address in enumerate(steps * 2):
        expected = two.banned(address, None)
        if not expected:
            two.record_failure(address, None)
        assert one.banned_else_count(address) == expected, (step, address)
        assert list(one._counters.items()) == list(two._counters.items())
        assert list(one._bans.items()) == list(two._bans.items())
        assert one.banned_counts() == two.banned_counts()
        one_clock.now += 7.5
        two_clock.now += 7.5


def test_banned_else_count_keeps_only_a_digest():
    throttle, _ = make()
    address = "198.51.100." + secrets.token_hex(3)
    throttle.banned_else_count(address)
    (key,) = throttle._counters
    assert key == throttle.key("address", address) and address.encode() not in key[1]


class _EveryFailureThroughCount(Throttle):
    """The throttle as it counted before the shortcuts: every key through _count, and a guess as the two calls
    it stands for (``banned``, then ``record_failure``)."""

    def _count_one(self, key, limit, now):
        return self._count(key, limit, now)

    def banned_else_count(self, address):
        if self.banned(address, None):
            return True
        self.record_failure(address, None)
        return False


@pytest.mark.parametrize("seed", range(4))
def test_the_counting_shortcut_keeps_every_table_as_count_alone_does(seed):
    """_count_one counts a key already counting, inside its window and short of its limit, without _count, and
    banned_else_count checks, sweeps and counts under one hold of the lock: over
    random failures (addresses and users, guesses and password failures, imposed bans, the clock crossing
    windows and bans, a table at its bound) the answers and both tables stay exactly _count's."""
    import random

    rng = random.Random(seed)
    settings = ThrottleSettings(
        window_seconds=60, max_failures_per_user=3, max_failures_per_address=5, ban_seconds=300, max_tracked=12
    )
    clock = Clock()
    fast, slow = Throttle(settings, clock), _EveryFailureThroughCount(settings, clock)
    slow._hashers = fast._hashers
    for step in range(3000):
        address = rng.choice([None, "", *(f"10.0.0.{i}" for i in range(9))])
        user = rng.choice([None, "alice", "bob", "carol"])
        action = rng.random()
        if action < 0.5:
            assert fast.banned_else_count(address) == slow.banned_else_count(address), step
        elif action < 0.95:
            assert fast.record_failure(address, user) == slow.record_failure(address, user), step
        elif address:
            key = fast.key("address", address)
            assert fast.impose_ban(key, 100.0) == slow.impose_ban(key, 100.0), step
        assert list(fast._counters.items()) == list(slow._counters.items()), step
        assert list(fast._bans.items()) == list(slow._bans.items()), step
        clock.now += rng.choice([0.0, 0.5, 3.0, 20.0, 61.0, 301.0])
    assert fast.banned_counts() == slow.banned_counts()
