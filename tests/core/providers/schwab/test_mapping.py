"""Schwab's reference fixtures, synced and read back: every field mapped exactly, money as Decimal."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
import respx
from schwab_support import (
    BASE_URL,
    CASH_CURRENT,
    add_connection,
    cash_account_body,
    fixture_text,
    mock_connection_api,
)
from sync_support import NOW, accounts, at, positions, run_sync, transactions

from dashtam_cli.core.models import Kind
from dashtam_cli.core.providers.base import _TXN_NAMESPACE, transaction_id
from dashtam_cli.core.providers.schwab import mapping

D = decimal.Decimal
FIRST, SECOND = "11111111", "22222222"


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def synced(router: respx.MockRouter) -> None:
    """Sync every connection at NOW; nothing may fail."""
    result = run_sync(router, clock=at(NOW))
    assert result.outcome.failures == []


def fixture_positions() -> list[dict[str, Any]]:
    """The positions of account.json, parsed independently of the code under test."""
    raw = json.loads(fixture_text("account.json"), parse_float=D)
    found: list[dict[str, Any]] = raw["securitiesAccount"]["positions"]
    return found


@pytest.fixture
def brokerage(router: respx.MockRouter) -> dict[str, str]:
    """One connection, 'brokerage', with two accounts answered from the fixtures, synced."""
    add_connection("brokerage", "token-b")
    hashes = mock_connection_api(router, "token-b", [FIRST, SECOND])
    synced(router)
    return hashes


@pytest.mark.usefixtures("brokerage")
def test_account_from_the_fixture() -> None:
    """account.json maps to an Account: masked number, currentBalances, summed market value."""
    found, _ = accounts()

    by_number = {a.number: a for a in found}
    assert sorted(by_number) == ["****1111", "****2222"]
    account = by_number["****1111"]
    assert account.connection == "brokerage"
    assert account.provider == "schwab"
    # user_preferences.json's nickname; the second account has the other one.
    assert account.name == "Trading Brokerage"
    assert by_number["****2222"].name == "Contributory"
    assert account.type == "MARGIN"
    assert account.currency == "USD"
    assert account.cash == D("51420.89")
    assert account.total_value == D("50946.39")
    assert account.buying_power == D("88853.04")
    # longOptionMarketValue 436.0 + shortOptionMarketValue -910.5.
    assert account.market_value == D("-474.5")
    assert account.fetched_at == NOW
    assert account.synced_at == NOW
    dumped = json.dumps([a.model_dump(mode="json") for a in found])
    assert FIRST not in dumped
    assert SECOND not in dumped


def test_a_cash_account_shows_cash_available_for_trading(router: respx.MockRouter) -> None:
    """A CASH account has no buyingPower: cashAvailableForTrading is its buying power."""
    add_connection("ira", "token-i")
    body = "[" + cash_account_body(FIRST) + "]"
    assert "buyingPower" not in body
    mock_connection_api(router, "token-i", [FIRST], accounts=body)
    synced(router)

    (account,), _ = accounts()

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
    synced(router)

    (account,), _ = accounts()

    assert account.cash == D("12040.55")
    assert account.buying_power == D("12190.55")
    assert account.total_value == D("63475.41")


@pytest.mark.usefixtures("brokerage")
def test_positions_from_the_fixture() -> None:
    """Positions carry long minus short, option symbols with their spaces, exact money."""
    found, _ = accounts(account="1111")
    found_positions, _ = positions(account="1111")

    raw = fixture_positions()
    assert len(found_positions) == len(raw) == 10
    assert {p.account for p in found_positions} == {"****1111"}
    assert {p.account_id for p in found_positions} == {found[0].id}
    assert sorted(p.symbol for p in found_positions) == sorted(
        r["instrument"]["symbol"] for r in raw
    )
    by_symbol = {p.symbol: p for p in found_positions}
    short = by_symbol["META  250131P00525000"]  # shortQuantity 1.0 in the fixture
    assert short.quantity == -1
    assert short.average_price == D("2.7733")
    assert short.market_value == D("-75.0")
    assert short.day_profit_loss == D("33.5")
    assert short.asset_type == "OPTION"
    assert short.description == "META PLATFORMS INC 01/31/2025 $525 Put"
    assert by_symbol["META  250131P00510000"].quantity == 1
    shorts = sorted(r["instrument"]["symbol"] for r in raw if r["shortQuantity"] > 0)
    assert sorted(p.symbol for p in found_positions if p.quantity < 0) == shorts
    assert len(shorts) == 5


def test_transactions_from_the_fixture(brokerage: dict[str, str]) -> None:
    """transactions.json: +0000 times, dates, CURRENCY fee lines summed, amount = netAmount."""
    found, _ = transactions(account="1111")

    assert len(found) == 2
    assert brokerage[FIRST] not in json.dumps([t.model_dump(mode="json") for t in found])
    sold, bought = sorted(found, key=lambda t: t.amount)
    assert sold.time == dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC)
    assert sold.time.utcoffset() == dt.timedelta(0)
    assert sold.trade_date == dt.date(2025, 1, 17)
    assert type(sold.trade_date) is dt.date
    assert sold.settlement_date is None  # absent from the fixture
    assert sold.type == "TRADE"
    assert sold.kind is Kind.TRADE
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
    assert len({t.id for t in found}) == 2


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

    700.00 for the option, then a commission of 2.25, an exchange fee of 0.55
    and an NFA fee of 0.02 sent without a ``feeType``: ``netAmount`` is -702.82.
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
    body = json.dumps([futures_option_trade()], default=float)
    assert '"netAmount": -702.82' in body
    assert '"amount": 0.02, "cost": -0.02}' in body
    mock_connection_api(router, "token-b", [FIRST], transactions=body)
    synced(router)

    (txn,), _ = transactions()

    assert txn.symbol == "./EW4H25C6000"
    assert txn.amount == D("-702.82")
    assert txn.fees == D("2.82")
    assert txn.price == D("14.00")
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
    synced(router)

    (txn,), _ = transactions()

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
    """The fast id is exactly uuid5 of the namespace and "account:activity", as stored ids were."""
    expected = str(uuid.uuid5(_TXN_NAMESPACE, f"{account_id}:{activity}"))
    assert transaction_id(account_id, activity) == expected


@pytest.mark.parametrize(
    ("schwab_type", "description", "kind"),
    [
        ("TRADE", None, Kind.TRADE),
        ("DIVIDEND_OR_INTEREST", "ORDINARY DIVIDEND", Kind.DIVIDEND),
        ("DIVIDEND_OR_INTEREST", "BANK INTEREST", Kind.INTEREST),
        ("JOURNAL", "NON-RESIDENT TAX WITHHOLDING", Kind.TAX),
        ("JOURNAL", "ADR MGMT FEE", Kind.FEE),
        ("JOURNAL", None, Kind.TRANSFER),
        ("ACH_RECEIPT", None, Kind.DEPOSIT),
        ("WIRE_OUT", None, Kind.WITHDRAWAL),
        ("SOMETHING_NEW", None, Kind.OTHER),
    ],
)
def test_schwab_types_map_to_kinds(schwab_type: str, description: str | None, kind: Kind) -> None:
    """Each Schwab type has a kind; the description tells interest, tax and fees apart."""
    assert mapping.kind_of(schwab_type, description) is kind
