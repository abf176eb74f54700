"""The SimpleFIN protocol: setup tokens, the claim, the access URL, Account Sets (versions 1, 2).

Facts this module depends on (simplefin.org/protocol.html and the Bridge in
practice): a setup token is base64 of a claim URL; ``POST`` to it answers the
access URL ``https://USER:PASS@host/path`` as text, once (then 403). Data is
``GET {access URL}/accounts`` with HTTP Basic auth from the URL's user and
password, ``start-date``/``end-date`` in epoch seconds (end exclusive),
``pending=1``, ``balances-only=1``, ``account=ID`` (repeatable). One request
covers at most 90 days; the Bridge allows about 24 requests a day per access.
Money comes as decimal strings. Errors come as ``errors`` (version 1: text)
or ``errlist`` (version 2: ``code``, ``msg``, ``conn_id``, ``account_id``).
The access URL (and the user and password in it) is a secret: it is
registered for masking, sent only as the Basic header, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import httpx

from dashtam_cli.core.calls import Caller
from dashtam_cli.core.errors import (
    ConfigError,
    DashtamError,
    InputError,
    ProviderError,
    ReauthRequired,
    RequestBudgetSpent,
)
from dashtam_cli.core.http import TOKEN_BODY_LIMIT, BadBody, BodyTooLarge, load_json, read_body
from dashtam_cli.core.redact import plain, register_secret, sanitize

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from dashtam_cli.core.providers.base import CallRecord
    from dashtam_cli.core.resilience import Backoff

__all__ = [
    "ACCOUNT_SET_LIMIT",
    "BUDGET_SETTING",
    "DEFAULT_DAILY_REQUESTS",
    "MAX_DAILY_REQUESTS",
    "MAX_WINDOW",
    "Access",
    "AccountSet",
    "Problem",
    "SimpleFINCaller",
    "claim",
    "claim_url",
    "daily_limit",
    "parse_account_set",
]

log = logging.getLogger(__name__)

NAME: Final = "SimpleFIN"
# The Bridge cuts a longer range to its last 90 days (with a warning).
MAX_WINDOW: Final = dt.timedelta(days=90)
# The Bridge's budget: about 24 requests a day per access; it warns past about
# 48 and blocks past about 96. A user may spend more, never past the block.
DEFAULT_DAILY_REQUESTS: Final = 24
MAX_DAILY_REQUESTS: Final = 96
BUDGET_SETTING: Final = "DASHTAM_SIMPLEFIN_DAILY_REQUESTS"
# The settings of [providers.simplefin] (and DASHTAM_SIMPLEFIN_*).
SETTINGS: Final = ("daily_requests",)
# An Account Set of two years of a busy household is a few MiB.
ACCOUNT_SET_LIMIT: Final = 64 * 1024 * 1024
# Waiting longer than this for a Retry-After is not worth one of 24 requests.
MAX_RETRY_AFTER: Final = 60.0
# How long untrusted text may be where it is kept (names, descriptions) and shown (messages).
NAME_LIMIT: Final = 200
DESCRIPTION_LIMIT: Final = 500
MESSAGE_LIMIT: Final = 300
MAX_ID_LENGTH: Final = 256
MAX_AMOUNT: Final = decimal.Decimal("1e15")
# Epoch seconds from 1970 to 9999: anything else is not a date.
MAX_EPOCH: Final = 253402300799
_BRIDGE: Final = "https://beta-bridge.simplefin.org"


def _https_problem(url: urllib.parse.SplitResult) -> str | None:
    """Why ``url`` cannot be a SimpleFIN URL (https with a host, nothing after the path)."""
    try:
        host, _ = url.hostname, url.port
    except ValueError:
        return "its host or port is malformed"
    if url.scheme.lower() != "https":
        return "it is not an https:// URL"
    if not host:
        return "it has no host"
    if url.query or url.fragment:
        return "it has a query or a fragment"
    return None


def claim_url(token: str) -> str:
    """The claim URL a setup token encodes; an InputError (never repeating it) otherwise.

    A setup token is base64 (with or without padding, standard or URL-safe
    alphabet) of an https URL without credentials.
    """
    compact = "".join(token.split())
    hint = "paste the setup token exactly as the SimpleFIN Bridge showed it"
    try:
        padded = compact + "=" * (-len(compact) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        text = raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise InputError(
            "this is not a SimpleFIN setup token (it is not base64 text)", hint=hint
        ) from None
    if not text.isprintable() or any(ch.isspace() for ch in text):
        raise InputError("this is not a SimpleFIN setup token (it decodes to no URL)", hint=hint)
    url = urllib.parse.urlsplit(text)
    problem = _https_problem(url)
    if problem is None and (url.username is not None or url.password is not None):
        problem = "it holds a user name or password"
    if problem is not None:
        raise InputError(
            f"this SimpleFIN setup token does not hold a usable claim URL: {problem}",
            hint=f"{hint}; dashtam claims only https URLs",
        )
    register_secret(text)
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """The access URL split: where to send (``url``, no credentials), and the Basic credentials."""

    url: str
    username: str = dataclasses.field(repr=False)
    password: str = dataclasses.field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Access:
        """Read an access URL (``https://USER:PASS@host/path``); a ProviderError otherwise.

        The error never repeats the URL: it is the connection's secret.
        """
        text = text.strip()
        url = urllib.parse.urlsplit(text) if text.isprintable() else None
        problem = "it holds control characters" if url is None else _https_problem(url)
        if problem is None and url is not None and (not url.username or url.password is None):
            problem = "it holds no user name and password"
        if problem is not None or url is None:
            raise ProviderError(
                f"the SimpleFIN access URL is not usable: {problem}",
                hint="make a new setup token at the SimpleFIN Bridge and connect again",
            )
        username = urllib.parse.unquote(url.username or "")
        password = urllib.parse.unquote(url.password or "")
        for secret in (
            text,
            url.username,
            url.password,
            username,
            password,
            f"{username}:{password}",
        ):
            register_secret(secret)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if url.port is not None:
            netloc += f":{url.port}"
        origin = urllib.parse.urlunsplit(("https", netloc, url.path.rstrip("/"), "", ""))
        return cls(origin, username, password)

    @classmethod
    def from_record(cls, record: str) -> Access:
        """The access of a stored credential record (``{"access_url": ..., "version": 1}``)."""
        try:
            data = json.loads(record)
            text = data["access_url"]
        except (ValueError, TypeError, KeyError):
            text = None
        if not isinstance(text, str):
            raise ProviderError(
                "this connection's stored SimpleFIN credential is not readable",
                hint="connect again with a new setup token: dashtam connect simplefin",
            )
        return cls.parse(text)

    @property
    def auth(self) -> httpx.BasicAuth:
        """HTTP Basic auth from the URL's user and password."""
        return httpx.BasicAuth(self.username, self.password)

    @property
    def host(self) -> str:
        """The server's host, fit to name in a message."""
        return urllib.parse.urlsplit(self.url).hostname or "?"


async def claim(client: httpx.AsyncClient, token: str) -> str:
    """Claim a setup token: the credential record to seal (the access URL, as JSON).

    Sent once, never retried: a claim works once, and a retry after a lost
    answer would be refused. A 403 means the token was claimed already or
    never existed; the protocol asks that the user be told it may be
    compromised.
    """
    url = claim_url(token)
    try:
        async with client.stream("POST", url, content=b"") as response:
            data = await read_body(
                response,
                limit=TOKEN_BODY_LIMIT,
                what="the SimpleFIN claim",
                truncate=response.status_code != httpx.codes.OK,
                setting="the setup token",
            )
    except (BodyTooLarge, BadBody) as exc:
        raise ProviderError(exc.message, hint="make a new setup token and try again") from None
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        from dashtam_cli.core.http import certificate_failure

        untrusted = certificate_failure(exc, url)
        if untrusted is not None:
            raise untrusted from None
        raise ProviderError(
            f"the SimpleFIN claim got no answer ({type(exc).__name__})",
            hint="check your connection; if a retry is refused (HTTP 403), the claim may have "
            "gone through: make a new setup token at the SimpleFIN Bridge",
        ) from None
    status = response.status_code
    if status == httpx.codes.FORBIDDEN:
        raise ProviderError(
            "the SimpleFIN server refused the setup token (HTTP 403): it was claimed already "
            "or never existed. If you did not claim it yourself, someone else may have: "
            "treat it as compromised",
            hint="disable that token at the SimpleFIN Bridge, make a new one, and connect with it",
            http_status=status,
        )
    if status != httpx.codes.OK:
        raise ProviderError(
            f"the SimpleFIN claim failed: HTTP {status}, {sanitize(data)}",
            hint="make a new setup token and try again later",
            http_status=status,
        )
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = ""
    Access.parse(text)  # checks it, and registers its parts as secrets
    return json.dumps({"version": 1, "access_url": text})


def daily_limit(options: Mapping[str, tuple[object, str]]) -> int:
    """The daily request budget: the ``daily_requests`` setting, 1 to 96, else 24.

    A setting SimpleFIN does not have (a typo such as ``daily_request``) is
    warned about, not silently ignored.
    """
    for key, (_, where) in sorted(options.items()):
        if key not in SETTINGS:
            log.warning(
                "ignoring unknown SimpleFIN setting %r (%s); the settings are: %s",
                key,
                where,
                ", ".join(SETTINGS),
            )
    given = options.get("daily_requests")
    if given is None:
        return DEFAULT_DAILY_REQUESTS
    raw, where = given
    if isinstance(raw, bool):
        value = 0
    elif isinstance(raw, int):
        value = raw
    else:
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
    if not 1 <= value <= MAX_DAILY_REQUESTS:
        raise ConfigError(
            f"invalid value for 'daily_requests' in {where}: a whole number from 1 to "
            f"{MAX_DAILY_REQUESTS} expected",
            hint=f"the Bridge allows about {DEFAULT_DAILY_REQUESTS} requests a day and blocks "
            f"past about {MAX_DAILY_REQUESTS}; see docs/providers/simplefin.md",
        )
    return value


class _Dialect:
    """How a SimpleFIN server's answers read."""

    name = NAME
    setting = "the connection's access URL"
    max_retry_after = MAX_RETRY_AFTER

    def __init__(self, reauth_hint: str) -> None:
        self._reauth_hint = reauth_hint

    def correlation(self, response: httpx.Response) -> str | None:
        """SimpleFIN gives no request id."""
        del response
        return None

    def summary(self, data: bytes) -> str:
        """The answer's text, sanitised: servers answer errors in plain text."""
        return sanitize(data, limit=MESSAGE_LIMIT) or "no message"

    def final_error(
        self, operation: str, status: int, summary: str, correlation: str | None
    ) -> DashtamError:
        """403: the access was revoked; anything else: the server failed."""
        del correlation
        if status == httpx.codes.FORBIDDEN:
            return ReauthRequired(
                "SimpleFIN refused this connection's access (HTTP 403): it was revoked or "
                "disabled at the Bridge",
                hint=self._reauth_hint,
            )
        hint = "retry later"
        if status == httpx.codes.TOO_MANY_REQUESTS:
            hint = (
                "the Bridge blocks an access that asks too often in one day; wait until "
                "tomorrow (UTC) and sync less often"
            )
        return ProviderError(
            f"SimpleFIN {operation} failed: HTTP {status}, {summary}",
            hint=hint,
            http_status=status,
        )

    def gave_up(self, operation: str, kind: str, attempts: int, exc: Exception) -> ProviderError:
        """Every attempt got no answer."""
        return ProviderError(
            f"SimpleFIN {operation}: {kind} after {attempts} attempts ({type(exc).__name__})",
            hint="check your connection, then retry",
        )

    def unreadable(self, exc: BodyTooLarge | BadBody, correlation: str | None) -> ProviderError:
        """An answer that could not be read."""
        del correlation
        return ProviderError(
            exc.message,
            hint=exc.hint or "the server answered something unexpected; retry later",
            http_status=exc.http_status,
        )


class SimpleFINCaller(Caller):
    """The shared call layer, with every attempt counted against the daily budget first."""

    def __init__(  # noqa: PLR0913 - the seams are injected
        self,
        client: httpx.AsyncClient,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        spend: Callable[[str, int], Awaitable[int]] | None,
        scope: str,
        limit: int,
        reauth_hint: str,
        backoff: Backoff | None = None,
    ) -> None:
        """Send through ``client``; ``spend(scope, limit)`` counts each attempt (None: not)."""
        from dashtam_cli.core.resilience import Backoff, SlidingWindowLimiter

        super().__init__(
            client,
            _Dialect(reauth_hint),
            record=record,
            limiter=SlidingWindowLimiter(60, 60.0),
            backoff=backoff or Backoff(attempts=3),
            max_in_flight=1,  # the Bridge is asked one thing at a time
        )
        self._spend = spend
        self._scope = scope
        self.limit = limit
        self.left: int | None = None

    async def leaving(self) -> None:
        """Spend one request of today's budget (or refuse), then count it as it leaves."""
        if self._spend is not None:
            try:
                self.left = await self._spend(self._scope, self.limit)
            except RequestBudgetSpent as exc:
                self.left = 0
                wait = exc.resets_at - dt.datetime.now(dt.UTC)
                hours, minutes = divmod(max(0, int(wait.total_seconds())) // 60, 60)
                raise RequestBudgetSpent(
                    f"this connection's SimpleFIN budget of {exc.limit} requests a day is spent",
                    hint=f"it resets at {exc.resets_at:%H:%M} UTC (in {hours} h {minutes} min); "
                    f"the limit is the setting {BUDGET_SETTING} (the Bridge blocks past "
                    f"about {MAX_DAILY_REQUESTS})",
                    limit=exc.limit,
                    resets_at=exc.resets_at,
                ) from None
        await super().leaving()

    async def account_set(
        self,
        access: Access,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        accounts: Sequence[str] = (),
        balances_only: bool = False,
    ) -> bytes:
        """``GET /accounts`` for the window [start, end) with pending transactions: its body."""
        params: list[tuple[str, str]] = []
        if start is not None:
            params.append(("start-date", str(int(start.timestamp()))))
        if end is not None:
            params.append(("end-date", str(int(end.timestamp()))))
        if balances_only:
            params.append(("balances-only", "1"))
        else:
            params.append(("pending", "1"))
        params.extend(("account", account) for account in accounts)
        url = f"{access.url}/accounts?{urllib.parse.urlencode(params)}"
        operation = "balances" if balances_only else "accounts"
        answer = await self.get(operation, url, limit=ACCOUNT_SET_LIMIT, auth=access.auth)
        from dashtam_cli.core.providers.base import CallRecord

        await self.record(CallRecord(operation, "ok", answer.status, answer.duration_ms, None))
        return answer.data


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """An entry of ``errors`` or ``errlist``: its code (None in version 1), text, subject."""

    code: str | None
    message: str
    conn_id: str | None = None
    account_id: str | None = None

    @property
    def needs_login(self) -> bool:
        """The access (``gen.auth``) or one institution's login (``con.auth``) must be renewed."""
        return self.code in {"gen.auth", "con.auth"}

    @property
    def account_failed(self) -> bool:
        """One account could not be read (``act.failed``, ``act.missingdata``, any ``act.*``)."""
        return (
            self.code is not None and self.code.startswith("act.") and self.account_id is not None
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Holding:
    """A security held in an investment account."""

    id: str
    symbol: str | None
    description: str | None
    shares: decimal.Decimal
    market_value: decimal.Decimal | None
    cost_basis: decimal.Decimal | None
    currency: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A transaction as the server gave it, checked."""

    id: str
    posted: dt.datetime | None  # None while pending
    amount: decimal.Decimal
    description: str
    payee: str | None
    memo: str | None
    transacted_at: dt.datetime | None
    pending: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SetAccount:
    """An account of an Account Set, checked; ``problem`` says why one was unusable."""

    id: str
    name: str
    currency: str
    balance: decimal.Decimal
    available: decimal.Decimal | None
    balance_date: dt.datetime | None
    institution: str | None
    conn_id: str | None
    transactions: tuple[Entry, ...]
    holdings: tuple[Holding, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class AccountSet:
    """An Account Set: its usable accounts, those it could not read, and what the server said."""

    accounts: tuple[SetAccount, ...]
    unreadable: Mapping[str, str]  # account id -> why
    problems: tuple[Problem, ...]
    institutions: Mapping[str, str]  # conn_id -> name
    version: int


class _Bad(ValueError):
    """A field of the answer is not what the protocol says it is."""


def _text(raw: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise _Bad(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise _Bad(f"{key} is not text")
    return plain(value, limit=limit)


def _ident(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise _Bad(f"{key} is not an id")
    return value


def _money(raw: Mapping[str, Any], key: str, *, required: bool = False) -> decimal.Decimal | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise _Bad(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, decimal.Decimal)):
        raise _Bad(f"{key} is not an amount")
    try:
        amount = decimal.Decimal(value.strip() if isinstance(value, str) else value)
    except decimal.InvalidOperation:
        raise _Bad(f"{key} is not an amount") from None
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        raise _Bad(f"{key} is out of range")
    return amount


def _time(raw: Mapping[str, Any], key: str) -> dt.datetime | None:
    """An epoch time; 0 or absent is None (a pending transaction's ``posted``)."""
    value = raw.get(key)
    if value is None or value == 0:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_EPOCH:
        raise _Bad(f"{key} is not a time")
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _currency(raw: Mapping[str, Any]) -> str:
    value = raw.get("currency")
    if value is None or value == "":
        return "USD"  # the protocol's default
    if not isinstance(value, str) or len(value) > NAME_LIMIT or not value.isprintable():
        raise _Bad("currency is neither a code nor a URL")
    value = value.strip()
    if value.startswith(("https://", "http://")):
        return value  # a custom currency: kept as given, never added to a real one
    if not (value.isascii() and value.isalpha() and len(value) == 3):  # noqa: PLR2004 - ISO 4217
        raise _Bad("currency is neither a code nor a URL")
    return value.upper()


def _entry(raw: object) -> Entry:
    if not isinstance(raw, dict):
        raise _Bad("a transaction is not an object")
    posted = _time(raw, "posted")
    pending = raw.get("pending") is True or posted is None
    amount = _money(raw, "amount", required=True)
    assert amount is not None
    return Entry(
        id=_ident(raw, "id"),
        posted=None if pending else posted,
        amount=amount,
        description=_text(raw, "description", DESCRIPTION_LIMIT) or "",
        payee=_text(raw, "payee", NAME_LIMIT),
        memo=_text(raw, "memo", DESCRIPTION_LIMIT),
        transacted_at=_time(raw, "transacted_at"),
        pending=pending,
    )


def _holding(raw: object) -> Holding:
    if not isinstance(raw, dict):
        raise _Bad("a holding is not an object")
    shares = _money(raw, "shares", required=True)
    assert shares is not None
    return Holding(
        id=_ident(raw, "id"),
        symbol=_text(raw, "symbol", NAME_LIMIT),
        description=_text(raw, "description", NAME_LIMIT),
        shares=shares,
        market_value=_money(raw, "market_value"),
        cost_basis=_money(raw, "cost_basis"),
        currency=_currency(raw) if raw.get("currency") else None,
    )


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{key} is not a list")
    return value


def _account(raw: dict[str, Any], institutions: Mapping[str, str]) -> SetAccount:
    org = raw.get("org")
    institution = None
    if isinstance(org, dict):
        institution = _text(org, "name", NAME_LIMIT) or _text(org, "domain", NAME_LIMIT)
    conn_id = raw.get("conn_id") if isinstance(raw.get("conn_id"), str) else None
    if conn_id is not None:
        institution = institutions.get(conn_id, institution)
    balance = _money(raw, "balance", required=True)
    assert balance is not None
    entries: dict[str, Entry] = {}
    for item in _list(raw, "transactions"):
        entry = _entry(item)
        entries[entry.id] = entry  # an id given twice: the last one stands
    return SetAccount(
        id=_ident(raw, "id"),
        name=_text(raw, "name", NAME_LIMIT, required=True) or "",
        currency=_currency(raw),
        balance=balance,
        available=_money(raw, "available-balance"),
        balance_date=_time(raw, "balance-date"),
        institution=institution,
        conn_id=conn_id,
        transactions=tuple(entries.values()),
        holdings=tuple(_holding(item) for item in _list(raw, "holdings")),
    )


def _problems(body: Mapping[str, Any]) -> tuple[list[Problem], int]:
    """The server's errors and warnings, sanitised, and the protocol version they show."""
    problems: list[Problem] = []
    errlist = body.get("errlist")
    version = 2 if isinstance(errlist, list) or "connections" in body else 1
    if isinstance(errlist, list):
        for item in errlist[:100]:
            if not isinstance(item, dict):
                continue
            code = item.get("code")
            problems.append(
                Problem(
                    code=plain(code, limit=40) if isinstance(code, str) else None,
                    message=sanitize(
                        str(item.get("msg") or item.get("message") or ""), limit=MESSAGE_LIMIT
                    )
                    or "no message",
                    conn_id=item.get("conn_id") if isinstance(item.get("conn_id"), str) else None,
                    account_id=(
                        item.get("account_id") if isinstance(item.get("account_id"), str) else None
                    ),
                )
            )
    errors = body.get("errors")
    if isinstance(errors, list):
        problems.extend(
            Problem(None, sanitize(item, limit=MESSAGE_LIMIT))
            for item in errors[:100]
            if isinstance(item, str) and item.strip()
        )
    return problems, version


def parse_account_set(data: bytes) -> AccountSet:
    """Read an Account Set (version 1 or 2); a ProviderError when the whole answer is unusable.

    An account whose fields break the protocol is left out (in
    ``unreadable``, with why); the others stand.
    """
    try:
        body = load_json(
            data,
            what="SimpleFIN accounts",
            setting="the connection's access URL",
            parse_float=decimal.Decimal,
        )
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("accounts", []), list):
        raise ProviderError(
            "SimpleFIN answered something that is not an Account Set",
            hint="retry later; if it lasts, the server is not a SimpleFIN server",
        )
    problems, version = _problems(body)
    institutions: dict[str, str] = {}
    connections = body.get("connections")
    for item in connections if isinstance(connections, list) else []:
        if isinstance(item, dict) and isinstance(item.get("conn_id"), str):
            name = _text_or_none(item, "name") or _text_or_none(item, "org_url")
            if name:
                institutions[item["conn_id"]] = name
    accounts: list[SetAccount] = []
    unreadable: dict[str, str] = {}
    for index, raw in enumerate(body.get("accounts") or []):
        if not isinstance(raw, dict):
            unreadable[f"#{index}"] = "an account is not an object"
            continue
        try:
            accounts.append(_account(raw, institutions))
        except _Bad as exc:
            key = raw.get("id") if isinstance(raw.get("id"), str) else f"#{index}"
            unreadable[str(key)] = str(exc)
    return AccountSet(tuple(accounts), unreadable, tuple(problems), institutions, version)


def _text_or_none(raw: Mapping[str, Any], key: str) -> str | None:
    try:
        return _text(raw, key, NAME_LIMIT)
    except _Bad:
        return None
