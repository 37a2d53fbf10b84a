"""github.ratelimit: what GitHub's status codes and rate-limit headers mean (table tests)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from forgea_gh.github import ratelimit

NOW = 1_700_000_000.0
OK = ratelimit.Outcome.OK
TRANSIENT = ratelimit.Outcome.TRANSIENT
PERMANENT = ratelimit.Outcome.PERMANENT
MINUTE = ratelimit.SECONDARY_LIMIT_WAIT_SECONDS
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes."


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def exhausted(reset: float | None) -> dict[str, str]:
    headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0"}
    if reset is not None:
        headers["x-ratelimit-reset"] = str(int(reset))
    return headers


@pytest.mark.parametrize(
    ("status", "headers", "message", "outcome", "wait"),
    [
        pytest.param(200, {}, "", OK, None, id="200"),
        pytest.param(201, {"x-ratelimit-remaining": "0"}, "", OK, None, id="201-last-request"),
        pytest.param(204, {}, "", OK, None, id="204"),
        pytest.param(301, {}, "", OK, None, id="301"),
        pytest.param(304, {}, "", OK, None, id="304"),
        pytest.param(500, {}, "", TRANSIENT, None, id="500"),
        pytest.param(502, {}, "", TRANSIENT, None, id="502"),
        pytest.param(503, {}, "", TRANSIENT, None, id="503"),
        pytest.param(503, {"Retry-After": "5"}, "", TRANSIENT, 5.0, id="503-retry-after"),
        pytest.param(504, {}, "", TRANSIENT, None, id="504"),
        pytest.param(429, {}, "", TRANSIENT, MINUTE, id="429-no-hint-waits-a-minute"),
        pytest.param(429, {"Retry-After": "10"}, "", TRANSIENT, 10.0, id="429-retry-after"),
        pytest.param(429, exhausted(NOW + 42), "", TRANSIENT, 42.0, id="429-primary"),
        pytest.param(403, {"Retry-After": "10"}, "", TRANSIENT, 10.0, id="403-retry-after"),
        pytest.param(403, {"retry-after": "0"}, "", TRANSIENT, 0.0, id="403-retry-after-0"),
        pytest.param(403, {"Retry-After": http_date(NOW + 30)}, "", TRANSIENT, 30.0, id="403-date"),
        pytest.param(403, {"Retry-After": http_date(NOW - 30)}, "", TRANSIENT, 0.0, id="403-past"),
        pytest.param(403, exhausted(NOW + 100), "", TRANSIENT, 100.0, id="403-primary"),
        pytest.param(403, exhausted(NOW - 5), "", TRANSIENT, 0.0, id="403-reset-passed"),
        pytest.param(403, exhausted(None), "", TRANSIENT, MINUTE, id="403-primary-no-reset"),
        pytest.param(
            403,
            {"Retry-After": "3", **exhausted(NOW + 100)},
            "",
            TRANSIENT,
            3.0,
            id="retry-after-before-reset",
        ),
        pytest.param(403, {}, SECONDARY, TRANSIENT, MINUTE, id="403-secondary-message-only"),
        pytest.param(
            403, {"x-ratelimit-remaining": "4999"}, "", PERMANENT, None, id="403-not-limited"
        ),
        pytest.param(
            403, {}, "Resource not accessible by integration", PERMANENT, None, id="403-forbidden"
        ),
        pytest.param(400, {}, "", PERMANENT, None, id="400"),
        pytest.param(401, {}, "Bad credentials", PERMANENT, None, id="401"),
        pytest.param(404, {}, "", PERMANENT, None, id="404"),
        pytest.param(404, {"Retry-After": "5"}, "", PERMANENT, None, id="404-retry-after"),
        pytest.param(410, {}, "", PERMANENT, None, id="410"),
        pytest.param(422, {}, "Validation Failed", PERMANENT, None, id="422"),
    ],
)
def test_classify(
    status: int,
    headers: dict[str, str],
    message: str,
    outcome: ratelimit.Outcome,
    wait: float | None,
) -> None:
    verdict = ratelimit.classify(status, headers, NOW, message=message)
    assert verdict.outcome is outcome
    assert verdict.wait_seconds == wait
    assert verdict.reason or outcome is OK


@pytest.mark.parametrize("name", ["Retry-After", "retry-after", "RETRY-AFTER"])
def test_header_names_are_case_insensitive(name: str) -> None:
    assert ratelimit.classify(429, {name: "7"}, NOW).wait_seconds == 7.0


def test_reads_httpx_headers() -> None:
    headers = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 9))})
    verdict = ratelimit.classify(403, headers, NOW)
    assert (verdict.outcome, verdict.wait_seconds) == (TRANSIENT, 9.0)


def test_reasons_name_the_limit() -> None:
    primary = ratelimit.classify(403, {**exhausted(NOW), "x-ratelimit-resource": "core"}, NOW)
    assert primary.reason == "primary rate limit exhausted (core)"
    assert ratelimit.classify(429, {"Retry-After": "1"}, NOW).reason == "secondary rate limit"
    assert ratelimit.classify(502, {}, NOW).reason == "server error 502"
    assert ratelimit.classify(422, {}, NOW).reason == "client error 422"


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 15 ", 15.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (http_date(NOW + 90), 90.0),
        (http_date(NOW - 90), 0.0),
        ("Tue, 14 Nov 2023 22:13:20 -0000", 0.0),  # NOW, zone-less form
        ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),
        ("Tue, 99 Nov 2023 22:15:20 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, wait: float | None) -> None:
    assert ratelimit.parse_retry_after(value, NOW) == wait


def test_rate_limit_from_headers() -> None:
    limit = ratelimit.RateLimit.from_headers(
        {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4987",
            "X-RateLimit-Reset": "1700000600",
            "X-RateLimit-Used": "13",
            "X-RateLimit-Resource": "core",
            "Content-Type": "application/json",
        }
    )
    assert limit == ratelimit.RateLimit(
        limit=5000, remaining=4987, reset=1_700_000_600.0, used=13, resource="core"
    )
    assert not limit.exhausted
    assert limit.seconds_until_reset(NOW) == 600.0
    assert limit.seconds_until_reset(NOW + 1000) == 0.0


def test_rate_limit_absent_or_garbled() -> None:
    assert ratelimit.RateLimit.from_headers({"Content-Type": "application/json"}) is None
    garbled = ratelimit.RateLimit.from_headers(
        {"x-ratelimit-remaining": "lots", "x-ratelimit-reset": "later", "x-ratelimit-resource": ""}
    )
    assert garbled == ratelimit.RateLimit()
    assert garbled is not None and garbled.seconds_until_reset(NOW) is None
