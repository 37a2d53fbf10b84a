"""Who forgea-gh is to GitHub: a token, or a GitHub App.

A GitHub App signs a short JWT with its private key, and exchanges it for an
installation access token per installation; the JWT itself authenticates the
App-level endpoints (`/app/...`).
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/about-authentication-with-a-github-app
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forgea_gh import errors

# "Issues the JWT 60 seconds in the past to allow for clock drift", and
# "no more than 10 minutes into the future".
# https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app#about-json-web-tokens-jwts
JWT_BACKDATE_SECONDS = 60
JWT_LIFETIME_SECONDS = 9 * 60
# A JWT is reused until this close to its expiry.
JWT_REFRESH_MARGIN_SECONDS = 60
# Installation tokens last an hour; one is replaced this long before it
# expires so a request never starts with a token about to lapse.
# https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app
TOKEN_REFRESH_MARGIN_SECONDS = 5 * 60


class Requester(Protocol):
    """What an auth needs from the client to fetch its tokens."""

    async def request(
        self, method: str, path: str, *, json: Any = None, app_jwt: bool = False
    ) -> httpx.Response: ...


class Auth(Protocol):
    async def headers(
        self, requester: Requester, installation_id: int | None, *, app_jwt: bool = False
    ) -> dict[str, str]:
        """The Authorization header for a request on behalf of `installation_id`.

        `app_jwt` asks for the App's own identity (the `/app/...` endpoints).
        Raises PermanentError when this auth cannot make such a request.
        """
        ...

    def invalidate(self, installation_id: int | None) -> bool:
        """Forget the credential GitHub just refused (401); True if a retry may succeed."""
        ...


class TokenAuth:
    """A personal or fine-grained access token: the same header for every request."""

    def __init__(self, token: str) -> None:
        if not token:
            raise errors.ConfigError("github.token: empty token")
        self._token = token

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"

    async def headers(
        self, requester: Requester, installation_id: int | None, *, app_jwt: bool = False
    ) -> dict[str, str]:
        if app_jwt:
            raise errors.PermanentError(
                "this GitHub endpoint needs GitHub App credentials "
                "(github.app_id and github.private_key_file), not a token"
            )
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self, installation_id: int | None) -> bool:
        # A refused token stays refused: nothing to refresh.
        return False


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    # Epoch seconds after which the value is replaced before use.
    refresh_at: float


class AppAuth:
    """A GitHub App: RS256 JWTs, and installation tokens cached per installation."""

    def __init__(
        self, app_id: int, private_key_pem: str, clock: Callable[[], float] = time.time
    ) -> None:
        if app_id <= 0:
            raise errors.ConfigError("github.app_id: must be a positive GitHub App id")
        try:
            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise errors.ConfigError(
                f"github.private_key_file: not an unencrypted PEM private key ({exc})"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            # GitHub App keys are RSA; JWTs must be RS256.
            raise errors.ConfigError("github.private_key_file: not an RSA private key")
        self.app_id = app_id
        self._key = key
        self._clock = clock
        self._jwt: _Cached | None = None
        self._tokens: dict[int, _Cached] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id})"

    def app_jwt(self) -> str:
        """A JWT identifying the App, reused until a minute before it expires."""
        now = self._clock()
        if self._jwt is not None and now < self._jwt.refresh_at:
            return self._jwt.value
        issued = int(now) - JWT_BACKDATE_SECONDS
        expires = int(now) + JWT_LIFETIME_SECONDS
        claims = {"iat": issued, "exp": expires, "iss": str(self.app_id)}
        token = jwt.encode(claims, self._key, algorithm="RS256")
        self._jwt = _Cached(token, expires - JWT_REFRESH_MARGIN_SECONDS)
        return token

    async def headers(
        self, requester: Requester, installation_id: int | None, *, app_jwt: bool = False
    ) -> dict[str, str]:
        if app_jwt:
            return {"Authorization": f"Bearer {self.app_jwt()}"}
        if installation_id is None:
            raise errors.PermanentError(
                "a GitHub App calls repositories through an installation: no installation id"
            )
        token = await self.installation_token(requester, installation_id)
        return {"Authorization": f"Bearer {token}"}

    async def installation_token(self, requester: Requester, installation_id: int) -> str:
        """The installation's access token, from the cache or freshly exchanged."""
        cached = self._tokens.get(installation_id)
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        # One exchange per installation at a time: concurrent jobs share it.
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            # https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
            response = await requester.request(
                "POST", f"/app/installations/{installation_id}/access_tokens", app_jwt=True
            )
            token, expires_at = _parse_token_response(response)
            self._tokens[installation_id] = _Cached(
                token, expires_at - TOKEN_REFRESH_MARGIN_SECONDS
            )
            return token

    def invalidate(self, installation_id: int | None) -> bool:
        if installation_id is None:
            self._jwt = None
        else:
            self._tokens.pop(installation_id, None)
        return True


def _parse_token_response(response: httpx.Response) -> tuple[str, float]:
    try:
        body = response.json()
        token = body["token"]
        expires_at = datetime.datetime.fromisoformat(body["expires_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.RetryableError(
            f"GitHub sent an unreadable installation token response ({exc!r})"
        ) from None
    if not isinstance(token, str) or not token:
        raise errors.RetryableError("GitHub sent an installation token response without a token")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=datetime.UTC)
    return token, expires_at.timestamp()
