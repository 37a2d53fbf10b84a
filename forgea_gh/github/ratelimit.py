"""Sans-I/O reading of GitHub's answers: rate-limit headers and what a status means.

A status code, a header mapping and the current time in; a `Verdict` out.
Nothing here touches a socket, so every rule is a row in a table test.
See https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

# "Otherwise, wait for at least one minute before retrying."
# https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
SECONDARY_LIMIT_WAIT_SECONDS = 60.0

# GitHub's documented wording of a secondary limit answered as a bare 403
# (no Retry-After): "You have exceeded a secondary rate limit ...".
_RATE_LIMIT_WORDS = ("rate limit",)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The primary rate limit as GitHub reports it on every response.

    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit
    Fields GitHub did not send (or sent garbled) are None.
    """

    limit: int | None = None
    remaining: int | None = None
    # UTC epoch seconds at which the current window resets.
    reset: float | None = None
    used: int | None = None
    resource: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """The rate limit in `headers`, or None when they carry no x-ratelimit-* header."""
        lowered = _lowered(headers)
        if not any(name.startswith("x-ratelimit-") for name in lowered):
            return None
        return cls(
            limit=_int(lowered.get("x-ratelimit-limit")),
            remaining=_int(lowered.get("x-ratelimit-remaining")),
            reset=_float(lowered.get("x-ratelimit-reset")),
            used=_int(lowered.get("x-ratelimit-used")),
            resource=lowered.get("x-ratelimit-resource") or None,
        )

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def seconds_until_reset(self, now: float) -> float | None:
        if self.reset is None:
            return None
        return max(0.0, self.reset - now)


class Outcome(enum.Enum):
    OK = "ok"
    # Worth trying again later: 5xx, 429, rate-limited 403.
    TRANSIENT = "transient"
    # Will fail the same way every time: any other 4xx.
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    # For TRANSIENT: the wait GitHub asked for (never negative), or None
    # when it gave no hint and the caller's own backoff applies.
    wait_seconds: float | None = None
    # A few words for logs and error messages ("secondary rate limit").
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def transient(self) -> bool:
        return self.outcome is Outcome.TRANSIENT

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT


def classify(
    status_code: int, headers: Mapping[str, str], now: float, *, message: str = ""
) -> Verdict:
    """What a response with `status_code` and `headers`, received at `now`, means.

    `now` is UTC epoch seconds (x-ratelimit-reset is one too); `message` is
    GitHub's JSON `message`, which is the only sign of a secondary rate limit
    answered as a bare 403.
    https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately
    """
    if status_code < 400:
        return Verdict(Outcome.OK)
    lowered = _lowered(headers)
    retry_after = parse_retry_after(lowered.get("retry-after"), now)
    if status_code >= 500:
        return Verdict(Outcome.TRANSIENT, retry_after, f"server error {status_code}")
    limit = RateLimit.from_headers(lowered)
    if status_code in (403, 429):
        # Retry-After first, then x-ratelimit-reset, then a minute: the
        # order GitHub's docs give.
        if retry_after is not None:
            return Verdict(Outcome.TRANSIENT, retry_after, "secondary rate limit")
        if limit is not None and limit.exhausted:
            wait = limit.seconds_until_reset(now)
            if wait is None:
                wait = SECONDARY_LIMIT_WAIT_SECONDS
            resource = f" ({limit.resource})" if limit.resource else ""
            return Verdict(Outcome.TRANSIENT, wait, f"primary rate limit exhausted{resource}")
        if status_code == 429 or _mentions_rate_limit(message):
            return Verdict(Outcome.TRANSIENT, SECONDARY_LIMIT_WAIT_SECONDS, "secondary rate limit")
    return Verdict(Outcome.PERMANENT, None, f"client error {status_code}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date), or None.

    https://www.rfc-editor.org/rfc/rfc9110#field.retry-after
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    seconds = _float(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always GMT (RFC 9110 §5.6.7).
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def _mentions_rate_limit(message: str) -> bool:
    lowered = message.lower()
    return any(words in lowered for words in _RATE_LIMIT_WORDS)


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    # Header names are case-insensitive; plain dicts (tests, recordings) are not.
    return {name.lower(): value for name, value in headers.items()}


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
