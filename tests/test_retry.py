"""RetryPolicy: capped exponential backoff with full jitter."""

from __future__ import annotations

import pytest

from forgea_gh import retry


def test_delay_doubles_from_the_base_until_the_cap() -> None:
    policy = retry.RetryPolicy(base_seconds=2, max_seconds=30, max_attempts=10)
    ceilings = [policy.next_delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [2, 4, 8, 16, 30, 30]


def test_full_jitter_scales_the_ceiling() -> None:
    policy = retry.RetryPolicy(base_seconds=2, max_seconds=30)
    assert policy.next_delay(3, rand=lambda: 0.25) == 2.0
    assert policy.next_delay(3, rand=lambda: 0.0) == 0.0


def test_random_delays_stay_within_the_ceiling() -> None:
    policy = retry.RetryPolicy(base_seconds=1, max_seconds=60)
    for attempt in range(1, 12):
        for _ in range(50):
            assert 0 <= policy.next_delay(attempt) <= policy.ceiling(attempt)


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = retry.RetryPolicy(base_seconds=1, max_seconds=900)
    assert policy.ceiling(10_000) == 900


@pytest.mark.parametrize(("attempts", "exhausted"), [(0, False), (2, False), (3, True), (4, True)])
def test_exhausted_after_max_attempts(attempts: int, exhausted: bool) -> None:
    assert retry.RetryPolicy(max_attempts=3).exhausted(attempts) is exhausted


def test_a_job_may_carry_its_own_attempt_budget() -> None:
    assert retry.RetryPolicy(max_attempts=3).exhausted(5, max_attempts=6) is False
