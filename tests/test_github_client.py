"""github.client and github.auth against pytest-httpx: retries, rate limits, errors, App auth."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import stamina
from pytest_httpx import HTTPXMock

from forgea_gh import errors
from forgea_gh.github import auth, client
from tests import support

API = "https://ghe.example/api/v3"
REPO_URL = f"{API}/repos/octo/lab"
STATUS_URL = f"{API}/repos/octo/lab/statuses/abc123"
TOKEN_URL = f"{API}/app/installations/7/access_tokens"
APP_ID = 4242
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fast_retries() -> Iterator[None]:
    # Waits become zero; the client's own `attempts` still applies.
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


@pytest.fixture
def retry_waits() -> Iterator[list[float | None]]:
    """The wait the client asked stamina for before each retry (None: stamina's backoff)."""
    waits: list[float | None] = []

    def record(details: stamina.instrumentation.RetryDetails) -> None:
        waits.append(getattr(details.caused_by, "wait_seconds", None))

    stamina.instrumentation.set_on_retry_hooks([record])
    try:
        yield waits
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    return support.rsa_key_pair()


@pytest.fixture
async def github() -> AsyncIterator[client.GitHubClient]:
    c = client.GitHubClient(
        API, auth.TokenAuth("tkn"), max_wait_seconds=60, timeout_seconds=5, clock=Clock()
    )
    try:
        yield c
    finally:
        await c.aclose()


def app_client(private_key: str, clock: Clock, **kwargs: Any) -> client.GitHubClient:
    return client.GitHubClient(
        API,
        auth.AppAuth(APP_ID, private_key, clock=clock),
        max_wait_seconds=60,
        timeout_seconds=5,
        clock=clock,
        **kwargs,
    )


def token_reply(token: str, expires_at: float) -> dict[str, Any]:
    expires = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"token": token, "expires_at": expires}


# -- requests as GitHub wants them ------------------------------------------


async def test_every_request_carries_githubs_headers(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=REPO_URL, json={"id": 1, "full_name": "octo/lab"})
    assert await github.get_repository("octo/lab") == {"id": 1, "full_name": "octo/lab"}
    request = httpx_mock.get_request()
    assert request is not None
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.headers["user-agent"].startswith("forgea-gh/")
    assert request.headers["authorization"] == "Bearer tkn"


async def test_commit_status_body_and_description_truncated(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=STATUS_URL, status_code=201, json={"id": 9})
    result = await github.create_commit_status(
        "octo/lab",
        "abc123",
        state="failure",
        context="forgea/verification",
        description="x" * 300,
        target_url="https://forgea.example/s/1",
    )
    assert result == {"id": 9}
    request = httpx_mock.get_request()
    assert request is not None
    body = json.loads(request.content)
    assert body["state"] == "failure"
    assert body["context"] == "forgea/verification"
    assert body["target_url"] == "https://forgea.example/s/1"
    assert len(body["description"]) == 140
    assert body["description"].endswith("…")


async def test_generate_collaborator_and_delete(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        method="POST",
        url=f"{API}/repos/forgea/template-1/generate",
        match_json={
            "owner": "labs",
            "name": "lab-ada",
            "description": "Ada's lab",
            "private": True,
            "include_all_branches": False,
        },
        status_code=201,
        json={"id": 77, "full_name": "labs/lab-ada"},
    )
    httpx_mock.add_response(
        method="PUT",
        url=f"{API}/repos/labs/lab-ada/collaborators/ada",
        match_json={"permission": "push"},
        status_code=201,
        json={"id": 5, "invitee": {"login": "ada"}},
    )
    httpx_mock.add_response(
        method="PUT", url=f"{API}/repos/labs/lab-ada/collaborators/ada", status_code=204
    )
    httpx_mock.add_response(method="DELETE", url=f"{API}/repos/labs/lab-ada", status_code=204)
    httpx_mock.add_response(method="DELETE", url=f"{API}/repos/labs/lab-ada", status_code=404)

    repo = await github.generate_repository(
        "forgea/template-1", owner="labs", name="lab-ada", description="Ada's lab"
    )
    assert repo["id"] == 77
    assert await github.add_collaborator("labs/lab-ada", "ada") == {
        "id": 5,
        "invitee": {"login": "ada"},
    }
    assert await github.add_collaborator("labs/lab-ada", "ada") is None
    assert await github.delete_repository("labs/lab-ada") is True
    assert await github.delete_repository("labs/lab-ada") is False


async def test_not_a_full_name_is_permanent(github: client.GitHubClient) -> None:
    with pytest.raises(errors.PermanentError, match="owner/repo"):
        await github.get_repository("just-a-name")


# -- transient answers: retried ---------------------------------------------


async def test_503_then_success(
    github: client.GitHubClient, httpx_mock: HTTPXMock, retry_waits: list[float | None]
) -> None:
    httpx_mock.add_response(url=REPO_URL, status_code=503, json={"message": "Unavailable"})
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    assert await github.get_repository("octo/lab") == {"id": 1}
    assert len(httpx_mock.get_requests()) == 2
    assert retry_waits == [None]  # no hint: stamina's exponential backoff


async def test_429_retry_after_is_honoured(
    github: client.GitHubClient, httpx_mock: HTTPXMock, retry_waits: list[float | None]
) -> None:
    httpx_mock.add_response(url=REPO_URL, status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    assert await github.get_repository("octo/lab") == {"id": 1}
    assert retry_waits == [7.0]


async def test_403_secondary_limit_is_retried(
    httpx_mock: HTTPXMock, retry_waits: list[float | None]
) -> None:
    secondary = {"message": "You have exceeded a secondary rate limit."}
    httpx_mock.add_response(
        url=REPO_URL, status_code=403, headers={"Retry-After": "3"}, json=secondary
    )
    httpx_mock.add_response(url=REPO_URL, status_code=403, json=secondary)  # no header
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    async with client.GitHubClient(
        API, auth.TokenAuth("tkn"), max_wait_seconds=120, timeout_seconds=5
    ) as github:
        assert await github.get_repository("octo/lab") == {"id": 1}
    # Without Retry-After GitHub's docs say: wait at least a minute.
    assert retry_waits == [3.0, 60.0]


async def test_403_primary_limit_waits_for_the_reset(
    github: client.GitHubClient, httpx_mock: HTTPXMock, retry_waits: list[float | None]
) -> None:
    httpx_mock.add_response(
        url=REPO_URL,
        status_code=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 30))},
        json={"message": "API rate limit exceeded"},
    )
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    assert await github.get_repository("octo/lab") == {"id": 1}
    assert retry_waits == [30.0]


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
    ids=lambda e: type(e).__name__,
)
async def test_network_error_then_success(
    github: client.GitHubClient, httpx_mock: HTTPXMock, failure: Exception
) -> None:
    httpx_mock.add_exception(failure, url=REPO_URL)
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    assert await github.get_repository("octo/lab") == {"id": 1}
    assert len(httpx_mock.get_requests()) == 2


async def test_wait_above_the_cap_reschedules_at_once(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=REPO_URL,
        status_code=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 1800))},
        json={"message": "API rate limit exceeded"},
    )
    with pytest.raises(errors.RetryableError) as caught:
        await github.get_repository("octo/lab")
    assert caught.value.retry_after == 1800.0
    assert "GitHub 403 on GET /repos/octo/lab" in str(caught.value)
    assert "max_wait_seconds" in str(caught.value)
    assert len(httpx_mock.get_requests()) == 1


async def test_waits_add_up_against_the_cap(httpx_mock: HTTPXMock) -> None:
    async with client.GitHubClient(
        API, auth.TokenAuth("tkn"), max_wait_seconds=10, timeout_seconds=5
    ) as github:
        httpx_mock.add_response(url=REPO_URL, status_code=429, headers={"Retry-After": "6"})
        httpx_mock.add_response(url=REPO_URL, status_code=429, headers={"Retry-After": "6"})
        with pytest.raises(errors.RetryableError) as caught:
            await github.get_repository("octo/lab")
    assert caught.value.retry_after == 6.0
    assert len(httpx_mock.get_requests()) == 2


async def test_retries_exhausted_is_retryable_with_the_last_answer(
    httpx_mock: HTTPXMock,
) -> None:
    async with client.GitHubClient(
        API, auth.TokenAuth("tkn"), max_wait_seconds=60, timeout_seconds=5, attempts=3
    ) as github:
        for _ in range(2):
            httpx_mock.add_response(url=REPO_URL, status_code=500)
        httpx_mock.add_response(
            url=REPO_URL, status_code=503, headers={"Retry-After": "4"}, json={"message": "Down"}
        )
        with pytest.raises(errors.RetryableError) as caught:
            await github.get_repository("octo/lab")
    assert len(httpx_mock.get_requests()) == 3
    assert "GitHub 503 on GET /repos/octo/lab: Down" in str(caught.value)
    assert "gave up after 3 attempts" in str(caught.value)
    assert caught.value.retry_after == 4.0


async def test_network_errors_exhausted_is_retryable(httpx_mock: HTTPXMock) -> None:
    async with client.GitHubClient(
        API, auth.TokenAuth("tkn"), max_wait_seconds=60, timeout_seconds=5, attempts=2
    ) as github:
        httpx_mock.add_exception(httpx.ConnectError("refused"), url=REPO_URL, is_reusable=True)
        with pytest.raises(errors.RetryableError, match=r"unreachable.*ConnectError: refused"):
            await github.get_repository("octo/lab")
    assert len(httpx_mock.get_requests()) == 2


# -- permanent answers: never retried ---------------------------------------


async def test_422_is_permanent_with_githubs_message(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        method="POST",
        url=STATUS_URL,
        status_code=422,
        json={
            "message": "Validation Failed",
            "errors": [
                {"resource": "Status", "code": "custom", "message": "state is not valid"},
                {"resource": "Status", "field": "context", "code": "missing_field"},
                "plain text error",
            ],
        },
    )
    with pytest.raises(errors.PermanentError) as caught:
        await github.create_commit_status("octo/lab", "abc123", state="success", context="c")
    assert str(caught.value) == (
        "GitHub 422 on POST /repos/octo/lab/statuses/abc123: Validation Failed "
        "(state is not valid; Status.context missing_field; plain text error)"
    )
    assert isinstance(caught.value, client.RejectedError)
    assert caught.value.status_code == 422
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 410])
async def test_other_4xx_are_permanent(
    github: client.GitHubClient, httpx_mock: HTTPXMock, status: int
) -> None:
    httpx_mock.add_response(
        method="POST", url=STATUS_URL, status_code=status, json={"message": "Nope"}
    )
    with pytest.raises(client.RejectedError, match=f"GitHub {status} on POST .*: Nope$"):
        await github.create_commit_status("octo/lab", "abc123", state="success", context="c")
    assert len(httpx_mock.get_requests()) == 1


async def test_non_json_error_body(github: client.GitHubClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=REPO_URL, status_code=400, text="<html>bad</html>")
    with pytest.raises(client.RejectedError, match="GitHub 400 on GET /repos/octo/lab: <html>"):
        await github.get_repository("octo/lab")


async def test_get_repository_404_is_none(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=REPO_URL, status_code=404, json={"message": "Not Found"})
    assert await github.get_repository("octo/lab") is None
    assert len(httpx_mock.get_requests()) == 1


async def test_token_401_is_permanent_at_once(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=REPO_URL, status_code=401, json={"message": "Bad credentials"})
    with pytest.raises(client.RejectedError, match=r"401 .*Bad credentials"):
        await github.get_repository("octo/lab")
    assert len(httpx_mock.get_requests()) == 1


async def test_app_endpoints_need_an_app(github: client.GitHubClient) -> None:
    with pytest.raises(errors.PermanentError, match="GitHub App"):
        await github.redeliver(client.HookRef.app(), 1)


async def test_links_off_the_api_are_not_followed(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=f"{API}/repos/octo/lab/hooks/9/deliveries?per_page=100",
        json=[{"id": 1}],
        headers={"Link": '<https://evil.example/steal?cursor=2>; rel="next"'},
    )
    seen = []
    with pytest.raises(errors.PermanentError, match="refusing to follow"):
        async for delivery in github.list_hook_deliveries(client.HookRef.parse("octo/lab#9")):
            seen.append(delivery)
    assert seen == [{"id": 1}]


# -- GitHub App auth ----------------------------------------------------------


async def test_app_jwt_claims_verify_with_the_public_key(key_pair: tuple[str, str]) -> None:
    private, public = key_pair
    now = time.time()
    app = auth.AppAuth(APP_ID, private, clock=lambda: now)
    claims = jwt.decode(app.app_jwt(), public, algorithms=["RS256"], issuer=str(APP_ID))
    assert claims["iat"] == int(now) - 60
    assert claims["exp"] == int(now) + 9 * 60
    assert claims["iss"] == str(APP_ID)


def test_app_jwt_is_reused_until_near_expiry(key_pair: tuple[str, str]) -> None:
    clock = Clock()
    app = auth.AppAuth(APP_ID, key_pair[0], clock=clock)
    first = app.app_jwt()
    clock.now += 7 * 60
    assert app.app_jwt() == first
    clock.now += 60  # within a minute of exp
    assert app.app_jwt() != first


def test_bad_private_key_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="private_key_file"):
        auth.AppAuth(APP_ID, "-----BEGIN NONSENSE-----")


async def test_installation_token_is_cached_across_calls(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    private, public = key_pair
    now = time.time()
    clock = Clock(now)
    httpx_mock.add_response(
        method="POST", url=TOKEN_URL, status_code=201, json=token_reply("ghs_1", now + 3600)
    )
    httpx_mock.add_response(url=REPO_URL, json={"id": 1}, is_reusable=True)
    async with app_client(private, clock) as github:
        assert await github.get_repository("octo/lab", installation_id=7) == {"id": 1}
        assert await github.get_repository("octo/lab", installation_id=7) == {"id": 1}
    exchange = httpx_mock.get_requests(url=TOKEN_URL)
    assert len(exchange) == 1
    jwt_header = exchange[0].headers["authorization"].removeprefix("Bearer ")
    assert jwt.decode(jwt_header, public, algorithms=["RS256"])["iss"] == str(APP_ID)
    calls = httpx_mock.get_requests(url=REPO_URL)
    assert [r.headers["authorization"] for r in calls] == ["Bearer ghs_1", "Bearer ghs_1"]


async def test_installation_token_is_refreshed_near_expiry(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    clock = Clock()
    httpx_mock.add_response(
        method="POST", url=TOKEN_URL, status_code=201, json=token_reply("ghs_1", NOW + 3600)
    )
    httpx_mock.add_response(
        method="POST", url=TOKEN_URL, status_code=201, json=token_reply("ghs_2", NOW + 7200)
    )
    httpx_mock.add_response(url=REPO_URL, json={"id": 1}, is_reusable=True)
    async with app_client(key_pair[0], clock) as github:
        await github.get_repository("octo/lab", installation_id=7)
        clock.now = NOW + 3600 - 301  # more than 5 minutes left: cached
        await github.get_repository("octo/lab", installation_id=7)
        clock.now = NOW + 3600 - 299  # less than 5 minutes left: replaced
        await github.get_repository("octo/lab", installation_id=7)
    calls = httpx_mock.get_requests(url=REPO_URL)
    assert [r.headers["authorization"] for r in calls] == [
        "Bearer ghs_1",
        "Bearer ghs_1",
        "Bearer ghs_2",
    ]


async def test_401_refreshes_the_installation_token_once(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    clock = Clock(time.time())
    for token in ("ghs_old", "ghs_new"):
        httpx_mock.add_response(
            method="POST", url=TOKEN_URL, status_code=201, json=token_reply(token, clock.now + 3600)
        )
    httpx_mock.add_response(url=REPO_URL, status_code=401, json={"message": "Bad credentials"})
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    async with app_client(key_pair[0], clock) as github:
        assert await github.get_repository("octo/lab", installation_id=7) == {"id": 1}
    calls = httpx_mock.get_requests(url=REPO_URL)
    assert [r.headers["authorization"] for r in calls] == ["Bearer ghs_old", "Bearer ghs_new"]


async def test_second_401_is_permanent(key_pair: tuple[str, str], httpx_mock: HTTPXMock) -> None:
    clock = Clock(time.time())
    httpx_mock.add_response(
        method="POST",
        url=TOKEN_URL,
        status_code=201,
        json=token_reply("ghs_x", clock.now + 3600),
        is_reusable=True,
    )
    httpx_mock.add_response(
        url=REPO_URL, status_code=401, json={"message": "Bad credentials"}, is_reusable=True
    )
    async with app_client(key_pair[0], clock) as github:
        with pytest.raises(client.RejectedError, match=r"GitHub 401 .*Bad credentials") as caught:
            await github.get_repository("octo/lab", installation_id=7)
    assert caught.value.status_code == 401
    assert len(httpx_mock.get_requests(url=REPO_URL)) == 2
    assert len(httpx_mock.get_requests(url=TOKEN_URL)) == 2


async def test_app_finds_the_installation_of_a_repository(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    clock = Clock(time.time())
    httpx_mock.add_response(url=f"{REPO_URL}/installation", json={"id": 7})
    httpx_mock.add_response(
        method="POST", url=TOKEN_URL, status_code=201, json=token_reply("ghs_1", clock.now + 3600)
    )
    httpx_mock.add_response(method="POST", url=STATUS_URL, status_code=201, json={"id": 1})
    httpx_mock.add_response(url=f"{API}/repos/octo/other", json={"id": 2})
    async with app_client(key_pair[0], clock) as github:
        await github.create_commit_status("octo/lab", "abc123", state="pending", context="c")
        # Same owner, same installation: no second look-up.
        assert await github.get_repository("octo/other") == {"id": 2}
    lookup = httpx_mock.get_request(url=f"{REPO_URL}/installation")
    assert lookup is not None
    assert lookup.headers["authorization"] != "Bearer ghs_1"  # the App's JWT


async def test_app_reinstalled_under_a_new_id(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    clock = Clock(time.time())
    httpx_mock.add_response(url=f"{REPO_URL}/installation", json={"id": 7})
    httpx_mock.add_response(
        method="POST", url=TOKEN_URL, status_code=404, json={"message": "Not Found"}
    )
    httpx_mock.add_response(url=f"{REPO_URL}/installation", json={"id": 8})
    httpx_mock.add_response(
        method="POST",
        url=f"{API}/app/installations/8/access_tokens",
        status_code=201,
        json=token_reply("ghs_8", clock.now + 3600),
    )
    httpx_mock.add_response(url=REPO_URL, json={"id": 1})
    async with app_client(key_pair[0], clock) as github:
        with pytest.raises(client.RejectedError, match="/app/installations/7/access_tokens"):
            await github.get_repository("octo/lab")
        assert await github.get_repository("octo/lab") == {"id": 1}


async def test_app_not_installed(key_pair: tuple[str, str], httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{REPO_URL}/installation", status_code=404, json={"message": "Not Found"}
    )
    httpx_mock.add_response(
        url=f"{REPO_URL}/installation", status_code=404, json={"message": "Not Found"}
    )
    async with app_client(key_pair[0], Clock(time.time())) as github:
        assert await github.repository_installation_id("octo/lab") is None
        # Not "the repository is absent": GitHub never said so.
        with pytest.raises(client.RejectedError, match="App is not installed for octo/lab"):
            await github.get_repository("octo/lab")


# -- webhook deliveries ---------------------------------------------------------


async def test_deliveries_follow_the_link_cursor(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    base = f"{API}/repos/octo/lab/hooks/9/deliveries"
    httpx_mock.add_response(
        url=f"{base}?per_page=2",
        json=[{"id": 1}, {"id": 2}],
        headers={"Link": f'<{base}?per_page=2&cursor=c2>; rel="next", <{base}>; rel="first"'},
    )
    httpx_mock.add_response(
        url=f"{base}?per_page=2&cursor=c2",
        json=[{"id": 3}, {"id": 4}],
        headers={"Link": f'<{base}?per_page=2&cursor=c3>; rel="next"'},
    )
    httpx_mock.add_response(url=f"{base}?per_page=2&cursor=c3", json=[{"id": 5}])
    hook = client.HookRef.parse("octo/lab#9")
    ids = [d["id"] async for d in github.list_hook_deliveries(hook, per_page=2)]
    assert ids == [1, 2, 3, 4, 5]


async def test_app_hook_deliveries_and_redelivery_use_the_jwt(
    key_pair: tuple[str, str], httpx_mock: HTTPXMock
) -> None:
    private, public = key_pair
    httpx_mock.add_response(url=f"{API}/app/hook/deliveries?per_page=100", json=[{"id": 11}])
    httpx_mock.add_response(
        method="POST", url=f"{API}/app/hook/deliveries/11/attempts", status_code=202, json={}
    )
    async with app_client(private, Clock(time.time())) as github:
        hook = client.HookRef.app()
        assert [d async for d in github.list_hook_deliveries(hook)] == [{"id": 11}]
        await github.redeliver(hook, 11)
    for request in httpx_mock.get_requests():
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert jwt.decode(token, public, algorithms=["RS256"])["iss"] == str(APP_ID)


async def test_repository_hook_redelivery(
    github: client.GitHubClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        method="POST",
        url=f"{API}/repos/octo/lab/hooks/9/deliveries/123/attempts",
        status_code=202,
        json={},
    )
    await github.redeliver(client.HookRef.parse("octo/lab#9"), 123)


@pytest.mark.parametrize(
    ("text", "hook"),
    [
        ("octo/lab#9", client.HookRef("octo/lab", 9)),
        (" octo/lab#123456 ", client.HookRef("octo/lab", 123456)),
        ("app", client.HookRef.app()),
    ],
)
def test_hook_ref_parse(text: str, hook: client.HookRef) -> None:
    assert client.HookRef.parse(text) == hook
    assert client.HookRef.parse(str(hook)) == hook


@pytest.mark.parametrize(
    "text", ["", "octo/lab", "octo#9", "octo/lab#", "octo/lab#x", "/lab#9", "a/b/c#9", "o/r#٣"]
)
def test_hook_ref_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="hook"):
        client.HookRef.parse(text)


def test_hook_ref_paths() -> None:
    assert client.HookRef.app().deliveries_path() == "/app/hook/deliveries"
    assert client.HookRef("octo/lab", 9).deliveries_path() == "/repos/octo/lab/hooks/9/deliveries"
    with pytest.raises(ValueError):
        client.HookRef("octo/lab", None)


# -- configuration ----------------------------------------------------------------


async def test_from_settings(tmp_path: Path, key_pair: tuple[str, str]) -> None:
    assert client.from_settings(support.make_config(tmp_path)) is None

    with_token = client.from_settings(
        support.make_config(
            tmp_path,
            github={
                "token": "t",
                "api_url": API + "/",
                "max_wait_seconds": 5,
                "timeout_seconds": 3,
            },
        )
    )
    assert with_token is not None
    try:
        assert isinstance(with_token.auth, auth.TokenAuth)
        assert with_token.api_url == API
        assert with_token.max_wait_seconds == 5
    finally:
        await with_token.aclose()

    key_file = tmp_path / "app.pem"
    key_file.write_text(key_pair[0])
    with_app = client.from_settings(
        support.make_config(
            tmp_path, github={"token": "t", "app_id": APP_ID, "private_key_file": str(key_file)}
        )
    )
    assert with_app is not None
    try:
        assert isinstance(with_app.auth, auth.AppAuth)
        assert with_app.auth.app_id == APP_ID
    finally:
        await with_app.aclose()
