"""Charles Schwab's Trader API: account numbers, accounts with positions, transactions.

Facts this client depends on (see shared/reference/schwab/README.md):
every account call takes the account's ``hashValue``, never its number;
transactions need ``startDate``, ``endDate`` (UTC, ``yyyy-MM-dd'T'HH:mm:ss.SSSZ``)
and ``types``; one request covers at most a year and returns at most 3000
items; money comes as JSON numbers and is parsed as Decimal straight from the
text; times come as ``2025-01-17T17:19:49+0000``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import httpx

from dashtam_cli.core.calls import Caller
from dashtam_cli.core.errors import ProviderError, ReauthRequired
from dashtam_cli.core.http import (
    ACCOUNT_NUMBERS_BODY_LIMIT,
    ACCOUNTS_BODY_LIMIT,
    TRANSACTIONS_BODY_LIMIT,
    BadBody,
    BodyTooLarge,
    load_json,
)
from dashtam_cli.core.oauth.bearer import BearerAuth
from dashtam_cli.core.providers.base import CallRecord
from dashtam_cli.core.providers.schwab import TRANSACTION_TYPES
from dashtam_cli.core.providers.schwab.wire import (
    RawTransaction,
    WireTransaction,
    decode_transactions,
)
from dashtam_cli.core.redact import MASK, register_secret, sanitize
from dashtam_cli.core.resilience import (
    Backoff,
    SlidingWindowLimiter,
    gather_all,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_AMOUNT",
    "MAX_ID_LENGTH",
    "MAX_TRANSACTIONS",
    "MAX_WINDOW",
    "TRANSACTION_TYPES",
    "ApiError",
    "CallRecord",
    "Fields",
    "SchwabClient",
    "bad_field",
    "encodable",
    "format_schwab_time",
    "parse_schwab_time",
]

log = logging.getLogger(__name__)

MAX_TRANSACTIONS: Final = 3000
MAX_WINDOW: Final = dt.timedelta(days=365)
MIN_WINDOW: Final = dt.timedelta(seconds=1)
CORRELATION_HEADER: Final = "Schwab-Client-CorrelId"
BASE_URL_ENV: Final = "DASHTAM_SCHWAB_BASE_URL"
RATE_LIMIT: Final = 120
RATE_WINDOW: Final = 60.0
MAX_RETRY_AFTER: Final = 120.0
# An account's nickname beyond this many characters is cut (Schwab's own are short).
NICKNAME_LIMIT: Final = 40


class ApiError(ProviderError):
    """A Trader API call failed; the message carries the HTTP status and correlation id."""


def format_schwab_time(moment: dt.datetime) -> str:
    """UTC with milliseconds and a Z: ``2024-03-28T21:10:42.000Z``. Naive times are refused."""
    if moment.tzinfo is None:
        msg = "naive datetime: give times with a zone"
        raise ValueError(msg)
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_schwab_time(text: str) -> dt.datetime:
    """Read ``2025-01-17T17:19:49+0000`` (or with a Z, or milliseconds) as an aware UTC datetime.

    ValueError for anything else, including times that do not exist in UTC
    (``0001-01-01T00:00:00+0100``).
    """
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        msg = "the time is out of range in UTC"
        raise ValueError(msg) from None


def _load_json(
    data: bytes,
    operation: str,
    status: int,
    typed: Callable[[bytes], object | None] | None = None,
) -> Any:  # noqa: ANN401 - any JSON
    # parse_float=Decimal: money never passes through a binary float.
    try:
        return load_json(
            data,
            what=f"Schwab {operation}",
            status=status,
            setting=BASE_URL_ENV,
            typed=typed,
            parse_float=decimal.Decimal,
        )
    except ValueError:
        raise BadBody(
            f"Schwab {operation}: HTTP {status} with a body that is not JSON", http_status=status
        ) from None


def _error_summary(data: bytes) -> str:  # noqa: C901 - one branch per error shape
    """One line from Schwab's error shapes: {message, errors}, {fault}, an HTML page, anything.

    The text is Schwab's (or a proxy's), so untrusted: sanitized, it keeps no
    control characters, no secret and no account identifier it may echo.
    """
    text = data.decode("utf-8", "replace")
    try:
        body = load_json(data, what="Schwab")
    except (ValueError, BadBody):
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            parts.append(body["message"])
        errors = body.get("errors")
        if isinstance(errors, list):
            for item in errors[:3]:
                if isinstance(item, dict):
                    parts.append(str(item.get("detail") or item.get("title") or ""))
                else:
                    parts.append(str(item))
        fault = body.get("fault")
        if isinstance(fault, dict) and fault.get("faultstring"):
            parts.append(str(fault["faultstring"]))
        if isinstance(body.get("error"), str):
            parts.append(body["error"])
    elif "<html" in text[:500].lower():
        parts.append(
            "an HTML page" + (": Access Denied" if "access denied" in text.lower() else "")
        )
    elif text.strip():
        parts.append("a body that is not JSON")
    return sanitize(" ".join(p for p in parts if p)) or "no detail"


class _SchwabDialect:
    """How the Trader API's answers read: its name, its errors, its correlation id."""

    name = "Schwab"
    setting = BASE_URL_ENV
    max_retry_after = MAX_RETRY_AFTER

    def __init__(self, reauth_hint: str) -> None:
        self._reauth_hint = reauth_hint

    def correlation(self, response: httpx.Response) -> str | None:
        """Schwab's correlation id for the call, as untrusted text, or None."""
        return _correlation(response)

    def summary(self, data: bytes) -> str:
        """One line from Schwab's error shapes."""
        return _error_summary(data)

    def final_error(
        self, operation: str, status: int, summary: str, correlation: str | None
    ) -> ApiError | ReauthRequired:
        """The error for an answer no retry or refresh will change."""
        where = f" (correlation id {correlation})" if correlation else ""
        if status == httpx.codes.UNAUTHORIZED and "client not authorized" in summary.lower():
            # A fresh token refused too: the app, not the login, lacks access.
            return ApiError(
                f"Schwab {operation}: HTTP 401, {summary}{where}: the app is not "
                "authorized for the Trader API, even with a fresh token",
                hint='add the "Accounts and Trading Production" product to the app on '
                "Schwab's developer portal (developer.schwab.com) and wait for it to be "
                "approved; logging in again does not help",
                http_status=status,
                correlation_id=correlation,
            )
        if status == httpx.codes.UNAUTHORIZED:
            return ReauthRequired(
                f"Schwab refused the access token even after a refresh (HTTP 401){where}",
                hint=self._reauth_hint,
            )
        return ApiError(
            f"Schwab {operation} failed: HTTP {status}, {summary}{where}",
            hint=_hint_for(status),
            http_status=status,
            correlation_id=correlation,
        )

    def gave_up(self, operation: str, kind: str, attempts: int, exc: Exception) -> ApiError:
        """Every attempt got no answer."""
        return ApiError(
            f"Schwab {operation}: {kind} after {attempts} attempts ({type(exc).__name__})",
            hint="check your connection and DASHTAM_SCHWAB_BASE_URL, then retry",
        )

    def unreadable(self, exc: BodyTooLarge | BadBody, correlation: str | None) -> ApiError:
        """An answer that could not be read: too large, not JSON, too deep."""
        where = f" (correlation id {correlation})" if correlation else ""
        return ApiError(
            exc.message + where,
            hint=exc.hint or "the API answered something unexpected; retry later",
            http_status=exc.http_status,
            correlation_id=correlation,
        )


class SchwabClient:
    """One connection's view of the Trader API.

    ``token`` returns a valid access token (the token manager's job);
    ``refresh(rejected)`` replaces a token the API refused with 401: both go
    into a :class:`BearerAuth` flow per call. ``record`` receives one
    ``CallRecord`` per request for the audit log. Retries, the in-flight
    gate and the rate limit (``limiter``: 120 requests per minute however
    many accounts the connection has) are the shared :class:`Caller`'s.
    """

    def __init__(  # noqa: PLR0913 - the seams are injected
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        token: Callable[[], Awaitable[str]],
        refresh: Callable[[str], Awaitable[str]],
        record: Callable[[CallRecord], Awaitable[None]],
        limiter: SlidingWindowLimiter | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reauth_hint: str = "run: dashtam connect schwab",
        max_in_flight: int = 16,
    ) -> None:
        """Talk to ``base_url`` + ``/trader/v1`` through ``client``."""
        self._root = base_url.rstrip("/") + "/trader/v1"
        self._token = token
        self._refresh = refresh
        self._caller = Caller(
            client,
            _SchwabDialect(reauth_hint),
            record=record,
            limiter=limiter or SlidingWindowLimiter(RATE_LIMIT, RATE_WINDOW),
            backoff=backoff,
            sleep=sleep,
            max_in_flight=max_in_flight,
        )

    @property
    def requests(self) -> int:
        """Requests sent so far (each attempt counts)."""
        return self._caller.requests

    async def _get(
        self,
        operation: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        limit: int = ACCOUNTS_BODY_LIMIT,
        typed: Callable[[bytes], object | None] | None = None,
    ) -> Any:  # noqa: ANN401 - any JSON
        """GET and parse: the call layer retries and audits; the auth flow refreshes once on 401.

        The body is read streamed and refused past ``limit`` bytes; of an
        error answer only the first ERROR_BODY_LIMIT bytes are read.
        ``typed`` decodes the body when it has the shape it expects (see
        :func:`load_json`).
        """
        caller = self._caller

        async def refused(response: httpx.Response, started: float) -> None:
            await caller.refused(operation, response, started)

        auth = BearerAuth(self._token, self._refresh, refused=refused, leaving=caller.leaving)
        answer = await caller.get(
            operation,
            _url(self._root + path, query),
            limit=limit,
            auth=auth,
            headers={"Accept": "application/json"},
        )
        try:
            body = _load_json(answer.data, operation, answer.status, typed)
        except BadBody as exc:
            raise await caller.failed_read(
                operation, exc, answer.duration_ms, answer.correlation
            ) from None
        await caller.record(
            CallRecord(operation, "ok", answer.status, answer.duration_ms, answer.correlation)
        )
        return body

    async def account_numbers(self) -> list[tuple[str, str]]:
        """(account number, hash value) pairs."""
        body = await self._get(
            "account numbers", "/accounts/accountNumbers", limit=ACCOUNT_NUMBERS_BODY_LIMIT
        )
        if not isinstance(body, list):
            raise ApiError("Schwab account numbers: unexpected body shape")
        pairs = []
        for index, item in enumerate(body):
            if not isinstance(item, dict):
                raise bad_field("account numbers", f"[{index}]", "an object", item)
            number, hash_value = item.get("accountNumber"), item.get("hashValue")
            if not (isinstance(number, str) and number.isascii() and number.isalnum()):
                raise bad_field("account numbers", f"[{index}].accountNumber", "text", number)
            if not (isinstance(hash_value, str) and hash_value.isascii() and hash_value.isalnum()):
                raise bad_field("account numbers", f"[{index}].hashValue", "text", hash_value)
            # Masked from here on, before any request could make Schwab echo them.
            register_secret(number)
            register_secret(hash_value)
            pairs.append((number, hash_value))
        return pairs

    async def nicknames(self) -> dict[str, str]:
        """Each account's nickname (``Roth IRA``), by number, from the user's preferences.

        The spec declares a list of preference objects, live Schwab answers
        one object: both are read. The numbers are masked from here on; a
        nickname is provider text, so it is sanitized (no control characters,
        nothing shaped like an account number) and cut to NICKNAME_LIMIT
        characters. An account without a usable nickname is left out.
        """
        body = await self._get(
            "user preference", "/userPreference", limit=ACCOUNT_NUMBERS_BODY_LIMIT
        )
        preferences = body if isinstance(body, list) else [body]
        names: dict[str, str] = {}
        for index, preference in enumerate(preferences):
            where = f"[{index}]" if isinstance(body, list) else ""
            for account in Fields(preference, what="user preference", path=where).objects(
                "accounts"
            ):
                number = account.identifier("accountNumber")
                register_secret(number)
                nickname = sanitize(account.text("nickName"), limit=NICKNAME_LIMIT)
                if number and nickname and nickname != MASK:
                    names[number] = nickname
        return names

    async def accounts(self) -> list[dict[str, Any]]:
        """Every account with its positions and balances, as Schwab sends them."""
        body = await self._get("accounts", "/accounts", [("fields", "positions")])
        if not isinstance(body, list):
            raise ApiError("Schwab accounts: unexpected body shape")
        accounts = _objects("accounts", body)
        for item in accounts:
            _register_number(item)
        return accounts

    async def account(self, hash_value: str) -> dict[str, Any]:
        """One account with positions."""
        register_secret(hash_value)
        quoted = urllib.parse.quote(hash_value, safe="")
        body = await self._get("account", f"/accounts/{quoted}", [("fields", "positions")])
        if not isinstance(body, dict):
            raise ApiError("Schwab account: unexpected body shape")
        _register_number(body)
        return body

    async def _window(
        self,
        hash_value: str,
        start: dt.datetime,
        end: dt.datetime,
        types: Sequence[str],
        symbol: str | None,
    ) -> list[RawTransaction]:
        query = [
            ("startDate", format_schwab_time(start)),
            ("endDate", format_schwab_time(end)),
            ("types", ",".join(types)),
        ]
        if symbol:
            query.append(("symbol", symbol))
        register_secret(hash_value)
        quoted = urllib.parse.quote(hash_value, safe="")
        body = await self._get(
            "transactions",
            f"/accounts/{quoted}/transactions",
            query,
            limit=TRANSACTIONS_BODY_LIMIT,
            typed=decode_transactions,
        )
        if not isinstance(body, list):
            raise ApiError("Schwab transactions: unexpected body shape")
        items: list[RawTransaction]
        if body and isinstance(body[0], WireTransaction):
            items = body  # decoded by shape: a list of objects
        else:
            items = list(_objects("transactions", body))
        if len(items) >= MAX_TRANSACTIONS and end - start > MIN_WINDOW:
            # A full page may have been cut: split the window and ask again.
            middle = start + (end - start) / 2
            halves = await gather_all(
                self._window(hash_value, start, middle, types, symbol),
                self._window(hash_value, middle, end, types, symbol),
            )
            return halves[0] + halves[1]
        return items

    async def transactions(
        self,
        hash_value: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        types: Sequence[str] = TRANSACTION_TYPES,
        symbol: str | None = None,
    ) -> list[RawTransaction]:
        """Transactions from ``start`` to ``end``, in windows of at most a year, de-duplicated.

        Each as :mod:`wire` decoded it, or, from an answer of another shape,
        as ``json.loads`` parsed it: :func:`mapping.transaction` reads both.
        """
        if end <= start:
            return []
        windows = []
        cursor = start
        while cursor < end:
            stop = min(cursor + MAX_WINDOW, end)
            windows.append((cursor, stop))
            cursor = stop
        pages = await gather_all(
            *(
                self._window(hash_value, a, b, types or TRANSACTION_TYPES, symbol)
                for a, b in windows
            )
        )
        seen: dict[object, RawTransaction] = {}
        for page in pages:
            for item in page:
                key = (
                    item.activity_id
                    if isinstance(item, WireTransaction)
                    else item.get("activityId")
                )
                # Only ids of a usable type de-duplicate; the mapping refuses the others.
                seen[key if isinstance(key, int | str) else id(item)] = item
        return list(seen.values())


def _url(base: str, query: Sequence[tuple[str, str]]) -> str:
    if not query:
        return base
    # Encoded by hand: spaces as %20 (option symbols have them), commas kept in types.
    return base + "?" + "&".join(f"{k}={urllib.parse.quote(v, safe=',')}" for k, v in query)


def _register_number(account: dict[str, Any]) -> None:
    """Mask the account number an account answer carries (it may be one not listed before)."""
    securities = account.get("securitiesAccount")
    if isinstance(securities, dict) and isinstance(securities.get("accountNumber"), str):
        register_secret(securities["accountNumber"])


def _correlation(response: httpx.Response) -> str | None:
    """Schwab's correlation id for the call, as untrusted text, or None."""
    return sanitize(response.headers.get(CORRELATION_HEADER), limit=80) or None


def _type_name(value: object) -> str:
    """How a JSON value's type reads in a message (never the value: it may be a secret)."""
    if value is None:
        return "missing"
    kinds = {bool: "a boolean", str: "text", dict: "an object", list: "a list"}
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float | decimal.Decimal) else "unreadable"


def bad_field(what: str, field: str, expected: str, value: object) -> ApiError:
    """One line naming the call and the field that Schwab sent in an unusable form."""
    got = _type_name(value)
    if got == expected or (got == "text" and "text" in expected):
        got = "text of another form"
    return ApiError(
        f"Schwab {what}: field {field} should be {expected}, not {got}",
        hint="Schwab sent data dashtam cannot use; retry later, and report it if it persists",
    )


# Amounts beyond this are not money but noise (and would break formatting).
MAX_AMOUNT: Final = decimal.Decimal(10) ** 15
MAX_ID_LENGTH: Final = 64
EARLIEST: Final = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST: Final = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


class Fields:
    """One JSON object of an answer, read field by field: a wrong type is one clear ApiError.

    Absent fields (and JSON nulls) read as None, as live data often leaves
    optional fields out; a field that is present with the wrong type names
    itself (``field transferItems[0].instrument of activity 91176753938 should
    be an object, not text``), never its value.
    """

    __slots__ = ("_data", "_label", "_path", "_what")

    def __init__(self, data: object, *, what: str, path: str = "", label: str = "") -> None:
        """Wrap ``data`` (None reads as an empty object); ``what`` names the call."""
        self._what = what
        self._path = path
        self._label = label
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self._bad("", "an object", data)
        self._data: dict[str, Any] = data

    def labelled(self, label: str) -> Fields:
        """The same object, with ``label`` (``activity 123``) named in every message."""
        return Fields(self._data, what=self._what, path=self._path, label=label)

    def _where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path and key else self._path or key

    def _bad(self, key: str, expected: str, value: object) -> ApiError:
        field = self._where(key) or "item"
        return bad_field(
            self._what, f"{field} of {self._label}" if self._label else field, expected, value
        )

    def get(self, key: str) -> Any:  # noqa: ANN401 - any JSON
        """The raw value of ``key``."""
        return self._data.get(key)

    def obj(self, key: str) -> Fields:
        """A nested object (empty when absent)."""
        return Fields(
            self._data.get(key), what=self._what, path=self._where(key), label=self._label
        )

    def objects(self, key: str) -> list[Fields]:
        """A list of objects (empty when absent)."""
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(key, "a list", value)
        where = self._where(key)
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self._bad(f"{key}[{index}]", "an object", item)
            result.append(
                Fields(item, what=self._what, path=f"{where}[{index}]", label=self._label)
            )
        return result

    def text(self, key: str) -> str | None:
        """A text field, in Unicode that UTF-8 can hold (see :func:`encodable`)."""
        value = self._data.get(key)
        if value is None or (isinstance(value, str) and encodable(value)):
            return value
        raise self._bad(key, "text", value)

    def identifier(self, key: str) -> str | None:
        """An id sent as a number or as text (``activityId``, ``accountNumber``)."""
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
            return value
        raise self._bad(key, "a number or short text", value)

    def money(self, key: str) -> decimal.Decimal | None:
        """An amount, exact: a JSON number (read as Decimal) or decimal text."""
        value = self._data.get(key)
        if value is None:
            return None
        amount: decimal.Decimal | None = None
        if isinstance(value, decimal.Decimal):
            amount = value
        elif isinstance(value, int) and not isinstance(value, bool):
            amount = decimal.Decimal(value)
        elif isinstance(value, float | str) and not isinstance(value, bool):
            try:
                amount = decimal.Decimal(str(value).strip())
            except decimal.InvalidOperation:
                amount = None
        if amount is None or not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
            raise self._bad(key, "a finite amount", value)
        return amount

    def date(self, key: str) -> dt.date | None:
        """A date (``2025-01-17``, or the date part of a date-time)."""
        value = self._data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                day = dt.date.fromisoformat(value[:10])
            except ValueError:
                pass
            else:
                if EARLIEST.date() <= day < LATEST.date():
                    return day
        raise self._bad(key, "a readable date", value)

    def time(self, key: str) -> dt.datetime | None:
        """A date-time (``2025-01-17T17:19:49+0000``), in UTC."""
        value = self._data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                moment = parse_schwab_time(value)
            except ValueError:
                pass
            else:
                if EARLIEST <= moment < LATEST:
                    return moment
        raise self._bad(key, "a readable date-time", value)


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a JSON escape of half a surrogate pair does not.

    Such text could be read but never stored or printed; ASCII, by far the
    most text, is known good without encoding it.
    """
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _objects(what: str, body: list[Any]) -> list[dict[str, Any]]:
    """The items of a list answer, each an object (a wrong type is an error, not dropped)."""
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            raise bad_field(what, f"[{index}]", "an object", item)
    return body


def _hint_for(status: int) -> str:
    if status == httpx.codes.TOO_MANY_REQUESTS:
        return "Schwab's rate limit was hit; wait a minute and retry"
    if status >= httpx.codes.INTERNAL_SERVER_ERROR:
        return "Schwab is having trouble; retry later (Schwab support asks for the correlation id)"
    if status == httpx.codes.FORBIDDEN:
        return "the app may lack access to this account; check its products on Schwab's portal"
    return "check the account and the dates asked for"
