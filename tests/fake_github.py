"""A fake GitHub REST API for end-to-end tests, served by real uvicorn on loopback.

It implements the endpoints forgea-gh calls, keeps their state in memory,
records every request, and can be scripted per route to misbehave the ways
GitHub does (5xx, rate limits, revoked tokens, validation errors, slow
answers, dropped connections)::

    fake = FakeGitHub()
    fake.add_repo("octo/lab")
    fake.script("POST", "/repos/octo/lab/statuses/{sha}", [Reply(503), Reply(drop=True)])
    async with support.live_server(fake) as url:
        ...

Scripted replies are consumed in order; once a script is used up the route
behaves normally again. Route patterns match segment by segment, `{name}`
matching any one segment.
"""

from __future__ import annotations

import asyncio
import collections
import http
import itertools
import json as jsonlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Json = dict[str, Any]
Handler = Callable[[Request, Any], Awaitable[Response]]

DOCS_URL = "https://docs.github.com/rest"
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    - `status`: answer this status (body `json`, or GitHub's usual error body)
      instead of the normal behaviour; None keeps the normal answer.
    - `delay`: seconds to wait before answering (the "slow GitHub").
    - `drop`: close the connection instead of answering (after `delay`).
    - `apply`: perform the normal side effect first (create the repository,
      record the status...) whatever is answered: the request "succeeded"
      but its answer was lost.
    """

    status: int | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    apply: bool = False

    @classmethod
    def secondary_limit(cls, retry_after: float | None = 1, *, status: int = 403) -> Reply:
        """A secondary rate limit, with a Retry-After unless `retry_after` is None."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status, json=_error_body(status, SECONDARY_LIMIT_MESSAGE), headers=headers)

    @classmethod
    def primary_limit(cls, reset: float, *, status: int = 403, limit: int = 5000) -> Reply:
        """The primary rate limit used up until `reset` (epoch seconds)."""
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-used": str(limit),
            "x-ratelimit-reset": str(int(reset)),
            "x-ratelimit-resource": "core",
        }
        message = "API rate limit exceeded for installation."
        return cls(status, json=_error_body(status, message), headers=headers)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    # Lower-case names.
    headers: dict[str, str]
    json: Any


@dataclass
class _Script:
    method: str
    pattern: tuple[str, ...]
    replies: collections.deque[Reply]


class FakeGitHub(Starlette):
    """The fake. Its state is public: tests seed it and assert on it.

    Auth: App endpoints (`/app/...`, `/repos/o/r/installation`) want a JWT,
    verified with `app_public_key` when one is given. Other endpoints accept
    the installation tokens this fake issued and `token`; when neither a
    `token` nor an `app_public_key` is given, any bearer token is accepted.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        app_public_key: str | None = None,
        installations: Mapping[str, int] | None = None,
        token_ttl_seconds: float = 3600.0,
    ) -> None:
        self.token = token
        self.app_public_key = app_public_key
        # owner (lower case) -> installation id.
        self.installations = {k.lower(): v for k, v in (installations or {}).items()}
        self.token_ttl_seconds = token_ttl_seconds
        self.requests: list[Recorded] = []
        # full name (lower case) -> repository.
        self.repos: dict[str, Json] = {}
        # (full name lower case, sha) -> statuses, oldest first.
        self.statuses: dict[tuple[str, str], list[Json]] = {}
        # full name (lower case) -> {login: permission}.
        self.collaborators: dict[str, dict[str, str]] = {}
        # "owner/repo#hook_id" or "app" -> deliveries, newest first.
        self.deliveries: dict[str, list[Json]] = {}
        # (hook, delivery id) of every redelivery asked for.
        self.redeliveries: list[tuple[str, int]] = []
        # installation token -> installation id.
        self.issued_tokens: dict[str, int] = {}
        self._scripts: list[_Script] = []
        self._ids = itertools.count(1000)
        r = "/repos/{owner}/{repo}"
        routes = [
            self._route("POST", "/app/installations/{id:int}/access_tokens", self._token),
            self._route("GET", "/app/hook/deliveries", self._list_deliveries),
            self._route("POST", "/app/hook/deliveries/{delivery_id:int}/attempts", self._redeliver),
            self._route("GET", r + "/installation", self._repo_installation),
            self._route("GET", r, self._get_repo),
            self._route("DELETE", r, self._delete_repo),
            self._route("POST", r + "/generate", self._generate),
            self._route("POST", r + "/statuses/{sha}", self._create_status),
            self._route("PUT", r + "/collaborators/{username}", self._add_collaborator),
            self._route("GET", r + "/hooks/{hook_id:int}/deliveries", self._list_deliveries),
            self._route(
                "POST", r + "/hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts",
                self._redeliver,
            ),
            self._route(
                ["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:path}", self._not_found
            ),
        ]  # fmt: skip
        super().__init__(routes=routes)

    # -- seeding and scripting ---------------------------------------------

    def add_repo(self, full_name: str, *, is_template: bool = False, private: bool = True) -> Json:
        owner, name = full_name.split("/")
        repo: Json = {
            "id": next(self._ids),
            "name": name,
            "full_name": full_name,
            "owner": {"login": owner},
            "private": private,
            "is_template": is_template,
            "description": "",
            "html_url": f"https://github.com/{full_name}",
            "default_branch": "main",
        }
        self.repos[full_name.lower()] = repo
        return repo

    def seed_deliveries(self, hook: str, deliveries: Iterable[Json]) -> None:
        """Deliveries of `hook` ("owner/repo#hook_id" or "app"), newest first."""
        self.deliveries[hook] = list(deliveries)

    def script(self, method: str, pattern: str, replies: Iterable[Reply]) -> None:
        self._scripts.append(
            _Script(method.upper(), _segments(pattern), collections.deque(replies))
        )

    def unused_replies(self) -> int:
        return sum(len(s.replies) for s in self._scripts)

    def requests_to(self, method: str, pattern: str) -> list[Recorded]:
        wanted = _segments(pattern)
        return [
            r
            for r in self.requests
            if r.method == method.upper() and _matches(wanted, _segments(r.path))
        ]

    def revoke_tokens(self) -> None:
        """Forget every installation token issued: the next use of one gets a 401."""
        self.issued_tokens.clear()

    # -- request plumbing --------------------------------------------------

    def _route(self, methods: str | list[str], path: str, handler: Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self._serve(request, handler)

        return Route(path, endpoint, methods=[methods] if isinstance(methods, str) else methods)

    async def _serve(self, request: Request, handler: Handler) -> Response:
        body = await request.body()
        try:
            payload = jsonlib.loads(body) if body else None
        except ValueError:
            payload = None
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                json=payload,
            )
        )
        reply = self._next_reply(request.method, request.url.path)
        if reply is None:
            return await handler(request, payload)
        normal: Response | None = None
        if reply.apply:
            normal = await handler(request, payload)
        if reply.delay and not await _pause(request, reply.delay):
            return Response(status_code=499)  # the client left; nobody reads this
        if reply.drop:
            return _DroppedConnection()
        if reply.status is not None:
            body_json = reply.json if reply.json is not None else _error_body(reply.status)
            return JSONResponse(body_json, status_code=reply.status, headers=dict(reply.headers))
        return normal if normal is not None else await handler(request, payload)

    def _next_reply(self, method: str, path: str) -> Reply | None:
        segments = _segments(path)
        for script in self._scripts:
            if script.replies and script.method == method and _matches(script.pattern, segments):
                return script.replies.popleft()
        return None

    def _bearer(self, request: Request) -> str | None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not credential:
            return None
        return credential

    def _check_app_jwt(self, request: Request) -> Response | None:
        credential = self._bearer(request)
        if credential is None:
            return _error(401, "Requires authentication")
        if self.app_public_key is None:
            return None
        try:
            jwt.decode(credential, self.app_public_key, algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return _error(401, f"A JSON web token could not be decoded ({exc})")
        return None

    def _check_token(self, request: Request) -> Response | None:
        credential = self._bearer(request)
        if credential is None:
            return _error(401, "Requires authentication")
        if credential in self.issued_tokens or credential == self.token:
            return None
        if self.token is None and self.app_public_key is None:
            return None
        return _error(401, "Bad credentials")

    def _repo(self, request: Request) -> tuple[str, Json | None]:
        full_name = f"{request.path_params['owner']}/{request.path_params['repo']}"
        return full_name, self.repos.get(full_name.lower())

    # -- endpoints ----------------------------------------------------------

    async def _token(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_app_jwt(request)) is not None:
            return refused
        installation_id = request.path_params["id"]
        if self.installations and installation_id not in self.installations.values():
            return _error(404, "Not Found")
        token = f"ghs_fake{next(self._ids)}"
        self.issued_tokens[token] = installation_id
        expires = datetime.fromtimestamp(time.time() + self.token_ttl_seconds, UTC)
        return JSONResponse(
            {
                "token": token,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"statuses": "write", "administration": "write"},
                "repository_selection": "all",
            },
            status_code=201,
        )

    async def _repo_installation(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_app_jwt(request)) is not None:
            return refused
        owner = request.path_params["owner"].lower()
        if owner not in self.installations:
            return _error(404, "Not Found")
        return JSONResponse({"id": self.installations[owner], "account": {"login": owner}})

    async def _get_repo(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_token(request)) is not None:
            return refused
        _, repo = self._repo(request)
        return _error(404, "Not Found") if repo is None else JSONResponse(repo)

    async def _delete_repo(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_token(request)) is not None:
            return refused
        full_name, repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        del self.repos[full_name.lower()]
        return Response(status_code=204)

    async def _generate(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_token(request)) is not None:
            return refused
        _, template = self._repo(request)
        if template is None:
            return _error(404, "Not Found")
        body = payload if isinstance(payload, dict) else {}
        name = body.get("name")
        owner = body.get("owner") or template["owner"]["login"]
        if not isinstance(name, str) or not name:
            return _error(422, "Invalid request.", ['"name" wasn\'t supplied.'])
        full_name = f"{owner}/{name}"
        if full_name.lower() in self.repos:
            return _error(
                422,
                "Validation Failed",
                [{"resource": "Repository", "code": "custom", "field": "name",
                  "message": "name already exists on this account"}],
            )  # fmt: skip
        repo = self.add_repo(full_name, private=bool(body.get("private", False)))
        repo["description"] = body.get("description") or ""
        repo["template_repository"] = {"full_name": template["full_name"]}
        return JSONResponse(repo, status_code=201)

    async def _create_status(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_token(request)) is not None:
            return refused
        full_name, repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        body = payload if isinstance(payload, dict) else {}
        state = body.get("state")
        if state not in ("error", "failure", "pending", "success"):
            return _error(
                422, "Validation Failed",
                [{"resource": "Status", "code": "custom", "field": "state",
                  "message": f"state is not included in the list ({state!r})"}],
            )  # fmt: skip
        description = body.get("description") or ""
        if len(description) > 140:
            return _error(
                422, "Validation Failed",
                [{"resource": "Status", "code": "custom", "field": "description",
                  "message": "description is too long (maximum is 140 characters)"}],
            )  # fmt: skip
        status = {
            "id": next(self._ids),
            "state": state,
            "description": description,
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        key = (full_name.lower(), request.path_params["sha"])
        self.statuses.setdefault(key, []).append(status)
        return JSONResponse(status, status_code=201)

    async def _add_collaborator(self, request: Request, payload: Any) -> Response:
        if (refused := self._check_token(request)) is not None:
            return refused
        full_name, repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        username = request.path_params["username"]
        permission = (payload or {}).get("permission", "push")
        members = self.collaborators.setdefault(full_name.lower(), {})
        if username.lower() in members:
            members[username.lower()] = permission
            return Response(status_code=204)
        members[username.lower()] = permission
        invitation = {
            "id": next(self._ids),
            "repository": {"full_name": repo["full_name"]},
            "invitee": {"login": username},
            "permissions": permission,
        }
        return JSONResponse(invitation, status_code=201)

    def _hook_key(self, request: Request) -> str:
        if "hook_id" not in request.path_params:
            return "app"
        return (
            f"{request.path_params['owner']}/{request.path_params['repo']}"
            f"#{request.path_params['hook_id']}"
        )

    async def _list_deliveries(self, request: Request, payload: Any) -> Response:
        key = self._hook_key(request)
        check = self._check_app_jwt if key == "app" else self._check_token
        if (refused := check(request)) is not None:
            return refused
        if key not in self.deliveries:
            return _error(404, "Not Found")
        items = self.deliveries[key]
        per_page = min(int(request.query_params.get("per_page", "30")), 100)
        start = int(request.query_params.get("cursor", "0"))
        page = items[start : start + per_page]
        headers = {}
        if start + per_page < len(items):
            following = request.url.include_query_params(per_page=per_page, cursor=start + per_page)
            headers["Link"] = f'<{following}>; rel="next"'
        return JSONResponse(page, headers=headers)

    async def _redeliver(self, request: Request, payload: Any) -> Response:
        key = self._hook_key(request)
        check = self._check_app_jwt if key == "app" else self._check_token
        if (refused := check(request)) is not None:
            return refused
        delivery_id = request.path_params["delivery_id"]
        if not any(d.get("id") == delivery_id for d in self.deliveries.get(key, [])):
            return _error(404, "Not Found")
        self.redeliveries.append((key, delivery_id))
        return JSONResponse({}, status_code=202)

    async def _not_found(self, request: Request, payload: Any) -> Response:
        return _error(404, "Not Found")


class _DroppedConnection(Response):
    """Close the connection with no complete answer.

    An ASGI app cannot close a socket itself; uvicorn closes it when the app
    raises after starting a response (before that it would answer 500). The
    client sees the connection end inside the body it was promised.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"4096"), (b"content-type", b"application/json")],
            }
        )
        raise ConnectionResetError("FakeGitHub: scripted connection drop")


async def _pause(request: Request, seconds: float) -> bool:
    """Sleep `seconds`, or less if the client goes away; False when it went away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.02, left))
        if await request.is_disconnected():
            return False
    return True


def _error_body(status: int, message: str | None = None, errors: list[Any] | None = None) -> Json:
    body: Json = {
        "message": message or http.HTTPStatus(status).phrase,
        "documentation_url": DOCS_URL,
        "status": str(status),
    }
    if errors:
        body["errors"] = errors
    return body


def _error(status: int, message: str, errors: list[Any] | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, errors), status_code=status)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))


def _matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if len(pattern) != len(segments):
        return False
    return all(
        p == s or (p.startswith("{") and p.endswith("}"))
        for p, s in zip(pattern, segments, strict=True)
    )
