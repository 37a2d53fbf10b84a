"""`ping`: GitHub's hello when a hook is created. Nothing to do: completed as ignored.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#ping
"""

from __future__ import annotations

from forgea_gh import errors, jobs


async def handle(claimed: jobs.ClaimedJob) -> str:
    assert claimed.delivery is not None
    try:
        payload = claimed.delivery.payload()
    except errors.BadDeliveryError as exc:
        raise errors.PermanentError(f"ping payload unreadable: {exc}") from exc
    hook_id = payload.get("hook_id")
    # Completed as ignored: a ping asks nothing of a lab, it only proves the hook works.
    return f"ignored: ping from hook {hook_id}" if hook_id is not None else "ignored: ping"
