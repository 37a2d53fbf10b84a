"""Repository provisioning end to end: POST /api/sessions without a repository, FakeGitHub behind.

The provision_repo job generates `<owner>/<lab>-<login>-<session id>` from
the lab's template, invites the learner, binds the repository by id and
moves the session to ACTIVE; a timeout whose request in fact succeeded is
adopted, never duplicated; a permanent failure deletes what this session
made (and only that) and ends in PROVISIONING_FAILED.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import payloads
from tests.e2e_support import (
    CONTEXT,
    OWNER,
    add_lab,
    audit,
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
    wait_for_job,
    wait_for_session,
)
from tests.fake_github import FakeGitHub, Reply

TEMPLATE = "forgea/git-101-template"
GENERATE = f"/repos/{TEMPLATE}/generate"


async def provision(client: httpx.AsyncClient, login: str = "Mona") -> dict[str, Any]:
    created = await client.post(
        "/api/sessions",
        json={"lab": "git-101", "version": "v1", "user": {"login": login}},
        headers={"Idempotency-Key": f"provision-{login}"},
    )
    assert created.status_code == 202, created.text
    session: dict[str, Any] = created.json()
    assert session["status"] == "PROVISIONING"
    assert session["repository"] is None
    return session


def expected_name(session_id: int, login: str = "mona") -> str:
    return f"{OWNER}/git-101-{login}-{session_id}"


def session_audit(db: Path, session_id: int) -> list[dict[str, Any]]:
    return [
        row
        for row in audit(db)
        if (row["subject_type"], row["subject_id"]) == ("lab_session", str(session_id))
    ]


def generated_repos(fake: FakeGitHub) -> list[dict[str, Any]]:
    return [r for r in fake.repos.values() if r.get("template_repository")]


async def test_a_session_is_provisioned_from_the_lab_template(tmp_path: Path) -> None:
    with fast_retries(5):
        async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
            fake.add_repo(TEMPLATE, is_template=True)
            await add_lab(d.client, template=TEMPLATE)
            session = await provision(d.client)
            sid = session["id"]
            active = await wait_for_session(d.client, sid, "ACTIVE")
            name = expected_name(sid)

            repo = fake.repos[name]
            assert repo["template_repository"] == {"full_name": TEMPLATE}
            assert f"[forgea-session:{sid}]" in repo["description"]
            assert repo["private"] is True
            (generate,) = fake.requests_to("POST", GENERATE)
            assert generate.json["owner"] == OWNER
            assert generate.json["name"] == name.split("/")[1]
            assert fake.collaborators[name] == {"mona": "push"}
            assert active["repository"]["id"] == repo["id"]
            assert active["repository"]["full_name"] == name
            assert active["repository"]["html_url"] == repo["html_url"]
            assert rows(
                d.db, "SELECT provider_repo_id, lab_session_id FROM github_repo_mappings"
            ) == [{"provider_repo_id": repo["id"], "lab_session_id": sid}]
            # The session moves before the job row records its outcome: wait for both.
            (job,) = jobs_of(d.db, "provision_repo")
            job = await wait_for_job(d.db, job["id"], ("completed", "dead_letter"))
            assert (job["status"], job["attempts"]) == ("completed", 1)

            steps = [r["action"] for r in session_audit(d.db, sid)]
            assert steps == [
                "session.created",
                "provision.generating",
                "provision.generated",
                "provision.collaborator_added",
                "session.transition",
            ]
            by_action = {r["action"]: r["detail"] for r in session_audit(d.db, sid)}
            assert by_action["provision.generating"] == {"repository": name, "template": TEMPLATE}
            assert by_action["provision.generated"]["repository_id"] == repo["id"]
            assert by_action["session.transition"]["from"] == "PROVISIONING"
            assert by_action["session.transition"]["to"] == "ACTIVE"

            # The provisioned repository is bound by id: its first push is lab work.
            pushed = await deliver(d.client, push_to(repo, [1]))
            assert pushed.status_code == 202, pushed.text
            await wait_for_session(d.client, sid, "VERIFYING")
            await settle(d.db)
            (pending,) = statuses_posted(fake, name, payloads.sha(1))
            assert (pending["state"], pending["context"]) == ("pending", CONTEXT)


@pytest.mark.parametrize(
    ("client_attempts", "adopted_by"),
    [
        # The job fails on the timeout; its retry finds the repository by name.
        (1, "provision.adopted"),
        # The client retries the POST at once; GitHub says "name already exists".
        (3, "provision.generated"),
    ],
)
async def test_a_timed_out_generate_that_succeeded_is_adopted(
    tmp_path: Path, client_attempts: int, adopted_by: str
) -> None:
    with fast_retries(client_attempts):
        async with served_fake() as (fake, url):
            config = config_for(tmp_path, url, github={"timeout_seconds": 0.3})
            fake.add_repo(TEMPLATE, is_template=True)
            # GitHub makes the repository, but its answer comes after the client gave up.
            fake.script("POST", GENERATE, [Reply(apply=True, delay=1.5)])
            async with daemon(config) as d:
                await add_lab(d.client, template=TEMPLATE)
                session = await provision(d.client)
                sid = session["id"]
                active = await wait_for_session(d.client, sid, "ACTIVE")
                await settle(d.db)
                name = expected_name(sid)

                (made,) = generated_repos(fake)
                assert made["full_name"] == name
                assert set(fake.repos) == {TEMPLATE, name}
                assert active["repository"]["id"] == made["id"]
                assert fake.collaborators[name] == {"mona": "push"}
                assert fake.requests_to("DELETE", "/repos/{owner}/{repo}") == []
                (job,) = jobs_of(d.db, "provision_repo")
                assert job["status"] == "completed"
                actions = [r["action"] for r in session_audit(d.db, sid)]
                assert adopted_by in actions
                assert "provision.failed" not in actions
                if client_attempts == 1:
                    assert job["attempts"] == 2
                    assert len(fake.requests_to("POST", GENERATE)) == 1
                    (adopted,) = [
                        r for r in session_audit(d.db, sid) if r["action"] == "provision.adopted"
                    ]
                    assert adopted["detail"]["repository_id"] == made["id"]
                    assert "provision.attempt_failed" in actions
                else:
                    assert job["attempts"] == 1
                    assert len(fake.requests_to("POST", GENERATE)) == 2


@pytest.mark.parametrize("status", [422, 404])
async def test_a_failure_after_generate_deletes_the_repository(tmp_path: Path, status: int) -> None:
    with fast_retries(5):
        async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
            fake.add_repo(TEMPLATE, is_template=True)
            fake.script(
                "PUT",
                "/repos/{owner}/{repo}/collaborators/{username}",
                [Reply(status, json={"message": "Invitee is not a valid user"})],
            )
            await add_lab(d.client, template=TEMPLATE)
            session = await provision(d.client)
            sid = session["id"]
            await wait_for_session(d.client, sid, "PROVISIONING_FAILED")
            (job,) = jobs_of(d.db, "provision_repo")
            dead = await wait_for_job(d.db, job["id"], ("dead_letter", "completed"))
            name = expected_name(sid)

            assert dead["status"] == "dead_letter"
            assert dead["attempts"] == 1
            assert "Invitee is not a valid user" in dead["last_error"]
            assert len(fake.requests_to("POST", GENERATE)) == 1
            assert len(fake.requests_to("PUT", "/repos/{owner}/{repo}/collaborators/{u}")) == 1
            (deleted,) = fake.requests_to("DELETE", "/repos/{owner}/{repo}")
            assert deleted.path == f"/repos/{name}"
            assert name not in fake.repos
            assert generated_repos(fake) == []
            assert TEMPLATE in fake.repos
            assert rows(d.db, "SELECT * FROM github_repo_mappings") == []

            (failed,) = [r for r in session_audit(d.db, sid) if r["action"] == "provision.failed"]
            assert failed["detail"]["repository_deleted"] is True
            assert failed["detail"]["repository"] == name
            listed = await d.client.get("/status/dead-letters", params={"kind": "provision_repo"})
            assert [i["id"] for i in listed.json()["items"]] == [job["id"]]


async def test_a_name_taken_by_a_foreign_repository_is_left_alone(tmp_path: Path) -> None:
    with fast_retries(5):
        async with served_fake() as (fake, url), daemon(config_for(tmp_path, url)) as d:
            fake.add_repo(TEMPLATE, is_template=True)
            # Someone else's repository under the name session 1 will want.
            foreign = fake.add_repo(expected_name(1))
            foreign["description"] = "a learner's own project [forgea-session:12]"
            await add_lab(d.client, template=TEMPLATE)
            session = await provision(d.client)
            sid = session["id"]
            assert sid == 1
            await wait_for_session(d.client, sid, "PROVISIONING_FAILED")
            (job,) = jobs_of(d.db, "provision_repo")
            dead = await wait_for_job(d.db, job["id"], ("dead_letter", "completed"))

            assert dead["status"] == "dead_letter"
            assert "is not this session's repository" in dead["last_error"]
            assert fake.repos[expected_name(1)] is foreign
            assert fake.requests_to("DELETE", "/repos/{owner}/{repo}") == []
            assert fake.requests_to("POST", GENERATE) == []
            assert expected_name(1) not in fake.collaborators
            (failed,) = [r for r in session_audit(d.db, sid) if r["action"] == "provision.failed"]
            assert failed["detail"]["repository_deleted"] is False
            shown = (await d.client.get(f"/api/sessions/{sid}")).json()
            assert shown["repository"] is None
            transitions = [
                r["detail"] for r in session_audit(d.db, sid) if r["action"] == "session.transition"
            ]
            assert [(t["from"], t["to"]) for t in transitions] == [
                ("PROVISIONING", "PROVISIONING_FAILED")
            ]
            assert json.loads(job["payload"]) == {"session_id": sid}


async def test_a_transient_failure_on_the_last_attempt_rolls_back(tmp_path: Path) -> None:
    with fast_retries(1):
        async with served_fake() as (fake, url):
            config = config_for(tmp_path, url, worker={"max_attempts": 2})
            fake.add_repo(TEMPLATE, is_template=True)
            fake.script(
                "PUT", "/repos/{owner}/{repo}/collaborators/{username}", [Reply(503), Reply(503)]
            )
            async with daemon(config) as d:
                await add_lab(d.client, template=TEMPLATE)
                session = await provision(d.client)
                sid = session["id"]
                await wait_for_session(d.client, sid, "PROVISIONING_FAILED")
                (job,) = jobs_of(d.db, "provision_repo")
                dead = await wait_for_job(d.db, job["id"], ("dead_letter", "completed"))
                name = expected_name(sid)

                assert (dead["status"], dead["attempts"]) == ("dead_letter", 2)
                assert fake.unused_replies() == 0
                # Generated once, adopted on the retry, deleted when the last attempt failed.
                assert len(fake.requests_to("POST", GENERATE)) == 1
                assert name not in fake.repos
                assert generated_repos(fake) == []
                actions = [r["action"] for r in session_audit(d.db, sid)]
                assert actions.count("provision.attempt_failed") == 1
                assert "provision.adopted" in actions
                (failed,) = [
                    r for r in session_audit(d.db, sid) if r["action"] == "provision.failed"
                ]
                assert failed["detail"]["repository_deleted"] is True
