"""`dashtam export`: the book every format is written from, CSV, the account names and --output."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import stat
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.core.export.csv_format import HEADER
from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def _bridge() -> Bridge:
    checking = BridgeAccount("ACT-checking-1111", "Total Checking", "1000.00")
    checking.transactions = [
        BridgeTxn("c1", "2500.00", "PAYROLL ACME", NOW - 20 * DAY),
        BridgeTxn("c2", "-42.10", 'Grocer "Fresh", aisle; 3', NOW - 10 * DAY),
        BridgeTxn("c3", "-7.05", '=HYPERLINK("http://evil")', NOW - 5 * DAY),
        BridgeTxn("p1", "-9.99", "Pending coffee", None, NOW - DAY),
    ]
    card = BridgeAccount("ACT-card-2222", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [BridgeTxn("k1", "-310.10", "Airline", NOW - 3 * DAY)]
    return Bridge(
        now=NOW,
        accounts=[checking, card],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )


@pytest.fixture
def synced(master_key: bytes, cli: CliCall) -> Iterator[Bridge]:
    """A vault holding one synced SimpleFIN connection, 'banks', of a checking account and a card."""
    del master_key
    fake = _bridge()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        fake.install(router)
        token = fake.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        assert cli("sync").exit_code == 0
        yield fake


def _rows(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.usefixtures("synced")
def test_csv_is_one_stable_header_and_the_posted_transactions_oldest_first(cli: CliCall) -> None:
    """Every posted transaction once, oldest first, exact money; the pending one left out."""
    result = cli("export", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == ",".join(HEADER)
    rows = _rows(result.stdout)
    assert [r["amount"] for r in rows] == ["2500.00", "-42.10", "-7.05", "-310.10"]
    assert "Pending coffee" not in result.stdout
    assert [r["fees"] for r in rows] == ["0.00"] * 4
    assert rows[1]["description"] == 'Grocer "Fresh", aisle; 3'  # quoted by the CSV rules
    # A cell a spreadsheet would run as a formula is defused.
    assert rows[2]["description"] == '\'=HYPERLINK("http://evil")'
    assert {r["book_account"] for r in rows} == {
        "Assets:Chase:TotalChecking-1111",
        "Liabilities:ChaseCardServices:SapphireVisa-2222",
    }
    dates = [r["date"] for r in rows]
    assert dates == sorted(dates)
    assert all(r["time"].startswith(r["date"]) for r in rows)


@pytest.mark.usefixtures("synced")
def test_filters_select_accounts_connections_and_dates(cli: CliCall) -> None:
    """--account by last digits or name, --connection, --since/--until (included) narrow the rows."""
    card = _rows(cli("export", "csv", "--account", "2222").stdout)
    assert [r["amount"] for r in card] == ["-310.10"]
    by_name = _rows(cli("export", "csv", "--account", "total checking").stdout)
    assert len(by_name) == 3
    day = (NOW - 10 * DAY).date().isoformat()
    window = _rows(cli("export", "csv", "--since", day, "--until", day).stdout)
    assert [r["amount"] for r in window] == ["-42.10"]
    assert len(_rows(cli("export", "csv", "--connection", "banks").stdout)) == 4
    missing = cli("export", "csv", "--account", "9999")
    assert missing.exit_code == 2
    assert "no account matches --account '9999'" in missing.stderr
    unknown = cli("export", "csv", "--connection", "nope")
    assert unknown.exit_code == 2
    backwards = cli("export", "csv", "--since", "2026-02-01", "--until", "2026-01-01")
    assert backwards.exit_code == 2


@pytest.mark.usefixtures("synced")
def test_output_is_written_0600_whole_with_a_note(cli: CliCall, tmp_path: Path) -> None:
    """--output: the file is mode 0600, holds what stdout would, and stderr says it is clear text."""
    target = tmp_path / "books.csv"
    target.write_text("old content")
    target.chmod(0o644)
    result = cli("export", "csv", "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "holds your financial data in the clear" in result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == cli("export", "csv").stdout
    assert not list(tmp_path.glob(".books.csv.*"))  # no temporary file left


@pytest.mark.usefixtures("synced")
def test_show_accounts_prints_the_mapping_and_config_overrides_it(cli: CliCall) -> None:
    """Defaults from institution and name; [export.accounts] by masked number wins and says so."""
    shown = json.loads(cli("export", "--show-accounts", "-f", "json").stdout)
    assert {(r["number"], r["book_account"], r["source"]) for r in shown} == {
        ("****1111", "Assets:Chase:TotalChecking-1111", "default"),
        ("****2222", "Liabilities:ChaseCardServices:SapphireVisa-2222", "default"),
    }
    config = load_settings().paths.config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[export.accounts]\n"****2222" = "Liabilities:Chase:Sapphire"\n')
    shown = json.loads(cli("export", "--show-accounts", "-f", "json").stdout)
    mine = {r["number"]: (r["book_account"], r["source"]) for r in shown}
    assert mine["****2222"] == ("Liabilities:Chase:Sapphire", "config")
    assert mine["****1111"][1] == "default"
    rows = _rows(cli("export", "csv", "--account", "2222").stdout)
    assert rows[0]["book_account"] == "Liabilities:Chase:Sapphire"
    config.write_text('[export.accounts]\n"****2222" = "Chase Card"\n')
    bad = cli("export", "csv")
    assert bad.exit_code == 1
    assert "invalid account name" in bad.stderr
    assert str(config) in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.usefixtures("synced")
def test_usage_errors_name_the_formats(cli: CliCall) -> None:
    """No format, an unknown one, or --incremental with csv: exit 2 with the choices."""
    none = cli("export")
    assert none.exit_code == 2
    assert "beancount, ledger, ofx, qif, csv" in none.stderr
    assert cli("export", "xlsx").exit_code == 2
    incremental = cli("export", "csv", "--incremental", "books.csv")
    assert incremental.exit_code == 2
    assert "beancount or ledger" in incremental.stderr


@pytest.mark.usefixtures("synced")
def test_the_opening_balance_leads_the_exported_transactions_to_the_latest_balance() -> None:
    """Opening + every exported amount = the account's balance, whatever --since cuts off."""
    import asyncio

    from dashtam_cli.core.export import ExportOptions, load_book
    from dashtam_cli.core.vault.vault import OpenOptions

    settings = load_settings()
    for since in (None, (NOW - 12 * DAY).date()):
        book = asyncio.run(load_book(settings, ExportOptions(since=since), OpenOptions()))
        for item in book.accounts:
            moved = sum(
                (t.amount for t in book.transactions if t.account_id == item.account.id),
                Decimal(0),
            )
            assert item.opening is not None
            assert item.opening + moved == item.balance
    checking = next(a for a in book.accounts if a.account.number == "****1111")
    # From 12 days back: -42.10 and -7.05 are exported; the payroll is in the opening.
    assert checking.opening == Decimal("1000.00") + Decimal("42.10") + Decimal("7.05")
