"""The call layer every provider shares: retries, the rate limit, bounded bodies, the audit hook.

Driven with a provider that is not Schwab (its own dialect), so the layer is
shown to hold nothing of one provider.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

from dashtam_cli.core.calls import Caller
from dashtam_cli.core.errors import DashtamError, ProviderError
from dashtam_cli.core.http import ERROR_BODY_LIMIT
from dashtam_cli.core.oauth.bearer import BearerAuth
from dashtam_cli.core.resilience import Backoff, SlidingWindowLimiter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from dashtam_cli.core.http import BadBody, BodyTooLarge
    from dashtam_cli.core.providers.base import CallRecord

URL = "https://bank.example/accounts"


class Bank:
    """A made-up provider's dialect."""

    name = "Bank"
    setting = "BANK_URL"
    max_retry_after = 60.0

    def correlation(self, response: httpx.Response) -> str | None:
        """The bank's request id."""
        found: str | None = response.headers.get("X-Request-Id")
        return found

    def summary(self, data: bytes) -> str:
        """The body's first 40 characters."""
        return data[:40].decode(errors="replace")

    def final_error(
        self, operation: str, status: int, summary: str, correlation: str | None
    ) -> DashtamError:
        """One line with the status."""
        return ProviderError(f"Bank {operation}: HTTP {status} {summary}", http_status=status)

    def gave_up(self, operation: str, kind: str, attempts: int, exc: Exception) -> ProviderError:
        """After every attempt."""
        return ProviderError(f"Bank {operation}: {kind} after {attempts} ({type(exc).__name__})")

    def unreadable(self, exc: BodyTooLarge | BadBody, correlation: str | None) -> ProviderError:
        """Too large or not readable."""
        return ProviderError(exc.message)


def _caller(handler: httpx.MockTransport, records: list[CallRecord], slept: list[float]) -> Caller:
    async def record(call: CallRecord) -> None:
        records.append(call)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Caller(
        httpx.AsyncClient(transport=handler),
        Bank(),
        record=record,
        limiter=SlidingWindowLimiter(100, 60.0),
        backoff=Backoff(attempts=3, base=0.5, cap=30.0, rng=lambda: 0.0),
        sleep=sleep,
    )


def test_a_temporary_answer_is_retried_after_its_retry_after_and_every_attempt_audited() -> None:
    """503 with Retry-After 7, then 200: two requests, one wait of 7 s, two audit records."""
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "7", "X-Request-Id": "r1"}, text="busy"),
            httpx.Response(200, headers={"X-Request-Id": "r2"}, text='{"ok": true}'),
        ]
    )
    records: list[CallRecord] = []
    slept: list[float] = []
    caller = _caller(httpx.MockTransport(lambda _r: next(answers)), records, slept)

    answer = asyncio.run(caller.get("accounts", URL, limit=1000))

    assert (answer.status, answer.data, answer.correlation) == (200, b'{"ok": true}', "r2")
    assert caller.requests == 2
    assert slept == [7.0]
    assert [(r.outcome, r.http_status, r.correlation_id, r.detail) for r in records] == [
        ("error", 503, "r1", "busy")
    ]


def test_no_answer_at_all_gives_up_after_the_attempts_with_the_dialects_error() -> None:
    """Three connection errors: three audit records, two waits, then the dialect's own message."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    records: list[CallRecord] = []
    slept: list[float] = []
    caller = _caller(httpx.MockTransport(refuse), records, slept)

    with pytest.raises(ProviderError, match=r"Bank accounts: connection error after 3 \(Connect"):
        asyncio.run(caller.get("accounts", URL, limit=1000))
    assert [r.outcome for r in records] == ["connection error"] * 3
    assert len(slept) == 2


def test_a_final_answer_is_the_dialects_error_and_not_retried() -> None:
    """A 404: one request, one record, the dialect's error."""
    records: list[CallRecord] = []
    caller = _caller(httpx.MockTransport(lambda _r: httpx.Response(404, text="gone")), records, [])
    with pytest.raises(ProviderError, match="Bank accounts: HTTP 404 gone"):
        asyncio.run(caller.get("accounts", URL, limit=1000))
    assert caller.requests == 1


async def _endless(sent: list[int]) -> AsyncIterator[bytes]:
    chunk = b"x" * 16384
    for _ in range(10_000):  # 160 MiB, if anyone read it all
        sent.append(len(chunk))
        yield chunk


def test_bearer_refreshes_once_and_reads_a_hostile_401_only_to_its_limit() -> None:
    """A 401 with an endless body: read to ERROR_BODY_LIMIT only, refreshed, resent once.

    httpx reads in full an answer an auth flow answered; the call layer
    leaves it only what it read, so 160 MiB are never pulled in.
    """
    sent: list[int] = []
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if len(seen) == 1:
            return httpx.Response(401, content=_endless(sent))
        return httpx.Response(200, text="{}")

    refreshed: list[str] = []

    async def token() -> str:
        return "old-token"

    async def refresh(rejected: str) -> str:
        refreshed.append(rejected)
        return "new-token"

    records: list[CallRecord] = []
    caller = _caller(httpx.MockTransport(handler), records, [])

    async def call() -> bytes:
        async def refused(response: httpx.Response, started: float) -> None:
            await caller.refused("accounts", response, started)

        auth = BearerAuth(token, refresh, refused=refused, leaving=caller.leaving)
        return (await caller.get("accounts", URL, limit=1000, auth=auth)).data

    assert asyncio.run(call()) == b"{}"
    assert seen == ["Bearer old-token", "Bearer new-token"]
    assert refreshed == ["old-token"]
    assert caller.requests == 2
    assert sum(sent) <= ERROR_BODY_LIMIT + 16384
    assert [(r.outcome, r.http_status, r.detail) for r in records] == [("error", 401, "x" * 40)]


def test_bearer_refreshes_after_a_small_streamed_401() -> None:
    """A 401 whose short body streams in (read to its end, so httpx closed it): refreshed, resent.

    As a real server's answer arrives: the body is read whole by the call
    layer for the audit record, and httpx still gets what it reads after.
    """
    seen: list[str] = []

    async def short() -> AsyncIterator[bytes]:
        yield b'{"message": "token expired"}'

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if len(seen) == 1:
            return httpx.Response(401, content=short())
        return httpx.Response(200, text="[]")

    async def token() -> str:
        return "old"

    async def refresh(_rejected: str) -> str:
        return "new"

    records: list[CallRecord] = []
    caller = _caller(httpx.MockTransport(handler), records, [])

    async def call() -> bytes:
        async def refused(response: httpx.Response, started: float) -> None:
            await caller.refused("accounts", response, started)

        auth = BearerAuth(token, refresh, refused=refused, leaving=caller.leaving)
        return (await caller.get("accounts", URL, limit=1000, auth=auth)).data

    assert asyncio.run(call()) == b"[]"
    assert seen == ["Bearer old", "Bearer new"]
    assert [r.detail for r in records] == ['{"message": "token expired"}']


def test_bearer_does_not_refresh_twice_in_one_call() -> None:
    """401 again after the refresh: the second 401 is the answer (the dialect decides what it means)."""
    refreshed: list[str] = []

    async def token() -> str:
        return "t1"

    async def refresh(rejected: str) -> str:
        refreshed.append(rejected)
        return "t2"

    records: list[CallRecord] = []
    caller = _caller(httpx.MockTransport(lambda _r: httpx.Response(401, text="no")), records, [])

    async def call() -> None:
        async def refused(response: httpx.Response, started: float) -> None:
            await caller.refused("accounts", response, started)

        auth = BearerAuth(token, refresh, refused=refused, leaving=caller.leaving)
        await caller.get("accounts", URL, limit=1000, auth=auth)

    with pytest.raises(ProviderError, match="HTTP 401"):
        asyncio.run(call())
    assert refreshed == ["t1"]
    assert caller.requests == 2
    assert [r.http_status for r in records] == [401, 401]
