"""Net worth, its history and cash flow, against hand-computed figures from a synced vault."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.core.errors import InputError
from dashtam_cli.core.insights import cashflow, networth, networth_history, period_of
from dashtam_cli.core.models import CashFlow, NetWorth, NetWorthPoint
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, sync
from dashtam_cli.core.vault.vault import OpenOptions

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
MILES = "https://bridge.simplefin.test/currency/miles"


def _bridge() -> Bridge:
    checking = BridgeAccount("ACT-chk-1111", "Total Checking", "1000.00")
    checking.transactions = [
        BridgeTxn("pay", "3000.00", "PAYROLL", NOW - dt.timedelta(days=18)),
        # A card payment: out of checking, into the card two days later.
        BridgeTxn("out", "-500.00", "CARD PAYMENT", NOW - dt.timedelta(days=10)),
        BridgeTxn("food", "-120.50", "GROCER", NOW - dt.timedelta(days=9)),
    ]
    card = BridgeAccount("ACT-card-2222", "Sapphire Visa", "-250.00", conn_id="CON-2")
    card.transactions = [
        BridgeTxn("in", "500.00", "PAYMENT THANK YOU", NOW - dt.timedelta(days=8)),
        BridgeTxn("buy", "-80.25", "AIRLINE", NOW - dt.timedelta(days=7)),
    ]
    miles = BridgeAccount("ACT-miles-3333", "SkyMiles", "5000", conn_id="CON-2", currency=MILES)
    return Bridge(
        now=NOW,
        accounts=[checking, card, miles],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )


@pytest.fixture
def bridge(master_key: bytes, cli: CliCall) -> Iterator[Bridge]:
    """The Bridge with one connection, 'banks', synced once at NOW."""
    del master_key
    fake = _bridge()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        fake.install(router)
        token = fake.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        _sync_at(NOW)
        yield fake


def _sync_at(moment: dt.datetime) -> None:
    result = asyncio.run(sync(load_settings(), SyncOptions(clock=lambda: moment), OpenOptions()))
    assert result.outcome.outcome() is None


def _rows(rows: object) -> list[tuple[object, ...]]:
    assert isinstance(rows, list)
    out: list[tuple[object, ...]] = []
    for row in rows:
        if isinstance(row, NetWorth):
            out.append((row.group, row.currency, row.total, row.accounts))
        elif isinstance(row, NetWorthPoint):
            out.append((row.period, row.group, row.currency, row.total, row.accounts))
        elif isinstance(row, CashFlow):
            out.append((row.period, row.group, row.currency, row.inflow, row.outflow, row.net))
    return out


def test_period_of_each_interval() -> None:
    """A day is itself; a week starts on its Monday; a month on its first."""
    day = dt.date(2026, 3, 19)  # a Thursday
    assert period_of(day, "day") == day
    assert period_of(day, "week") == dt.date(2026, 3, 16)
    assert period_of(day, "month") == dt.date(2026, 3, 1)


@pytest.mark.usefixtures("bridge")
def test_networth_sums_per_currency_and_never_adds_miles_to_dollars() -> None:
    """1000.00 - 250.00 = 750.00 USD; 5000 miles apart; by institution splits them."""
    insight = asyncio.run(networth(load_settings(), OpenOptions()))
    assert _rows(insight.rows) == [
        ("total", "USD", Decimal("750.00"), 2),
        ("total", MILES, Decimal(5000), 1),
    ]
    assert insight.notes == []
    by = asyncio.run(networth(load_settings(), OpenOptions(), by="institution"))
    assert _rows(by.rows) == [
        ("Chase", "USD", Decimal("1000.00"), 1),
        ("Chase Card Services", "USD", Decimal("-250.00"), 1),
        ("Chase Card Services", MILES, Decimal(5000), 1),
    ]
    kinds = asyncio.run(networth(load_settings(), OpenOptions(), by="kind"))
    assert {(g, c) for g, c, _, _ in _rows(kinds.rows)} == {
        ("CHECKING", "USD"),
        ("CREDIT_CARD", "USD"),
        ("REWARDS", MILES),
    }


def test_the_same_account_through_two_connections_counts_once(bridge: Bridge, cli: CliCall) -> None:
    """A second connection of the same access: every total unchanged, a note per account."""
    token = bridge.setup_token()
    assert cli("connect", "simplefin", "--name", "again", input=f"{token}\n").exit_code == 0
    _sync_at(NOW + dt.timedelta(hours=1))
    insight = asyncio.run(networth(load_settings(), OpenOptions()))
    assert _rows(insight.rows) == [
        ("total", "USD", Decimal("750.00"), 2),
        ("total", MILES, Decimal(5000), 1),
    ]
    assert len(insight.notes) == 3
    assert all("counted once" in note for note in insight.notes)
    flows = asyncio.run(cashflow(load_settings(), OpenOptions()))
    totals = {(g, c): (i, o) for _, g, c, i, o, _ in _rows(flows.rows)}
    assert totals[("total", "USD")] == (Decimal("3000.00"), Decimal("-200.75"))
    shown = cli("networth", "-f", "json")
    assert shown.exit_code == 0, shown.stderr
    assert "counted once" in shown.stderr
    assert json.loads(shown.stdout)[0]["total"] == "750.00"


def test_networth_at_a_date_and_its_history_with_a_gap(bridge: Bridge) -> None:
    """Snapshots in March and May: --at picks each; April is a gap, not a zero."""
    may = NOW + dt.timedelta(days=60)
    bridge.now = may
    bridge.accounts[0].balance = "1800.00"
    _sync_at(may)
    settings = load_settings()
    at_march = asyncio.run(networth(settings, OpenOptions(), at=NOW + dt.timedelta(days=1)))
    assert _rows(at_march.rows)[0] == ("total", "USD", Decimal("750.00"), 2)
    now = asyncio.run(networth(settings, OpenOptions()))
    assert _rows(now.rows)[0] == ("total", "USD", Decimal("1550.00"), 2)
    history = asyncio.run(
        networth_history(settings, OpenOptions(), interval="month", today=may.date)
    )
    usd = [(p, t, n) for p, _, c, t, n in _rows(history.rows) if c == "USD"]
    assert usd == [
        (dt.date(2026, 3, 1), Decimal("750.00"), 2),
        (dt.date(2026, 4, 1), None, 0),
        (dt.date(2026, 5, 1), Decimal("1550.00"), 2),
    ]
    with pytest.raises(InputError, match="current positions only"):
        asyncio.run(networth(settings, OpenOptions(), by="asset-type", at=NOW))
    with pytest.raises(InputError, match="--interval"):
        asyncio.run(networth_history(settings, OpenOptions(), interval="year"))


@pytest.mark.usefixtures("bridge")
def test_cashflow_keeps_transfers_between_your_accounts_apart() -> None:
    """The card payment's two sides are a transfer; income 3000, spending 120.50 + 80.25."""
    insight = asyncio.run(cashflow(load_settings(), OpenOptions()))
    march = dt.date(2026, 3, 1)
    assert _rows(insight.rows) == [
        (march, "total", "USD", Decimal("3000.00"), Decimal("-200.75"), Decimal("2799.25")),
        (
            march,
            "transfers between your accounts",
            "USD",
            Decimal("500.00"),
            Decimal("-500.00"),
            Decimal("0.00"),
        ),
    ]
    by_kind = asyncio.run(cashflow(load_settings(), OpenOptions(), by="kind"))
    groups = {g: (i, o) for _, g, c, i, o, _ in _rows(by_kind.rows) if c == "USD"}
    assert groups["purchase"] == (Decimal(0), Decimal("-80.25"))
    assert "transfers between your accounts" in groups


def test_list_totals_count_an_account_reached_twice_once(bridge: Bridge, cli: CliCall) -> None:
    """The totals under `accounts list` sum each currency apart, a twice-reached account once."""
    from dashtam_cli.core.insights import totals
    from dashtam_cli.core.models import Total
    from dashtam_cli.core.queries import QueryOptions, query_accounts

    token = bridge.setup_token()
    assert cli("connect", "simplefin", "--name", "again", input=f"{token}\n").exit_code == 0
    _sync_at(NOW + dt.timedelta(hours=1))
    settings = load_settings()
    accounts, _ = asyncio.run(query_accounts(settings, QueryOptions(offline=True), OpenOptions()))
    assert len(accounts) == 6  # listed twice: both connections hold the three accounts
    insight = asyncio.run(totals(settings, OpenOptions(), accounts=accounts))
    rows = [t for t in insight.rows if isinstance(t, Total)]
    assert [(t.currency, t.cash, t.total_value, t.rows) for t in rows] == [
        ("USD", Decimal("750.00"), Decimal("750.00"), 2),
        (MILES, Decimal(5000), Decimal(5000), 1),
    ]
    assert len(insight.notes) == 3
    # Listing one connection only (the older copies): its own accounts are summed, no note.
    only_banks = [a for a in accounts if a.connection == "banks"]
    alone = asyncio.run(totals(settings, OpenOptions(), accounts=only_banks))
    assert [(t.currency, t.total_value, t.rows) for t in alone.rows if isinstance(t, Total)] == [
        ("USD", Decimal("750.00"), 2),
        (MILES, Decimal(5000), 1),
    ]
    assert alone.notes == []
