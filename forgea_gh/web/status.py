"""Read-only operator endpoints: health, readiness, queue status, dead letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forgea_gh import errors, timeutil
from forgea_gh.store import base
from forgea_gh.web import auth, responses

MAX_PAGE = 500
DEFAULT_PAGE = 50


def summary_json(summary: base.StatusSummary, *, github_reporting: bool) -> dict[str, Any]:
    """The `/status` document (also what `forgea-gh status --json` prints)."""
    return {
        "backend": summary.backend,
        "jobs": summary.totals(),
        "jobs_by_kind": {s: kinds for s, kinds in summary.counts.items() if kinds},
        "oldest_pending_age_seconds": summary.oldest_pending_age_seconds,
        "last_processed_at": summary.last_processed_at,
        "github_reporting": github_reporting,
        "redelivery": summary.redelivery,
    }


def routes(
    store: base.Store,
    *,
    token: str,
    scheduler_running: Callable[[], bool] | None,
    github_reporting: bool,
    clock: timeutil.Clock = timeutil.utcnow,
) -> list[Route]:
    """The status routes. `scheduler_running` is None for a receiver-only daemon."""

    async def healthz(request: Request) -> Response:
        return responses.json(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = []
        try:
            await store.ping()
        except errors.StoreError as exc:
            problems.append(f"store unreachable: {exc}")
        if scheduler_running is not None and not scheduler_running():
            problems.append("scheduler not running")
        if problems:
            return responses.json(503, {"status": "unavailable", "problems": problems})
        return responses.json(200, {"status": "ready"})

    async def status(request: Request) -> Response:
        if denial := auth.bearer_denial(request, token):
            return denial
        summary = await store.status_summary(clock())
        return responses.json(200, summary_json(summary, github_reporting=github_reporting))

    async def dead_letters(request: Request) -> Response:
        if denial := auth.bearer_denial(request, token):
            return denial
        params = request.query_params
        unknown = set(params) - {"kind", "event", "action", "guid", "cursor", "limit"}
        if unknown:
            return responses.error(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        try:
            limit = _int_param(params.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            page = await store.dead_letters(
                base.DeadLetterFilter(
                    kind=params.get("kind"),
                    event=params.get("event"),
                    action=params.get("action"),
                    guid=params.get("guid"),
                ),
                params.get("cursor"),
                limit,
            )
        except errors.BadRequestError as exc:
            return responses.error(400, str(exc))
        return responses.json(200, {"items": page.items, "next_cursor": page.next_cursor})

    async def dead_letter(request: Request) -> Response:
        if denial := auth.bearer_denial(request, token):
            return denial
        raw_id = request.path_params["job_id"]
        include = request.query_params.get("include_payload", "false").lower()
        if include not in ("true", "false", "1", "0"):
            return responses.error(400, "include_payload must be true or false")
        if not raw_id.isdigit():
            return responses.error(400, f"dead letter id must be a job id, got {raw_id!r}")
        try:
            item = await store.dead_letter(int(raw_id), include in ("true", "1"))
        except errors.NotFoundError as exc:
            return responses.error(404, str(exc))
        return responses.json(200, item)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/status/dead-letters", dead_letters, methods=["GET"]),
        Route("/status/dead-letters/{job_id}", dead_letter, methods=["GET"]),
    ]


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise errors.BadRequestError(f"{name} must be an integer from {low} to {high}")
    return int(raw)
