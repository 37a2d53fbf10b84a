"""Health, readiness, /status and the dead-letter endpoints."""

from __future__ import annotations

from pathlib import Path

from forgea_gh import app as app_mod
from forgea_gh import errors, jobs
from tests.support import asgi_client, make_config, push_body, signed_headers


async def failing(claimed: jobs.ClaimedJob) -> str:
    raise errors.PermanentError("cannot handle this push")


async def test_health_and_readiness(tmp_path: Path) -> None:
    application = app_mod.build(make_config(tmp_path))
    async with asgi_client(application) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        application.state.daemon.scheduler.pause()
        application.state.daemon.scheduler.shutdown(wait=False)
        import asyncio

        await asyncio.sleep(0.01)  # shutdown takes effect one loop tick later
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["problems"] == ["scheduler not running"]


async def test_status_and_dead_letters_with_a_token(tmp_path: Path) -> None:
    config = make_config(tmp_path, status={"token": "ops-token"})
    application = app_mod.build(config)
    application.state.daemon.processor.router.on_event("push", failing)
    auth = {"Authorization": "Bearer ops-token"}
    async with asgi_client(application) as client:
        body = push_body()
        await client.post(
            "/webhooks/github", content=body, headers=signed_headers(body, guid="dead-1", hook_id=3)
        )
        for path in ("/status", "/status/dead-letters", "/status/dead-letters/1"):
            assert (await client.get(path)).status_code == 401
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert wrong.json() == {"error": "invalid bearer token"}

        import asyncio

        for _ in range(200):
            status = (await client.get("/status", headers=auth)).json()
            if status["jobs"]["dead_letter"] == 1:
                break
            await asyncio.sleep(0.02)
        assert status["backend"] == "sqlite"
        assert status["jobs"] == {
            "pending": 0,
            "processing": 0,
            "completed": 0,
            "failed": 0,
            "dead_letter": 1,
        }
        assert status["github_reporting"] is False
        assert status["oldest_pending_age_seconds"] is None

        page = (await client.get("/status/dead-letters", headers=auth)).json()
        assert page["next_cursor"] is None
        (item,) = page["items"]
        assert {
            k: item[k] for k in ("kind", "guid", "hook_id", "event", "attempts", "last_error")
        } == {
            "kind": "webhook",
            "guid": "dead-1",
            "hook_id": 3,
            "event": "push",
            "attempts": 1,
            "last_error": "cannot handle this push",
        }

        detail = (await client.get(f"/status/dead-letters/{item['id']}", headers=auth)).json()
        assert "payload" not in detail
        assert detail["errors"][0]["message"] == "cannot handle this push"
        with_payload = await client.get(
            f"/status/dead-letters/{item['id']}", params={"include_payload": "true"}, headers=auth
        )
        assert with_payload.json()["payload"]["ref"] == "refs/tags/simple-tag"

        filtered = await client.get("/status/dead-letters", params={"event": "ping"}, headers=auth)
        assert filtered.json()["items"] == []
        assert (await client.get("/status/dead-letters/999", headers=auth)).status_code == 404
        assert (await client.get("/status/dead-letters/abc", headers=auth)).status_code == 400
        bad_limit = await client.get("/status/dead-letters", params={"limit": "0"}, headers=auth)
        assert bad_limit.status_code == 400
        assert "limit" in bad_limit.json()["error"]
        unknown = await client.get("/status/dead-letters", params={"colour": "red"}, headers=auth)
        assert unknown.status_code == 400
        bad_cursor = await client.get("/status/dead-letters", params={"cursor": "x"}, headers=auth)
        assert bad_cursor.status_code == 400


async def test_status_is_open_without_a_token(tmp_path: Path) -> None:
    async with asgi_client(app_mod.build(make_config(tmp_path))) as client:
        assert (await client.get("/status")).status_code == 200
        assert (await client.get("/status/dead-letters")).json() == {
            "items": [],
            "next_cursor": None,
        }


async def test_metrics_in_prometheus_text_format(tmp_path: Path) -> None:
    application = app_mod.build(make_config(tmp_path, status={"token": "ops-token"}))
    auth = {"Authorization": "Bearer ops-token"}
    async with asgi_client(application) as client:
        assert (await client.get("/metrics")).status_code == 401
        body = push_body()
        await client.post("/webhooks/github", content=body, headers=signed_headers(body))
        await client.post(
            "/webhooks/github", content=body, headers=signed_headers(body, secret="x")
        )
        import asyncio

        for _ in range(200):
            response = await client.get("/metrics", headers=auth)
            if 'forgea_gh_jobs{status="completed",kind="webhook"} 1' in response.text:
                break
            await asyncio.sleep(0.02)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    assert 'forgea_gh_jobs{status="completed",kind="webhook"} 1' in lines
    assert 'forgea_gh_jobs{status="dead_letter",kind="webhook"} 0' in lines
    assert 'forgea_gh_webhook_responses_total{code="202"} 1' in lines
    assert 'forgea_gh_webhook_responses_total{code="401"} 1' in lines
    assert "# TYPE forgea_gh_jobs gauge" in lines
    assert any(line.startswith("forgea_gh_last_processed_timestamp_seconds 1") for line in lines)
