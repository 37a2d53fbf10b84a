"""`GET /metrics`: the queue and the receiver in Prometheus text format.

https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
Gauges come from the store at scrape time (so every daemon on one database
reports the same queue); counters are this process's receiver answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forgea_gh import timeutil
from forgea_gh.store import base
from forgea_gh.web import auth

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(summary: base.StatusSummary, answers: Mapping[int, int]) -> str:
    lines = [
        "# HELP forgea_gh_jobs Jobs in the queue, by status and kind.",
        "# TYPE forgea_gh_jobs gauge",
    ]
    for status, kinds in sorted(summary.counts.items()):
        if not kinds:
            lines.append(f'forgea_gh_jobs{{status="{status}",kind="webhook"}} 0')
        for kind, count in sorted(kinds.items()):
            lines.append(f'forgea_gh_jobs{{status="{status}",kind="{kind}"}} {count}')
    lines += [
        "# HELP forgea_gh_oldest_pending_age_seconds Age of the oldest job not yet done.",
        "# TYPE forgea_gh_oldest_pending_age_seconds gauge",
        f"forgea_gh_oldest_pending_age_seconds {summary.oldest_pending_age_seconds or 0:.3f}",
        "# HELP forgea_gh_last_processed_timestamp_seconds When a job last completed (Unix time).",
        "# TYPE forgea_gh_last_processed_timestamp_seconds gauge",
    ]
    last = summary.last_processed_at
    stamp = timeutil.from_text(last).timestamp() if last else 0
    lines.append(f"forgea_gh_last_processed_timestamp_seconds {stamp:.3f}")
    lines += [
        "# HELP forgea_gh_redelivery_requests Redeliveries asked of GitHub, by outcome.",
        "# TYPE forgea_gh_redelivery_requests gauge",
        f'forgea_gh_redelivery_requests{{outcome="requested"}} '
        f"{summary.redelivery.get('requested', 0)}",
        f'forgea_gh_redelivery_requests{{outcome="failed"}} {summary.redelivery.get("failed", 0)}',
        "# HELP forgea_gh_webhook_responses_total Receiver answers since start, by status code.",
        "# TYPE forgea_gh_webhook_responses_total counter",
    ]
    for code, count in sorted(answers.items()):
        lines.append(f'forgea_gh_webhook_responses_total{{code="{code}"}} {count}')
    return "\n".join(lines) + "\n"


def routes(
    store: base.Store,
    *,
    token: str,
    answers: Counter[int],
    clock: timeutil.Clock = timeutil.utcnow,
) -> list[Route]:
    async def metrics(request: Request) -> Response:
        if denial := auth.bearer_denial(request, token):
            return denial
        summary = await store.status_summary(clock())
        return Response(render(summary, answers), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
