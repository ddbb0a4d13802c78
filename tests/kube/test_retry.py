"""The Secret watch's retry policy on its own: no server, a clock the test moves, jitter pinned to its ceiling."""

from __future__ import annotations

import logging

from app.kube.retry import Retry, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock | None = None) -> RetryPolicy:
    return RetryPolicy(
        backoff_base=0.5,
        backoff_max=4.0,
        quick_retry=1.0,
        rbac_grace=10.0,
        clock=clock or Clock(),
        jitter=lambda low, high: high,
    )


def test_failures_back_off_exponentially_up_to_the_cap_and_count_the_attempts() -> None:
    policy_ = policy()
    retries = [policy_.failed() for _ in range(6)]
    assert [r.delay for r in retries] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [r.attempt for r in retries] == [1, 2, 3, 4, 5, 6]
    assert all(r.level == logging.WARNING and r.note == "" for r in retries)


def test_jitter_stays_between_half_the_ceiling_and_the_ceiling() -> None:
    seen: list[tuple[float, float]] = []
    jittery = RetryPolicy(backoff_base=0.5, backoff_max=30.0, jitter=lambda low, high: seen.append((low, high)) or low)
    assert jittery.failed().delay == 0.25
    assert seen == [(0.25, 0.5)]


def test_a_list_or_a_working_watch_starts_the_backoff_over_and_says_how_many_attempts_failed() -> None:
    retries = policy()
    for _ in range(3):
        retries.failed()
    assert retries.listed() == 3
    assert retries.failed().delay == 0.5
    assert retries.watched() == 1
    assert retries.watched() == 0
    assert retries.failed() == Retry(0.5, 1)


def test_a_410_relists_at_once_unless_it_comes_on_the_watch_a_relist_just_started() -> None:
    retries = policy()
    assert retries.gone() is None  # an ordinary expiry: relist now
    retries.listed()
    first = retries.gone()
    assert first is not None and first.delay == 0.5
    retries.listed()
    second = retries.gone()
    assert second is not None and second.delay == 1.0  # grows with the streak
    retries.listed()
    retries.watched()  # the watch worked: the streak is over
    assert retries.gone() is None


def test_the_410_streak_ignores_failures_from_an_earlier_outage() -> None:
    retries = policy()
    for _ in range(5):
        retries.unreachable(connection_refused=False)
    retries.listed()
    again = retries.gone()
    assert again is not None and again.delay == 0.5


def test_a_refused_connection_retries_quickly_and_other_transport_errors_back_off() -> None:
    retries = policy()
    assert [retries.unreachable(connection_refused=True).delay for _ in range(4)] == [1.0] * 4
    assert [retries.unreachable(connection_refused=False).delay for _ in range(3)] == [0.5, 1.0, 2.0]


def test_a_403_right_after_the_api_answers_again_retries_quickly_and_is_said_once() -> None:
    clock = Clock()
    retries = policy(clock)
    retries.unreachable(connection_refused=True)
    clock.now += 2.5
    retries.answered()  # the restarted API server answers
    clock.now += 1.5
    first = retries.refused(403)
    assert first.delay == 1.0 and first.level == logging.WARNING
    assert first.note == (
        " (the API server answered 1.5s ago and may still be loading its RBAC rules: retried every 1.0s at most "
        "for 10s, logged once)"
    )
    clock.now += 1.0
    quiet = retries.refused(403)
    assert quiet.delay == 1.0 and quiet.level == logging.DEBUG and quiet.note == ""
    clock.now += 8.0  # past the grace window: a real permission problem
    late = retries.refused(403)
    assert late.level == logging.WARNING and late.note == "" and late.delay == 0.5
    assert late.attempt == 4


def test_other_error_answers_back_off_even_right_after_the_api_answers() -> None:
    retries = policy()
    assert [retries.refused(status).delay for status in (500, 401, 404)] == [0.5, 1.0, 2.0]


def test_the_rbac_window_starts_again_after_the_api_was_unreachable_again() -> None:
    clock = Clock()
    retries = policy(clock)
    retries.refused(403)  # the first answer opens the window
    clock.now += 30.0
    assert retries.refused(403).note == ""  # long after: backoff, no note
    retries.unreachable(connection_refused=True)
    clock.now += 1.0
    again = retries.refused(403)
    assert again.note.startswith(" (the API server answered 0.0s ago") and again.delay == 1.0
