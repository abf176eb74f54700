"""A fixed book for the export formats' tests: pinned clock and ids, every kind of account.

Four accounts (checking, a credit card, a brokerage account with positions,
an airline-miles account in a SimpleFIN custom currency), transactions of
every counter, hostile descriptions, and the tools that read the formats
back (``bean-check``, ``hledger``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.export import Book, BookAccount, ExportOptions
from dashtam_cli.core.export.names import LIABILITY_TYPES, book_names
from dashtam_cli.core.models import Account, Kind, Position, Transaction

if TYPE_CHECKING:
    from collections.abc import Sequence

GENERATED: Final = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)
FETCHED: Final = dt.datetime(2026, 11, 28, 17, 0, tzinfo=dt.UTC)
MILES_URL: Final = "https://bank.example/currencies/flight-miles.json"
# Descriptions that break a careless writer of either format.
HOSTILE: Final = (
    'He said "hi" \\ back\\slash',
    "AMAZON; MKTP US*2K4\nline two\r\nthree\tfour",
    "; starts like a comment",
    "* starts like a status",
    "! flagged? (no)",
    "(CODE) looks like a code",
    "Café Zürich — 東京 ✈",
    "payee | note  ;; tail",
    "",
)


def _uuid(n: int) -> str:
    return str(uuid.UUID(int=0x6E06A737B1B25985928300000000 + n))


def _account(  # noqa: PLR0913 - a record's fields
    n: int, name: str, type_: str, number: str, cash: str, *, currency: str = "USD"
) -> Account:
    return Account(
        id=_uuid(1000 + n),
        connection="banks",
        provider="simplefin",
        name=name,
        type=type_,
        number=number,
        currency=currency,
        cash=Decimal(cash),
        market_value=None,
        total_value=Decimal(cash),
        buying_power=None,
        fetched_at=FETCHED,
        institution="Sandbox Bank",
    )


ACCOUNTS: Final = (
    _account(1, "Everyday Checking", "CHECKING", "****1111", "1520.33"),
    _account(2, "Sapphire Visa", "CREDIT_CARD", "****4321", "-310.10"),
    _account(3, "Roth IRA", "BROKERAGE", "****2222", "250.00"),
    _account(4, "Flight Miles", "OTHER", "****9999", "12000", currency=MILES_URL),
)
CHECKING, CARD, IRA, MILES = ACCOUNTS


def txn(  # noqa: PLR0913, PLR0917 - a record's fields, in the order of a table's columns
    n: int, account: Account, day: int, amount: str, kind: Kind, description: str | None
) -> Transaction:
    """A posted transaction ``n`` of ``account`` at noon UTC on November ``day``, 2026."""
    return Transaction(
        id=_uuid(n),
        account_id=account.id,
        account=account.number,
        time=dt.datetime(2026, 11, day, 12, 0, tzinfo=dt.UTC),
        trade_date=None,
        settlement_date=None,
        type=kind.value.upper(),
        kind=kind,
        description=description,
        amount=Decimal(amount),
        symbol=None,
        quantity=None,
        price=None,
        fees=Decimal(0),
        status="POSTED",
    )


def transactions(descriptions: Sequence[str] = ()) -> list[Transaction]:
    """The fixed transactions, oldest first; then one per extra description (hostile ones)."""
    fixed = [
        txn(1, CHECKING, 2, "2500.00", Kind.DEPOSIT, "PAYROLL ACME CORP"),
        txn(2, CHECKING, 3, "-68.05", Kind.PURCHASE, "HARDWARE DEPOT #940"),
        txn(3, CARD, 4, "-310.10", Kind.PURCHASE, "Airline"),
        txn(4, CHECKING, 5, "-500", Kind.TRANSFER, "To Roth IRA"),
        txn(5, IRA, 5, "500.00", Kind.TRANSFER, "From checking"),
        txn(6, IRA, 6, "-450.00", Kind.TRADE, "Bought 2 AAPL"),
        txn(7, IRA, 20, "1.23", Kind.DIVIDEND, "AAPL dividend"),
        txn(8, CHECKING, 21, "0.07", Kind.INTEREST, "Interest"),
        txn(9, CHECKING, 22, "-4.95", Kind.FEE, "Monthly fee"),
        txn(10, MILES, 23, "2500", Kind.OTHER, "Flight miles earned"),
        txn(11, CHECKING, 27, "-12.5", Kind.TAX, None),
    ]
    extra = [
        txn(100 + i, CHECKING, 26, f"-{i + 1}.01", Kind.PURCHASE, text)
        for i, text in enumerate(descriptions)
    ]
    return sorted(fixed + extra, key=lambda t: (t.time, t.id))


POSITIONS: Final = (
    Position(
        account_id=IRA.id,
        account=IRA.number,
        symbol="AAPL",
        description="Apple Inc",
        asset_type="EQUITY",
        quantity=Decimal(2),
        average_price=Decimal("225.00"),
        market_value=Decimal("460.00"),
        day_profit_loss=None,
    ),
    Position(
        account_id=IRA.id,
        account=IRA.number,
        symbol="META  270124C00550000",
        description='META Jan 24 2027 $550 "Call"',
        asset_type="OPTION",
        quantity=Decimal(1),
        average_price=None,
        market_value=None,
        day_profit_loss=None,
    ),
    Position(
        account_id=IRA.id,
        account=IRA.number,
        symbol="BRK.B",
        description=None,
        asset_type="EQUITY",
        quantity=Decimal(1),
        average_price=None,
        market_value=None,
        day_profit_loss=None,
    ),
)


def book(
    descriptions: Sequence[str] = (),
    *,
    options: ExportOptions | None = None,
    only: Sequence[Transaction] | None = None,
) -> Book:
    """The fixed book; ``only``: the transactions it prints (the rest still make the openings)."""
    everything = transactions(descriptions)
    printed = everything if only is None else list(only)
    institutions = {a.id: "Sandbox Bank" for a in ACCOUNTS}
    names = book_names(ACCOUNTS, {}, where="test", institutions=institutions)
    items = []
    for account in ACCOUNTS:
        mine = [t for t in everything if t.account_id == account.id]
        balance = account.cash
        assert balance is not None
        moved = sum((t.amount for t in mine if t.time <= FETCHED), Decimal(0))
        items.append(
            BookAccount(
                account=account,
                name=names.accounts[account.id],
                liability=account.type in LIABILITY_TYPES,
                institution="Sandbox Bank",
                balance=balance,
                balance_at=FETCHED,
                opening=balance - moved,
                opened=min((t.time.date() for t in mine), default=FETCHED.date()),
            )
        )
    return Book(
        accounts=items,
        positions=list(POSITIONS),
        transactions=printed,
        names=names,
        generated_at=GENERATED,
        options=options or ExportOptions(clock=lambda: GENERATED),
        by_id={item.account.id: item for item in items},
    )


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a format's own checker (``bean-check``, ``hledger``), its output as text."""
    tool = shutil.which(args[0]) or str(Path(__file__).parent.parent / ".venv/bin" / args[0])
    if not Path(tool).exists():
        import pytest

        pytest.fail(
            f"{args[0]} is not installed: the export tests check their output with it "
            "(sudo apt-get install hledger ledger; beancount comes with `uv sync`)"
        )
    return subprocess.run(
        [tool, *args[1:]], capture_output=True, text=True, check=False, timeout=120
    )
