"""A Plaid item's sync against the respx Plaid: sign, Decimal, cursor paging in one batch, restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import respx
from plaid_support import (
    CLIENT_ID,
    ORIGIN,
    SECRET,
    Plaid,
    PlaidItem,
    account,
    error,
    txn,
)
from sync_support import positions, run_sync, transactions

from dashtam_cli.core import store
from dashtam_cli.core.connections import save_secret_login
from dashtam_cli.core.resilience import Backoff
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

    from dashtam_cli.core.models import SyncReport, Transaction
    from dashtam_cli.core.providers.base import Changes
    from dashtam_cli.core.sync import SyncResult

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
NO_WAIT = Backoff(attempts=3, base=0.0, cap=0.0)


class Fixture:
    """The respx Plaid, its router, the stored connection's item and access token."""

    def __init__(self, plaid: Plaid, router: respx.MockRouter) -> None:
        """Keep both; the item is made by :meth:`connect`."""
        self.plaid = plaid
        self.router = router
        self.item = PlaidItem(
            "item-1",
            [
                account("acc-checking", "Plaid Checking", "110.00", available="100.00"),
                account(
                    "acc-card",
                    "Plaid Credit Card",
                    "410.25",
                    kind="credit",
                    subtype="credit card",
                    mask="3333",
                ),
            ],
        )
        self.token = plaid.new_item(self.item)

    def connect(self, name: str = "bank", products: tuple[str, ...] = ("transactions",)) -> None:
        """Store the connection's sealed item record, as `connect plaid` would."""
        record = json.dumps(
            {
                "version": 1,
                "access_token": self.token,
                "item_id": self.item.item_id,
                "environment": "sandbox",
                "products": list(products),
                "institution": "First Platypus Bank",
            }
        )

        async def save() -> None:
            async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
                await save_secret_login(vault, provider="plaid", name=name, secret=record)

        asyncio.run(save())

    def sync(self, **options: Any) -> SyncResult:
        """`dashtam sync` through the core, retries without waiting."""
        options.setdefault("backoff", NO_WAIT)
        options.setdefault("clock", lambda: NOW)
        return run_sync(self.router, **options)

    def report(self, **options: Any) -> SyncReport:
        """The report of a sync of the only connection."""
        (report,) = self.sync(**options).reports
        return report


@pytest.fixture
def plaid(master_key: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fixture]:
    """A Plaid with one item of a checking account and a card, its keys in the environment."""
    del master_key
    monkeypatch.setenv("PLAID_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("PLAID_SECRET", SECRET)
    monkeypatch.setenv("PLAID_ENV", "sandbox")
    monkeypatch.setenv("DASHTAM_PLAID_BASE_URL", ORIGIN)
    monkeypatch.setenv("DASHTAM_SYNC_HISTORY_DAYS", "60")
    server = Plaid()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        server.install(router)
        yield Fixture(server, router)


def _stored() -> dict[str, Transaction]:
    found, _ = transactions(None, limit=100_000)
    return {t.description or "": t for t in found}


def _cursors() -> set[str | None]:
    async def read() -> set[str | None]:
        async with open_vault(load_settings()) as vault:
            (info,) = await __import__(
                "dashtam_cli.core.connections", fromlist=["list_connections"]
            ).list_connections(vault)
            return {p.cursor for p in (await store.sync_points(vault, info.id)).values()}

    return asyncio.run(read())


def _batches(monkeypatch: pytest.MonkeyPatch) -> list[Changes]:
    """Every batch the sync stores, recorded as it is written."""
    seen: list[Changes] = []
    original = store.write_changes

    async def spy(*args: Any, **kwargs: Any) -> store.Counts:
        seen.append(args[2])
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "write_changes", spy)
    return seen


# -- sign and Decimal -------------------------------------------------------------------------


def test_amounts_are_negated_to_dashtams_sign_and_kept_exact(plaid: Fixture) -> None:
    """Plaid's positive (money out) is stored negative, its negative positive; digits kept exactly."""
    plaid.item.add(
        txn("t-coffee", "4.33", "Coffee", category=("FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE")),
        txn("t-pay", "-2500.10000000000000001", "Payroll", category=("INCOME", "INCOME_WAGES")),
        txn("t-card", "12.50", "Books", account="acc-card"),
    )
    plaid.connect()
    report = plaid.report()
    assert report.result == "ok", report.message
    stored = _stored()
    assert stored["Coffee"].amount == Decimal("-4.33")
    assert stored["Coffee"].kind == "purchase"
    assert stored["Payroll"].amount == Decimal("2500.10000000000000001")
    assert stored["Payroll"].kind == "deposit"
    assert stored["Books"].amount == Decimal("-12.50")
    assert stored["Books"].kind == "purchase"  # money out of a card, uncategorised


def test_balances_come_from_accounts_get_and_a_cards_debt_is_negative(plaid: Fixture) -> None:
    """``/accounts/get`` (never the billed ``/accounts/balance/get``); a card's balance owed is negative."""
    from sync_support import accounts

    plaid.connect()
    assert plaid.report().result == "ok"
    assert len(plaid.plaid.calls("/accounts/get")) == 1
    assert plaid.plaid.calls("/accounts/balance/get") == []
    found, _ = accounts(None)
    by_name = {a.name: a for a in found}
    assert by_name["Plaid Checking"].total_value == Decimal("110.00")
    assert by_name["Plaid Checking"].buying_power == Decimal("100.00")
    assert by_name["Plaid Credit Card"].total_value == Decimal("-410.25")
    assert by_name["Plaid Credit Card"].number == "****3333"
    assert by_name["Plaid Checking"].institution == "First Platypus Bank"


def test_realtime_balances_is_an_option(plaid: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """``realtime_balances = true`` asks ``/accounts/balance/get`` instead of ``/accounts/get``."""
    monkeypatch.setenv("DASHTAM_PLAID_REALTIME_BALANCES", "true")
    plaid.connect()
    assert plaid.report().result == "ok"
    assert len(plaid.plaid.calls("/accounts/balance/get")) == 1
    assert plaid.plaid.calls("/accounts/get") == []


# -- the cursor -------------------------------------------------------------------------------


def test_every_page_and_the_new_cursor_are_stored_in_one_batch(
    plaid: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five changes in three pages (has_more): one batch holds all five; the next sync sends its cursor."""
    plaid.item.add(*(txn(f"t{i}", f"{i}.00", f"buy {i}") for i in range(1, 6)))
    plaid.connect()
    batches = _batches(monkeypatch)
    assert plaid.report().new == 5
    assert [b.get("cursor") for b in plaid.plaid.calls("/transactions/sync")] == [
        None,
        "c-2",
        "c-4",
    ]
    assert len(batches) == 1
    assert len(batches[0].transactions) == 5
    assert set(batches[0].completed.values()) == {"c-5"}
    assert _cursors() == {"c-5"}
    plaid.item.add(txn("t6", "6.00", "buy 6"))
    assert plaid.report().new == 1
    assert plaid.plaid.calls("/transactions/sync")[-1]["cursor"] == "c-5"
    assert _cursors() == {"c-6"}


def test_a_change_during_paging_restarts_from_the_loops_first_cursor(plaid: Fixture) -> None:
    """``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION`` on page two: paging starts over from its start."""
    plaid.item.add(*(txn(f"t{i}", f"{i}.00", f"buy {i}") for i in range(1, 6)))
    plaid.connect()
    mutation = error(400, "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", "TRANSACTIONS_ERROR")
    plaid.plaid.faults["/transactions/sync"] = [{**mutation, "after": 1}]
    report = plaid.report()
    assert report.result == "ok", report.message
    assert report.new == 5
    sent = [b.get("cursor") for b in plaid.plaid.calls("/transactions/sync")]
    assert sent == [None, "c-2", None, "c-2", "c-4"]
    assert len(_stored()) == 5


def test_changes_that_never_settle_fail_the_sync_and_store_nothing(plaid: Fixture) -> None:
    """A mutation on every restart: after the bounded restarts the connection fails, nothing stored."""
    plaid.item.add(*(txn(f"t{i}", f"{i}.00", f"buy {i}") for i in range(1, 6)))
    plaid.connect()
    mutation = error(400, "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", "TRANSACTIONS_ERROR")
    plaid.plaid.faults["/transactions/sync"] = [{**mutation, "after": 1} for _ in range(4)]
    report = plaid.report()
    assert report.result == "failed"
    assert "kept changing" in (report.message or "")
    assert _stored() == {}
    assert _cursors() == set()


def test_a_crash_between_pages_stores_nothing_and_the_next_sync_gets_everything_once(
    plaid: Fixture,
) -> None:
    """An exception on page two: no transaction, no cursor; the next sync starts over and stores each once."""
    plaid.item.add(*(txn(f"t{i}", f"{i}.00", f"buy {i}") for i in range(1, 6)))
    plaid.connect()
    plaid.plaid.crash_at = 2
    with pytest.raises(RuntimeError, match="died between two pages"):
        plaid.sync()
    assert _stored() == {}
    assert _cursors() == set()
    report = plaid.report()
    assert report.new == 5
    assert plaid.plaid.calls("/transactions/sync")[2].get("cursor") is None
    assert sorted(_stored()) == [f"buy {i}" for i in range(1, 6)]


def test_modified_and_removed_apply_and_a_posted_transaction_replaces_its_pending_one(
    plaid: Fixture,
) -> None:
    """Modified changes in place, removed goes, and posting (``pending_transaction_id``) drops the pending row."""
    plaid.item.add(
        txn("t-rent", "1200.00", "Rent"),
        txn("t-gift", "50.00", "Gift"),
        txn("p-grocer", "20.00", "Grocer", pending=True),
    )
    plaid.connect()
    assert plaid.report().new == 3
    assert _stored()["Grocer"].status == "PENDING"
    plaid.item.modify(txn("t-rent", "1250.00", "Rent"))
    plaid.item.remove("t-gift")
    plaid.item.add(txn("t-grocer", "21.40", "Grocer posted", pending_id="p-grocer"))
    report = plaid.report()
    assert report.result == "ok", report.message
    stored = _stored()
    assert sorted(stored) == ["Grocer posted", "Rent"]
    assert stored["Rent"].amount == Decimal("-1250.00")
    assert stored["Grocer posted"].status == "POSTED"
    assert report.changed == 1
    assert report.removed == 2


def test_an_added_then_removed_transaction_in_one_loop_is_not_stored(
    plaid: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change log that adds then removes within one loop: the batch holds it only as removed."""
    plaid.item.add(txn("t-1", "1.00", "keep"), txn("t-2", "2.00", "gone"))
    plaid.item.remove("t-2")
    plaid.connect()
    batches = _batches(monkeypatch)
    assert plaid.report().result == "ok"
    (batch,) = batches
    assert [t.description for t in batch.transactions] == ["keep"]
    assert len(batch.removed) == 1
    assert sorted(_stored()) == ["keep"]


def test_an_unofficial_currency_is_kept_as_given(plaid: Fixture) -> None:
    """No ISO code: ``unofficial_currency_code`` is the account's or transaction's currency, kept."""
    from sync_support import accounts

    plaid.item.accounts[0]["balances"]["iso_currency_code"] = None
    plaid.item.accounts[0]["balances"]["unofficial_currency_code"] = "ETH"
    plaid.connect()
    assert plaid.report().result == "ok"
    found, _ = accounts(None)
    assert {a.name: a.currency for a in found}["Plaid Checking"] == "ETH"


# -- investments ------------------------------------------------------------------------------


def _investments(plaid: Fixture) -> None:
    plaid.item.products = ("transactions", "investments")
    plaid.item.accounts.append(
        account("acc-ira", "Plaid IRA", "1500.00", kind="investment", subtype="ira", mask="5555")
    )
    plaid.item.securities = [
        {
            "security_id": "sec-aapl",
            "ticker_symbol": "AAPL",
            "name": "Apple Inc.",
            "type": "equity",
        },
        {"security_id": "sec-cash", "ticker_symbol": None, "name": "Cash Fund", "type": "cash"},
    ]
    plaid.item.holdings = [
        {
            "account_id": "acc-ira",
            "security_id": "sec-aapl",
            "quantity": "@@3@@",
            "institution_price": "@@400.10@@",
            "institution_value": "@@1200.30@@",
            "cost_basis": "@@900@@",
            "iso_currency_code": "USD",
        }
    ]
    base = {"account_id": "acc-ira", "iso_currency_code": "USD", "fees": "@@0@@"}
    plaid.item.investment_transactions = [
        {
            **base,
            "investment_transaction_id": f"inv-{i}",
            "security_id": "sec-aapl",
            "date": f"2026-11-{10 + i}",
            "name": f"trade {i}",
            "quantity": "@@1@@",
            "amount": "@@300.00@@",
            "price": "@@300.00@@",
            "type": "buy",
            "subtype": "buy",
        }
        for i in range(3)
    ] + [
        {
            **base,
            "investment_transaction_id": "inv-div",
            "security_id": "sec-aapl",
            "date": "2026-11-20",
            "name": "AAPL dividend",
            "quantity": "@@0@@",
            "amount": "@@-1.25@@",
            "price": "@@0@@",
            "type": "cash",
            "subtype": "dividend",
        }
    ]


def test_holdings_are_positions_with_their_security_and_cost_basis(plaid: Fixture) -> None:
    """``/investments/holdings/get``: the security's ticker joined, cost basis and average price kept."""
    _investments(plaid)
    plaid.connect(products=("transactions", "investments"))
    assert plaid.report().result == "ok"
    found, _ = positions(None)
    (held,) = found
    assert held.symbol == "AAPL"
    assert held.description == "Apple Inc."
    assert held.quantity == Decimal(3)
    assert held.market_value == Decimal("1200.30")
    assert held.cost_basis == Decimal(900)
    assert held.average_price == Decimal(300)
    assert held.unrealized_gain == Decimal("300.30")


def test_investment_transactions_are_paged_by_offset_and_negated(plaid: Fixture) -> None:
    """``/investments/transactions/get`` paged (count, offset) over the window; a buy is money out."""
    _investments(plaid)
    plaid.connect(products=("transactions", "investments"))
    assert plaid.report().result == "ok"
    sent = plaid.plaid.calls("/investments/transactions/get")
    assert [b["options"]["offset"] for b in sent] == [0, 2]
    assert all(b["options"]["count"] <= 500 for b in sent)
    assert sent[0]["options"]["account_ids"] == ["acc-ira"]
    assert sent[0]["end_date"] == "2026-12-01"
    assert sent[0]["start_date"] == "2026-10-02"
    stored = _stored()
    assert stored["trade 0"].amount == Decimal("-300.00")
    assert stored["trade 0"].kind == "trade"
    assert stored["trade 0"].symbol == "AAPL"
    assert stored["AAPL dividend"].amount == Decimal("1.25")
    assert stored["AAPL dividend"].kind == "dividend"
    assert len(stored) == 4


def test_an_item_without_investments_is_not_a_failed_sync(plaid: Fixture) -> None:
    """An investment account on an item without the product (``PRODUCTS_NOT_SUPPORTED``): ok, no positions."""
    _investments(plaid)
    plaid.item.products = ("transactions",)
    plaid.connect()
    report = plaid.report()
    assert report.result == "ok", report.message
    assert positions(None)[0] == []


# -- errors -----------------------------------------------------------------------------------


def test_item_login_required_exits_4_with_the_update_command(plaid: Fixture, cli: CliCall) -> None:
    """``ITEM_LOGIN_REQUIRED``: `dashtam sync` exits 4 and names `dashtam connect plaid --update NAME`."""
    plaid.connect("mybank")
    plaid.item.login_required = True
    synced = cli("sync")
    assert synced.exit_code == 4, synced.stderr
    assert "dashtam connect plaid --update mybank" in synced.stderr
    listed = cli("connections", "list", "-f", "json")
    assert json.loads(listed.stdout)[0]["status"] == "reauth_required"


def test_a_rate_limit_is_retried(plaid: Fixture) -> None:
    """``RATE_LIMIT_EXCEEDED`` (429) then an answer: the sync succeeds after one retry."""
    plaid.connect()
    plaid.plaid.faults["/accounts/get"] = [error(429, "RATE_LIMIT_EXCEEDED", "RATE_LIMIT_EXCEEDED")]
    report = plaid.report()
    assert report.result == "ok", report.message
    assert len(plaid.plaid.calls("/accounts/get")) == 2


def test_wrong_app_keys_are_a_configuration_error(
    plaid: Fixture, cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``INVALID_API_KEYS``: not retried, exit 1, the hint names the keys' settings, never the secret."""
    plaid.connect()
    monkeypatch.setenv("PLAID_SECRET", "wrong-secret-0123456789")
    synced = cli("sync")
    assert synced.exit_code == 1
    assert "INVALID_API_KEYS" in synced.stderr
    assert "PLAID_SECRET" in synced.stderr
    assert "wrong-secret-0123456789" not in synced.stderr
    assert len(plaid.plaid.calls("/accounts/get")) == 1


# -- secrets ----------------------------------------------------------------------------------


def test_keys_travel_only_in_headers_and_no_secret_reaches_the_audit_or_logs(
    plaid: Fixture, cli: CliCall, caplog: pytest.LogCaptureFixture
) -> None:
    """Client id and secret only in Plaid's headers; the access token in no audit row, log or output."""
    plaid.item.add(txn("t1", "1.00", "one"))
    plaid.connect()
    failing = error(500, "INTERNAL_SERVER_ERROR", "API_ERROR", message=f"boom {plaid.token}")
    plaid.plaid.faults["/transactions/sync"] = [failing]
    with caplog.at_level(logging.DEBUG):
        synced = cli("sync")
    assert synced.exit_code == 0, synced.stderr
    for request in plaid.plaid.requests:
        assert request.headers["PLAID-SECRET"] == SECRET
        assert request.headers["Plaid-Version"] == "2020-09-14"
        assert SECRET.encode() not in request.content
        assert CLIENT_ID.encode() not in request.content
    audit = cli("audit", "list", "-f", "json")
    rows = json.loads(audit.stdout)
    assert any(
        r["operation"] == "plaid.transactions/sync" and r["http_status"] == 500 for r in rows
    )
    assert any(r["correlation_id"] for r in rows)
    for text in (audit.stdout, synced.stderr, synced.stdout, caplog.text):
        assert plaid.token not in text
        assert SECRET not in text


def test_disconnect_removes_the_item_at_plaid(plaid: Fixture, cli: CliCall) -> None:
    """`dashtam disconnect` calls ``/item/remove`` with the item's token and says so."""
    plaid.connect("mybank")
    removed = cli("disconnect", "mybank", "--yes")
    assert removed.exit_code == 0, removed.stderr
    (sent,) = plaid.plaid.calls("/item/remove")
    assert sent == {"access_token": plaid.token}
    assert plaid.item.removed
    assert "Plaid forgot the login of 'mybank'" in removed.stderr


def test_disconnect_removes_the_connection_even_when_plaid_refuses(
    plaid: Fixture, cli: CliCall
) -> None:
    """``/item/remove`` failing: the connection is removed all the same, and the user is told."""
    plaid.connect("mybank")
    plaid.plaid.faults["/item/remove"] = [error(400, "INVALID_ACCESS_TOKEN", "INVALID_INPUT")]
    removed = cli("disconnect", "mybank", "--yes")
    assert removed.exit_code == 0, removed.stderr
    assert "was not told to forget the login" in removed.stderr
    assert json.loads(cli("connections", "list", "-f", "json").stdout) == []
