"""`dashtam export beancount|ledger` through the CLI on a synced vault, checked by the formats' tools.

A SimpleFIN Bridge (respx) fills the vault: a checking account, a card and an
airline-miles account in a custom currency. The export must pass bean-check
or hledger check, its accounts must end at the vault's balances, and
``--incremental`` must add only the transactions synced since.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import respx
from export_books import run_tool
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn
from sync_support import at, run_sync

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

# The first sync: a few days ago, so the second can be days later and still in the past.
FIRST = (dt.datetime.now(dt.UTC) - dt.timedelta(days=6)).replace(microsecond=0)
SECOND = FIRST + dt.timedelta(days=3)
DAY = dt.timedelta(days=1)
MILES = "https://bank.example/currencies/miles"
# The format, its file's name, and the commands that check a file (strict, pedantic).
CHECKERS = {
    "beancount": ("book.beancount", (("bean-check",),)),
    "ledger": (
        "book.journal",
        (("hledger", "check", "--strict", "-f"), ("ledger", "--pedantic", "balance", "-f")),
    ),
}
ID_LINE = re.compile(r"dashtam-id: \"?([0-9a-f-]{36})")


@pytest.fixture
def synced(master_key: bytes, cli: CliCall) -> Iterator[tuple[Bridge, respx.MockRouter]]:
    """A vault connected to the Bridge and synced once at FIRST."""
    del master_key
    checking = BridgeAccount("ACT-checking-0001", "Everyday Checking", "1520.33")
    checking.transactions = [
        BridgeTxn(f"c{i}", f"-{10 + i}.25", f'Coffee "shop"; #{i}\nbranch é', FIRST - i * DAY)
        for i in range(1, 8)
    ]
    checking.transactions.append(BridgeTxn("c0", "2500.00", "PAYROLL", FIRST - 9 * DAY))
    card = BridgeAccount("ACT-card-0002", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [BridgeTxn("k1", "-310.10", "(Airline) * tickets", FIRST - 2 * DAY)]
    miles = BridgeAccount("ACT-miles-0003", "Flight Rewards", "12000", currency=MILES)
    miles.transactions = [BridgeTxn("m1", "2500", "Miles earned", FIRST - 3 * DAY)]
    bridge = Bridge(
        now=FIRST,
        accounts=[checking, card, miles],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        token = bridge.setup_token()
        connected = cli("connect", "simplefin", "--name", "banks", "-f", "json", input=f"{token}\n")
        assert connected.exit_code == 0, connected.stderr
        run_sync(router, clock=at(FIRST))
        yield bridge, router


def _check(path: Path, fmt: str) -> None:
    for tool in CHECKERS[fmt][1]:
        checked = run_tool(*tool, str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Error" not in checked.stderr


def _balances(cli: CliCall) -> dict[str, Decimal]:
    """Each account's balance in the vault, by its name in the books."""
    listed = cli("export", "--show-accounts", "-f", "json")
    assert listed.exit_code == 0, listed.stderr
    names = {row["account_id"]: row["book_account"] for row in json.loads(listed.stdout)}
    accounts = json.loads(cli("accounts", "list", "-f", "json", "--offline").stdout)
    return {names[a["id"]]: Decimal(a["total_value"]) for a in accounts}


def _sums(text: str) -> dict[str, Decimal]:
    """Each account's postings added up, read from the export's posting lines."""
    sums: dict[str, Decimal] = {}
    for match in re.finditer(r"(?m)^ +([A-Z][\w:-]+) +(-?\d+\.\d+) ", text):
        sums[match[1]] = sums.get(match[1], Decimal(0)) + Decimal(match[2])
    return sums


@pytest.mark.parametrize("fmt", ["beancount", "ledger"])
def test_export_checks_and_each_account_ends_at_the_vault_balance(
    cli: CliCall, synced: tuple[Bridge, respx.MockRouter], tmp_path: Path, fmt: str
) -> None:
    """The format's own checker passes, and the postings add up to the vault's balances."""
    del synced
    path = tmp_path / CHECKERS[fmt][0]
    exported = cli("export", fmt, "--output", str(path))
    assert exported.exit_code == 0, exported.stderr
    assert "in the clear" in exported.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    _check(path, fmt)
    text = path.read_text(encoding="utf-8")
    balances = _balances(cli)
    sums = _sums(text)
    assert {name: sums[name] for name in balances} == balances
    assert len(ID_LINE.findall(text)) == 7 + 1 + 1 + 1  # every posted transaction, once
    assert "MILES" in text


@pytest.mark.parametrize("fmt", ["beancount", "ledger"])
def test_incremental_prints_only_the_new_and_the_file_plus_it_still_checks(
    cli: CliCall, synced: tuple[Bridge, respx.MockRouter], tmp_path: Path, fmt: str
) -> None:
    """Export, sync new transactions, export --incremental FILE: the new ones only, no duplicate."""
    bridge, router = synced
    path = tmp_path / CHECKERS[fmt][0]
    assert cli("export", fmt, "--output", str(path)).exit_code == 0
    before = set(ID_LINE.findall(path.read_text(encoding="utf-8")))
    checking, card, _ = bridge.accounts
    checking.transactions.append(BridgeTxn("c-new", "-20.00", "After; the export", FIRST + DAY))
    card.transactions.append(BridgeTxn("k-new", "100.00", "Payment, thanks", FIRST + 2 * DAY))
    checking.balance = "1500.33"
    card.balance = "-210.10"
    bridge.now = SECOND
    run_sync(router, clock=at(SECOND))
    increment = cli("export", fmt, "--incremental", str(path))
    assert increment.exit_code == 0, increment.stderr
    new = ID_LINE.findall(increment.stdout)
    assert len(new) == 2  # the two synced since
    assert not set(new) & before
    assert "Opening balance" not in increment.stdout
    path.write_text(path.read_text(encoding="utf-8") + increment.stdout, encoding="utf-8")
    _check(path, fmt)
    everything = ID_LINE.findall(path.read_text(encoding="utf-8"))
    assert len(everything) == len(set(everything)) == len(before) + 2
    again = cli("export", fmt, "--incremental", str(path))
    assert again.exit_code == 0, again.stderr
    assert ID_LINE.findall(again.stdout) == []


def test_incremental_refuses_to_write_over_the_file_it_reads(
    cli: CliCall, synced: tuple[Bridge, respx.MockRouter], tmp_path: Path
) -> None:
    """--output naming the --incremental file is a usage error, and the file is left as it was."""
    del synced
    path = tmp_path / "book.beancount"
    assert cli("export", "beancount", "--output", str(path)).exit_code == 0
    kept = path.read_bytes()
    refused = cli("export", "beancount", "--incremental", str(path), "--output", str(path))
    assert refused.exit_code == 2, refused.stderr  # a usage error
    assert "--output" in refused.stderr
    assert path.read_bytes() == kept


def test_incremental_from_a_missing_file_is_a_one_line_error(
    cli: CliCall, synced: tuple[Bridge, respx.MockRouter], tmp_path: Path
) -> None:
    """A FILE that cannot be read: exit 2 (bad input), its name and a hint, nothing on stdout."""
    del synced
    missing = tmp_path / "nowhere.journal"
    failed = cli("export", "ledger", "--incremental", str(missing))
    assert failed.exit_code == 2, failed.stderr  # an InputError
    assert f"cannot read --incremental file {missing}" in failed.stderr
    assert "earlier export" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stdout == ""
