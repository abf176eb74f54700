"""A bearer token on every request; after a 401, the token replaced once and the request resent."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["BearerAuth"]


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` with the token manager's current token; refresh once on a 401.

    ``token()`` gives a valid access token; ``refresh(rejected)`` replaces
    one the API refused (single-flight across processes: the token
    lifecycle's job). ``refused(response, started)`` hears of the refused
    answer before the refresh (the audit record), ``leaving()`` of the
    request sent again (the rate limit). One instance serves one call: a
    call refreshes at most once, whatever its retries.
    """

    def __init__(
        self,
        token: Callable[[], Awaitable[str]],
        refresh: Callable[[str], Awaitable[str]],
        *,
        refused: Callable[[httpx.Response, float], Awaitable[None]],
        leaving: Callable[[], Awaitable[None]],
    ) -> None:
        """Take the token seams and the hooks of the call layer."""
        self._token = token
        self._refresh = refresh
        self._refused = refused
        self._leaving = leaving
        self._refreshed = False

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with the token; after a first 401, refresh it and send once more."""
        token = await self._token()
        request.headers["Authorization"] = f"Bearer {token}"
        started = time.monotonic()
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED or self._refreshed:
            return
        self._refreshed = True
        await self._refused(response, started)
        token = await self._refresh(token)
        # A new request, not the first one changed: what was sent stays as it was sent.
        again = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            extensions=request.extensions,
        )
        again.headers["Authorization"] = f"Bearer {token}"
        await self._leaving()
        yield again
