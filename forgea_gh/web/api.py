"""The admin API (DESIGN §6): labs, sessions, verification results.

Handlers parse and validate the request, then run one unit of work through
`labs.service`; every domain rule lives there. Errors are mapped to HTTP
statuses once, in `_error`. Creating requests carry an `Idempotency-Key`:
the first answer is stored in the same transaction as what it created, so a
retried request gets that answer again and creates nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pydantic
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forgea_gh import errors
from forgea_gh.labs import ledger, service
from forgea_gh.store import base
from forgea_gh.web import auth, responses

log = logging.getLogger(__name__)

ACTOR = "api"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
MAX_BODY_BYTES = 1024 * 1024
MAX_PAGE = 500
DEFAULT_PAGE = 100

M = TypeVar("M", bound=pydantic.BaseModel)
Handler = Callable[[Request], Awaitable[Response]]


# -- request bodies ----------------------------------------------------------


class _Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class NewLab(_Body):
    slug: str
    title: str
    template_repository: str


class NewVersion(_Body):
    version: str
    template_ref: str = "main"


class UserRef(_Body):
    login: str
    github_id: int | None = pydantic.Field(default=None, gt=0)


class RepositoryRef(_Body):
    id: int = pydantic.Field(gt=0)
    html_url: str
    full_name: str | None = None


class NewSession(_Body):
    lab: str
    version: str | None = None
    user: UserRef
    repository: RepositoryRef | None = None


class NewVerification(_Body):
    commit_sha: str
    outcome: str  # service.record_result names the allowed values
    summary: str | None = None
    details_url: str | None = None


# -- plumbing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


class _BadRequest(Exception):
    """The request cannot be read at all (no body parse, missing header): 400."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise _BadRequest(f"the body is over {MAX_BODY_BYTES} bytes", 413)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the body is not valid JSON: {exc}") from None


def _parse(body: Any, schema: type[M]) -> M:
    """The body as `schema`; the first problem becomes a ValidationError naming its field."""
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    try:
        return schema.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "must be a JSON object"
        elif first["type"] == "extra_forbidden":
            message = "unknown field"
        raise errors.ValidationError(field, message) from None


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise _BadRequest(f"the {IDEMPOTENCY_HEADER} header is required")
    if len(key) > MAX_KEY_LENGTH:
        raise _BadRequest(f"the {IDEMPOTENCY_HEADER} header is over {MAX_KEY_LENGTH} characters")
    return key


def _request_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _once(
    scope: str, key: str, request_hash: str, work: Callable[[base.LabTx], Awaitable[_Answer]]
) -> Callable[[base.LabTx], Awaitable[_Answer]]:
    """`work` as a unit of work whose answer is stored under (scope, key) in the same
    transaction; a stored answer is given again instead of running `work` twice."""

    async def unit(tx: base.LabTx) -> _Answer:
        stored = await tx.stored_response(scope, key)
        if stored is not None:
            if stored.request_hash != request_hash:
                raise errors.ValidationError(
                    IDEMPOTENCY_HEADER, "was used before with a different request body"
                )
            return _Answer(stored.status_code, stored.body, replayed=True)
        answer = await work(tx)
        await tx.store_response(scope, key, request_hash, answer.status, answer.body)
        return answer

    return unit


def _int_param(raw: str | None, name: str, low: int, high: int) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _respond(answer: _Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return responses.json(answer.status, answer.body, headers)


def _error(exc: _BadRequest | errors.ForgeaError) -> Response:
    """The one place a domain error becomes an HTTP status."""
    if isinstance(exc, _BadRequest):
        return responses.error(exc.status, str(exc))
    if isinstance(exc, errors.ValidationError):
        return responses.json(422, {"error": str(exc), "field": exc.field})
    if isinstance(exc, errors.NotFoundError):
        return responses.error(404, str(exc))
    if isinstance(exc, errors.ConflictError | errors.RuleViolation):
        return responses.error(409, str(exc))
    if isinstance(exc, errors.UnavailableError):
        return responses.error(503, str(exc))
    if isinstance(exc, errors.BadRequestError):
        return responses.error(400, str(exc))
    if isinstance(exc, errors.StoreError):
        return responses.error(503, f"the store is unavailable: {exc}")
    log.error("admin API: unexpected %s: %s", type(exc).__name__, exc)
    return responses.error(500, str(exc))


# -- routes ------------------------------------------------------------------


def routes(
    store: base.Store,
    *,
    token: str,
    max_attempts: int,
    reporting: service.Reporting = service.NO_REPORTING,
    can_provision: bool = False,
) -> list[Route]:
    """The /api routes; with no `token` configured every one answers 503.

    `reporting` says whether verification results queue commit statuses;
    `can_provision` whether sessions without a repository can be provisioned.
    """

    def guarded(handler: Callable[[Request], Awaitable[_Answer]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            if not token:
                return responses.error(503, "the admin API is disabled: set api.token")
            if denial := auth.bearer_denial(request, token):
                return denial
            try:
                return _respond(await handler(request))
            except (_BadRequest, errors.ForgeaError) as exc:
                return _error(exc)

        return endpoint

    async def create_lab(request: Request) -> _Answer:
        new = _parse(await _json_body(request), NewLab)

        async def work(tx: base.LabTx) -> _Answer:
            lab = await service.create_lab(
                tx, new.slug, new.title, new.template_repository, actor=ACTOR
            )
            return _Answer(201, lab.to_json())

        return await store.transaction(work)

    async def add_version(request: Request) -> _Answer:
        slug = request.path_params["slug"]
        new = _parse(await _json_body(request), NewVersion)

        async def work(tx: base.LabTx) -> _Answer:
            lab, version = await service.add_version(
                tx, slug, new.version, new.template_ref, actor=ACTOR
            )
            return _Answer(201, version.to_json(lab.slug))

        return await store.transaction(work)

    async def create_session(request: Request) -> _Answer:
        key = _idempotency_key(request)
        body = await _json_body(request)
        new = _parse(body, NewSession)
        repo = None
        if new.repository is not None:
            ref = new.repository
            repo = ledger.repository_at(ref.id, ref.html_url, ref.full_name)
        wanted = service.NewSession(
            lab=new.lab,
            login=new.user.login,
            version=new.version,
            github_id=new.user.github_id,
            repository=repo,
        )

        async def start(tx: base.LabTx) -> _Answer:
            session = await service.start_session(
                tx, wanted, actor=ACTOR, max_attempts=max_attempts, can_provision=can_provision
            )
            return _Answer(201 if repo is not None else 202, session.to_json())

        return await store.transaction(_once("POST /api/sessions", key, _request_hash(body), start))

    async def show_session(request: Request) -> _Answer:
        session_id: int = request.path_params["session_id"]

        async def work(tx: base.LabTx) -> _Answer:
            return _Answer(200, (await service.require_session(tx, session_id)).to_json())

        return await store.read(work)

    async def attempts(request: Request) -> _Answer:
        session_id: int = request.path_params["session_id"]
        params = request.query_params
        unknown = set(params) - {"cursor", "limit"}
        if unknown:
            raise _BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        cursor = _int_param(params.get("cursor"), "cursor", 0, 2**63 - 1)
        given = _int_param(params.get("limit"), "limit", 1, MAX_PAGE)
        limit = DEFAULT_PAGE if given is None else given

        async def work(tx: base.LabTx) -> _Answer:
            await service.require_session(tx, session_id)
            rows = await tx.attempts(session_id, cursor, limit + 1)
            more = len(rows) > limit
            items = rows[:limit]
            next_cursor = str(items[-1]["id"]) if more else None
            return _Answer(200, {"items": items, "next_cursor": next_cursor})

        return await store.read(work)

    async def record_verification(request: Request) -> _Answer:
        session_id: int = request.path_params["session_id"]
        key = _idempotency_key(request)
        body = await _json_body(request)
        new = _parse(body, NewVerification)
        result = service.Result(
            session_id=session_id,
            outcome=new.outcome,
            commit_sha=new.commit_sha,
            summary=new.summary,
            details_url=new.details_url,
        )

        async def record(tx: base.LabTx) -> _Answer:
            verification, session = await service.record_result(
                tx, result, f"api:{session_id}:{key}", actor=ACTOR, reporting=reporting
            )
            return _Answer(
                201, {"verification": verification.to_json(), "session": session.to_json()}
            )

        scope = f"POST /api/sessions/{session_id}/verifications"
        return await store.transaction(_once(scope, key, _request_hash(body), record))

    async def abandon(request: Request) -> _Answer:
        session_id: int = request.path_params["session_id"]

        async def work(tx: base.LabTx) -> _Answer:
            return _Answer(200, (await service.abandon(tx, session_id, actor=ACTOR)).to_json())

        return await store.transaction(work)

    return [
        Route("/api/labs", guarded(create_lab), methods=["POST"]),
        Route("/api/labs/{slug}/versions", guarded(add_version), methods=["POST"]),
        Route("/api/sessions", guarded(create_session), methods=["POST"]),
        Route("/api/sessions/{session_id:int}", guarded(show_session), methods=["GET"]),
        Route("/api/sessions/{session_id:int}/attempts", guarded(attempts), methods=["GET"]),
        Route(
            "/api/sessions/{session_id:int}/verifications",
            guarded(record_verification),
            methods=["POST"],
        ),
        Route("/api/sessions/{session_id:int}/abandon", guarded(abandon), methods=["POST"]),
    ]
