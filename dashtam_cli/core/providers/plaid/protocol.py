"""Plaid's wire: JSON POSTs with the app keys in headers, Plaid's error JSON, retries, audit.

Facts this module depends on (Plaid's API reference and its OpenAPI spec
``2020-09-14.yml``): every call is ``POST {host}{path}`` with a JSON body and
the ``Plaid-Version: 2020-09-14`` header; the app's client id and secret go in
the ``PLAID-CLIENT-ID`` and ``PLAID-SECRET`` headers (never in a body, a log or
an audit record). Hosts: ``https://sandbox.plaid.com`` and
``https://production.plaid.com``. An error answers a JSON object with
``error_type``, ``error_code``, ``error_message``, ``display_message`` (may be
null) and ``request_id``. ``RATE_LIMIT_EXCEEDED`` and 5xx are temporary.
Amounts are JSON numbers, read here as Decimal from the JSON text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import time
from typing import TYPE_CHECKING, Any, Final

import httpx

from dashtam_cli.core.errors import ConfigError, DashtamError, ProviderError, ReauthRequired
from dashtam_cli.core.http import ERROR_BODY_LIMIT, BadBody, BodyTooLarge, load_json, read_body
from dashtam_cli.core.providers.base import CallRecord, overridden_url
from dashtam_cli.core.providers.plaid import HOSTS, KEYS
from dashtam_cli.core.redact import plain, register_secret, sanitize

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from dashtam_cli.core.providers.base import AppKeys
    from dashtam_cli.core.resilience import Backoff

__all__ = [
    "ANSWER_LIMIT",
    "BASE_URL_ENV",
    "HOSTS",
    "KEYS",
    "PLAID_VERSION",
    "PlaidCaller",
    "PlaidFailure",
    "base_url",
    "script_url",
]

NAME: Final = "Plaid"
PLAID_VERSION: Final = "2020-09-14"
BASE_URL_ENV: Final = "DASHTAM_PLAID_BASE_URL"
# Plaid's own Link script; the sandbox serves a stand-in at the same path.
SCRIPT_PATH: Final = "/link/v2/stable/link-initialize.js"
SCRIPT_ORIGIN: Final = "https://cdn.plaid.com"
# A year of a busy item's transactions, with their JSON, is a few MiB.
ANSWER_LIMIT: Final = 64 * 1024 * 1024
MESSAGE_LIMIT: Final = 300
# Waiting longer than this for a Retry-After is not worth it.
MAX_RETRY_AFTER: Final = 60.0
# Codes that mean the app's keys are wrong: the configuration, not the connection.
_KEY_CODES: Final = frozenset(
    {
        "INVALID_API_KEYS",
        "INVALID_CLIENT_ID",
        "INVALID_SECRET",
        "UNAUTHORIZED_ENVIRONMENT",
        "MISSING_CLIENT_ID",
        "MISSING_SECRET",
    }
)
# Codes that mean this connection's login must be renewed (update mode).
_LOGIN_CODES: Final = frozenset({"ITEM_LOGIN_REQUIRED", "PENDING_EXPIRATION"})
# Codes that mean the access token is no longer an item's (removed, or from elsewhere).
_TOKEN_CODES: Final = frozenset({"INVALID_ACCESS_TOKEN", "ITEM_NOT_FOUND"})
_TEMPORARY_TYPES: Final = frozenset({"RATE_LIMIT_EXCEEDED", "API_ERROR", "INSTITUTION_ERROR"})
_SERVER_ERROR: Final = 500


def base_url(environment: str, environ: Mapping[str, str] | None = None) -> str:
    """Plaid's host for ``environment``, or ``DASHTAM_PLAID_BASE_URL`` when set (checked)."""
    default = HOSTS.get(environment, HOSTS["sandbox"])
    return overridden_url(BASE_URL_ENV, default, environ)


def script_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the Link script is: Plaid's CDN, or the overriding base URL's stand-in."""
    override = overridden_url(BASE_URL_ENV, "", environ)
    return f"{override or SCRIPT_ORIGIN}{SCRIPT_PATH}"


class PlaidFailure(ProviderError):
    """Plaid answered an error that is neither a login to renew nor the app's keys."""

    def __init__(  # noqa: PLR0913 - the error's parts
        self,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
        correlation_id: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Keep Plaid's ``error_code`` and ``error_type`` beside the message."""
        super().__init__(message, hint=hint, http_status=http_status, correlation_id=correlation_id)
        self.code = code
        self.error_type = error_type


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """Plaid's error object, sanitised: each field untrusted text, any of them absent."""

    error_type: str | None
    code: str | None
    message: str
    display: str | None
    request_id: str | None

    @classmethod
    def read(cls, data: bytes) -> Problem:
        """Read an error answer; one that is not Plaid's error JSON becomes its text, sanitised."""
        try:
            body = load_json(data, what="a Plaid error")
        except (ValueError, BadBody):
            body = None
        if not isinstance(body, dict):
            return cls(None, None, sanitize(data, limit=MESSAGE_LIMIT) or "no message", None, None)

        def field(key: str, limit: int) -> str | None:
            value = body.get(key)
            if not isinstance(value, str) or not value.strip():
                return None
            return sanitize(value, limit=limit)

        return cls(
            error_type=field("error_type", 60),
            code=field("error_code", 80),
            message=field("error_message", MESSAGE_LIMIT) or "no message",
            display=field("display_message", MESSAGE_LIMIT),
            request_id=field("request_id", 80),
        )

    @property
    def temporary(self) -> bool:
        """Worth retrying: rate limits, and Plaid's or the institution's own failures."""
        return self.code in {"RATE_LIMIT_EXCEEDED", "INTERNAL_SERVER_ERROR"} or (
            self.error_type in _TEMPORARY_TYPES
        )

    @property
    def summary(self) -> str:
        """One line: the code and what Plaid says (its message for people when it gives one)."""
        text = self.display or self.message
        return f"{self.code}: {text}" if self.code else text


def _request_id(data: Any) -> str | None:  # noqa: ANN401 - any JSON
    value = data.get("request_id") if isinstance(data, dict) else None
    return plain(value, limit=80) if isinstance(value, str) and value else None


class PlaidCaller:
    """One connection's (or one login's) calls to Plaid: POST JSON, retried, audited.

    Each attempt is one :class:`CallRecord` (operation: the path without its
    slash, ``accounts/get``; correlation id: Plaid's ``request_id``), never
    with a key or a token. Temporary answers (rate limits, 5xx, connection
    errors) are retried after ``backoff``; the last one is raised.
    """

    def __init__(  # noqa: PLR0913 - the seams are injected
        self,
        client: httpx.AsyncClient,
        keys: AppKeys,
        *,
        origin: str,
        record: Callable[[CallRecord], Awaitable[None]],
        relogin: str,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Send to ``origin`` through ``client``; ``relogin`` is the command for a dead login."""
        from dashtam_cli.core.resilience import Backoff

        register_secret(keys.secret)
        self._client = client
        self._keys = keys
        self._origin = origin
        self.record = record
        self._relogin = relogin
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        return {
            "Plaid-Version": PLAID_VERSION,
            "PLAID-CLIENT-ID": self._keys.client_id,
            "PLAID-SECRET": self._keys.secret,
            "Content-Type": "application/json",
        }

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST path`` with ``body``: the answer's JSON object (numbers as Decimal), or raise."""
        import json

        operation = path.strip("/")
        content = json.dumps(body, default=str).encode()
        url = f"{self._origin}{path}"
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                self.requests += 1
                async with self._client.stream(
                    "POST", url, content=content, headers=self._headers()
                ) as response:
                    ok = response.status_code == httpx.codes.OK
                    data = await read_body(
                        response,
                        limit=ANSWER_LIMIT if ok else ERROR_BODY_LIMIT,
                        what=f"Plaid {operation}",
                        truncate=not ok,
                        setting=BASE_URL_ENV,
                    )
            except (BodyTooLarge, BadBody) as exc:
                await self.record(
                    CallRecord(operation, "bad body", exc.http_status, _ms(started), None)
                )
                raise ProviderError(
                    exc.message, hint=exc.hint or "retry later", http_status=exc.http_status
                ) from None
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                await self._no_answer(operation, url, exc, attempt, _ms(started))
                continue
            duration = _ms(started)
            status = response.status_code
            if ok:
                return await self._answer(operation, data, status, duration)
            problem = Problem.read(data)
            await self.record(
                CallRecord(
                    operation, "error", status, duration, problem.request_id, problem.summary
                )
            )
            temporary = (
                problem.temporary
                or status >= _SERVER_ERROR
                or status == httpx.codes.TOO_MANY_REQUESTS
            )
            if temporary and attempt < self._backoff.attempts:
                from dashtam_cli.core.resilience import retry_after_seconds

                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None or wait <= MAX_RETRY_AFTER:
                    await self._sleep(self._backoff.delay(attempt, wait))
                    continue
            raise self._error(operation, status, problem)

    async def _answer(
        self, operation: str, data: bytes, status: int, duration: int
    ) -> dict[str, Any]:
        try:
            body = load_json(
                data, what=f"Plaid {operation}", setting=BASE_URL_ENV, parse_float=decimal.Decimal
            )
        except (ValueError, BadBody):
            body = None
        if not isinstance(body, dict):
            await self.record(CallRecord(operation, "bad body", status, duration, None))
            raise ProviderError(
                f"Plaid {operation} answered something that is not a JSON object",
                hint=f"retry later; if it lasts, check {BASE_URL_ENV}",
                http_status=status,
            )
        await self.record(CallRecord(operation, "ok", status, duration, _request_id(body)))
        return body

    def _error(self, operation: str, status: int, problem: Problem) -> DashtamError:
        """The error an answer means: a login to renew, the app's keys, or Plaid's failure."""
        where = f" (request {problem.request_id})" if problem.request_id else ""
        if problem.code in _LOGIN_CODES:
            return ReauthRequired(
                f"Plaid needs you to log in to this institution again: {problem.summary}{where}",
                hint=f"run: {self._relogin}",
            )
        if problem.code in _TOKEN_CODES:
            return ReauthRequired(
                f"Plaid no longer knows this connection's item: {problem.summary}{where}",
                hint="connect it again: dashtam connect plaid --name NAME (the item was removed "
                "or belongs to another Plaid environment)",
            )
        if problem.code in _KEY_CODES or status == httpx.codes.UNAUTHORIZED:
            return ConfigError(
                f"Plaid refused the app keys: {problem.summary}{where}",
                hint=f"check {KEYS.client_id_env}, {KEYS.secret_env} and {KEYS.environment_env} "
                "(the secret is per environment), or run: dashtam providers configure plaid "
                "--client-id ID --environment ENV",
            )
        hint = "retry later"
        if problem.temporary or status >= _SERVER_ERROR:
            hint = "Plaid or the institution is failing for now; retry later"
        return PlaidFailure(
            f"Plaid {operation} failed: HTTP {status}, {problem.summary}{where}",
            hint=hint,
            http_status=status,
            correlation_id=problem.request_id,
            code=problem.code,
            error_type=problem.error_type,
        )

    async def _no_answer(
        self, operation: str, url: str, exc: httpx.HTTPError, attempt: int, duration: int
    ) -> None:
        """Audit a request that got no answer; wait before the next attempt, or raise."""
        from dashtam_cli.core.http import certificate_failure

        untrusted = certificate_failure(exc, url)
        if untrusted is not None:
            await self.record(CallRecord(operation, "certificate error", None, duration, None))
            raise untrusted from None
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
        await self.record(CallRecord(operation, kind, None, duration, None, type(exc).__name__))
        if attempt < self._backoff.attempts:
            await self._sleep(self._backoff.delay(attempt))
            return
        raise ProviderError(
            f"Plaid {operation}: {kind} after {attempt} attempts ({type(exc).__name__})",
            hint="check your connection, then retry",
        ) from None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
