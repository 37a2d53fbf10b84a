"""JSON responses rendered with orjson (the receiver's budget is microseconds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


def json(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json(status, {"error": message}, headers)
