"""Queries answer from the vault: filters in the database, newest positions, old rows, first use."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any, Final

import pytest
import respx
from schwab_support import (
    BASE_URL,
    add_connection,
    fixture_text,
    mock_connection_api,
)
from sync_support import NOW, accounts, at, positions, rows_in, run_sync, transactions

from dashtam_cli.core.errors import DashtamError, ExitCode, InputError
from dashtam_cli.core.models import Kind
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema

FIRST, SECOND, THIRD = "11111111", "22222222", "33333333"
DAY: Final = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def item(activity: int, day: int, *, kind: str = "TRADE", symbol: str | None = None) -> Any:
    """A transaction shaped like transaction_single.json, on 2025-01-``day``."""
    raw: dict[str, Any] = json.loads(fixture_text("transaction_single.json"))
    raw["activityId"] = activity
    raw["time"] = f"2025-01-{day:02d}T15:00:00+0000"
    raw["tradeDate"] = f"2025-01-{day:02d}"
    raw["type"] = kind
    if kind == "DIVIDEND_OR_INTEREST":
        raw["description"] = "ORDINARY DIVIDEND"
    if symbol is not None:
        raw["transferItems"][0]["instrument"]["symbol"] = symbol
    return raw


# Each account's answer: a trade on the 5th, a dividend on the 10th, an AAPL trade on the 20th.
BODY: Final = json.dumps(
    [item(1, 5), item(2, 10, kind="DIVIDEND_OR_INTEREST"), item(3, 20, symbol="AAPL")]
)


def raw_sql(statement: str, *params: Any) -> list[Any]:
    """Run SQL on the vault file behind dashtam's back."""
    with sqlite3.connect(load_settings().paths.vault_file) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


@pytest.fixture
def two_connections(router: respx.MockRouter) -> None:
    """Alpha holds FIRST and SECOND, beta holds THIRD; both synced at NOW."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(router, "token-alpha", [FIRST, SECOND], transactions=BODY)
    mock_connection_api(router, "token-beta", [THIRD], transactions=BODY)
    assert run_sync(router, clock=at(NOW)).outcome.failures == []


@pytest.mark.usefixtures("two_connections")
def test_transactions_come_newest_first_from_every_account() -> None:
    """Nine transactions, newest first, with their accounts, kinds and types."""
    found, result = transactions()

    assert result.count == len(found) == 9
    assert [t.time.day for t in found] == [20, 20, 20, 10, 10, 10, 5, 5, 5]
    assert {t.account for t in found} == {"****1111", "****2222", "****3333"}
    assert {(t.type, t.kind) for t in found} == {
        ("TRADE", Kind.TRADE),
        ("DIVIDEND_OR_INTEREST", Kind.DIVIDEND),
    }


@pytest.mark.usefixtures("two_connections")
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"account": "2222"}, {("****2222", 20), ("****2222", 10), ("****2222", 5)}),
        ({"connection": "beta"}, {("****3333", 20), ("****3333", 10), ("****3333", 5)}),
        (
            {"connection": "beta", "since": dt.datetime(2025, 1, 8, tzinfo=dt.UTC)},
            {("****3333", 20), ("****3333", 10)},
        ),
        (
            {"account": "1111", "until": dt.datetime(2025, 1, 15, tzinfo=dt.UTC)},
            {("****1111", 10), ("****1111", 5)},
        ),
        ({"account": "1111", "types": ["dividend"]}, {("****1111", 10)}),
        ({"account": "1111", "types": ["DIVIDEND_OR_INTEREST"]}, {("****1111", 10)}),
        ({"account": "1111", "types": ["trade"]}, {("****1111", 20), ("****1111", 5)}),
        ({"account": "1111", "types": ["Trade"]}, {("****1111", 20), ("****1111", 5)}),
        ({"symbol": "aapl"}, {("****1111", 20), ("****2222", 20), ("****3333", 20)}),
        ({"account": "3333", "symbol": "AAPL", "types": ["dividend"]}, set()),
    ],
    ids=[
        "account-digits",
        "connection",
        "since",
        "until",
        "kind",
        "provider-type",
        "kind-trade",
        "kind-case",
        "symbol",
        "nothing",
    ],
)
def test_transaction_filters(options: dict[str, Any], expected: set[tuple[str, int]]) -> None:
    """Each filter returns exactly the transactions it names."""
    found, result = transactions(**options)

    assert {(t.account, t.time.day) for t in found} == expected
    assert len(found) == len(expected) == result.count


@pytest.mark.usefixtures("two_connections")
def test_the_account_filter_takes_the_id() -> None:
    """An account's stable id selects it as its digits do."""
    ids = {a.number: a.id for a in accounts()[0]}

    by_id, _ = transactions(account=ids["****2222"])
    by_digits, _ = transactions(account="2222")
    by_masked, _ = accounts(account="****2222")

    assert by_id == by_digits
    assert {t.account_id for t in by_id} == {ids["****2222"]}
    assert [a.id for a in by_masked] == [ids["****2222"]]


@pytest.mark.usefixtures("two_connections")
def test_limit_stops_after_that_many_newest() -> None:
    """--limit 4: the four newest; --limit larger than the rows: all of them."""
    found, result = transactions(limit=4)
    assert [t.time.day for t in found] == [20, 20, 20, 10]
    assert result.count == 4
    assert len(transactions(limit=100)[0]) == 9
    assert len(transactions(limit=1, types=["dividend"], account="1111")[0]) == 1


@pytest.mark.usefixtures("two_connections")
def test_limit_holds_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of two rows: a limit of five still gives the five newest, in order, once."""
    from dashtam_cli.core import queries

    monkeypatch.setattr(queries, "BATCH", 2)
    everything, _ = transactions()
    found, _ = transactions(limit=5)

    assert [t.id for t in found] == [t.id for t in everything[:5]]
    assert len({t.id for t in everything}) == 9


@pytest.mark.usefixtures("two_connections")
def test_unknown_types_and_selectors_are_usage_errors() -> None:
    """An unknown --type, digits of two accounts, digits of none: exit 2, never a number."""
    with pytest.raises(InputError, match="unknown type") as unknown:
        transactions(types=["lottery"])
    assert unknown.value.exit_code == ExitCode.USAGE

    with pytest.raises(InputError, match="no account matches '9999'"):
        transactions(account="9999")
    with pytest.raises(InputError, match="must be before"):
        transactions(since=NOW, until=NOW - DAY)


def test_ambiguous_digits_ask_for_more(router: respx.MockRouter) -> None:
    """Digits matching two accounts: exit 2, more digits asked for, no number shown."""
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", ["11111111", "21111111"])
    run_sync(router, clock=at(NOW))

    with pytest.raises(InputError) as caught:
        positions(account="1111")

    assert caught.value.exit_code == ExitCode.USAGE
    assert "matches 2 accounts" in caught.value.message
    assert caught.value.hint is not None
    assert "more digits" in caught.value.hint
    assert "11111111" not in caught.value.message


@pytest.mark.sqlite_only  # edits the local vault file with sqlite3
def test_rows_stored_before_kinds_are_returned_with_their_kind(router: respx.MockRouter) -> None:
    """Rows without a kind (stored before migration 4): read, given their kind, filtered by it."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST], transactions=BODY)
    run_sync(router, clock=at(NOW))
    raw_sql("UPDATE transactions SET kind = NULL")
    assert raw_sql("SELECT count(*) FROM transactions WHERE kind IS NULL") == [(3,)]

    everything, _ = transactions()
    dividends, _ = transactions(types=["dividend"])
    trades, _ = transactions(types=["TRADE"])

    assert [(t.time.day, t.kind) for t in everything] == [
        (20, Kind.TRADE),
        (10, Kind.DIVIDEND),
        (5, Kind.TRADE),
    ]
    assert [t.time.day for t in dividends] == [10]
    assert [t.time.day for t in trades] == [20, 5]


def test_rows_stored_before_kinds_without_a_kind_field(router: respx.MockRouter) -> None:
    """A record sealed before kinds existed has no ``kind`` field at all: it reads, with its kind."""
    from dashtam_cli.core.vault.vault import open_vault

    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST], transactions=BODY)
    run_sync(router, clock=at(NOW))

    async def strip() -> None:
        table = schema.transactions
        from sqlalchemy import select, update

        async with open_vault(load_settings()) as vault:
            async with vault.reading() as conn:
                rows = (await conn.execute(select(table))).all()
            async with vault.writing() as conn:
                for row in rows:
                    record = json.loads(
                        vault.unseal_text(
                            table.name, row.id, "payload", row.payload, owner=row.account_id
                        )
                    )
                    del record["kind"]
                    sealed = vault.seal(
                        table.name, row.id, "payload", json.dumps(record), owner=row.account_id
                    )
                    await conn.execute(
                        update(table).where(table.c.id == row.id).values(payload=sealed, kind=None)
                    )

    import asyncio

    asyncio.run(strip())

    found, _ = transactions(types=["dividend"])
    assert [(t.time.day, t.kind) for t in found] == [(10, Kind.DIVIDEND)]


# --- positions --------------------------------------------------------------------------------------


def test_positions_keep_history_and_queries_return_the_newest(router: respx.MockRouter) -> None:
    """Two syncs keep both sets of positions; the query returns the second sync's only."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST])
    run_sync(router, clock=at(NOW))
    first, _ = positions()
    assert len(first) == 10

    fewer = json.loads("[" + fixture_text("account.json") + "]")
    fewer[0]["securitiesAccount"]["positions"] = fewer[0]["securitiesAccount"]["positions"][:3]
    fewer[0]["securitiesAccount"]["positions"][0]["longQuantity"] = 7.0
    changed = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    mock_connection_api(changed, "token-alpha", [FIRST], accounts=json.dumps(fewer))
    run_sync(changed, clock=at(NOW + DAY))

    newest, _ = positions()
    assert rows_in(schema.positions) == 13
    assert len(newest) == 3
    assert [p.symbol for p in newest] == [p.symbol for p in first[:3]]
    short = fewer[0]["securitiesAccount"]["positions"][0]["shortQuantity"]
    assert newest[0].quantity == 7 - short != first[0].quantity


# --- first use, offline, sync first -----------------------------------------------------------------


def test_a_connection_never_synced_is_synced_on_first_use(router: respx.MockRouter) -> None:
    """`connect` then `accounts list`: the query syncs the new connection, then answers."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST])

    found, result = accounts(router, clock=at(NOW))

    assert [a.number for a in found] == ["****1111"]
    assert result.sync is not None
    assert result.sync.failures == []
    assert router.calls.call_count > 0

    router.reset()
    again, second = accounts(router, clock=at(NOW))
    assert [a.id for a in again] == [a.id for a in found]
    assert router.calls.call_count == 0  # synced before: answered from the vault
    assert second.sync is None


def test_a_synced_vault_is_answered_without_the_sync_machinery(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every connection has synced, a query (not --offline) starts no sync at all.

    Not even the token manager, its HTTP client and TLS context: the sync is
    replaced by one that fails the test, and the answer still comes.
    """
    from dashtam_cli.core import sync as sync_module

    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST], transactions=BODY)
    run_sync(router, clock=at(NOW))

    async def no_sync(*_args: object, **_kwargs: object) -> object:
        pytest.fail("a query of a synced vault started a sync")

    monkeypatch.setattr(sync_module, "sync", no_sync)
    found, result = transactions(router, clock=at(NOW))
    assert len(found) == 3
    assert result.sync is None


def test_offline_never_touches_the_network(router: respx.MockRouter) -> None:
    """--offline with a connection never synced: no request, and it is named as having no data."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST])

    found, result = accounts(router, offline=True)

    assert found == []
    assert result.never == ["alpha"]
    assert router.calls.call_count == 0


def test_sync_first_syncs_a_synced_connection_again(router: respx.MockRouter) -> None:
    """--sync: the query syncs first even a connection synced before, and sees the new data."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST], transactions=BODY)
    run_sync(router, clock=at(NOW))
    router.reset()

    found, result = transactions(router, sync_first=True, clock=at(NOW + DAY))

    assert len(found) == 3
    assert result.sync is not None
    assert router.calls.call_count > 0
    assert {a.synced_at for a in accounts()[0]} == {NOW + DAY}


def test_no_connections_is_a_clear_error(router: respx.MockRouter) -> None:
    """No vault: the query says to log in first, and sends nothing."""
    with pytest.raises(DashtamError, match="there are no connections yet"):
        accounts(router)
    assert router.calls.call_count == 0


def test_a_provider_type_finds_every_kind_it_covers(router: respx.MockRouter) -> None:
    """DIVIDEND_OR_INTEREST covers dividends and interest: --type finds both, the kind only one.

    The kind of such a row comes from its description, so the type cannot be
    turned into one kind in the database.
    """
    interest = item(4, 12, kind="DIVIDEND_OR_INTEREST")
    interest["description"] = "BANK INTEREST"
    body = json.dumps([item(2, 10, kind="DIVIDEND_OR_INTEREST"), interest, item(1, 5)])
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST], transactions=body)
    run_sync(router, clock=at(NOW))

    by_type, _ = transactions(types=["DIVIDEND_OR_INTEREST"])
    by_kind, _ = transactions(types=["interest"])
    both, _ = transactions(types=["interest", "TRADE"])

    assert [(t.time.day, t.kind) for t in by_type] == [(12, Kind.INTEREST), (10, Kind.DIVIDEND)]
    assert [t.time.day for t in by_kind] == [12]
    assert [t.time.day for t in both] == [12, 5]


def test_an_account_that_sold_everything_has_no_positions(router: respx.MockRouter) -> None:
    """The second sync lists no positions: the query says none, not the first sync's again."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST, SECOND])
    run_sync(router, clock=at(NOW))
    assert len(positions(account="1111")[0]) == 10

    sold = json.loads("[" + fixture_text("account.json") + "]")
    del sold[0]["securitiesAccount"]["positions"]  # Schwab leaves the key out when none are held
    both = json.dumps([sold[0], json.loads(fixture_text("account.json"))])
    both = both.replace('"accountNumber": "11111111"', '"accountNumber": "22222222"', 2)
    both = both.replace('"accountNumber": "22222222"', '"accountNumber": "11111111"', 1)
    changed = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    mock_connection_api(changed, "token-alpha", [FIRST, SECOND], accounts=both)
    assert run_sync(changed, clock=at(NOW + DAY)).outcome.failures == []

    assert positions(account="1111")[0] == []
    assert len(positions(account="2222")[0]) == 10
    assert rows_in(schema.positions) == 30
