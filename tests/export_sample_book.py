"""A book with fixed ids and a pinned clock, for the OFX and QIF exports' tests and snapshots."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final

from dashtam_cli.core.export import Book, BookAccount, ExportOptions
from dashtam_cli.core.export.names import LIABILITY_TYPES, book_names
from dashtam_cli.core.models import Account, Kind, Position, Transaction

NOW: Final = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
BALANCE_AT: Final = dt.datetime(2026, 11, 29, 18, 30, 5, tzinfo=dt.UTC)
CHECKING: Final = "3c0e5c1e-0d51-4f55-9a51-1b3c1d0a9f7e"
CARD: Final = "7d2b6f0a-1c44-4e8e-8d7b-2f1f5e6a3b90"
BROKER: Final = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
MILES: Final = "0f9e8d7c-6b5a-4493-8271-605f4e3d2c1b"
MILES_CURRENCY: Final = "https://bridge.simplefin.test/currency/miles"
# Every character a format must escape or flatten, and a text longer than OFX's 32 and QIF's 64.
HOSTILE: Final = (
    'Café <b>&amp; "Bob\'s"</b> ; pay\nline two\r\nwith tab\t and a long tail that goes on '
    "and on past a hundred ch"
)
SHORT_HOSTILE: Final = "A&B <Co> \"q\" 'é'"


def _account(  # noqa: PLR0913 - a record's fields
    account_id: str,
    name: str,
    kind: str,
    cash: str,
    *,
    currency: str = "USD",
    available: str | None = None,
    market: str | None = None,
) -> Account:
    return Account(
        id=account_id,
        connection="banks",
        provider="simplefin",
        name=name,
        type=kind,
        number="****" + account_id[-4:],
        currency=currency,
        cash=Decimal(cash),
        market_value=Decimal(market) if market else None,
        total_value=Decimal(cash) + Decimal(market or 0),
        buying_power=Decimal(available) if available else None,
        fetched_at=BALANCE_AT,
        institution="Sandbox Bank",
    )


def _txn(  # noqa: PLR0913, PLR0917 - a record's fields
    number: int,
    account: Account,
    day: int,
    amount: str,
    kind: Kind,
    description: str | None,
    provider_type: str = "DEBIT",
) -> Transaction:
    return Transaction(
        id=f"00000000-0000-4000-8000-{number:012d}",
        account_id=account.id,
        account=account.number,
        time=dt.datetime(2026, 11, day, 17, 10, 42, tzinfo=dt.UTC),
        trade_date=None,
        settlement_date=None,
        type=provider_type,
        kind=kind,
        description=description,
        amount=Decimal(amount),
        symbol=None,
        quantity=None,
        price=None,
        fees=Decimal(0),
        status="POSTED",
    )


def sample_book() -> Book:
    """Checking, a card, a brokerage account with four kinds of positions, and a miles account."""
    checking = _account(CHECKING, "Everyday Checking", "CHECKING", "1520.33", available="1500.00")
    card = _account(CARD, "Sapphire Visa", "CREDIT_CARD", "-310.10")
    broker = _account(BROKER, "Roth IRA", "INVESTMENT", "10500.00", market="1500.00")
    miles = _account(MILES, "SkyMiles", "REWARDS", "83997", currency=MILES_CURRENCY)
    accounts = [checking, card, broker, miles]
    transactions = [
        _txn(1, checking, 2, "2500", Kind.DEPOSIT, "PAYROLL ACME", "CREDIT"),
        _txn(2, checking, 3, "-68.05", Kind.PURCHASE, HOSTILE),
        _txn(3, checking, 4, "-200.00", Kind.WITHDRAWAL, "ATM WITHDRAWAL 42 MAIN ST"),
        _txn(4, checking, 5, "-310.10", Kind.TRANSFER, "Transfer to card"),
        _txn(5, checking, 6, "0.07", Kind.INTEREST, "Interest paid", "CREDIT"),
        _txn(6, card, 3, "-310.10", Kind.PURCHASE, SHORT_HOSTILE),
        _txn(7, card, 5, "310.10", Kind.PAYMENT, "Payment thank you", "CREDIT"),
        _txn(8, card, 7, "-310.10", Kind.PURCHASE, None),
        _txn(9, broker, 4, "12.34", Kind.DIVIDEND, "VTI dividend", "DIVIDEND_OR_INTEREST"),
        _txn(10, broker, 8, "-1000.00", Kind.TRADE, "Bought 3 VTI", "TRADE"),
        _txn(11, broker, 9, "-0.65", Kind.FEE, "Option fee", "TRADE"),
        _txn(12, miles, 9, "500", Kind.DEPOSIT, "Miles earned", "CREDIT"),
    ]
    positions = [
        Position(
            account_id=BROKER,
            account=broker.number,
            symbol=symbol,
            description=description,
            asset_type=asset,
            quantity=Decimal(quantity),
            average_price=Decimal(average),
            market_value=Decimal(value),
            day_profit_loss=None,
        )
        for symbol, description, asset, quantity, average, value in (
            (
                "VTI",
                "VANGUARD TOTAL STOCK <ETF> & co",
                "COLLECTIVE_INVESTMENT",
                "3",
                "333.33",
                "900",
            ),
            ("VFIAX", "Vanguard 500 Index Admiral", "MUTUAL_FUND", "1.234", "400", "500.00"),
            ("META  270124C00550000", None, "OPTION", "-1", "2.5", "-300.00"),
            ("912828XX1", "US TREASURY NOTE", "FIXED_INCOME", "1000", "0.99", "400"),
        )
    ]
    institutions = {a.id: "Sandbox Bank" for a in accounts}
    names = book_names(accounts, {}, where="the test", institutions=institutions)
    book_accounts = [
        BookAccount(
            account=a,
            name=names.accounts[a.id],
            liability=a.type in LIABILITY_TYPES,
            institution="Sandbox Bank",
            balance=a.cash,
            balance_at=a.fetched_at,
            opening=None,
            opened=dt.date(2026, 11, 1),
        )
        for a in accounts
    ]
    return Book(
        accounts=book_accounts,
        positions=positions,
        transactions=sorted(transactions, key=lambda t: (t.time, t.id)),
        names=names,
        generated_at=NOW,
        options=ExportOptions(clock=lambda: NOW),
        by_id={item.account.id: item for item in book_accounts},
    )


def parse_qif(text: str) -> dict[str, tuple[str, list[dict[str, str]]]]:
    """Each account's type and its entries (field letter -> value), as an importer reads them."""
    accounts: dict[str, tuple[str, list[dict[str, str]]]] = {}
    current: str | None = None
    header: dict[str, str] = {}
    entry: dict[str, str] = {}
    section = ""
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("!"):
            section = line
            if line.startswith("!Type:"):
                assert current is not None
                assert line == f"!Type:{accounts[current][0]}"
            continue
        if line == "^":
            if section == "!Account":
                current = header["N"]
                accounts[current] = (header["T"], [])
                header = {}
            else:
                assert current is not None
                accounts[current][1].append(entry)
                entry = {}
            continue
        code, value = line[0], line[1:]
        target = header if section == "!Account" else entry
        assert code not in target, f"field {code} twice"
        target[code] = value
    assert not entry
    assert not header
    return accounts
