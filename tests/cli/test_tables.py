"""Tables for people: whole numbers, dates and ids on one line per row, at 80 and 60 columns."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from dashtam_cli.cli.output import Renderer
from dashtam_cli.core.models import (
    Account,
    AuditEntry,
    ConnectionInfo,
    ConnectionState,
    Kind,
    PathEntry,
    Position,
    RefreshResult,
    RefreshState,
    TokenState,
    TokenStatus,
    Transaction,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from pydantic import BaseModel

WHEN = dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC)
ACCOUNT_ID = "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"

ACCOUNTS = [
    Account(
        id=ACCOUNT_ID,
        connection="brokerage-main",
        provider="schwab",
        name="Individual Brokerage Margin ****4063",
        type="MARGIN",
        number="****4063",
        currency="USD",
        cash=Decimal(0),
        market_value=Decimal(144752),
        total_value=Decimal("1234567890.5"),
        buying_power=Decimal("-474.5"),
        fetched_at=WHEN,
    ),
    Account(
        id=ACCOUNT_ID,
        connection="ira",
        provider="schwab",
        name="Roth IRA",
        type="CASH",
        number="****2373",
        currency="USD",
        cash=Decimal("1.005"),
        market_value=None,
        total_value=Decimal("12.3456"),
        buying_power=None,
        fetched_at=WHEN,
    ),
]

POSITIONS = [
    Position(
        account_id=ACCOUNT_ID,
        account="****4063",
        symbol="META  270124C00550000",
        description="META PLATFORMS INC 01/24/2027 $550 Call",
        asset_type="OPTION",
        quantity=Decimal("-1.0"),
        average_price=Decimal("12.3456"),
        market_value=Decimal("-2215.5"),
        day_profit_loss=Decimal("12345.678"),
    ),
    Position(
        account_id=ACCOUNT_ID,
        account="****2373",
        symbol="VTI",
        description="VANGUARD TOTAL STOCK MARKET ETF",
        asset_type="COLLECTIVE_INVESTMENT",
        quantity=Decimal("1234.56789"),
        average_price=Decimal("249.89"),
        market_value=Decimal("308520.77"),
        day_profit_loss=None,
    ),
]

TRANSACTIONS = [
    Transaction(
        id="9c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
        account_id=ACCOUNT_ID,
        account="****4063",
        time=WHEN,
        trade_date=dt.date(2025, 1, 17),
        settlement_date=dt.date(2025, 1, 21),
        type="DIVIDEND_OR_INTEREST",
        kind=Kind.DIVIDEND,
        description="CLIENT REQUESTED ELECTRONIC FUNDING DISBURSEMENT (REFERENCE 1234567890)",
        amount=Decimal("-1234567.8"),
        symbol="MRVL  250321C00155000",
        quantity=Decimal(3),
        price=Decimal("4.5678"),
        fees=Decimal("2.82"),
        status="VALID",
    ),
]

AUDIT = [
    AuditEntry(
        time=WHEN,
        connection="brokerage-main",
        provider="schwab",
        operation="fetch_transactions",
        outcome="error",
        http_status=503,
        duration_ms=123456,
        correlation_id="a1b2c3d4-e5f6-7a8b-9c0d-e1f2a3b4c5d6",
        detail="the server was busy",
        id="b1c2d3e4-f5a6-7b8c-9d0e-f1a2b3c4d5e6",
    )
]

CONNECTIONS = [
    ConnectionInfo(
        name="brokerage-main",
        provider="schwab",
        status=ConnectionState.REAUTH_REQUIRED,
        created_at=WHEN,
        updated_at=WHEN,
        access_expires_at=WHEN + dt.timedelta(minutes=30),
        refresh_expires_at=WHEN + dt.timedelta(days=7),
        id="c1d2e3f4-a5b6-7c8d-9e0f-a1b2c3d4e5f6",
    )
]

TOKENS = [
    TokenStatus(
        connection="brokerage-main",
        provider="schwab",
        state=TokenState.REFRESH_EXPIRING,
        access_expires_at=WHEN,
        access_expires_in_seconds=1800,
        access_expires="in 29 min",
        refresh_expires_at=WHEN,
        refresh_expires_in_seconds=3600,
        refresh_expires="in 1 h 0 min",
        action="log in again soon: dashtam connect schwab --name brokerage-main",
    )
]

REFRESHES = [
    RefreshResult(
        connection="brokerage-main",
        provider="schwab",
        result=RefreshState.REAUTH_REQUIRED,
        access_expires_at=WHEN,
        refresh_expires_at=WHEN,
        message="the refresh token was refused; log in again: dashtam connect schwab",
    )
]

PATHS = [
    PathEntry(
        name="config_file", path=Path("/home/someone/" + "deep/" * 12 + "x.toml"), exists=True
    )
]

TABLES: list[tuple[type[BaseModel], Sequence[BaseModel]]] = [
    (Account, ACCOUNTS),
    (Position, POSITIONS),
    (Transaction, TRANSACTIONS),
    (AuditEntry, AUDIT),
    (ConnectionInfo, CONNECTIONS),
    (TokenStatus, TOKENS),
    (RefreshResult, REFRESHES),
]

# Cells that must appear whole, each on the line of its row.
WHOLE: dict[type[BaseModel], list[list[str]]] = {
    Account: [["****4063", "0.00", "1234567890.50"], ["****2373", "1.01", "12.35"]],
    Position: [
        ["META 01/24/2027 $550 Call", "-1.0", "-2215.50"],
        ["VTI", "1234.56789"],
    ],
    Transaction: [["2025-01-17 17:19", "-1234567.80"]],
    AuditEntry: [["2025-01-17 17:19", "fetch_transactions", "error"]],
    ConnectionInfo: [["brokerage-main", "reauth_required", "2025-01-24 17:19"]],
    TokenStatus: [["brokerage-main", "refresh_expiring", "in 1 h 0 min"]],
    RefreshResult: [["brokerage-main", "reauth_required", "2025-01-17 17:19"]],
}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Tables show local times: these tests run with the local zone set to UTC."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


def table(model: type[BaseModel], items: Sequence[BaseModel], width: int) -> list[str]:
    """The table's lines, rendered as on a terminal ``width`` columns wide."""
    stream = io.StringIO()
    console = Console(file=stream, width=width, color_system=None, legacy_windows=False)
    Renderer(fmt="table", console=console, stream=stream).rows(model, items)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize(("model", "items"), TABLES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_row_is_one_line_with_its_numbers_dates_and_ids_whole(
    model: type[BaseModel], items: Sequence[BaseModel], width: int
) -> None:
    """No line is wider than the terminal, one line per row, and no number, date or id is cut."""
    lines = table(model, items, width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) <= set("─━ "))
    rows = lines[rule + 1 :]
    assert len(rows) == len(items), "\n".join(lines)
    for row, cells in zip(rows, WHOLE[model], strict=False):
        for cell in cells:
            assert cell in row, f"{cell!r} not whole in {row!r}\n" + "\n".join(lines)


def test_free_text_is_cut_with_an_ellipsis() -> None:
    """A long description is cut with "…" on its row's line; the amount beside it stays whole."""
    lines = table(Transaction, TRANSACTIONS, 80)
    row = lines[-1]
    assert "…" in row
    assert "CLIENT REQUE" in row
    assert "(REFERENCE 1234567890)" not in "\n".join(lines)
    assert row.rstrip().endswith("-1234567.80")


def test_narrow_tables_drop_columns_by_priority() -> None:
    """At 60 columns the account table keeps the masked number and money, not the long name."""
    wide = "\n".join(table(Account, ACCOUNTS, 200))
    narrow = "\n".join(table(Account, ACCOUNTS, 60))
    assert "Individual Brokerage Margin ****4063" in wide
    assert "Individual" not in narrow
    assert "****4063" in narrow
    assert "total" in narrow


def test_paths_fold_rather_than_widen() -> None:
    """A long path wraps inside its column; the table never exceeds the terminal."""
    lines = table(PathEntry, PATHS, 60)
    assert all(len(line) <= 60 for line in lines)
    assert "x.toml" in "\n".join(lines)


def test_money_in_tables_has_two_places_aligned_right() -> None:
    """USD shows cents (rounded half up) and the column is right-aligned; prices keep digits."""
    lines = table(Account, ACCOUNTS, 200)
    rows = lines[-2:]
    assert "1.01" in rows[1]  # 1.005 rounded half up
    assert "0.00" in rows[0]
    ends = {line.index("0.00") + 4 for line in rows[:1]} | {rows[1].index("1.01") + 4}
    assert len(ends) == 1  # right-aligned: the values end in the same column
    positions = "\n".join(table(Position, POSITIONS, 200))
    assert "12.3456" in positions  # a price keeps its precision
    assert "12345.68" in positions  # day P/L is money


def test_money_uses_the_currencys_decimal_places() -> None:
    """An amount in yen has no decimal places in a table; JSON keeps it exact."""
    yen = ACCOUNTS[1].model_copy(update={"currency": "JPY", "cash": Decimal("1500.4")})
    lines = table(Account, [yen], 200)
    assert re.search(r"\b1500 JPY\b", lines[-1])
    assert "1500.4" not in lines[-1]


def test_amounts_in_a_custom_currency_say_which_never_passing_for_dollars() -> None:
    """A SimpleFIN custom currency (a URL) shows its short name beside every amount; USD none."""
    miles = ACCOUNTS[1].model_copy(
        update={"currency": "https://bridge.example/currency/miles", "cash": Decimal(83997)}
    )
    lines = table(Account, [ACCOUNTS[0], miles], 200)
    assert "83997.00 miles" in lines[-1]
    assert "miles" not in lines[-2]
    assert "USD" not in "\n".join(lines)


def test_times_are_local_to_the_minute_with_the_zone_in_the_header() -> None:
    """In New York the 17:19 UTC time shows as 12:19, and the header names EST once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "America/New_York")
        time.tzset()
        lines = table(Transaction, TRANSACTIONS, 120)
    header = lines[0]
    assert "time (EST)" in header
    assert "2025-01-17 12:19" in lines[-1]
    assert "12:19:49" not in lines[-1]
    assert sum(line.count("(EST)") for line in lines) == 1


def test_json_and_csv_money_has_at_least_two_decimal_places() -> None:
    """Money is "0.00", "144752.00", exact beyond cents; quantities and prices keep their digits."""
    stream = io.StringIO()
    Renderer(fmt="json", console=Console(file=stream), stream=stream).rows(Account, ACCOUNTS)
    first, second = json.loads(stream.getvalue())
    assert first["cash"] == "0.00"
    assert first["market_value"] == "144752.00"
    assert first["buying_power"] == "-474.50"
    assert second["cash"] == "1.005"
    assert second["market_value"] is None
    stream = io.StringIO()
    Renderer(fmt="csv", console=Console(file=stream), stream=stream).rows(Position, POSITIONS)
    body = stream.getvalue().splitlines()
    assert ",-1.0,12.3456,-2215.50,12345.678" in body[1]
    assert ",1234.56789,249.89,308520.77," in body[2]


def test_one_record_shows_local_time_to_the_minute_with_its_zone_and_money_with_cents() -> None:
    """`accounts show` as a table: 12:19 EST for 17:19 UTC in New York, cash as 0.00."""
    stream = io.StringIO()
    console = Console(file=stream, width=80, color_system=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "America/New_York")
        time.tzset()
        Renderer(fmt="table", console=console, stream=stream).one(ACCOUNTS[0])
    text = stream.getvalue()
    assert re.search(r"fetched at\s+2025-01-17 12:19 EST\s*\n", text)
    assert re.search(r"cash\s+0\.00\s*\n", text)
    assert re.search(r"market value\s+144752\.00\s*\n", text)
