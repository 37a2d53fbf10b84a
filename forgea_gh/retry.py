"""When to try a failed job again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter.

    The delay after the n-th failed attempt (n >= 1) is

        rand() * min(max_seconds, base_seconds * 2 ** (n - 1))

    with rand() uniform in [0, 1). Full jitter spreads retries of jobs that
    failed together (a GitHub outage) instead of retrying them in lockstep.
    After `max_attempts` attempts the job is dead-lettered instead.
    """

    base_seconds: float = 2.0
    max_seconds: float = 900.0
    max_attempts: int = 8

    def ceiling(self, attempt: int) -> float:
        """The largest delay the n-th failure can get."""
        # min() before the power would overflow for large attempt numbers.
        exponent = min(max(attempt - 1, 0), 64)
        return min(self.max_seconds, self.base_seconds * 2.0**exponent)

    def next_delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return self.ceiling(attempt) * rand()

    def exhausted(self, attempts: int, max_attempts: int | None = None) -> bool:
        return attempts >= (self.max_attempts if max_attempts is None else max_attempts)
