"""Bearer-token checks for the operator endpoints."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from forgea_gh.web import responses


def bearer_denial(request: Request, token: str) -> Response | None:
    """None when `request` carries `token` (or no token is configured), else a 401."""
    if not token:
        return None
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return None
    message = "missing bearer token" if not given else "invalid bearer token"
    return responses.error(401, message, {"WWW-Authenticate": 'Bearer realm="forgea-gh"'})
