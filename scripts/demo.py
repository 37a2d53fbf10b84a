"""The forgea_gh demo; run it through `scripts/demo`.

Everything runs on 127.0.0.1: a fake GitHub (tests/fake_github.py) in this
process, and `forgea-gh serve` as a subprocess on a temporary database.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgea_gh import webhook  # noqa: E402
from tests import payloads  # noqa: E402
from tests.fake_github import FakeGitHub, Reply  # noqa: E402
from tests.support import free_port, live_server  # noqa: E402

SECRET = "demo-webhook-secret"
API_TOKEN = "demo-api-token"
OWNER = "forgea-demo"


def say(title: str) -> None:
    print(f"\n== {title}")


def show(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


async def wait_idle(client: httpx.AsyncClient, timeout: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status: dict[str, Any] = (await client.get("/status")).json()
        jobs = status["jobs"]
        if jobs["pending"] == jobs["processing"] == jobs["failed"] == 0:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the queue did not drain: {jobs}")
        await asyncio.sleep(0.1)


async def deliver(client: httpx.AsyncClient, event: str, body: bytes) -> httpx.Response:
    headers = {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": webhook.sign(body, SECRET.encode()),
        "user-agent": "GitHub-Hookshot/demo",
    }
    return await client.post("/webhooks/github", content=body, headers=headers)


async def main() -> int:
    fake = FakeGitHub()
    fake.add_repo(f"{OWNER}/intro-template", is_template=True)
    repo = fake.add_repo("octocat/intro-lab")
    async with live_server(fake) as github_url:
        with tempfile.TemporaryDirectory(prefix="forgea-demo-") as tmp:
            port = free_port()
            env = os.environ | {
                "FORGEA_GH_DATABASE__URL": f"sqlite:///{Path(tmp) / 'demo.db'}",
                "FORGEA_GH_WEBHOOK__SECRETS": json.dumps([SECRET]),
                "FORGEA_GH_API__TOKEN": API_TOKEN,
                "FORGEA_GH_GITHUB__TOKEN": "demo-github-token",
                "FORGEA_GH_GITHUB__API_URL": github_url,
                "FORGEA_GH_GITHUB__OWNER": OWNER,
                # A rate limit asking for longer than this reschedules the job.
                "FORGEA_GH_GITHUB__MAX_WAIT_SECONDS": "0.5",
                "FORGEA_GH_WORKER__POLL_INTERVAL_SECONDS": "0.2",
                "FORGEA_GH_WORKER__BACKOFF_BASE_SECONDS": "0.3",
                "FORGEA_GH_WORKER__BACKOFF_MAX_SECONDS": "1",
                "FORGEA_GH_LOG__LEVEL": "warning",
                "FORGEA_GH_LOG__FORMAT": "console",
            }
            daemon = subprocess.Popen(
                [str(ROOT / ".venv/bin/forgea-gh"), "serve", "--port", str(port)], env=env
            )
            try:
                return await run(f"http://127.0.0.1:{port}", fake, repo, Path(tmp) / "demo.db")
            finally:
                daemon.terminate()
                daemon.wait(timeout=30)


async def run(base_url: str, fake: FakeGitHub, repo: dict[str, Any], db: Path) -> int:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for _ in range(100):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            print("the daemon did not start", file=sys.stderr)
            return 1
        print(f"daemon at {base_url}; fake GitHub holds {repo['full_name']} (id {repo['id']})")

        say("a lab, its version, and a session bound to the learner's repository")
        await client.post(
            "/api/labs",
            headers=auth,
            json={
                "slug": "intro",
                "title": "Intro to Git",
                "template_repository": f"{OWNER}/intro-template",
            },
        )
        await client.post(
            "/api/labs/intro/versions", headers=auth, json={"version": "v1", "template_ref": "main"}
        )
        created = await client.post(
            "/api/sessions",
            headers=auth | {"Idempotency-Key": "demo-session-1"},
            json={
                "lab": "intro",
                "user": {"login": "octocat"},
                "repository": {"id": repo["id"], "html_url": repo["html_url"]},
            },
        )
        session = created.json()
        print(
            f"POST /api/sessions -> {created.status_code}: session {session['id']} "
            f"{session['status']}"
        )

        say("push 1: two commits; GitHub answers its commit status 503, then 429 (retry in 1 s)")
        fake.script(
            "POST",
            "/repos/octocat/intro-lab/statuses/{sha}",
            [Reply(503), Reply(429, headers={"Retry-After": "1"})],
        )
        commits = [
            payloads.commit(1, message="Add README"),
            payloads.commit(2, message="Fix the exercise ✓"),
        ]
        body = payloads.push(
            commits, repo_id=repo["id"], html_url=repo["html_url"], full_name=repo["full_name"]
        )
        response = await deliver(client, "push", body)
        print(f"POST /webhooks/github -> {response.status_code} {response.json()}")

        say("push 2: malformed (commits is not a list) -> dead letter, no retry")
        bad = json.loads(body)
        bad["commits"] = "not a list"
        response = await deliver(client, "push", json.dumps(bad).encode())
        print(f"POST /webhooks/github -> {response.status_code} {response.json()}")

        await wait_idle(client)
        head = commits[-1]["id"]

        say("a verifier reports: passed")
        verdict = await client.post(
            f"/api/sessions/{session['id']}/verifications",
            headers=auth | {"Idempotency-Key": "demo-verification-1"},
            json={
                "commit_sha": head,
                "outcome": "passed",
                "summary": "All checks green",
                "details_url": "https://forgea.example/runs/1",
            },
        )
        print(f"POST /api/sessions/{session['id']}/verifications -> {verdict.status_code}")
        status = await wait_idle(client)

        say("the ledger (GET /api/sessions/{id}/attempts)")
        attempts = (
            await client.get(f"/api/sessions/{session['id']}/attempts", headers=auth)
        ).json()
        for item in attempts["items"]:
            print(
                f"  {item['commit_sha'][:12]} {item['branch']:<6} "
                f"{item['author']['login'] or '-':<12} {item['message']!r} "
                f"{item['changed_files']}"
            )

        say("the session")
        shown = (await client.get(f"/api/sessions/{session['id']}", headers=auth)).json()
        print(f"  session {shown['id']}: {shown['status']} (completed at {shown['completed_at']})")

        say("commit statuses the fake GitHub received")
        attempts_made = fake.requests_to("POST", "/repos/octocat/intro-lab/statuses/{sha}")
        print(f"  {len(attempts_made)} POSTs (one 503, retried at once; one 429, rescheduled)")
        for (name, sha), statuses in fake.statuses.items():
            for s in statuses:
                print(
                    f"  {name}@{sha[:12]}: {s['state']:<8} {s['context']} "
                    f"{s.get('description', '')!r}"
                )

        say("failed attempts on the way (job_errors)")
        conn = sqlite3.connect(db)
        for row in conn.execute(
            "SELECT j.id, j.kind, e.attempt, e.error_class, e.message FROM job_errors e"
            " JOIN jobs j ON j.id = e.job_id ORDER BY e.id"
        ):
            print(f"  job {row[0]} ({row[1]}) attempt {row[2]}: {row[3]}: {row[4]}")
        conn.close()

        say("the dead letter (GET /status/dead-letters, then its detail)")
        page = (await client.get("/status/dead-letters")).json()
        show(page)
        if page["items"]:
            detail = await client.get(f"/status/dead-letters/{page['items'][0]['id']}")
            show(detail.json())

        say("GET /status")
        show(status)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
