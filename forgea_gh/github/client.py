"""The GitHub REST client: one httpx connection pool, stamina retries, typed calls.

Every answer is read by `ratelimit.classify`: transient ones (5xx, 429,
rate-limited 403, network errors) are retried here, honouring GitHub's
Retry-After / x-ratelimit-reset up to `max_wait_seconds`; a longer wait
becomes a `RetryableError(retry_after=...)` so the job engine reschedules
the job instead of holding a worker. Any other 4xx is a `RejectedError`
(a `PermanentError`) carrying GitHub's message.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx
import stamina

import forgea_gh
from forgea_gh import errors, settings
from forgea_gh.github import auth, ratelimit

# https://docs.github.com/en/rest/about-the-rest-api/api-versions
API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
USER_AGENT = f"forgea-gh/{forgea_gh.__version__}"
# GitHub refuses longer commit status descriptions with a 422.
STATUS_DESCRIPTION_LIMIT = 140
# https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
CommitState = Literal["error", "failure", "pending", "success"]
# Exponential backoff between retries GitHub gave no wait for (5xx, network).
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 5.0

Json = dict[str, Any]


class RejectedError(errors.PermanentError):
    """GitHub refused a request for good (a 4xx other than a rate limit).

    `github_message` and `details` are GitHub's own words (the JSON
    `message` and `errors`), so a dead letter says what GitHub objected to.
    https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
    """

    def __init__(
        self,
        status_code: int,
        method: str,
        path: str,
        github_message: str,
        details: tuple[str, ...] = (),
    ) -> None:
        text = f"GitHub {status_code} on {method} {path}: {github_message}"
        if details:
            text += f" ({'; '.join(details)})"
        super().__init__(text)
        self.status_code = status_code
        self.method = method
        self.path = path
        self.github_message = github_message
        self.details = details


class _TransientResponse(Exception):
    """An answer worth retrying; `wait_seconds` is the wait GitHub asked for, if any."""

    def __init__(self, message: str, wait_seconds: float | None) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


def _retry_wait(exc: Exception) -> bool | float:
    """stamina's `on=` hook: retry transient failures, after GitHub's wait when it gave one.

    A float replaces stamina's own backoff (stamina >= 25.2); the caller has
    already checked it against `max_wait_seconds`.
    """
    if isinstance(exc, _TransientResponse):
        return True if exc.wait_seconds is None else exc.wait_seconds
    return isinstance(exc, httpx.TransportError)


@dataclass(frozen=True, slots=True)
class HookRef:
    """A webhook whose deliveries GitHub keeps: a repository's hook, or the App's own.

    https://docs.github.com/en/rest/repos/webhooks#list-deliveries-for-a-repository-webhook
    https://docs.github.com/en/rest/apps/webhooks#list-deliveries-for-an-app-webhook
    """

    repository: str | None
    hook_id: int | None

    def __post_init__(self) -> None:
        if (self.repository is None) != (self.hook_id is None):
            raise ValueError("a hook is a repository and a hook id, or neither (the App hook)")

    @classmethod
    def parse(cls, text: str) -> HookRef:
        """`owner/repo#123` (the form of `redelivery.hooks`), or `app`."""
        text = text.strip()
        if text == "app":
            return cls.app()
        repository, hash_sign, hook = text.partition("#")
        owner, slash, name = repository.partition("/")
        if not (hash_sign and slash and owner and name and "/" not in name):
            raise ValueError(f"not a hook reference: {text!r} (expected owner/repo#hook_id)")
        if not (hook.isascii() and hook.isdigit()):
            raise ValueError(f"not a hook reference: {text!r} (hook id must be a number)")
        return cls(repository, int(hook))

    @classmethod
    def app(cls) -> HookRef:
        return cls(None, None)

    @property
    def is_app(self) -> bool:
        return self.repository is None

    def deliveries_path(self) -> str:
        if self.repository is None or self.hook_id is None:
            return "/app/hook/deliveries"
        return f"{_repo_path(self.repository)}/hooks/{self.hook_id}/deliveries"

    def __str__(self) -> str:
        return "app" if self.is_app else f"{self.repository}#{self.hook_id}"


class GitHubClient:
    """One `httpx.AsyncClient` for the daemon's life; close it with `aclose()`."""

    def __init__(
        self,
        api_url: str,
        auth: auth.Auth,
        *,
        max_wait_seconds: float,
        timeout_seconds: float,
        attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self.max_wait_seconds = max_wait_seconds
        self.attempts = attempts
        self._clock = clock
        # owner (lower case) -> installation id, for App calls made without one.
        self._installations: dict[str, int] = {}
        self._http = httpx.AsyncClient(
            # The trailing slash keeps a GitHub Enterprise Server's /api/v3 prefix.
            base_url=self.api_url + "/",
            headers={
                "Accept": MEDIA_TYPE,
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout_seconds),
            # "Clients should assume that any request may result in a redirection"
            # (renamed and transferred repositories answer 301/307). httpx drops
            # Authorization when a redirect leaves the origin.
            # https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects
            follow_redirects=True,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the core ---------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        installation_id: int | None = None,
        app_jwt: bool = False,
    ) -> httpx.Response:
        """Send one API request; return the response when GitHub accepted it (< 400).

        `path` is relative to `api_url` ("/repos/o/r"), or an absolute URL under
        it (a pagination link). Raises RetryableError (transient failure: retries
        exhausted, or GitHub asked for a wait longer than `max_wait_seconds`,
        which is then `retry_after`) or RejectedError (any other 4xx). A 401
        under App auth drops the cached credential and tries once more.
        """
        method = method.upper()
        url = self._url(path)
        refreshed = False
        while True:
            headers = await self.auth.headers(self, installation_id, app_jwt=app_jwt)
            response = await self._send_with_retries(
                method, path, url, headers=headers, json=json, params=params
            )
            if response.status_code < 400:
                return response
            if (
                response.status_code == 401
                and not refreshed
                and self.auth.invalidate(None if app_jwt else installation_id)
            ):
                # An installation token can be revoked before it expires.
                # https://docs.github.com/en/rest/apps/installations#revoke-an-installation-access-token
                refreshed = True
                continue
            message, details = _github_message(response)
            raise RejectedError(response.status_code, method, path, message, details)

    async def _send_with_retries(
        self,
        method: str,
        path: str,
        url: str,
        *,
        headers: dict[str, str],
        json: Any,
        params: Mapping[str, str | int] | None,
    ) -> httpx.Response:
        waited = 0.0
        tries = 0
        try:
            async for attempt in stamina.retry_context(
                on=_retry_wait,
                attempts=self.attempts,
                # Bounded by attempts and by max_wait_seconds below instead:
                # stamina's clock would cut a wait GitHub asked for.
                timeout=None,
                wait_initial=BACKOFF_INITIAL_SECONDS,
                wait_max=BACKOFF_MAX_SECONDS,
            ):
                with attempt:
                    tries += 1
                    response = await self._http.request(
                        method, url, headers=headers, json=json, params=params
                    )
                    message = _github_message(response)[0] if response.status_code >= 400 else ""
                    verdict = ratelimit.classify(
                        response.status_code, response.headers, self._clock(), message=message
                    )
                    if not verdict.transient:
                        return response
                    text = f"GitHub {response.status_code} on {method} {path}: {message}"
                    wait = verdict.wait_seconds
                    if wait is None:
                        raise _TransientResponse(f"{text} ({verdict.reason})", None)
                    if waited + wait > self.max_wait_seconds:
                        raise errors.RetryableError(
                            f"{text} ({verdict.reason}; GitHub asks to wait {wait:.0f} s, "
                            f"more than github.max_wait_seconds)",
                            retry_after=wait,
                        )
                    waited += wait
                    raise _TransientResponse(
                        f"{text} ({verdict.reason}; retry after {wait:g} s)", wait
                    )
        except _TransientResponse as exc:
            raise errors.RetryableError(
                f"{exc}; gave up after {tries} attempts", retry_after=exc.wait_seconds
            ) from exc
        except httpx.TransportError as exc:
            raise errors.RetryableError(
                f"GitHub unreachable on {method} {path}: {_describe(exc)}; "
                f"gave up after {tries} attempts"
            ) from exc
        except httpx.RequestError as exc:  # a garbled response: not retried here
            raise errors.RetryableError(
                f"GitHub request {method} {path} failed: {_describe(exc)}"
            ) from exc
        raise AssertionError("unreachable: stamina either returns or raises")

    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            # Pagination links are absolute; never send credentials elsewhere.
            if not path.startswith(self.api_url + "/"):
                raise errors.PermanentError(f"refusing to follow {path}: not under {self.api_url}")
            return path
        return path.lstrip("/")

    # -- installations (GitHub App) ----------------------------------------

    async def repository_installation_id(self, full_name: str) -> int | None:
        """The id of the App's installation that covers `full_name`; None if not installed.

        https://docs.github.com/en/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
        """
        try:
            response = await self.request(
                "GET", _repo_path(full_name) + "/installation", app_jwt=True
            )
        except RejectedError as exc:
            if exc.status_code == 404:
                return None
            raise
        installation_id = _json_object(response, "GET", "installation").get("id")
        if not isinstance(installation_id, int):
            raise errors.RetryableError(f"GitHub sent an installation of {full_name} without id")
        return installation_id

    async def _installation_for(self, full_name: str, installation_id: int | None) -> int | None:
        """The installation to act through: the caller's, else (App auth) the owner's."""
        if installation_id is not None or not isinstance(self.auth, auth.AppAuth):
            return installation_id
        owner = _split(full_name)[0].lower()
        cached = self._installations.get(owner)
        if cached is not None:
            return cached
        found = await self.repository_installation_id(full_name)
        if found is None:
            raise RejectedError(
                404,
                "GET",
                _repo_path(full_name) + "/installation",
                f"the GitHub App is not installed for {full_name}",
            )
        self._installations[owner] = found
        return found

    async def _repo_request(
        self,
        method: str,
        full_name: str,
        suffix: str = "",
        *,
        installation_id: int | None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> httpx.Response:
        owner = _split(full_name)[0]
        resolved = await self._installation_for(full_name, installation_id)
        try:
            return await self.request(
                method,
                _repo_path(full_name) + suffix,
                json=json,
                params=params,
                installation_id=resolved,
            )
        except RejectedError as exc:
            if installation_id is None and exc.path.startswith("/app/installations/"):
                # The installation is gone (the App was reinstalled under a new
                # id, or removed): look it up again next time.
                self._installations.pop(owner.lower(), None)
            raise

    # -- typed calls --------------------------------------------------------

    async def create_commit_status(
        self,
        full_name: str,
        sha: str,
        *,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
        installation_id: int | None = None,
    ) -> Json:
        """https://docs.github.com/en/rest/commits/statuses#create-a-commit-status"""
        if len(description) > STATUS_DESCRIPTION_LIMIT:
            description = description[: STATUS_DESCRIPTION_LIMIT - 1] + "…"
        body: Json = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        response = await self._repo_request(
            "POST", full_name, f"/statuses/{_q(sha)}", json=body, installation_id=installation_id
        )
        return _json_object(response, "POST", f"statuses of {full_name}")

    async def get_repository(
        self, full_name: str, installation_id: int | None = None
    ) -> Json | None:
        """The repository, or None when GitHub answers 404 (absent or invisible to us).

        https://docs.github.com/en/rest/repos/repos#get-a-repository
        """
        try:
            response = await self._repo_request("GET", full_name, installation_id=installation_id)
        except RejectedError as exc:
            if _is_missing(exc, _repo_path(full_name)):
                return None
            raise
        return _json_object(response, "GET", full_name)

    async def generate_repository(
        self,
        template_full_name: str,
        *,
        owner: str,
        name: str,
        description: str = "",
        private: bool = True,
        include_all_branches: bool = False,
        installation_id: int | None = None,
    ) -> Json:
        """Create `owner/name` from a template repository; the new repository.

        Not idempotent: a retry after a lost answer gets a 422 ("name already
        exists") for a repository that was in fact created; check with
        `get_repository` before and after.
        https://docs.github.com/en/rest/repos/repos#create-a-repository-using-a-template
        """
        body: Json = {
            "owner": owner,
            "name": name,
            "description": description,
            "private": private,
            "include_all_branches": include_all_branches,
        }
        response = await self._repo_request(
            "POST", template_full_name, "/generate", json=body, installation_id=installation_id
        )
        return _json_object(response, "POST", f"generate from {template_full_name}")

    async def add_collaborator(
        self,
        full_name: str,
        username: str,
        permission: str = "push",
        installation_id: int | None = None,
    ) -> Json | None:
        """Invite `username`; the invitation, or None when nothing was to be sent (204).

        https://docs.github.com/en/rest/collaborators/collaborators#add-a-repository-collaborator
        """
        response = await self._repo_request(
            "PUT",
            full_name,
            f"/collaborators/{_q(username)}",
            json={"permission": permission},
            installation_id=installation_id,
        )
        if response.status_code == 204 or not response.content:
            return None
        return _json_object(response, "PUT", f"collaborator of {full_name}")

    async def delete_repository(self, full_name: str, installation_id: int | None = None) -> bool:
        """Delete the repository; False when it was already gone (404 counts as done).

        https://docs.github.com/en/rest/repos/repos#delete-a-repository
        """
        try:
            await self._repo_request("DELETE", full_name, installation_id=installation_id)
        except RejectedError as exc:
            if _is_missing(exc, _repo_path(full_name)):
                return False
            raise
        return True

    async def list_hook_deliveries(
        self, hook: HookRef, *, per_page: int = 100, installation_id: int | None = None
    ) -> AsyncIterator[Json]:
        """Every delivery GitHub still keeps for `hook`, newest first, page by page.

        Follows the `Link: <...>; rel="next"` cursor.
        https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
        """
        installation = await self._hook_installation(hook, installation_id)
        url: str | None = hook.deliveries_path()
        params: dict[str, str | int] | None = {"per_page": per_page}
        while url is not None:
            response = await self.request(
                "GET", url, params=params, installation_id=installation, app_jwt=hook.is_app
            )
            page = _json_list(response, "GET", f"deliveries of {hook}")
            for delivery in page:
                if isinstance(delivery, dict):
                    yield delivery
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries the cursor and per_page

    async def redeliver(
        self, hook: HookRef, delivery_id: int, *, installation_id: int | None = None
    ) -> None:
        """Ask GitHub to send a delivery again (same GUID).

        https://docs.github.com/en/rest/repos/webhooks#redeliver-a-delivery-for-a-repository-webhook
        https://docs.github.com/en/rest/apps/webhooks#redeliver-a-delivery-for-an-app-webhook
        """
        installation = await self._hook_installation(hook, installation_id)
        await self.request(
            "POST",
            f"{hook.deliveries_path()}/{delivery_id}/attempts",
            installation_id=installation,
            app_jwt=hook.is_app,
        )

    async def _hook_installation(self, hook: HookRef, installation_id: int | None) -> int | None:
        if hook.repository is None:
            return None
        return await self._installation_for(hook.repository, installation_id)


def from_settings(
    config: settings.Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> GitHubClient | None:
    """The client the configuration asks for; None when no GitHub credentials are set.

    With both a GitHub App and a token configured, the App is used.
    """
    if not config.github_configured():
        return None
    github = config.github
    credentials: auth.Auth
    if github.app_id and github.private_key_file:
        credentials = auth.AppAuth(github.app_id, config.github_private_key())
    else:
        credentials = auth.TokenAuth(config.github_token())
    return GitHubClient(
        github.api_url,
        credentials,
        max_wait_seconds=github.max_wait_seconds,
        timeout_seconds=github.timeout_seconds,
        transport=transport,
    )


def _split(full_name: str) -> tuple[str, str]:
    owner, slash, repo = full_name.partition("/")
    if not (slash and owner and repo) or "/" in repo:
        raise errors.PermanentError(f"not a repository full name: {full_name!r} (owner/repo)")
    return owner, repo


def _repo_path(full_name: str) -> str:
    owner, repo = _split(full_name)
    return f"/repos/{_q(owner)}/{_q(repo)}"


def _is_missing(exc: RejectedError, path: str) -> bool:
    # Only a 404 for the resource itself: a 404 while fetching a token or
    # looking up the App's installation is a real failure, not "absent".
    return exc.status_code == 404 and exc.path == path


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _github_message(response: httpx.Response) -> tuple[str, tuple[str, ...]]:
    """GitHub's `message` and `errors` from an error body, or the best text there is."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:200]
        return text or response.reason_phrase or "no message", ()
    message = body.get("message")
    if not isinstance(message, str) or not message:
        message = response.reason_phrase or "no message"
    details: list[str] = []
    found = body.get("errors")
    for item in found if isinstance(found, list) else ():
        # https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
        if isinstance(item, str):
            details.append(item)
        elif isinstance(item, dict):
            if isinstance(item.get("message"), str):
                details.append(item["message"])
            else:
                where = ".".join(str(item[k]) for k in ("resource", "field") if item.get(k))
                details.append(f"{where} {item.get('code', 'invalid')}".strip())
    return message, tuple(details)


def _json_object(response: httpx.Response, method: str, what: str) -> Json:
    body = _json(response, method, what)
    if not isinstance(body, dict):
        raise errors.RetryableError(f"GitHub sent {type(body).__name__} for {method} {what}")
    return body


def _json_list(response: httpx.Response, method: str, what: str) -> list[Any]:
    body = _json(response, method, what)
    if not isinstance(body, list):
        raise errors.RetryableError(f"GitHub sent {type(body).__name__} for {method} {what}")
    return body


def _json(response: httpx.Response, method: str, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise errors.RetryableError(
            f"GitHub sent a body that is not JSON for {method} {what}"
        ) from None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
