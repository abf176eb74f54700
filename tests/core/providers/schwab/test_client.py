"""SchwabClient against respx: paths, queries, windows, Decimal, retries, 401, errors, the limiter."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import decimal
import email.utils
import itertools
import random
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from schwab_support import (
    API,
    BASE_URL,
    CORRELATION,
    FIXTURE_HASHES,
    OPTION_SYMBOL,
    TRANSACTIONS_PATH,
    account_body,
    add_connection,
    fixture_text,
    hash_of,
    json_response,
    max_in_window,
    mock_connection_api,
    transaction_text,
    transactions_body,
)

from dashtam_cli.core.errors import ExitCode, ReauthRequired
from dashtam_cli.core.providers.schwab.client import (
    MAX_TRANSACTIONS,
    ApiError,
    CallRecord,
    SchwabClient,
    format_schwab_time,
    parse_schwab_time,
)
from dashtam_cli.core.providers.schwab.session import ACCOUNTS_IN_FLIGHT
from dashtam_cli.core.providers.schwab.wire import RawTransaction, WireTransaction
from dashtam_cli.core.redact import redact
from dashtam_cli.core.resilience import Backoff, SlidingWindowLimiter, retry_after_seconds
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, sync
from dashtam_cli.core.vault.vault import OpenOptions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
HASH = FIXTURE_HASHES[0]  # account_numbers.json: 12345678 -> this hash
NUMBERS_URL = f"{API}/accounts/accountNumbers"
# The 15 types of the spec, in its order: sent when the user does not filter.
ALL_TYPES = (
    "TRADE,RECEIVE_AND_DELIVER,DIVIDEND_OR_INTEREST,ACH_RECEIPT,ACH_DISBURSEMENT,CASH_RECEIPT,"
    "CASH_DISBURSEMENT,ELECTRONIC_FUND,WIRE_OUT,WIRE_IN,JOURNAL,MEMORANDUM,MARGIN_CALL,"
    "MONEY_MARKET,SMA_ADJUSTMENT"
)
ACCESS_DENIED = (
    "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
    "You don't have permission to access \"http&#58;&#47;&#47;api&#46;schwabapi&#46;com&#47;"
    'trader&#47;v1&#47;accounts" on this server.<P>\nReference&#32;&#35;18&#46;5c3e1402\n'
    "</BODY>\n</HTML>\n"
)


@dataclasses.dataclass
class Seams:
    """The callables the client is given, and what it did with them."""

    token: str = "access-one"
    replacement: str = "access-two"
    refreshed: list[str] = dataclasses.field(default_factory=list)
    records: list[CallRecord] = dataclasses.field(default_factory=list)
    sleeps: list[float] = dataclasses.field(default_factory=list)

    async def current(self) -> str:
        """The access token, as the token manager would give it."""
        return self.token

    async def refresh(self, rejected: str) -> str:
        """Replace the refused token, as TokenManager.replace_rejected does."""
        self.refreshed.append(rejected)
        self.token = self.replacement
        return self.replacement

    async def record(self, call: CallRecord) -> None:
        """Keep the audit record."""
        self.records.append(call)

    async def sleep(self, seconds: float) -> None:
        """Note the backoff pause instead of sleeping."""
        self.sleeps.append(seconds)


class FakeTime:
    """A monotonic clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        """Start at 0."""
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        """The current fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Jump ahead by ``seconds`` and let other tasks run."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def run_with(
    router: respx.MockRouter,
    job: Callable[[SchwabClient], Awaitable[Any]],
    *,
    seams: Seams | None = None,
    **options: Any,
) -> tuple[Any, Seams]:
    """Run ``job`` with a SchwabClient whose HTTP client goes to ``router``."""
    seams = seams or Seams()

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
            client = SchwabClient(
                http,
                base_url=BASE_URL,
                token=seams.current,
                refresh=seams.refresh,
                record=seams.record,
                sleep=seams.sleep,
                **options,
            )
            return await job(client)

    return asyncio.run(main()), seams


def _as_dicts(items: list[RawTransaction]) -> list[dict[str, Any]]:
    """The transactions as dicts, whichever way each was read (the fields the mapping reads)."""
    return [item.as_dict() if isinstance(item, WireTransaction) else item for item in items]


def window_of(request: httpx.Request) -> tuple[str, str]:
    """The startDate and endDate a transactions request asked for."""
    return request.url.params["startDate"], request.url.params["endDate"]


def utc(text: str) -> dt.datetime:
    """A ``...Z`` time sent to Schwab, read back."""
    return dt.datetime.fromisoformat(text)


# --- paths, headers and query strings ------------------------------------------------------------


def test_account_numbers_path_and_bearer(router: respx.MockRouter) -> None:
    """Account numbers come from GET /trader/v1/accounts/accountNumbers with the bearer token."""
    router.get(NUMBERS_URL).mock(return_value=json_response(fixture_text("account_numbers.json")))

    pairs, _ = run_with(router, lambda c: c.account_numbers())

    assert pairs == [("12345678", FIXTURE_HASHES[0]), ("12341234", FIXTURE_HASHES[1])]
    (call,) = router.calls
    assert call.request.method == "GET"
    assert call.request.url.raw_path == b"/trader/v1/accounts/accountNumbers"
    assert call.request.headers["Authorization"] == "Bearer access-one"
    assert call.request.headers["Accept"] == "application/json"


def test_accounts_are_asked_with_positions(router: respx.MockRouter) -> None:
    """All accounts: GET /trader/v1/accounts?fields=positions, one account by its hash likewise."""
    router.get(f"{API}/accounts").mock(
        return_value=json_response("[" + fixture_text("account.json") + "]")
    )
    router.get(f"{API}/accounts/{HASH}").mock(
        return_value=json_response(fixture_text("account.json"))
    )

    async def job(client: SchwabClient) -> tuple[Any, Any]:
        return await client.accounts(), await client.account(HASH)

    (accounts, one), _ = run_with(router, job)

    assert [str(c.request.url) for c in router.calls] == [
        f"{API}/accounts?fields=positions",
        f"{API}/accounts/{HASH}?fields=positions",
    ]
    assert accounts[0]["securitiesAccount"]["accountNumber"] == "11111111"
    assert len(accounts[0]["securitiesAccount"]["positions"]) == 10
    assert one["securitiesAccount"]["type"] == "MARGIN"


def test_transactions_use_the_hash_and_utc_milliseconds(router: respx.MockRouter) -> None:
    """The path carries the hashValue; +05:30 times are sent in UTC with milliseconds; all types."""
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response(fixture_text("transactions.json"))
    )
    start = dt.datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=IST)
    end = dt.datetime(2025, 1, 31, 23, 59, 59, 999_999, tzinfo=IST)

    items, _ = run_with(router, lambda c: c.transactions(HASH, start, end))

    (call,) = route.calls
    url = call.request.url
    assert url.path == f"/trader/v1/accounts/{HASH}/transactions"
    assert "12345678" not in str(url)
    assert list(url.params.keys()) == ["startDate", "endDate", "types"]
    assert url.params["startDate"] == "2025-01-01T21:34:05.678Z"
    assert url.params["endDate"] == "2025-01-31T18:29:59.999Z"
    assert url.params["types"] == ALL_TYPES
    # Commas are sent as commas: Schwab takes the list as one comma-separated value.
    assert f"types={ALL_TYPES}" in url.query.decode().split("&")
    assert call.request.headers["Authorization"] == "Bearer access-one"
    # Schwab's answer has the shape the wire decoder expects: no dict is built for it.
    assert all(isinstance(item, WireTransaction) for item in items)
    assert [item["activityId"] for item in _as_dicts(items)] == [91176753938, 91176753939]


@pytest.mark.parametrize(
    ("symbol", "encoded"),
    [
        (OPTION_SYMBOL, "META%20%20250131P00510000"),
        ("BRK/B", "BRK%2FB"),
        ("$SPX&X", "%24SPX%26X"),
    ],
    ids=["option-spaces", "slash", "dollar-ampersand"],
)
def test_transactions_filters_types_and_encodes_symbol(
    router: respx.MockRouter, symbol: str, encoded: str
) -> None:
    """Only the chosen types are sent, and the symbol is URL-encoded (spaces as %20)."""
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response("[]")
    )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    run_with(
        router,
        lambda c: c.transactions(
            HASH,
            start,
            start + dt.timedelta(days=30),
            types=("TRADE", "DIVIDEND_OR_INTEREST"),
            symbol=symbol,
        ),
    )

    url = route.calls.last.request.url
    pairs = url.query.decode().split("&")
    assert "types=TRADE,DIVIDEND_OR_INTEREST" in pairs
    assert f"symbol={encoded}" in pairs
    assert " " not in url.query.decode()
    assert url.params["symbol"] == symbol


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (dt.datetime(2024, 3, 28, 21, 10, 42, tzinfo=dt.UTC), "2024-03-28T21:10:42.000Z"),
        (dt.datetime(2024, 3, 29, 2, 40, 42, 5_999, tzinfo=IST), "2024-03-28T21:10:42.005Z"),
        (
            dt.datetime(2024, 12, 31, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "2025-01-01T01:00:00.000Z",
        ),
    ],
    ids=["utc", "plus-0530", "minus-0500-next-year"],
)
def test_format_schwab_time(moment: dt.datetime, text: str) -> None:
    """Aware times become yyyy-MM-dd'T'HH:mm:ss.SSSZ in UTC (milliseconds truncated, never more)."""
    assert format_schwab_time(moment) == text


def test_format_schwab_time_refuses_naive_times() -> None:
    """A time without a zone is ambiguous: refused rather than guessed."""
    with pytest.raises(ValueError, match="naive"):
        format_schwab_time(dt.datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    "text",
    ["2025-01-17T17:19:49+0000", "2025-01-17T17:19:49.000Z", "2025-01-17T12:19:49-0500"],
)
def test_parse_schwab_time(text: str) -> None:
    """Schwab's +0000 offsets (no colon), Z and other offsets read as the same aware instant."""
    moment = parse_schwab_time(text)
    assert moment.tzinfo is not None
    assert moment == dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC)


# --- windows --------------------------------------------------------------------------------------


def test_two_years_become_windows_of_at_most_a_year_without_gaps(router: respx.MockRouter) -> None:
    """731 days: three windows of <= 365 days, end to end, from the first instant to the last."""
    pages = iter([[1, 2, 3], [3, 4], [4, 5]])
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        side_effect=lambda _request: json_response(transactions_body(next(pages)))
    )
    start = dt.datetime(2023, 1, 1, 9, 30, tzinfo=dt.UTC)
    end = dt.datetime(2025, 1, 1, 9, 30, tzinfo=dt.UTC)

    items, _ = run_with(router, lambda c: c.transactions(HASH, start, end))

    windows = sorted((utc(a), utc(b)) for a, b in (window_of(c.request) for c in route.calls))
    assert len(windows) == 3
    assert windows[0][0] == start
    assert windows[-1][1] == end
    for (_, stop), (following, _) in itertools.pairwise(windows):
        assert stop == following
    assert all(dt.timedelta(0) < b - a <= dt.timedelta(days=365) for a, b in windows)
    # Windows overlap at their edges: an item on the boundary comes twice and is kept once.
    assert sorted(item["activityId"] for item in _as_dicts(items)) == [1, 2, 3, 4, 5]


def test_a_full_window_is_split_and_asked_again(router: respx.MockRouter) -> None:
    """A window answered with exactly 3000 items is split in two; the halves' answers are merged."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    middle = dt.datetime(2024, 1, 31, tzinfo=dt.UTC)
    whole, first, second = (
        (format_schwab_time(a), format_schwab_time(b))
        for a, b in ((start, end), (start, middle), (middle, end))
    )
    answers = {
        whole: transactions_body(range(100_000, 100_000 + MAX_TRANSACTIONS)),
        first: transactions_body([10, 11, 12]),
        second: transactions_body([12, 13]),
    }
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        side_effect=lambda request: json_response(answers[window_of(request)])
    )

    items, _ = run_with(router, lambda c: c.transactions(HASH, start, end))

    asked = [window_of(c.request) for c in route.calls]
    assert asked[0] == whole
    assert sorted(asked[1:]) == sorted([first, second])
    assert len(asked) == 3
    assert sorted(item["activityId"] for item in _as_dicts(items)) == [10, 11, 12, 13]


def test_a_window_under_3000_is_not_split(router: respx.MockRouter) -> None:
    """2999 items: the answer is complete, nothing is asked again."""
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response(transactions_body(range(1, MAX_TRANSACTIONS)))
    )
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    items, _ = run_with(
        router, lambda c: c.transactions(HASH, start, start + dt.timedelta(days=60))
    )

    assert route.call_count == 1
    assert len(items) == MAX_TRANSACTIONS - 1


# --- Decimal ---------------------------------------------------------------------------------------


def _floats(value: object) -> Iterator[float]:
    """Every float anywhere in a parsed JSON value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


def test_money_is_parsed_as_exact_decimal(router: respx.MockRouter) -> None:
    """0.1, 1215.95 and 12345678901234567.89 come back as exactly those Decimals; no float at all."""
    amounts = ["0.1", "1215.95", "12345678901234567.89"]
    body = "[" + ",".join(transaction_text(i, net_amount=a) for i, a in enumerate(amounts)) + "]"
    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response(body)
    )
    router.get(f"{API}/accounts").mock(
        return_value=json_response("[" + fixture_text("account.json") + "]")
    )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    async def job(client: SchwabClient) -> tuple[Any, Any]:
        return (
            await client.transactions(HASH, start, start + dt.timedelta(days=30)),
            await client.accounts(),
        )

    (items, accounts), _ = run_with(router, job)

    items = _as_dicts(items)
    by_id = {item["activityId"]: item for item in items}
    for index, text in enumerate(amounts):
        value = by_id[index]["netAmount"]
        assert type(value) is decimal.Decimal
        assert str(value) == text
    fee = by_id[0]["transferItems"][1]["cost"]
    assert type(fee) is decimal.Decimal
    assert str(fee) == "-0.95"
    balances = accounts[0]["securitiesAccount"]["currentBalances"]
    assert str(balances["cashBalance"]) == "51420.89"
    assert list(_floats(items)) == []
    assert list(_floats(accounts)) == []


# --- retries ----------------------------------------------------------------------------------------

TRANSIENT = [
    pytest.param(httpx.ConnectError("connection refused"), id="connect-error"),
    pytest.param(httpx.ReadTimeout("timed out"), id="timeout"),
    pytest.param(429, id="429"),
    pytest.param(502, id="502"),
    pytest.param(503, id="503"),
    pytest.param(504, id="504"),
]


@pytest.mark.parametrize("failure", TRANSIENT)
def test_transient_failures_are_retried_up_to_the_bound(
    router: respx.MockRouter, failure: Exception | int
) -> None:
    """Network errors, timeouts, 429 and 502-504 are retried; after the last attempt, an ApiError."""
    route = router.get(NUMBERS_URL)
    if isinstance(failure, int):
        route.mock(return_value=json_response('{"message":"try later","errors":[]}', failure))
    else:
        route.mock(side_effect=failure)
    seams = Seams()

    with pytest.raises(ApiError) as caught:
        run_with(
            router,
            lambda c: c.account_numbers(),
            seams=seams,
            backoff=Backoff(attempts=4, rng=lambda: 1.0),
        )

    assert route.call_count == 4
    assert seams.sleeps == [0.5, 1.0, 2.0]
    assert len(seams.records) == 4
    message = caught.value.message
    assert "\n" not in message
    if isinstance(failure, int):
        assert f"HTTP {failure}" in message
        assert caught.value.http_status == failure
    else:
        assert "after 4 attempts" in message
        assert type(failure).__name__ in message


def test_a_transient_failure_then_success_returns_the_data(router: respx.MockRouter) -> None:
    """503, then a dropped connection, then 200: the caller gets the data, two pauses later."""
    route = router.get(NUMBERS_URL).mock(
        side_effect=[
            json_response('{"message":"unavailable","errors":[]}', 503),
            httpx.ConnectError("reset"),
            json_response(fixture_text("account_numbers.json")),
        ]
    )

    pairs, seams = run_with(router, lambda c: c.account_numbers())

    assert route.call_count == 3
    assert len(seams.sleeps) == 2
    assert [n for n, _ in pairs] == ["12345678", "12341234"]


def test_retry_after_is_honoured(router: respx.MockRouter) -> None:
    """429 with Retry-After: 3 pauses at least 3 s, even when the jitter draws 0."""
    route = router.get(NUMBERS_URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow down"}),
            json_response(fixture_text("account_numbers.json")),
        ]
    )

    _, seams = run_with(router, lambda c: c.account_numbers(), backoff=Backoff(rng=lambda: 0.0))

    assert route.call_count == 2
    (pause,) = seams.sleeps
    assert pause >= 3


def test_a_retry_after_beyond_two_minutes_is_not_waited_for(router: respx.MockRouter) -> None:
    """Retry-After: 600 is too long to block a command: one request, then a rate-limit error."""
    route = router.get(NUMBERS_URL).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "600"}, json={"message": "no"})
    )
    seams = Seams()

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers(), seams=seams)

    assert route.call_count == 1
    assert seams.sleeps == []
    assert "HTTP 429" in caught.value.message
    assert caught.value.hint is not None
    assert "rate limit" in caught.value.hint


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(router: respx.MockRouter, status: int) -> None:
    """400, 403 and 404 will not change on a retry: exactly one request, no pause."""
    route = router.get(NUMBERS_URL).mock(
        return_value=json_response('{"message":"refused","errors":["no"]}', status, "corr-4xx")
    )
    seams = Seams()

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers(), seams=seams)

    assert route.call_count == 1
    assert seams.sleeps == []
    assert caught.value.http_status == status
    assert caught.value.correlation_id == "corr-4xx"


def test_backoff_delays_grow_and_are_jittered(router: respx.MockRouter) -> None:
    """Each pause is the attempt's exponential ceiling times the jitter draw."""
    draws = iter([0.8, 0.6, 0.7, 0.9])
    router.get(NUMBERS_URL).mock(return_value=json_response("{}", 503))
    seams = Seams()

    with pytest.raises(ApiError):
        run_with(
            router,
            lambda c: c.account_numbers(),
            seams=seams,
            backoff=Backoff(attempts=5, base=0.5, rng=lambda: next(draws)),
        )

    assert seams.sleeps == pytest.approx([0.4, 0.6, 1.4, 3.6])
    assert seams.sleeps != [0.5, 1.0, 2.0, 4.0]  # jittered, not the bare ceilings
    assert all(a < b for a, b in itertools.pairwise(seams.sleeps))


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    """With a draw of 1 the pause is the ceiling: 0.5, 1, 2, 4, ... capped at 30 s."""
    backoff = Backoff(attempts=10, base=0.5, cap=30.0, rng=lambda: 1.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_backoff_jitter_with_a_seeded_generator_stays_under_the_ceiling() -> None:
    """Full jitter: every pause lies in [0, ceiling), and they differ from one another."""
    backoff = Backoff(attempts=6, base=0.5, cap=30.0, rng=random.Random(7).random)  # noqa: S311
    pauses = [backoff.delay(n) for n in range(1, 6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0]
    assert all(0 <= p < c for p, c in zip(pauses, ceilings, strict=True))
    assert len(set(pauses)) == len(pauses)


def test_backoff_never_pauses_less_than_retry_after() -> None:
    """Retry-After is a floor on the pause, above the cap too."""
    backoff = Backoff(rng=lambda: 0.0)
    assert backoff.delay(1, 3.0) == 3.0
    assert backoff.delay(1, 90.0) == 90.0


def test_retry_after_seconds() -> None:
    """Retry-After as seconds or an HTTP date; absent or garbage gives None; past dates give 0."""
    moment = dt.datetime(2025, 1, 17, 17, 20, tzinfo=dt.UTC)
    http_date = email.utils.format_datetime(moment, usegmt=True)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(http_date, now=moment.timestamp() - 10) == pytest.approx(10.0)
    assert retry_after_seconds(http_date, now=moment.timestamp() + 10) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


# --- 401 --------------------------------------------------------------------------------------------


def test_401_refreshes_once_and_retries_with_the_new_token(router: respx.MockRouter) -> None:
    """A refused token is replaced once and the request is sent again with the new one."""
    route = router.get(NUMBERS_URL).mock(
        side_effect=[
            json_response('{"message":"Unauthorized","errors":[]}', 401),
            json_response(fixture_text("account_numbers.json")),
        ]
    )

    pairs, seams = run_with(router, lambda c: c.account_numbers())

    assert seams.refreshed == ["access-one"]
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer access-one",
        "Bearer access-two",
    ]
    assert seams.sleeps == []
    assert len(pairs) == 2


def test_a_second_401_requires_a_new_login(router: respx.MockRouter) -> None:
    """401 after the refresh: ReauthRequired (exit 4) naming the connect command; no more refreshes."""
    route = router.get(NUMBERS_URL).mock(
        return_value=json_response('{"message":"Unauthorized","errors":[]}', 401, "corr-401")
    )
    seams = Seams()

    with pytest.raises(ReauthRequired) as caught:
        run_with(router, lambda c: c.account_numbers(), seams=seams)

    assert route.call_count == 2
    assert seams.refreshed == ["access-one"]
    assert caught.value.exit_code == ExitCode.REAUTH
    assert int(caught.value.exit_code) == 4
    assert caught.value.hint is not None
    assert "dashtam connect schwab" in caught.value.hint
    assert "HTTP 401" in caught.value.message
    assert "corr-401" in caught.value.message


# --- error bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "body", "fragment"),
    [
        pytest.param(
            400,
            "application/json",
            '{"message":"Bad Request","errors":["The startDate field is invalid"]}',
            "Bad Request The startDate field is invalid",
            id="message-errors",
        ),
        pytest.param(
            500,
            "application/json",
            '{"fault":{"faultstring":"Body buffer overflow",'
            '"detail":{"errorcode":"protocol.http.TooBigBody"}}}',
            "Body buffer overflow",
            id="fault",
        ),
        pytest.param(403, "text/html", ACCESS_DENIED, "Access Denied", id="html-access-denied"),
        pytest.param(
            200, "application/json", '[{"accountNumber": "1234', "not JSON", id="200-not-json"
        ),
    ],
)
def test_error_bodies_become_one_line(
    router: respx.MockRouter, status: int, content_type: str, body: str, fragment: str
) -> None:
    """Each error shape gives one line with the HTTP status and the correlation id."""
    correlation = "5a2c6d1e-0b7f-4e39-9d1a-3f0c2b8e7a61"
    router.get(NUMBERS_URL).mock(
        return_value=httpx.Response(
            status,
            content=body.encode(),
            headers={"Content-Type": content_type, CORRELATION: correlation},
        )
    )

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers())

    message = caught.value.message
    assert "\n" not in message
    assert f"HTTP {status}" in message
    assert correlation in message
    assert fragment in message
    assert "Traceback" not in message
    assert "<" not in message  # no markup from the page
    assert caught.value.http_status == status
    assert caught.value.correlation_id == correlation


# --- audit records ----------------------------------------------------------------------------------


def test_every_call_is_recorded_without_the_token(router: respx.MockRouter) -> None:
    """One CallRecord per request, with operation, outcome, status, duration and correlation id."""

    async def slow(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.03)
        return json_response("[" + fixture_text("account.json") + "]", correlation="corr-d")

    router.get(NUMBERS_URL).mock(
        side_effect=[
            json_response("{}", 503, "corr-a"),
            json_response(fixture_text("account_numbers.json"), correlation="corr-b"),
        ]
    )
    router.get(f"{API}/accounts").mock(
        # respx calls a function in a side_effect list; its hints name only responses and errors.
        side_effect=[json_response('{"message":"expired"}', 401, "corr-c"), slow]  # type: ignore[list-item]
    )
    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        side_effect=[httpx.ConnectError("reset"), json_response("[]", correlation="corr-f")]
    )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    async def job(client: SchwabClient) -> None:
        await client.account_numbers()
        await client.accounts()
        await client.transactions(HASH, start, start + dt.timedelta(days=1))

    _, seams = run_with(router, job)

    assert len(seams.records) == len(router.calls) == 6
    assert [(r.operation, r.outcome, r.http_status, r.correlation_id) for r in seams.records] == [
        ("account numbers", "error", 503, "corr-a"),
        ("account numbers", "ok", 200, "corr-b"),
        ("accounts", "error", 401, "corr-c"),
        ("accounts", "ok", 200, "corr-d"),
        ("transactions", "connection error", None, None),
        ("transactions", "ok", 200, "corr-f"),
    ]
    assert all(isinstance(r.duration_ms, int) and r.duration_ms >= 0 for r in seams.records)
    assert seams.records[3].duration_ms >= 25  # the 30 ms the server took
    for record in seams.records:
        text = repr(dataclasses.asdict(record))
        assert "access-one" not in text
        assert "access-two" not in text


# --- the limiter ------------------------------------------------------------------------------------


def test_limiter_lets_a_burst_of_120_through_and_holds_the_121st() -> None:
    """120 acquisitions pass at once; the 121st waits until the first is 60 s old."""
    time = FakeTime()
    limiter = SlidingWindowLimiter(120, 60.0, clock=time.clock, sleep=time.sleep)
    stamps: list[float] = []

    async def main() -> None:
        await limiter.acquire()
        stamps.append(time.now)
        time.now = 10.0
        for _ in range(119):
            await limiter.acquire()
            stamps.append(time.now)
        assert time.sleeps == []
        time.now = 20.0
        await limiter.acquire()  # the 121st: until the first (t=0) is 60 s old
        stamps.append(time.now)
        await limiter.acquire()  # the 122nd: until the second (t=10) is 60 s old
        stamps.append(time.now)

    asyncio.run(main())

    assert time.sleeps == [40.0, 10.0]
    assert stamps[-2:] == [60.0, 70.0]
    assert max_in_window(stamps, 60.0) == 120


def test_limiter_keeps_300_requests_at_120_per_minute() -> None:
    """300 requests arriving faster than 2/s: no 60-second window ever holds more than 120.

    The gaps are multiples of 1/8 s so that the fake clock's sums are exact.
    """
    time = FakeTime()
    limiter = SlidingWindowLimiter(120, 60.0, clock=time.clock, sleep=time.sleep)
    rng = random.Random(20240328)  # noqa: S311 - a reproducible schedule, not a secret
    stamps: list[float] = []

    async def request(delay: float) -> None:
        await asyncio.sleep(0)
        await limiter.acquire()
        stamps.append(time.now)
        time.now += delay

    async def main() -> None:
        await asyncio.gather(*(request(rng.randrange(4) / 8) for _ in range(300)))

    asyncio.run(main())

    assert len(stamps) == 300
    assert max_in_window(stamps, 60.0) == 120
    assert time.sleeps  # the limit was reached and waited for
    assert stamps[-1] >= 120.0  # 300 requests need at least three minutes' windows


def test_twenty_accounts_stay_under_the_limit_through_the_client(router: respx.MockRouter) -> None:
    """20 accounts x 8 yearly windows = 160 requests: never more than 120 in any 60 s."""
    time = FakeTime()
    arrivals: list[float] = []
    hashes: set[str] = set()

    def answer(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.now)
        match = TRANSACTIONS_PATH.match(request.url.path)
        assert match is not None
        hashes.add(match[1])
        return json_response("[]")

    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(side_effect=answer)
    start = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # 2557 days: 8 windows
    accounts = [hash_of(str(n)) for n in range(20)]

    async def job(client: SchwabClient) -> None:
        await asyncio.gather(*(client.transactions(h, start, end) for h in accounts))

    run_with(
        router,
        job,
        limiter=SlidingWindowLimiter(120, 60.0, clock=time.clock, sleep=time.sleep),
    )

    assert len(arrivals) == 160
    assert hashes == set(accounts)
    assert max_in_window(arrivals, 60.0) <= 120
    assert max(arrivals) >= 60.0  # the last 40 had to wait for the next minute


def test_a_request_queued_at_the_gate_counts_when_it_is_sent(router: respx.MockRouter) -> None:
    """The limit holds for requests as they leave, even when one waited behind a slow request."""
    time = FakeTime()
    arrivals: list[float] = []
    release: list[asyncio.Event] = []

    async def answer(_request: httpx.Request) -> httpx.Response:
        arrivals.append(time.now)
        if len(arrivals) == 1:
            await release[0].wait()  # the first request hangs for 59 s
        return json_response(fixture_text("account_numbers.json"))

    router.get(NUMBERS_URL).mock(side_effect=answer)

    async def job(client: SchwabClient) -> None:
        release.append(asyncio.Event())
        first = asyncio.create_task(client.account_numbers())
        second = asyncio.create_task(client.account_numbers())
        for _ in range(20):
            await asyncio.sleep(0)
        time.now = 59.0
        release[0].set()
        await asyncio.gather(first, second)
        time.now = 60.0
        await asyncio.gather(client.account_numbers(), client.account_numbers())

    run_with(
        router,
        job,
        limiter=SlidingWindowLimiter(2, 60.0, clock=time.clock, sleep=time.sleep),
        max_in_flight=1,
    )

    assert len(arrivals) == 4
    assert max_in_window(arrivals, 60.0) <= 2


# --- concurrency ------------------------------------------------------------------------------------


def test_windows_are_fetched_concurrently_within_the_bound(router: respx.MockRouter) -> None:
    """Eight windows of one account: three requests in flight at once, never more."""
    in_flight = 0
    peak = 0

    async def answer(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return json_response("[]")

    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        side_effect=answer
    )
    start = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)

    run_with(
        router,
        lambda c: c.transactions(HASH, start, dt.datetime(2025, 1, 1, tzinfo=dt.UTC)),
        max_in_flight=3,
    )

    assert route.call_count == 8
    assert peak == 3


def test_accounts_are_fetched_concurrently_within_accounts_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 accounts' transactions: several in flight at once, never more than ACCOUNTS_IN_FLIGHT."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    add_connection("brokerage", "token-b")
    in_flight = 0
    peak = 0
    full = asyncio.Event()

    async def answer(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= ACCOUNTS_IN_FLIGHT:
            full.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), 1.0)
        await asyncio.sleep(0)
        in_flight -= 1
        return json_response(fixture_text("transactions.json"))

    router = respx.MockRouter(assert_all_called=False)
    numbers = [str(70_000_000 + n) for n in range(20)]
    mock_connection_api(router, "token-b", numbers, transactions=answer)
    options = SyncOptions(
        since=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        clock=lambda: dt.datetime(2025, 3, 1, tzinfo=dt.UTC),  # one window per account
        transport=httpx.MockTransport(router.async_handler),
        max_in_flight=50,  # the per-connection request gate is not what bounds this
    )

    result = asyncio.run(sync(load_settings(), options, OpenOptions()))

    assert result.outcome.failures == []
    [report] = result.reports
    assert (report.accounts, report.new) == (20, 40)
    assert 1 < peak <= ACCOUNTS_IN_FLIGHT
    assert peak == ACCOUNTS_IN_FLIGHT


def test_a_failing_window_waits_for_the_others(router: respx.MockRouter) -> None:
    """When one window fails, the call returns only after its other windows finished.

    A request left running would outlive the HTTP client and the vault its
    audit record goes to.
    """
    requests: list[str] = []
    failed = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.params["startDate"])
        if request.url.params["startDate"].startswith("2023"):
            failed.set()
            return json_response('{"message":"Bad Request","errors":[]}', 400)
        # Still in flight when the other window fails, however slow the machine.
        await asyncio.wait_for(failed.wait(), 60)
        return json_response("[]")

    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(side_effect=answer)
    seams = Seams()
    seen_when_raised: list[int] = []

    async def job(client: SchwabClient) -> None:
        try:
            await client.transactions(
                HASH,
                dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
                dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
            )
        finally:
            seen_when_raised.append(len(seams.records))

    with pytest.raises(ApiError, match="HTTP 400"):
        run_with(router, job, seams=seams)

    assert len(requests) == 2
    assert seen_when_raised == [2]


# --- account identifiers are masked before they can be echoed ----------------------------------


def test_account_numbers_and_hashes_are_masked_as_soon_as_listed(router: respx.MockRouter) -> None:
    """The account list registers every number and hash before the call returns."""
    router.get(NUMBERS_URL).mock(return_value=json_response(fixture_text("account_numbers.json")))
    router.get(f"{API}/accounts", params={"fields": "positions"}).mock(
        return_value=json_response("[" + account_body("87654321") + "]")
    )

    run_with(router, lambda c: c.account_numbers())
    run_with(router, lambda c: c.accounts())

    for identifier in ("12345678", "12341234", *FIXTURE_HASHES, "87654321"):
        assert redact(f"x {identifier} y") == "x *** y", identifier


def test_a_hash_is_masked_before_the_request_that_carries_it(router: respx.MockRouter) -> None:
    """A hash given to transactions() (from the vault's cache, say) is masked as the request leaves."""
    hash_value = "FEDCBA9876543210" * 4
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(redact(str(request.url)))
        return json_response("[]")

    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(side_effect=answer)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    run_with(router, lambda c: c.transactions(hash_value, start, start + dt.timedelta(days=1)))

    assert seen
    assert all(hash_value not in url and "/accounts/***/transactions" in url for url in seen)


# --- hostile answers --------------------------------------------------------------------------------

JUNK_RETRY_AFTER = [
    pytest.param("\u00b2", id="superscript-two"),
    pytest.param("\u0661\u0662", id="arabic-indic-12"),
    pytest.param("-5", id="negative"),
    pytest.param("3.5", id="fraction"),
    pytest.param("99999999999999999999", id="1e20"),
    pytest.param("9" * 5000, id="5000-digits"),
    pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", id="year-9999"),
    pytest.param("soon", id="text"),
]


@pytest.mark.parametrize("value", JUNK_RETRY_AFTER)
def test_a_junk_retry_after_falls_back_to_the_default_backoff(
    router: respx.MockRouter, value: str
) -> None:
    """429 with a Retry-After that is not a believable delay: the default pause, then the data."""
    route = router.get(NUMBERS_URL).mock(
        side_effect=[
            # As bytes on the wire: a server may send UTF-8 there.
            httpx.Response(
                429, headers={b"Retry-After": value.encode()}, json={"message": "slow down"}
            ),
            json_response(fixture_text("account_numbers.json")),
        ]
    )

    pairs, seams = run_with(router, lambda c: c.account_numbers(), backoff=Backoff(rng=lambda: 1.0))

    assert route.call_count == 2
    assert seams.sleeps == [0.5]  # the first attempt's ceiling, as without Retry-After
    assert len(pairs) == 2


@pytest.mark.parametrize("value", JUNK_RETRY_AFTER)
def test_retry_after_seconds_ignores_junk(value: str) -> None:
    """Only ASCII digits up to a day, or an HTTP date within a day, are believed."""
    assert retry_after_seconds(value) is None


def test_retry_after_seconds_keeps_believable_values() -> None:
    """Seconds up to a day are kept as they are, a day and a second is not."""
    assert retry_after_seconds(" 42 ") == 42.0
    assert retry_after_seconds("0000000042") == 42.0
    assert retry_after_seconds("86400") == 86400.0
    assert retry_after_seconds("86401") is None


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), -3.0])
def test_backoff_ignores_an_unusable_retry_after(retry_after: float) -> None:
    """A pause is never infinite, NaN or negative: the jittered ceiling applies instead."""
    backoff = Backoff(rng=lambda: 1.0)
    assert backoff.delay(2, retry_after) == 1.0


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_a_clear_error(router: respx.MockRouter, status: int) -> None:
    """A body nested 100,000 deep: one ApiError line with the status, not a RecursionError."""
    body = "[" * 100_000 + "]" * 100_000
    router.get(NUMBERS_URL).mock(return_value=json_response(body, status, "corr-deep"))

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers(), backoff=Backoff(attempts=1))

    message = caught.value.message
    assert f"HTTP {status}" in message
    assert "corr-deep" in message
    assert "\n" not in message
    if status == httpx.codes.OK:
        assert "nested more than 64 levels deep" in message


def test_a_number_of_5000_digits_is_a_clear_error(router: respx.MockRouter) -> None:
    """Python refuses integers of over 4,300 digits: the answer is reported as unreadable."""
    body = '[{"accountNumber": "12345678", "hashValue": "AB", "n": ' + "9" * 5000 + "}]"
    router.get(NUMBERS_URL).mock(return_value=json_response(body))

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers())

    assert "HTTP 200 with a body that is not JSON" in caught.value.message


def test_client_not_authorized_after_a_fresh_token_names_the_missing_product(
    router: respx.MockRouter,
) -> None:
    """401 'Client not authorized' even with a new token: the app lacks the product, not a login."""
    body = '{"errors":[{"id":"0b5a","status":401,"title":"Unauthorized","detail":"Client not authorized"}]}'
    route = router.get(NUMBERS_URL).mock(return_value=json_response(body, 401, "corr-cna"))
    seams = Seams()

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers(), seams=seams)

    error = caught.value
    assert not isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.ERROR
    assert route.call_count == 2
    assert seams.refreshed == ["access-one"]  # one fresh token was tried first
    assert "Client not authorized" in error.message
    assert "corr-cna" in error.message
    assert error.hint is not None
    assert '"Accounts and Trading Production"' in error.hint
    assert "dashtam connect" not in error.hint


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[{"accountNumber": 12345678, "hashValue": "AB12"}]', "[0].accountNumber"),
        ('[{"accountNumber": "12345678", "hashValue": {"v": 1}}]', "[0].hashValue"),
        ('[{"accountNumber": "12345678"}]', "[0].hashValue"),
        ('[{"accountNumber": "1234 5678", "hashValue": "AB12"}]', "[0].accountNumber"),
        ('[{"accountNumber": "12345678", "hashValue": "AB12"}, "12341234"]', "[1]"),
    ],
    ids=["number-as-number", "hash-as-object", "hash-missing", "number-with-space", "item-as-text"],
)
def test_account_numbers_of_the_wrong_type_are_named(
    router: respx.MockRouter, body: str, field: str
) -> None:
    """A wrong type in accountNumbers is one error naming the field, never the value itself."""
    router.get(NUMBERS_URL).mock(return_value=json_response(body))

    with pytest.raises(ApiError) as caught:
        run_with(router, lambda c: c.account_numbers())

    message = caught.value.message
    assert f"field {field} should be" in message
    assert "12345678" not in message
    assert "12341234" not in message
    assert "\n" not in message
