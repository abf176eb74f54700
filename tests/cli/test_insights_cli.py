"""`dashtam networth`, `networth history` and `cashflow` through the CLI: formats, options, errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.cli.insights import _chart
from dashtam_cli.core.models import NetWorthPoint

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def synced(master_key: bytes, cli: CliCall) -> Iterator[Bridge]:
    """One synced SimpleFIN connection: a checking account and a card, paid from it."""
    del master_key
    checking = BridgeAccount("ACT-chk-1111", "Total Checking", "900.00")
    checking.transactions = [
        BridgeTxn("pay", "1000.00", "PAYROLL", NOW - dt.timedelta(days=3)),
        BridgeTxn("out", "-100.00", "CARD PAYMENT", NOW - dt.timedelta(days=2)),
    ]
    card = BridgeAccount("ACT-card-2222", "Sapphire Visa", "-40.00", conn_id="CON-2")
    card.transactions = [
        BridgeTxn("in", "100.00", "PAYMENT THANK YOU", NOW - dt.timedelta(days=1)),
        BridgeTxn("buy", "-140.00", "AIRLINE", NOW - dt.timedelta(days=1)),
    ]
    fake = Bridge(
        now=NOW, accounts=[checking, card], connections={"CON-1": "Chase", "CON-2": "Amex"}
    )
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        fake.install(router)
        token = fake.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        assert cli("sync").exit_code == 0
        yield fake


@pytest.mark.usefixtures("synced")
def test_networth_in_every_format(cli: CliCall) -> None:
    """JSON, CSV and a table all give 900.00 - 40.00 = 860.00; --by kind splits it."""
    rows = json.loads(cli("networth", "-f", "json").stdout)
    assert [(r["group"], r["currency"], r["total"], r["accounts"]) for r in rows] == [
        ("total", "USD", "860.00", 2)
    ]
    table = list(csv.DictReader(io.StringIO(cli("networth", "--by", "kind", "-f", "csv").stdout)))
    assert {r["group"]: r["total"] for r in table} == {
        "CHECKING": "900.00",
        "CREDIT_CARD": "-40.00",
    }
    shown = cli("networth", "-f", "table")
    assert shown.exit_code == 0
    assert "860.00" in shown.stdout
    wrong = cli("networth", "--by", "planet")
    assert wrong.exit_code == 2
    assert "connection, institution, account, kind, asset-type, currency" in wrong.stderr


@pytest.mark.usefixtures("synced")
def test_history_and_cashflow_through_the_cli(cli: CliCall) -> None:
    """One snapshot this month; cash flow: income 1000, spending 140, the payment apart."""
    history = json.loads(cli("networth", "history", "--interval", "month", "-f", "json").stdout)
    this_month = NOW.date().replace(day=1).isoformat()
    assert [(p["period"], p["total"]) for p in history] == [(this_month, "860.00")]
    flows = json.loads(cli("cashflow", "-f", "json").stdout)
    by_group = {(f["period"], f["group"]): (f["inflow"], f["outflow"]) for f in flows}
    periods = {f["period"] for f in flows}
    assert sum(Decimal(by_group[(p, "total")][0]) for p in periods if (p, "total") in by_group) == (
        Decimal("1000.00")
    )
    assert sum(
        Decimal(by_group[(p, "transfers between your accounts")][1])
        for p in periods
        if (p, "transfers between your accounts") in by_group
    ) == Decimal("-100.00")
    assert cli("cashflow", "--by", "account", "--interval", "week", "-f", "table").exit_code == 0
    assert cli("cashflow", "--interval", "year").exit_code == 2


def test_the_history_chart_draws_a_gap_as_a_space() -> None:
    """One line per series; the highest point the tallest bar, a gap a space."""
    day = dt.date(2026, 1, 1)
    points = [
        NetWorthPoint(period=day, group="total", currency="USD", total=Decimal(1), accounts=1),
        NetWorthPoint(period=day, group="total", currency="USD", total=None, accounts=0),
        NetWorthPoint(period=day, group="total", currency="USD", total=Decimal(9), accounts=1),
    ]
    (line,) = _chart(points)
    assert line == "total (USD) ▁ █ 1 to 9"
