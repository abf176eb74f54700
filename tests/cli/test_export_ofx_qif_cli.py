"""`dashtam export ofx` and `dashtam export qif` on a vault synced from a SimpleFIN Bridge (respx)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import stat
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import respx
from export_sample_book import parse_qif
from ofxtools.Parser import OFXTree
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.core.export.ofx import acctid

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
HOSTILE = (
    'Café <b>&amp; "Bob\'s"</b>; pay\nline two — ünïcødé and a tail that runs past 100 characters!!'
)
MILES_URL = "https://bridge.simplefin.test/currency/miles"


def _bridge() -> Bridge:
    checking = BridgeAccount("ACT-checking-0001", "Chase Total Checking", "1520.33")
    checking.transactions = [
        BridgeTxn(f"c{i}", f"-{10 + i}.25", f"Coffee shop {i}", NOW - i * 3 * DAY)
        for i in range(1, 20)
    ]
    checking.transactions += [
        BridgeTxn("h1", "-68.05", HOSTILE, NOW - 2 * DAY),
        BridgeTxn("d1", "2500", "PAYROLL ACME direct dep", NOW - 4 * DAY),
        BridgeTxn("p1", "-42.00", "Grocer (pending)", None, NOW - DAY),
    ]
    card = BridgeAccount("ACT-card-0002", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [
        BridgeTxn("k1", "-310.10", "Airline", NOW - 2 * DAY),
        BridgeTxn("k2", "120.00", "Payment thank you", NOW - 5 * DAY),
    ]
    broker = BridgeAccount("ACT-broker-0003", "Fidelity Individual", "12000.00")
    broker.holdings = [
        {
            "id": "HOL-1",
            "created": 1700000000,
            "currency": "USD",
            "cost_basis": "1000.00",
            "description": "VANGUARD TOTAL STOCK",
            "market_value": "1500.00",
            "purchase_price": "333.33",
            "shares": "3",
            "symbol": "VTI",
        }
    ]
    broker.transactions = [BridgeTxn("b1", "12.34", "VTI dividend", NOW - 3 * DAY)]
    miles = BridgeAccount("ACT-miles-0004", "SkyMiles", "83997", currency=MILES_URL)
    miles.transactions = [BridgeTxn("m1", "500", "Miles earned", NOW - 3 * DAY)]
    return Bridge(
        now=NOW,
        accounts=[checking, card, broker, miles],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )


@pytest.fixture
def synced(cli: CliCall, master_key: bytes) -> Iterator[None]:
    """A vault synced from the Bridge (its four accounts), the Bridge still answering."""
    del master_key
    bridge = _bridge()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        token = bridge.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        assert cli("sync").exit_code == 0
        yield


def _vault(cli: CliCall) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The vault's accounts by name, and its posted transactions by account id."""
    accounts = {a["name"]: a for a in json.loads(cli("accounts", "list", "-f", "json").stdout)}
    listed = json.loads(cli("transactions", "list", "-f", "json", "--limit", "1000").stdout)
    by_account: dict[str, list[Any]] = defaultdict(list)
    for txn in sorted(listed, key=lambda t: (dt.datetime.fromisoformat(t["time"]), t["id"])):
        if txn["status"] != "PENDING":
            by_account[txn["account_id"]].append(txn)
    return accounts, by_account


@pytest.mark.usefixtures("synced")
def test_ofx_export_parses_and_holds_the_vaults_transactions_and_balances(cli: CliCall) -> None:
    """Each account has a statement ofxtools reads: FITIDs, exact amounts, balances as the vault.

    The pending transaction is not there; the miles account is left out with
    a note on stderr; the card is a card statement and its balance is owed
    (negative); the brokerage account holds its position.
    """
    result = cli("export", "ofx")
    assert result.exit_code == 0, result.stderr
    assert "left out of the OFX export: Assets:Chase:SkyMiles" in result.stderr
    tree = OFXTree()
    tree.parse(io.BytesIO(result.stdout.encode()))
    ofx = tree.convert()
    accounts, txns = _vault(cli)
    statements = {s.account.acctid: s for s in ofx.statements}
    expected = {acctid(a["id"]) for name, a in accounts.items() if name != "SkyMiles"}
    assert set(statements) == expected
    for name, account in accounts.items():
        if name == "SkyMiles":
            continue
        statement = statements[acctid(account["id"])]
        transactions = [getattr(t, "stmttrn", t) for t in statement.transactions]
        assert [(t.fitid, t.trnamt) for t in transactions] == [
            (t["id"], Decimal(t["amount"])) for t in txns[account["id"]]
        ]
        if name == "Fidelity Individual":
            assert statement.invbal.availcash == Decimal(account["cash"])
            (position,) = statement.positions
            assert (position.invpos.secid.uniqueid, position.invpos.mktval) == (
                "VTI",
                Decimal("1500.00"),
            )
        else:
            assert statement.balance.balamt == Decimal(account["cash"])
    card = statements[acctid(accounts["Sapphire Visa"]["id"])]
    assert type(card).__name__ == "CCSTMTRS"
    assert card.balance.balamt == Decimal("-310.10")
    by_fitid = {
        t.fitid: t for t in statements[acctid(accounts["Chase Total Checking"]["id"])].transactions
    }
    hostile = [t for t in by_fitid.values() if t.trnamt == Decimal("-68.05")]
    assert [t.memo for t in hostile] == [re.sub(r"\s+", " ", HOSTILE)]
    assert "Grocer (pending)" not in result.stdout


@pytest.mark.usefixtures("synced")
def test_qif_export_sums_each_account_to_the_vaults_and_writes_a_private_file(
    cli: CliCall, tmp_path: Path
) -> None:
    """Per bank or card account, the QIF amounts add up to the vault's; investments are left out."""
    target = tmp_path / "books.qif"
    result = cli("export", "qif", "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "left out of the QIF export: Assets:Chase:FidelityIndividual" in result.stderr
    assert "left out of the QIF export: Assets:Chase:SkyMiles" in result.stderr
    text = target.read_text(encoding="utf-8")
    accounts, txns = _vault(cli)
    parsed = parse_qif(text)
    shown = {
        row["book_account"]: row["account_id"]
        for row in json.loads(cli("export", "--show-accounts", "-f", "json").stdout)
    }
    checking, card = accounts["Chase Total Checking"]["id"], accounts["Sapphire Visa"]["id"]
    assert {name: kind for name, (kind, _) in parsed.items()} == {
        next(n for n, i in shown.items() if i == checking): "Bank",
        next(n for n, i in shown.items() if i == card): "CCard",
    }
    for name, (_, entries) in parsed.items():
        vault = txns[shown[name]]
        total = sum((Decimal(e["T"]) for e in entries), Decimal(0))
        assert total == sum((Decimal(t["amount"]) for t in vault), Decimal(0))
        assert [e["N"] for e in entries] == [t["id"] for t in vault]


@pytest.mark.usefixtures("synced")
def test_ofx_type_writes_one_document_of_that_type_alone(cli: CliCall) -> None:
    """``--ofx-type creditcard``: the card statement alone; ``investment``: the brokerage and its securities."""
    accounts, txns = _vault(cli)
    card = cli("export", "ofx", "--ofx-type", "creditcard")
    assert card.exit_code == 0, card.stderr
    assert re.findall(r"<(\w+MSGSRSV1)>", card.stdout) == ["SIGNONMSGSRSV1", "CREDITCARDMSGSRSV1"]
    tree = OFXTree()
    tree.parse(io.BytesIO(card.stdout.encode()))
    (statement,) = tree.convert().statements
    card_id = accounts["Sapphire Visa"]["id"]
    assert statement.account.acctid == acctid(card_id)
    assert [t.fitid for t in statement.transactions] == [t["id"] for t in txns[card_id]]
    assert "left out" not in card.stderr  # the miles account is not a card: nothing to say
    invest = cli("export", "ofx", "--ofx-type", "investment")
    assert invest.exit_code == 0, invest.stderr
    assert re.findall(r"<(\w+MSGSRSV1)>", invest.stdout) == [
        "SIGNONMSGSRSV1",
        "INVSTMTMSGSRSV1",
        "SECLISTMSGSRSV1",
    ]


@pytest.mark.usefixtures("synced")
@pytest.mark.parametrize(
    "args",
    [("ofx", "--ofx-type", "loans"), ("qif", "--ofx-type", "bank")],
    ids=["unknown-type", "not-ofx"],
)
def test_a_wrong_ofx_type_is_a_usage_error(cli: CliCall, args: tuple[str, ...]) -> None:
    """An unknown type, or --ofx-type with another format, exits 2 naming the option; nothing written."""
    result = cli("export", *args)
    assert result.exit_code == 2
    assert "--ofx-type" in result.stderr
    assert result.stdout == ""
