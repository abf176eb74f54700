"""Provider-neutral accounts, positions and transactions from the real fixtures; cache; failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from schwab_support import (
    API,
    BASE_URL,
    CASH_CURRENT,
    CORRELATION,
    TOKEN_URL,
    TRANSACTIONS_PATH,
    account_numbers_body,
    add_connection,
    cash_account_body,
    fixture_text,
    json_response,
    mock_connection_api,
    user_preference_body,
)
from sqlalchemy import func, select

from dashtam_cli.core import redact
from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import list_connections
from dashtam_cli.core.errors import (
    DashtamError,
    ExitCode,
    InputError,
    PartialFailure,
    ReauthRequired,
)
from dashtam_cli.core.models import Account, Position, Transaction
from dashtam_cli.core.portfolio import (
    ACCOUNT_LIST_REUSE,
    Failure,
    FetchOptions,
    FetchResult,
    fetch_accounts,
    fetch_positions,
    fetch_transactions,
)
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.files import sidecar_files
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from dashtam_cli.core.settings import Settings

D = decimal.Decimal
FIRST, SECOND = "11111111", "22222222"
SINCE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)

Fetch = Any  # one of fetch_accounts, fetch_positions, fetch_transactions


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def fetch(
    job: Callable[[Settings, FetchOptions, OpenOptions], Coroutine[Any, Any, FetchResult[Any]]],
    router: respx.MockRouter,
    **options: Any,
) -> FetchResult[Any]:
    """Run one of the fetch functions with its HTTP going to ``router``."""
    opts = FetchOptions(transport=httpx.MockTransport(router.async_handler), **options)
    return asyncio.run(job(load_settings(), opts, OpenOptions()))


def fixture_positions() -> list[dict[str, Any]]:
    """The positions of account.json, parsed independently of the code under test."""
    raw = json.loads(fixture_text("account.json"), parse_float=D)
    positions: list[dict[str, Any]] = raw["securitiesAccount"]["positions"]
    return positions


@pytest.fixture
def brokerage(router: respx.MockRouter) -> dict[str, str]:
    """One connection, 'brokerage', with two accounts answered from the fixtures."""
    add_connection("brokerage", "token-b")
    return mock_connection_api(router, "token-b", [FIRST, SECOND])


# --- mapping ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("brokerage")
def test_account_from_the_fixture(router: respx.MockRouter) -> None:
    """account.json maps to an Account: masked number, currentBalances, summed market value."""
    result = fetch(fetch_accounts, router)

    assert result.failures == []
    assert [a.number for a in result.items] == ["****1111", "****2222"]
    account: Account = result.items[0]
    assert account.connection == "brokerage"
    assert account.provider == "schwab"
    # user_preferences.json's nickname; the second account has the other one.
    assert account.name == "Trading Brokerage"
    assert result.items[1].name == "Contributory"
    assert account.type == "MARGIN"
    assert account.currency == "USD"
    assert account.cash == D("51420.89")
    assert account.total_value == D("50946.39")
    assert account.buying_power == D("88853.04")
    # The positions' market values add up to what Schwab reports for the options held:
    # longOptionMarketValue 436.0 + shortOptionMarketValue -910.5.
    assert account.market_value == D("-474.5")
    assert account.fetched_at.tzinfo is not None
    dumped = json.dumps([a.model_dump(mode="json") for a in result.items])
    assert FIRST not in dumped
    assert SECOND not in dumped


def test_a_cash_account_shows_cash_available_for_trading(router: respx.MockRouter) -> None:
    """A CASH account has no buyingPower: cashAvailableForTrading is its buying power."""
    add_connection("ira", "token-i")
    body = "[" + cash_account_body(FIRST) + "]"
    assert "buyingPower" not in body
    mock_connection_api(router, "token-i", [FIRST], accounts=body)

    (account,) = fetch(fetch_accounts, router).items

    assert account.type == "CASH"
    assert account.buying_power == D("12190.55")
    # CashBalance has no cashBalance or liquidationValue: totalCash and the aggregate stand in.
    assert account.cash == D("12190.55")
    assert account.total_value == D("51434.86")


def test_a_cash_account_with_live_balances(router: respx.MockRouter) -> None:
    """Live cash balances also carry cashBalance: that is the cash, and buyingPower is ignored."""
    add_connection("ira", "token-i")
    current = {**CASH_CURRENT, "cashBalance": 12040.55, "liquidationValue": 63475.41}
    current["buyingPower"] = 0.0  # a cash account's buying power, where one is sent, is not it
    body = "[" + cash_account_body(FIRST, current=current) + "]"
    mock_connection_api(router, "token-i", [FIRST], accounts=body)

    (account,) = fetch(fetch_accounts, router).items

    assert account.cash == D("12040.55")
    assert account.buying_power == D("12190.55")
    assert account.total_value == D("63475.41")


@pytest.mark.usefixtures("brokerage")
def test_positions_from_the_fixture(router: respx.MockRouter) -> None:
    """Positions carry long minus short, option symbols with their spaces, exact money."""
    accounts = fetch(fetch_accounts, router).items
    result = fetch(fetch_positions, router, account="1111")

    positions: list[Position] = result.items
    raw = fixture_positions()
    assert len(positions) == len(raw) == 10
    assert {p.account for p in positions} == {"****1111"}
    assert {p.account_id for p in positions} == {accounts[0].id}
    assert [p.symbol for p in positions] == [r["instrument"]["symbol"] for r in raw]
    by_symbol = {p.symbol: p for p in positions}
    short = by_symbol["META  250131P00525000"]  # shortQuantity 1.0 in the fixture
    assert short.quantity == -1
    assert short.quantity < 0
    assert short.average_price == D("2.7733")
    assert short.market_value == D("-75.0")
    assert short.day_profit_loss == D("33.5")
    assert short.asset_type == "OPTION"
    assert short.description == "META PLATFORMS INC 01/31/2025 $525 Put"
    assert by_symbol["META  250131P00510000"].quantity == 1
    shorts = sorted(r["instrument"]["symbol"] for r in raw if r["shortQuantity"] > 0)
    assert sorted(p.symbol for p in positions if p.quantity < 0) == shorts
    assert len(shorts) == 5
    assert FIRST not in json.dumps([p.model_dump(mode="json") for p in positions])


def test_transactions_from_the_fixture(router: respx.MockRouter, brokerage: dict[str, str]) -> None:
    """transactions.json: +0000 times, dates, CURRENCY fee lines summed, amount = netAmount."""
    result = fetch(fetch_transactions, router, account="1111", since=SINCE, until=UNTIL)

    transactions: list[Transaction] = result.items
    assert len(transactions) == 2
    asked = [
        c.request.url.path for c in router.calls if TRANSACTIONS_PATH.match(c.request.url.path)
    ]
    assert asked == [f"/trader/v1/accounts/{brokerage[FIRST]}/transactions"]
    sold, bought = sorted(transactions, key=lambda t: t.amount)
    assert sold.time == dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC)
    assert sold.time.utcoffset() == dt.timedelta(0)
    assert sold.trade_date == dt.date(2025, 1, 17)
    assert type(sold.trade_date) is dt.date
    assert sold.settlement_date is None  # absent from the fixture
    assert sold.type == "TRADE"
    assert sold.status == "VALID"
    assert sold.amount == D("-1215.95")
    assert str(sold.amount) == "-1215.95"
    assert sold.fees == D("0.95")
    assert sold.symbol == "MRVL  250321C00155000"
    assert sold.quantity == -1
    assert sold.price == D("2.06")
    assert sold.description == "MARVELL TECHNOLOGY INC 03/21/2025 $155 Call"
    assert sold.account == "****1111"
    assert bought.amount == D("854.95")
    assert bought.fees == D("0.95")
    assert bought.quantity == 1
    assert bought.symbol == "MRVL  250321C00170000"
    assert len({t.id for t in transactions}) == 2


def _usd_line(amount: str, fee_type: str | None) -> dict[str, Any]:
    """A CURRENCY_USD transfer item as transactions.json has them, with or without a feeType."""
    line: dict[str, Any] = {
        "instrument": {
            "assetType": "CURRENCY",
            "status": "ACTIVE",
            "symbol": "CURRENCY_USD",
            "description": "USD currency",
            "instrumentId": 1,
            "closingPrice": 0,
        },
        "amount": D(amount),
        "cost": -D(amount),
    }
    if fee_type is not None:
        line["feeType"] = fee_type
    return line


def futures_option_trade() -> dict[str, Any]:
    """A futures-option purchase shaped like transactions.json: three fee lines, one without feeType.

    700.00 for the option, then a commission of 2.25, an exchange fee of
    0.55 and an NFA fee of 0.02 that Schwab sends without a ``feeType``:
    ``netAmount`` is -702.82, so the fees are 2.82, not the 2.80 of the
    lines that have a ``feeType``.
    """
    trade: dict[str, Any] = json.loads(fixture_text("transaction_single.json"), parse_float=D)
    trade["activityId"] = 91176753999
    trade["netAmount"] = D("-702.82")
    main = trade["transferItems"][0]
    main["instrument"].update(
        symbol="./EW4H25C6000",
        description="E-mini S&P 500 Weekly Options 03/28/2025 $6000 Call",
        underlyingSymbol="/ESH25",
        strikePrice=6000,
    )
    main.update(amount=D(1), cost=D("-700.00"), price=D("14.00"))
    trade["transferItems"] = [
        main,
        _usd_line("2.25", "COMMISSION"),
        _usd_line("0.55", "FUTURES_EXCHANGE_FEE"),
        _usd_line("0.02", None),
    ]
    return trade


def test_every_fee_line_of_a_trade_counts(router: respx.MockRouter) -> None:
    """A fee line without feeType counts: fees 2.82, and cost minus fees is netAmount."""
    add_connection("brokerage", "token-b")
    trade = futures_option_trade()
    # Decimals written as JSON numbers with their exact digits, as Schwab sends money.
    body = json.dumps([trade], default=float)
    assert '"netAmount": -702.82' in body
    assert '"amount": 0.02, "cost": -0.02}' in body
    mock_connection_api(router, "token-b", [FIRST], transactions=body)

    result = fetch(fetch_transactions, router, since=SINCE, until=UNTIL)

    (txn,) = result.items
    assert txn.symbol == "./EW4H25C6000"
    assert txn.amount == D("-702.82")
    assert txn.fees == D("2.82")
    assert txn.price == D("14.00")
    # The money agrees with netAmount: the option's cost less every fee.
    assert D("-700.00") - txn.fees == txn.amount


def test_a_rebate_line_lowers_the_fees(router: respx.MockRouter) -> None:
    """A fee line that pays money back (positive cost) is subtracted, so netAmount still agrees."""
    add_connection("brokerage", "token-b")
    trade = futures_option_trade()
    rebate = _usd_line("0.10", "MISCELLANEOUS_FEE")
    rebate.update(amount=D("-0.10"), cost=D("0.10"))
    trade["transferItems"].append(rebate)
    trade["netAmount"] = D("-702.72")
    mock_connection_api(router, "token-b", [FIRST], transactions=json.dumps([trade], default=float))

    (txn,) = fetch(fetch_transactions, router, since=SINCE, until=UNTIL).items

    assert txn.fees == D("2.72")
    assert D("-700.00") - txn.fees == txn.amount == D("-702.72")


@pytest.mark.parametrize(
    ("account_id", "activity"),
    [
        ("3f2a9c1e-0b7d-4e58-9a61-2c4d8e0f1a2b", 98765432109),
        ("3f2a9c1e-0b7d-4e58-9a61-2c4d8e0f1a2b", 2**63 - 1),
        ("a", 0),
        ("compte-é", "text-id"),
    ],
)
def test_transaction_id_is_uuid5_text(account_id: str, activity: object) -> None:
    """The fast id is exactly uuid5 of the namespace and "account:activity", as cached ids were."""
    from dashtam_cli.core.portfolio import _TXN_NAMESPACE, transaction_id

    expected = str(uuid.uuid5(_TXN_NAMESPACE, f"{account_id}:{activity}"))
    assert transaction_id(account_id, activity) == expected


@pytest.mark.usefixtures("brokerage")
def test_transaction_ids_are_stable(router: respx.MockRouter) -> None:
    """The same activity fetched twice keeps its id, so the cache updates instead of duplicating."""
    first = fetch(fetch_transactions, router, account="1111", since=SINCE, until=UNTIL).items
    again = fetch(fetch_transactions, router, account="1111", since=SINCE, until=UNTIL).items
    assert sorted(t.id for t in first) == sorted(t.id for t in again)


@pytest.mark.usefixtures("brokerage")
def test_account_ids_are_stable_and_distinct(router: respx.MockRouter) -> None:
    """Two fetches give an account the same id; another account gets another id."""
    first = {a.number: a.id for a in fetch(fetch_accounts, router).items}
    again = {a.number: a.id for a in fetch(fetch_accounts, router).items}

    assert first == again
    assert first["****1111"] != first["****2222"]
    for account_id in first.values():
        uuid.UUID(account_id)  # random ids, not derived from the number


# --- the sealed cache -----------------------------------------------------------------------------


def test_the_cache_is_sealed(router: respx.MockRouter, brokerage: dict[str, str]) -> None:
    """After fetching, the vault's files hold neither account numbers nor amounts in the clear."""
    fetch(fetch_accounts, router)
    fetch(fetch_transactions, router, since=SINCE, until=UNTIL)

    async def read() -> tuple[dict[str, int | None], str]:
        async with open_vault(load_settings()) as vault:
            async with vault.reading() as conn:
                counts = {
                    t.name: await conn.scalar(select(func.count()).select_from(t))
                    for t in (schema.accounts, schema.positions, schema.transactions)
                }
                row = (await conn.execute(select(schema.transactions).limit(1))).one()
            payload = vault.unseal_text(
                "transactions", row.id, "payload", row.payload, owner=row.account_id
            )
        return counts, payload

    counts, payload = asyncio.run(read())
    assert counts == {"accounts": 2, "positions": 20, "transactions": 4}
    assert "-1215.95" in payload or "854.95" in payload  # the data is there, sealed

    raw = b"".join(
        p.read_bytes() for p in sidecar_files(load_settings().paths.vault_file) if p.exists()
    )
    assert raw  # the vault file was read
    hashes = (brokerage[FIRST], brokerage[SECOND])
    for secret in (FIRST, SECOND, *hashes, "51420.89", "88853.04", "1215.95", "854.95", "2.7733"):
        assert secret.encode() not in raw, secret


# --- reusing the last account list -------------------------------------------------------------------


def numbers_asked(router: respx.MockRouter) -> int:
    """How many times the account numbers were asked for."""
    return sum(c.request.url.path.endswith("/accountNumbers") for c in router.calls)


def transaction_hashes(router: respx.MockRouter) -> list[str]:
    """The account hashes the transactions calls used, in the order they were sent."""
    return [
        match[1]
        for c in router.calls
        if (match := TRANSACTIONS_PATH.match(c.request.url.path)) is not None
    ]


def test_transactions_soon_after_an_account_list_reuse_its_hashes(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """Positions then transactions: the second command sends no accountNumbers request."""
    fetch(fetch_positions, router)
    assert numbers_asked(router) == 1
    router.reset()

    result = fetch(fetch_transactions, router, since=SINCE, until=UNTIL)

    assert result.failures == []
    assert numbers_asked(router) == 0
    assert sorted(transaction_hashes(router)) == sorted(brokerage.values())
    assert {t.account for t in result.items} == {"****1111", "****2222"}
    assert result.requests == 2


def test_an_account_list_past_the_reuse_period_is_asked_for_again(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """Sixteen minutes later the stored hashes are not trusted: the numbers are asked first."""
    fetch(fetch_accounts, router)
    router.reset()
    later = dt.datetime.now(dt.UTC) + ACCOUNT_LIST_REUSE + dt.timedelta(minutes=1)

    result = fetch(fetch_transactions, router, since=SINCE, until=UNTIL, clock=lambda: later)

    assert result.failures == []
    assert numbers_asked(router) == 1
    paths = [c.request.url.path for c in router.calls]
    assert paths[0].endswith("/accountNumbers")
    assert sorted(transaction_hashes(router)) == sorted(brokerage.values())


@pytest.mark.parametrize("status", [400, 404])
def test_a_stale_stored_hash_leads_to_one_fresh_list(router: respx.MockRouter, status: int) -> None:
    """Schwab refuses the stored hash: dashtam asks for the list again and uses the new hash."""
    add_connection("brokerage", "token-b")
    old = mock_connection_api(router, "token-b", [FIRST])[FIRST]
    fetch(fetch_accounts, router)

    new = "0" * 64
    moved = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    moved.get(f"{API}/accounts/accountNumbers").mock(
        return_value=json_response(account_numbers_body([(FIRST, new)]))
    )
    moved.get(f"{API}/accounts/{old}/transactions").mock(
        return_value=json_response(
            '{"message":"Invalid account number","errors":["unknown account"]}', status
        )
    )
    moved.get(f"{API}/accounts/{new}/transactions").mock(
        return_value=json_response(fixture_text("transactions.json"))
    )

    result = fetch(fetch_transactions, moved, since=SINCE, until=UNTIL)

    assert result.failures == []
    assert len(result.items) == 2
    assert transaction_hashes(moved) == [old, new]
    assert numbers_asked(moved) == 1


def test_a_400_with_hashes_that_are_still_current_is_not_sent_twice(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """The list is asked again, shows the same hashes: each account's 400 reported, no second round."""
    fetch(fetch_accounts, router)
    refused = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    refused.get(f"{API}/accounts/accountNumbers").mock(
        return_value=json_response(account_numbers_body(list(brokerage.items())))
    )
    refused.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response('{"message":"Bad request","errors":["bad symbol"]}', 400)
    )

    result = fetch(fetch_transactions, refused, since=SINCE, until=UNTIL, symbol="???")

    assert sorted(f.account or "" for f in result.failures) == ["****1111", "****2222"]
    assert all("HTTP 400" in f.error.message for f in result.failures)
    assert numbers_asked(refused) == 1
    assert sorted(transaction_hashes(refused)) == sorted(brokerage.values())  # once each


def test_a_stored_hash_is_not_retried_for_other_errors(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """A 500 with stored hashes is the failure it is: no second list, no second round."""
    fetch(fetch_accounts, router)
    failing = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    failing.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response('{"message":"boom","errors":["boom"]}', 500)
    )

    result = fetch(fetch_transactions, failing, since=SINCE, until=UNTIL)

    assert sorted(f.label for f in result.failures) == ["brokerage ****1111", "brokerage ****2222"]
    assert result.succeeded == 0
    assert numbers_asked(failing) == 0
    # Each window once per attempt (500 is not retried), for the two accounts.
    assert sorted(transaction_hashes(failing)) == sorted(brokerage.values())


def test_a_selected_account_missing_from_the_recent_list_is_looked_up(
    router: respx.MockRouter,
) -> None:
    """An account opened since the last list: selecting it asks Schwab for the list again."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [FIRST])
    fetch(fetch_accounts, router)

    grown = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    hashes = mock_connection_api(grown, "token-b", [FIRST, SECOND])

    result = fetch(fetch_transactions, grown, account="2222", since=SINCE, until=UNTIL)

    assert result.failures == []
    assert {t.account for t in result.items} == {"****2222"}
    assert numbers_asked(grown) == 1  # asked once, not again for the new account's row
    assert transaction_hashes(grown) == [hashes[SECOND]]


def test_an_account_the_last_list_dropped_is_not_asked_for(router: respx.MockRouter) -> None:
    """A closed account stays in the cache but is not in the last list: no call for it."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [FIRST, SECOND])
    fetch(fetch_accounts, router)

    shrunk = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    hashes = mock_connection_api(shrunk, "token-b", [FIRST])
    fetch(fetch_accounts, shrunk)
    shrunk.reset()

    result = fetch(fetch_transactions, shrunk, since=SINCE, until=UNTIL)

    assert result.failures == []
    assert numbers_asked(shrunk) == 0
    assert transaction_hashes(shrunk) == [hashes[FIRST]]


# --- partial and total failure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "job", [fetch_accounts, fetch_positions, fetch_transactions], ids=lambda f: f.__name__
)
def test_one_failing_connection_is_a_partial_failure(router: respx.MockRouter, job: Fetch) -> None:
    """Connection alpha answers, beta's API fails with 500: alpha's items, and PartialFailure (exit 3)."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(router, "token-alpha", [FIRST])
    failing = router.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"})
    failing.mock(
        return_value=json_response('{"message":"Internal Server Error","errors":[]}', 500, "c-500")
    )

    dates = {"since": SINCE, "until": UNTIL} if job is fetch_transactions else {}
    result = fetch(job, router, **dates)

    assert result.items
    seen = {i.connection if isinstance(i, Account) else i.account for i in result.items}
    assert seen == ({"alpha"} if job is fetch_accounts else {"****1111"})
    assert result.succeeded == 1
    assert [f.connection for f in result.failures] == ["beta"]
    assert failing.call_count >= 1
    error = result.outcome()
    assert isinstance(error, PartialFailure)
    assert error.exit_code == ExitCode.PARTIAL
    assert int(error.exit_code) == 3
    assert "1 of 2 connections failed" in error.message
    assert "beta" in error.message
    assert "HTTP 500" in error.message
    assert "c-500" in error.message


def test_dead_refresh_tokens_everywhere_require_a_new_login(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both connections' access tokens expired and their refresh refused: ReauthRequired (exit 4)."""
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)
    add_connection("alpha", "token-alpha", access_in=dt.timedelta(minutes=-1))
    add_connection("beta", "token-beta", access_in=dt.timedelta(minutes=-1))
    refused = router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": "unsupported_token_type",
                "error_description": "400 Bad Request: refresh_token_authentication_error",
            },
            headers={CORRELATION: "c-refresh"},
        )
    )
    api = router.get(url__startswith=API).mock(return_value=json_response("[]"))

    result = fetch(fetch_accounts, router)

    assert result.items == []
    assert result.succeeded == 0
    # Each connection tried its own refresh token (its two concurrent calls may each try).
    sent = {
        urllib.parse.parse_qs(c.request.content.decode())["refresh_token"][0] for c in refused.calls
    }
    assert sent == {"refresh-for-token-alpha", "refresh-for-token-beta"}
    assert api.call_count == 0
    for failure in result.failures:
        assert isinstance(failure.error, ReauthRequired)
        assert failure.error.hint == f"run: dashtam connect schwab --name {failure.connection}"
    error = result.outcome()
    assert isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.REAUTH
    assert int(error.exit_code) == 4
    assert error.hint is not None
    assert "dashtam connect schwab" in error.hint

    async def statuses() -> set[str]:
        async with open_vault(load_settings()) as vault:
            return {info.status for info in await list_connections(vault)}

    assert asyncio.run(statuses()) == {"reauth_required"}


def test_a_401_refreshes_through_the_token_manager_and_retries(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API refuses the stored token: one refresh, then the calls go with the new token."""
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)
    add_connection("brokerage", "token-old")
    router.get(url__startswith=API, headers={"Authorization": "Bearer token-old"}).mock(
        return_value=json_response('{"message":"Unauthorized","errors":[]}', 401)
    )
    mock_connection_api(router, "token-new", [FIRST])
    refresh = router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "access_token": "token-new",
                "refresh_token": "refresh-for-token-old",
                "id_token": "eyJ.x.y",
                "token_type": "Bearer",
                "scope": "api",
                "expires_in": 1800,
            },
        )
    )

    result = fetch(fetch_accounts, router)

    assert result.failures == []
    assert [a.number for a in result.items] == ["****1111"]
    assert refresh.call_count == 1


# --- selecting an account -------------------------------------------------------------------------


@pytest.mark.usefixtures("brokerage")
def test_account_selector_by_id_and_last_digits(router: respx.MockRouter) -> None:
    """ACCOUNT is the stable id or the last digits of the number."""
    accounts = {a.number: a.id for a in fetch(fetch_accounts, router).items}

    by_digits = fetch(fetch_accounts, router, account="2222").items
    by_id = fetch(fetch_accounts, router, account=accounts["****2222"]).items

    assert [a.number for a in by_digits] == ["****2222"]
    assert [a.id for a in by_id] == [accounts["****2222"]]


def test_ambiguous_and_unknown_selectors(router: respx.MockRouter) -> None:
    """Digits matching two accounts ask for more digits (exit 2); digits matching none say so."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", ["11111111", "21111111"])

    ambiguous = fetch(fetch_positions, router, account="1111").outcome()
    assert isinstance(ambiguous, InputError)
    assert ambiguous.exit_code == ExitCode.USAGE
    assert "matches 2 accounts" in ambiguous.message
    assert ambiguous.hint is not None
    assert "more digits" in ambiguous.hint
    assert "11111111" not in ambiguous.message

    with pytest.raises(InputError, match="no account matches '9999'"):
        fetch(fetch_positions, router, account="9999")


def test_no_connections_is_a_clear_error(router: respx.MockRouter) -> None:
    """With no connection (and even no vault yet) the error says to log in first."""
    for _ in range(2):
        with pytest.raises(DashtamError) as caught:
            fetch(fetch_accounts, router)
        assert caught.value.message == "there are no connections yet"
        assert caught.value.hint == "log in first: dashtam connect schwab"

        async def create_empty_vault() -> None:
            async with open_vault(load_settings(), OpenOptions(create=True)):
                pass

        asyncio.run(create_empty_vault())
    assert router.calls.call_count == 0


def test_outcome_without_failures_is_none() -> None:
    """Nothing failed: no error to exit with."""
    assert FetchResult([1], [], succeeded=1).outcome() is None


def test_outcome_of_one_failure_among_one_is_that_failure() -> None:
    """The only connection failed: its own error, with its own exit code."""
    error = ReauthRequired("gone", hint="run: dashtam connect schwab --name a")
    assert FetchResult([], [Failure("a", error)], succeeded=0).outcome() is error


@pytest.mark.usefixtures("brokerage")
def test_accounts_take_three_calls(router: respx.MockRouter) -> None:
    """Accounts need the numbers (for the hashes), the accounts and their nicknames: no more."""
    fetch(fetch_accounts, router)
    urls = sorted(str(c.request.url) for c in router.calls)
    assert urls == [
        f"{API}/accounts/accountNumbers",
        f"{API}/accounts?fields=positions",
        f"{API}/userPreference",
    ]


def test_the_nicknames_are_asked_for_alongside_the_accounts(router: respx.MockRouter) -> None:
    """The three calls are in flight together: each is answered only once all three have arrived."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [FIRST])
    arrived: set[str] = set()
    together = asyncio.Event()

    def held(route: respx.Route) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
        answer = route.return_value
        assert answer is not None

        async def respond(request: httpx.Request) -> httpx.Response:
            arrived.add(request.url.path)
            if len(arrived) == 3:  # numbers, accounts, nicknames
                together.set()
            # Called one after the other, the first call would wait here for ever.
            await asyncio.wait_for(together.wait(), timeout=30)
            return answer

        return respond

    for route in router.routes:
        if route.return_value is not None and "transactions" not in repr(route.pattern):
            route.side_effect = held(route)

    result = fetch(fetch_accounts, router)

    assert result.failures == []
    assert [a.name for a in result.items] == ["Trading Brokerage"]
    assert len(arrived) == 3


@pytest.mark.parametrize(
    ("nicknames", "expected"),
    [
        ({FIRST: "Roth IRA", SECOND: "Joint"}, ["Roth IRA", "Joint"]),
        ({FIRST: "Roth IRA"}, ["Roth IRA", "Margin ****2222"]),  # SECOND not listed
        ({FIRST: None, SECOND: ""}, ["Margin ****1111", "Margin ****2222"]),  # no nickName
        ({FIRST: "  \x1b[31mRoth\x1b[0m\u202e IRA\n"}, ["Roth IRA", "Margin ****2222"]),
        ({FIRST: "IRA 11111111", SECOND: "22222222"}, ["IRA ***", "Margin ****2222"]),
        (
            {FIRST: "Rollover IRA " + "word " * 20},  # cut to 40 characters
            ["Rollover IRA word word word word word w…", "Margin ****2222"],
        ),
    ],
    ids=["both", "one-missing", "no-nickname", "control-characters", "the-number", "long"],
)
def test_accounts_are_named_by_their_nicknames(
    router: respx.MockRouter, nicknames: dict[str, str | None], expected: list[str]
) -> None:
    """An account's nickName names it; else its type and masked number. No control, no number."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [FIRST, SECOND], nicknames=nicknames)

    result = fetch(fetch_accounts, router)

    assert result.failures == []
    assert [a.name for a in result.items] == expected
    assert [a.number for a in result.items] == ["****1111", "****2222"]


def test_the_user_preference_as_the_spec_declares_it(router: respx.MockRouter) -> None:
    """The spec declares a list of preference objects (live sends one): both are read."""
    add_connection("brokerage", "token-b")
    first = json.loads(user_preference_body({FIRST: "Roth IRA"}))
    second = json.loads(user_preference_body({SECOND: "Joint"}))
    router.get(f"{API}/userPreference").mock(
        return_value=json_response(json.dumps([first, second]))
    )
    mock_connection_api(router, "token-b", [FIRST, SECOND])

    result = fetch(fetch_accounts, router)

    assert [a.name for a in result.items] == ["Roth IRA", "Joint"]


@pytest.mark.parametrize(
    "answer",
    [
        json_response('{"message":"Internal error","errors":["boom"]}', 500),
        json_response('{"errors":[{"status":403,"title":"Forbidden"}]}', 403),
        httpx.Response(403, content=b"<html><body>Access Denied</body></html>"),
        json_response('{"accounts": "none"}'),
        json_response('"nothing"'),
        json_response('{"accounts": [{"accountNumber": {"n": 1}, "nickName": "x"}]}'),
    ],
    ids=["500", "403", "html", "accounts-text", "text", "number-object"],
)
def test_accounts_print_when_the_nicknames_fail(
    router: respx.MockRouter, answer: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    """Any failure of userPreference: the accounts, by type and number, and one warning."""
    add_connection("brokerage", "token-b")
    router.get(f"{API}/userPreference").mock(return_value=answer)
    mock_connection_api(router, "token-b", [FIRST, SECOND])

    with caplog.at_level("WARNING", logger="dashtam_cli"):
        result = fetch(fetch_accounts, router)

    assert result.failures == []
    assert result.outcome() is None
    assert [a.name for a in result.items] == ["Margin ****1111", "Margin ****2222"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "brokerage: the accounts' nicknames are unavailable" in warnings[0]
    assert "user preference" in warnings[0]


def test_the_numbers_of_the_preferences_are_masked_at_once(router: respx.MockRouter) -> None:
    """An account number only userPreference lists is registered as a secret as it arrives."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [FIRST], nicknames={FIRST: "Roth", "98765432": "Old"})
    assert redact.redact("98765432") == "98765432"

    result = fetch(fetch_accounts, router)

    assert [a.name for a in result.items] == ["Roth"]
    assert redact.redact("account 98765432") == "account ***"


def test_a_failure_leaves_no_call_running(router: respx.MockRouter) -> None:
    """The numbers fail fast while the accounts are slow: both calls are audited before it returns."""
    add_connection("brokerage", "token-b")
    numbers_failed = asyncio.Event()

    async def failing_numbers(_request: httpx.Request) -> httpx.Response:
        numbers_failed.set()
        return json_response('{"message":"Bad Request","errors":[]}', 400, "c-fast")

    async def slow_accounts(_request: httpx.Request) -> httpx.Response:
        # Still running when the numbers fail, however slow the machine; the
        # bound only turns a fetch that never asks for the numbers into a failure.
        await asyncio.wait_for(numbers_failed.wait(), 60)
        return json_response("[" + fixture_text("account.json") + "]", correlation="c-slow")

    router.get(f"{API}/accounts/accountNumbers").mock(side_effect=failing_numbers)
    router.get(f"{API}/accounts").mock(side_effect=slow_accounts)
    router.get(f"{API}/userPreference").mock(
        return_value=json_response(user_preference_body({}), correlation="c-names")
    )

    result = fetch(fetch_accounts, router)

    assert [f.connection for f in result.failures] == ["brokerage"]

    async def audited() -> set[tuple[str, str | None]]:
        async with open_vault(load_settings()) as vault:
            entries = await list_audit(vault, connection="brokerage")
        return {(e.operation, e.correlation_id) for e in entries}

    assert asyncio.run(audited()) == {
        ("schwab.account_numbers", "c-fast"),
        ("schwab.accounts", "c-slow"),
        ("schwab.user_preference", "c-names"),
    }
