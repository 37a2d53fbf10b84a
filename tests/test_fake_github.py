"""GitHubClient against FakeGitHub over real loopback HTTP (uvicorn on a free port)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stamina

from forgea_gh import errors
from forgea_gh.github import auth, client
from tests import support
from tests.fake_github import FakeGitHub, Reply

SHA = "0123456789abcdef0123456789abcdef01234567"
STATUSES = "/repos/octo/lab/statuses/{sha}"


@dataclass
class Served:
    fake: FakeGitHub
    url: str

    def client(self, *, timeout: float = 2.0, attempts: int = 5) -> client.GitHubClient:
        return client.GitHubClient(
            self.url,
            auth.TokenAuth("tkn"),
            max_wait_seconds=30,
            timeout_seconds=timeout,
            attempts=attempts,
        )


@pytest.fixture(autouse=True)
def fast_retries() -> Iterator[None]:
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = FakeGitHub()
    fake.add_repo("octo/lab")
    async with support.live_server(fake) as url:
        yield Served(fake, url)


async def post_status(github: client.GitHubClient) -> dict[str, Any]:
    return await github.create_commit_status(
        "octo/lab",
        SHA,
        state="success",
        context="forgea/verification",
        description="All checks passed",
        target_url="https://forgea.example/sessions/1",
    )


async def test_status_is_recorded(served: Served) -> None:
    async with served.client() as github:
        status = await post_status(github)
    assert status["state"] == "success"
    [stored] = served.fake.statuses[("octo/lab", SHA)]
    assert stored["context"] == "forgea/verification"
    assert stored["target_url"] == "https://forgea.example/sessions/1"
    [request] = served.fake.requests
    assert (request.method, request.path) == ("POST", f"/repos/octo/lab/statuses/{SHA}")
    assert request.headers["authorization"] == "Bearer tkn"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.json["description"] == "All checks passed"


async def test_scripted_503_429_and_secondary_limit_are_retried(served: Served) -> None:
    served.fake.script(
        "POST",
        STATUSES,
        [Reply(503), Reply(429, headers={"Retry-After": "1"}), Reply.secondary_limit(1)],
    )
    async with served.client() as github:
        await post_status(github)
    assert len(served.fake.requests_to("POST", STATUSES)) == 4
    assert len(served.fake.statuses[("octo/lab", SHA)]) == 1
    assert served.fake.unused_replies() == 0


async def test_scripted_422_is_permanent(served: Served) -> None:
    served.fake.script(
        "POST",
        "/repos/octo/lab/statuses/" + SHA,
        [Reply(422, json={"message": "No commit found for SHA: " + SHA})],
    )
    async with served.client() as github:
        with pytest.raises(errors.PermanentError, match=f"422 .*No commit found for SHA: {SHA}"):
            await post_status(github)
    assert len(served.fake.requests) == 1
    assert ("octo/lab", SHA) not in served.fake.statuses


async def test_primary_limit_far_away_reschedules(served: Served) -> None:
    served.fake.script("POST", STATUSES, [Reply.primary_limit(reset=time.time() + 3600)])
    async with served.client() as github:
        with pytest.raises(errors.RetryableError) as caught:
            await post_status(github)
    assert caught.value.retry_after is not None and caught.value.retry_after > 3000
    assert len(served.fake.requests) == 1


async def test_dropped_connection_is_a_transport_error(served: Served) -> None:
    served.fake.script("GET", "/repos/{owner}/{repo}", [Reply(drop=True)])
    async with httpx.AsyncClient(base_url=served.url) as raw:
        with pytest.raises(httpx.TransportError):
            await raw.get("/repos/octo/lab", headers={"Authorization": "Bearer tkn"})


async def test_dropped_connection_is_retried(served: Served) -> None:
    served.fake.script("POST", STATUSES, [Reply(drop=True)])
    async with served.client() as github:
        await post_status(github)
    assert len(served.fake.requests) == 2
    assert len(served.fake.statuses[("octo/lab", SHA)]) == 1


async def test_dropped_connection_every_time_is_retryable(served: Served) -> None:
    served.fake.script("POST", STATUSES, [Reply(drop=True)] * 2)
    async with served.client(attempts=2) as github:
        with pytest.raises(errors.RetryableError, match="unreachable") as caught:
            await post_status(github)
    assert isinstance(caught.value.__cause__, httpx.TransportError)


async def test_slow_reply_hits_the_timeout(served: Served) -> None:
    served.fake.script("POST", STATUSES, [Reply(delay=2.0)])
    started = time.monotonic()
    async with served.client(timeout=0.2, attempts=1) as github:
        with pytest.raises(errors.RetryableError) as caught:
            await post_status(github)
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert time.monotonic() - started < 1.5
    assert ("octo/lab", SHA) not in served.fake.statuses


async def test_slow_reply_then_success(served: Served) -> None:
    served.fake.script("POST", STATUSES, [Reply(delay=2.0)])
    async with served.client(timeout=0.2) as github:
        await post_status(github)
    assert len(served.fake.statuses[("octo/lab", SHA)]) == 1


async def test_generate_times_out_but_the_repository_exists(served: Served) -> None:
    served.fake.add_repo("forgea/template", is_template=True)
    served.fake.script("POST", "/repos/forgea/template/generate", [Reply(delay=2.0, apply=True)])
    async with served.client(timeout=0.2) as github:
        # The retry meets the repository the lost first attempt created.
        with pytest.raises(client.RejectedError, match="name already exists") as caught:
            await github.generate_repository("forgea/template", owner="labs", name="lab-ada")
        assert caught.value.status_code == 422
        repo = await github.get_repository("labs/lab-ada")
    assert repo is not None and repo["full_name"] == "labs/lab-ada"
    assert len(served.fake.requests_to("POST", "/repos/{o}/{r}/generate")) == 2


async def test_provisioning_calls(served: Served) -> None:
    served.fake.add_repo("forgea/template", is_template=True)
    async with served.client() as github:
        repo = await github.generate_repository(
            "forgea/template", owner="labs", name="lab-ada", description="Ada"
        )
        assert repo["full_name"] == "labs/lab-ada"
        assert repo["private"] is True
        invitation = await github.add_collaborator("labs/lab-ada", "ada")
        assert invitation is not None and invitation["invitee"] == {"login": "ada"}
        assert await github.add_collaborator("labs/lab-ada", "ada") is None
        assert await github.delete_repository("labs/lab-ada") is True
        assert await github.delete_repository("labs/lab-ada") is False
        assert await github.get_repository("labs/lab-ada") is None
    assert served.fake.collaborators["labs/lab-ada"] == {"ada": "push"}


async def test_deliveries_pages_and_redelivery(served: Served) -> None:
    deliveries = [{"id": n, "guid": f"g-{n}", "status_code": 502} for n in range(5, 0, -1)]
    served.fake.seed_deliveries("octo/lab#9", deliveries)
    hook = client.HookRef.parse("octo/lab#9")
    async with served.client() as github:
        listed = [d async for d in github.list_hook_deliveries(hook, per_page=2)]
        await github.redeliver(hook, 3)
        with pytest.raises(client.RejectedError, match="404"):
            await github.redeliver(hook, 99)
    assert listed == deliveries
    pages = served.fake.requests_to("GET", "/repos/octo/lab/hooks/9/deliveries")
    assert [r.query.get("cursor") for r in pages] == [None, "2", "4"]
    assert served.fake.redeliveries == [("octo/lab#9", 3)]


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return support.rsa_key_pair()


async def test_github_app_end_to_end(app_key: tuple[str, str]) -> None:
    private, public = app_key
    fake = FakeGitHub(app_public_key=public, installations={"octo": 7})
    fake.add_repo("octo/lab")
    fake.seed_deliveries("app", [{"id": 1, "guid": "g-1"}])
    async with support.live_server(fake) as url:
        async with client.GitHubClient(
            url, auth.AppAuth(4242, private), max_wait_seconds=5, timeout_seconds=2
        ) as github:
            await post_status(github)  # finds installation 7, exchanges a token
            await post_status(github)  # cached token and installation
            fake.revoke_tokens()
            await post_status(github)  # 401, new token, success
            assert [d["guid"] async for d in github.list_hook_deliveries(client.HookRef.app())] == [
                "g-1"
            ]
    assert len(fake.statuses[("octo/lab", SHA)]) == 3
    assert len(fake.requests_to("GET", "/repos/octo/lab/installation")) == 1
    assert len(fake.requests_to("POST", "/app/installations/7/access_tokens")) == 2
    assert len(fake.requests_to("POST", STATUSES)) == 4
