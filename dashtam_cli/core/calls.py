"""Provider calls through one layer every provider shares: gate, rate limit, retries, audit.

A provider describes itself once (a :class:`Dialect`: its name, how its
error bodies read, which error an answer means) and sends each call through
a :class:`Caller`. Authentication is the request's ``httpx.Auth`` (for
OAuth, :class:`dashtam_cli.core.oauth.bearer.BearerAuth`: the token, and
the refresh-once on 401). Every attempt, failed or not, reaches the audit
hook as one :class:`CallRecord`, never with a secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Protocol

import httpx

from dashtam_cli.core.http import (
    ERROR_BODY_LIMIT,
    BadBody,
    BodyTooLarge,
    certificate_failure,
    read_body,
)
from dashtam_cli.core.providers.base import CallRecord
from dashtam_cli.core.resilience import (
    RETRY_STATUSES,
    Backoff,
    SlidingWindowLimiter,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from dashtam_cli.core.errors import DashtamError, ProviderError

__all__ = ["Answer", "Caller", "Dialect"]


class Dialect(Protocol):
    """What differs from one provider to the next in how its answers read."""

    #: The provider as messages name it (``Schwab``).
    name: str
    #: The setting that moves the provider's origin, named in hints.
    setting: str
    #: The longest ``Retry-After`` worth waiting for, in seconds.
    max_retry_after: float

    def correlation(self, response: httpx.Response) -> str | None:
        """The provider's id for the call, as untrusted text, or None."""

    def summary(self, data: bytes) -> str:
        """One sanitised line from an error answer's body."""

    def final_error(
        self, operation: str, status: int, summary: str, correlation: str | None
    ) -> DashtamError:
        """The error for an answer no retry or refresh will change."""

    def gave_up(self, operation: str, kind: str, attempts: int, exc: Exception) -> ProviderError:
        """The error after every attempt got no answer (``kind``: timeout, connection error)."""

    def unreadable(self, exc: BodyTooLarge | BadBody, correlation: str | None) -> ProviderError:
        """The error for an answer that could not be read (too large, not JSON)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its body (read whole, within the limit) and where it came from."""

    status: int
    data: bytes
    correlation: str | None
    duration_ms: int


class Caller:
    """One connection's calls to one provider.

    ``max_in_flight`` requests at once; each one counted by ``limiter`` as it
    leaves (a request that waited at the gate would otherwise crowd into the
    next window); connection errors, timeouts and the answers of
    ``RETRY_STATUSES`` retried after ``backoff`` (a ``Retry-After`` longer
    than the dialect's maximum is not waited for); every attempt audited
    through ``record``.
    """

    def __init__(  # noqa: PLR0913 - the seams are injected
        self,
        client: httpx.AsyncClient,
        dialect: Dialect,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        limiter: SlidingWindowLimiter,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_in_flight: int = 16,
    ) -> None:
        """Send through ``client``; describe answers with ``dialect``."""
        self._client = client
        self._dialect = dialect
        self.record = record
        self._limiter = limiter
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._gate = asyncio.Semaphore(max_in_flight)
        self.requests = 0

    async def leaving(self) -> None:
        """Count one request as it leaves (the auth flow calls it for a request it resends)."""
        await self._limiter.acquire()
        self.requests += 1

    async def refused(self, operation: str, response: httpx.Response, started: float) -> None:
        """Audit an answer the auth flow handles itself (a 401 before its refresh).

        Its body is read within ERROR_BODY_LIMIT, the connection's stream is
        closed, and the response is left holding only what was read: httpx
        reads an answer its auth flow answered in full, and a hostile server's
        endless 401 must not be.
        """
        data = await self._read(response, operation, ERROR_BODY_LIMIT)
        if not response.is_closed and isinstance(response.stream, httpx.AsyncByteStream):
            await response.stream.aclose()  # a truncated read leaves the network stream open
        # What httpx reads next is what was read here: it, and only it.
        response.stream = httpx.ByteStream(data)
        response.is_stream_consumed = False
        response.is_closed = False
        await self.record(
            CallRecord(
                operation,
                "error",
                response.status_code,
                _ms(started),
                self._dialect.correlation(response),
                self._dialect.summary(data),
            )
        )

    async def get(
        self,
        operation: str,
        url: str,
        *,
        limit: int,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """GET ``url``: the answer 200 with its body read within ``limit``, or a DashtamError."""
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async with self._gate:
                    await self.leaving()
                    started = time.monotonic()
                    async with self._client.stream(
                        "GET", url, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT
                    ) as response:
                        data = await self._read(response, operation, limit)
            except (BodyTooLarge, BadBody) as exc:
                correlation = self._dialect.correlation(response)
                raise await self.failed_read(operation, exc, _ms(started), correlation) from None
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                await self._no_answer(operation, url, exc, attempt, _ms(started))
                continue
            duration = _ms(started)
            status = response.status_code
            correlation = self._dialect.correlation(response)
            if status == httpx.codes.OK:
                return Answer(status, data, correlation, duration)
            summary = self._dialect.summary(data)
            record = CallRecord(operation, "error", status, duration, correlation, summary)
            await self.record(record)
            if status in RETRY_STATUSES and attempt < self._backoff.attempts:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None or wait <= self._dialect.max_retry_after:
                    await self._sleep(self._backoff.delay(attempt, wait))
                    continue
            raise self._dialect.final_error(operation, status, summary, correlation)

    async def failed_read(
        self,
        operation: str,
        exc: BodyTooLarge | BadBody,
        duration_ms: int,
        correlation: str | None,
    ) -> ProviderError:
        """Audit an answer that could not be read (too large, not JSON, too deep): no retry."""
        outcome = "too large" if isinstance(exc, BodyTooLarge) else "bad body"
        await self.record(CallRecord(operation, outcome, exc.http_status, duration_ms, correlation))
        return self._dialect.unreadable(exc, correlation)

    async def _read(self, response: httpx.Response, operation: str, limit: int) -> bytes:
        """The body of an answer: whole up to ``limit``, or the start of an error answer."""
        ok = response.status_code == httpx.codes.OK
        return await read_body(
            response,
            limit=limit if ok else ERROR_BODY_LIMIT,
            what=f"{self._dialect.name} {operation}",
            truncate=not ok,
            setting=self._dialect.setting,
        )

    async def _no_answer(
        self, operation: str, url: str, exc: httpx.HTTPError, attempt: int, duration: int
    ) -> None:
        """Audit a request that got no answer; wait before the next attempt, or raise.

        A certificate that does not verify is raised at once, as what it is:
        no retry changes it.
        """
        untrusted = certificate_failure(exc, url)
        if untrusted is not None:
            await self.record(CallRecord(operation, "certificate error", None, duration, None))
            raise untrusted from None
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
        await self.record(CallRecord(operation, kind, None, duration, None, type(exc).__name__))
        if attempt < self._backoff.attempts:
            await self._sleep(self._backoff.delay(attempt))
            return
        raise self._dialect.gave_up(operation, kind, attempt, exc) from None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
