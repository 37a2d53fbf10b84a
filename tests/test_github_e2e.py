"""Commit statuses end to end: signed pushes and verification results in, statuses on GitHub out.

The daemon runs in-process on real SQLite; GitHub is a FakeGitHub served by
uvicorn on loopback, scripted to fail the ways GitHub does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import payloads
from tests.e2e_support import (
    CONTEXT,
    add_lab,
    bind_session,
    config_for,
    daemon,
    deliver,
    fast_retries,
    jobs_of,
    push_to,
    rows,
    served_fake,
    settle,
    statuses_posted,
    verify,
    wait_for_job,
    wait_for_session,
)
from tests.fake_github import FakeGitHub, Reply

REPO = "forgea/git-101-octocat"
ANY_STATUS = "/repos/{owner}/{repo}/statuses/{sha}"


@pytest.fixture(autouse=True)
def fast_github_retries() -> Iterator[None]:
    # Five tries per request (the client's own default), none of them sleeping.
    with fast_retries(5):
        yield


def status_job(db: Path, state: str, sha: str) -> dict[str, Any]:
    found = [
        j
        for j in jobs_of(db, "commit_status")
        if json.loads(j["payload"])["state"] == state and json.loads(j["payload"])["sha"] == sha
    ]
    assert len(found) == 1, found
    return found[0]


def statuses_path(full_name: str, sha: str) -> str:
    return f"/repos/{full_name}/statuses/{sha}"


def succeeded_posts(fake: FakeGitHub, full_name: str, sha: str, state: str) -> list[Any]:
    return [s for s in statuses_posted(fake, full_name, sha) if s["state"] == state]


async def test_a_push_posts_one_pending_status_on_its_head_commit(tmp_path: Path) -> None:
    async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
        repo = fake.add_repo(REPO)
        await add_lab(d.client)
        session = await bind_session(d.client, repo)
        body = push_to(repo, [1, 2])
        first = await deliver(d.client, body, guid="push-guid-1")
        assert first.status_code == 202, first.text
        await wait_for_session(d.client, session["id"], "VERIFYING")
        await settle(d.db)

        head = payloads.sha(2)
        posted = statuses_posted(fake, REPO, head)
        assert [(s["state"], s["context"]) for s in posted] == [("pending", CONTEXT)], (
            f"expected one pending status on {head}; commit_status jobs: "
            f"{jobs_of(d.db, 'commit_status')}"
        )
        assert posted[0]["description"] == "Forgea is verifying this commit"
        assert statuses_posted(fake, REPO, payloads.sha(1)) == []  # only the head commit
        (job,) = jobs_of(d.db, "commit_status")
        assert (job["status"], job["attempts"]) == ("completed", 1)

        # GitHub redelivers the same delivery: a duplicate, nothing new.
        again = await deliver(d.client, body, guid="push-guid-1")
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate"
        # The same commits under a new GUID (another hook, a re-push): recorded, not reported.
        other = await deliver(d.client, body, guid="push-guid-2")
        assert other.status_code == 202, other.text
        await wait_for_job(d.db, other.json()["job_id"], ("completed",))
        await settle(d.db)

        assert len(fake.requests_to("POST", ANY_STATUS)) == 1
        assert len(statuses_posted(fake, REPO, head)) == 1
        assert len(jobs_of(d.db, "commit_status")) == 1
        assert len(rows(d.db, "SELECT * FROM lab_attempts")) == 2


async def test_verification_results_post_success_and_failure_once(tmp_path: Path) -> None:
    async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
        passing = fake.add_repo("forgea/git-101-octocat")
        failing = fake.add_repo("forgea/git-101-hubot")
        await add_lab(d.client)
        first = await bind_session(d.client, passing, login="octocat")
        second = await bind_session(d.client, failing, login="hubot")
        for repo, session, commit in ((passing, first, 1), (failing, second, 2)):
            delivered = await deliver(d.client, push_to(repo, [commit]))
            assert delivered.status_code == 202, delivered.text
            await wait_for_session(d.client, session["id"], "VERIFYING")

        passed = await verify(
            d.client,
            first["id"],
            payloads.sha(1),
            "passed",
            "ci-1",
            summary="All checks green",
            details_url="https://ci.example/runs/1",
        )
        assert passed["session"]["status"] == "COMPLETED"
        failed = await verify(d.client, second["id"], payloads.sha(2), "failed", "ci-2")
        assert failed["session"]["status"] == "ACTIVE"
        await settle(d.db)

        (success,) = succeeded_posts(fake, passing["full_name"], payloads.sha(1), "success")
        assert success["context"] == CONTEXT
        assert success["description"] == "All checks green"
        assert success["target_url"] == "https://ci.example/runs/1"
        (failure,) = succeeded_posts(fake, failing["full_name"], payloads.sha(2), "failure")
        assert failure["context"] == CONTEXT
        assert failure["description"] == "Lab verification failed"
        # Neither result leaked onto the other session's commit.
        assert succeeded_posts(fake, failing["full_name"], payloads.sha(2), "success") == []
        assert succeeded_posts(fake, passing["full_name"], payloads.sha(1), "failure") == []
        assert status_job(d.db, "success", payloads.sha(1))["status"] == "completed"
        assert status_job(d.db, "failure", payloads.sha(2))["status"] == "completed"


async def test_transient_answers_are_retried_until_one_status_lands(tmp_path: Path) -> None:
    async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
        repo = fake.add_repo(REPO)
        await add_lab(d.client)
        session = await bind_session(d.client, repo)
        # Two commits: the result is on the first, so only its status meets the script.
        await deliver(d.client, push_to(repo, [1, 2]))
        await wait_for_session(d.client, session["id"], "VERIFYING")
        target = payloads.sha(1)
        fake.script(
            "POST",
            statuses_path(REPO, target),
            [Reply(503), Reply(503), Reply(503), Reply(429, headers={"Retry-After": "0.1"})],
        )
        await verify(d.client, session["id"], target, "passed", "ci-1")
        job = status_job(d.db, "success", target)
        done = await wait_for_job(d.db, job["id"], ("completed", "dead_letter"))
        assert done["status"] == "completed", done

        assert fake.unused_replies() == 0
        assert len(fake.requests_to("POST", statuses_path(REPO, target))) == 5
        (landed,) = succeeded_posts(fake, REPO, target, "success")
        assert landed["context"] == CONTEXT
        assert len(statuses_posted(fake, REPO, target)) == 1
        assert done["attempts"] == 1  # retried inside the client, one job attempt
        assert rows(d.db, "SELECT * FROM job_errors WHERE job_id = ?", job["id"]) == []


async def test_a_422_dead_letters_the_status_without_retrying(tmp_path: Path) -> None:
    async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
        repo = fake.add_repo(REPO)
        await add_lab(d.client)
        session = await bind_session(d.client, repo)
        await deliver(d.client, push_to(repo, [1, 2]))
        await wait_for_session(d.client, session["id"], "VERIFYING")
        target = payloads.sha(1)
        message = f"No commit found for SHA: {target}"
        fake.script(
            "POST",
            statuses_path(REPO, target),
            [Reply(422, json={"message": message, "documentation_url": "https://docs"})],
        )
        await verify(d.client, session["id"], target, "passed", "ci-1")
        job = status_job(d.db, "success", target)
        dead = await wait_for_job(d.db, job["id"], ("completed", "dead_letter", "failed"))
        assert dead["status"] == "dead_letter", dead
        await settle(d.db)

        assert len(fake.requests_to("POST", statuses_path(REPO, target))) == 1
        assert statuses_posted(fake, REPO, target) == []
        assert dead["attempts"] == 1

        listed = await d.client.get("/status/dead-letters", params={"kind": "commit_status"})
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()["items"]
        assert (item["id"], item["kind"], item["attempts"]) == (job["id"], "commit_status", 1)
        assert message in item["last_error"]
        assert "422" in item["last_error"]
        shown = await d.client.get(f"/status/dead-letters/{job['id']}")
        assert shown.status_code == 200, shown.text
        (error,) = shown.json()["errors"]
        assert error["error_class"] == "RejectedError"
        assert message in error["message"]


async def test_a_status_survives_a_restart_between_failures(tmp_path: Path) -> None:
    async with served_fake() as (fake, url):
        # GitHub asks for a 2 s wait, more than max_wait_seconds: the job is
        # rescheduled (not retried in the client), and the daemon stops meanwhile.
        config = config_for(tmp_path, url, github={"max_wait_seconds": 0.2})
        repo = fake.add_repo(REPO)
        target = payloads.sha(1)
        fake.script(
            "POST",
            statuses_path(REPO, target),
            [Reply(503, headers={"Retry-After": "2"}), Reply(503)],
        )
        async with daemon(config) as first:
            await add_lab(first.client)
            session = await bind_session(first.client, repo)
            await deliver(first.client, push_to(repo, [1, 2]))
            await wait_for_session(first.client, session["id"], "VERIFYING")
            await verify(first.client, session["id"], target, "passed", "ci-1")
            job = status_job(first.db, "success", target)
            failed = await wait_for_job(first.db, job["id"], ("failed", "completed"))
            assert (failed["status"], failed["attempts"]) == ("failed", 1), failed
        # The first daemon is gone (lifespan ended): nothing landed, the job waits.
        (waiting,) = rows(first.db, "SELECT * FROM jobs WHERE id = ?", job["id"])
        assert (waiting["status"], waiting["locked_by"]) == ("failed", None)
        assert len(fake.requests_to("POST", statuses_path(REPO, target))) == 1
        assert statuses_posted(fake, REPO, target) == []

        async with daemon(config) as second:
            done = await wait_for_job(second.db, job["id"], ("completed", "dead_letter"))
            assert done["status"] == "completed", done
            await settle(second.db)

        assert fake.unused_replies() == 0
        # One 503 before the restart, one 503 and the success after it.
        assert len(fake.requests_to("POST", statuses_path(REPO, target))) == 3
        (landed,) = statuses_posted(fake, REPO, target)
        assert (landed["state"], landed["context"]) == ("success", CONTEXT)
        assert done["attempts"] == 2
        errors = rows(second.db, "SELECT * FROM job_errors WHERE job_id = ?", job["id"])
        assert [e["attempt"] for e in errors] == [1]
        assert "503" in errors[0]["message"]


@pytest.mark.parametrize("with_credentials", [False, True])
async def test_reporting_needs_github_credentials(tmp_path: Path, with_credentials: bool) -> None:
    async with served_fake() as (fake, url):
        config = config_for(tmp_path, url if with_credentials else None)
        async with daemon(config) as d:
            repo = fake.add_repo(REPO)
            await add_lab(d.client)
            session = await bind_session(d.client, repo)
            await deliver(d.client, push_to(repo, [1]))
            await wait_for_session(d.client, session["id"], "VERIFYING")
            await verify(d.client, session["id"], payloads.sha(1), "passed", "ci-1")
            await settle(d.db)
            status = (await d.client.get("/status")).json()
            assert status["github_reporting"] is with_credentials
            outbound = jobs_of(d.db, "commit_status")
            if with_credentials:
                assert outbound, "with credentials a result is reported"
                assert {j["status"] for j in outbound} == {"completed"}
                assert len(succeeded_posts(fake, REPO, payloads.sha(1), "success")) == 1
            else:
                assert outbound == []
                assert rows(d.db, "SELECT kind FROM jobs WHERE kind <> 'webhook'") == []
                assert fake.requests == []
