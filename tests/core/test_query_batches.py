"""`transactions list` over many batches: every row once, newest first, ties by id, limits kept.

And how a batch of changes is stored (store.write_changes): new, changed, unchanged.

The rows are read in batches (queries.BATCH); these tests make a batch three
rows long so that a few transactions span many batches, with times that tie.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid

import pytest
from sqlalchemy import select

from dashtam_cli.core import queries, store
from dashtam_cli.core.connections import save_login
from dashtam_cli.core.models import Account, ConnectionInfo, Kind, Transaction
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.providers.base import Changes, FetchedAccount
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)


def _account(info: ConnectionInfo, number: str) -> FetchedAccount:
    account = Account(
        id=str(uuid.uuid4()),
        connection=info.name,
        provider=info.provider,
        name=f"Brokerage ****{number[-4:]}",
        type="MARGIN",
        number=f"****{number[-4:]}",
        currency="USD",
        cash=decimal.Decimal("10.00"),
        market_value=decimal.Decimal(0),
        total_value=decimal.Decimal("10.00"),
        buying_power=None,
        fetched_at=NOW,
    )
    return FetchedAccount(number, None, account, [])


def _transaction(account: Account, n: int) -> Transaction:
    # Times tie in threes: only the id orders those.
    return Transaction(
        id=str(uuid.uuid4()),
        account_id=account.id,
        account=account.number,
        time=NOW - dt.timedelta(hours=n // 3),
        trade_date=None,
        settlement_date=None,
        type="TRADE" if n % 2 else "DIVIDEND_OR_INTEREST",
        kind=Kind.TRADE if n % 2 else Kind.DIVIDEND,
        description=f"item {n}",
        amount=decimal.Decimal(n) / 100,
        symbol="AAPL" if n % 4 == 1 else None,
        quantity=None,
        price=None,
        fees=decimal.Decimal(0),
        status="VALID",
    )


async def _stored() -> list[Transaction]:
    """Two accounts with 20 transactions between them, stored as a sync stores them."""
    settings = load_settings()
    async with open_vault(settings, OpenOptions(create=True)) as vault:
        tokens = TokenSet(
            access_token="access",
            refresh_token="refresh",
            token_type="Bearer",
            issued_at=NOW,
            access_expires_at=NOW + dt.timedelta(days=365 * 20),
            refresh_expires_at=None,
        )
        info = await save_login(vault, provider="schwab", name="main", tokens=tokens)
        fetched = await store.write_accounts(
            vault, info, [_account(info, "11112222"), _account(info, "33334444")], NOW
        )
        made = [_transaction(fetched[n % 2].account, n) for n in range(20)]
        for item in fetched:
            aid = item.account.id
            await store.write_changes(
                vault,
                info,
                Changes(
                    transactions=[t for t in made if t.account_id == aid], completed={aid: None}
                ),
                through={aid: NOW},
                now=NOW,
            )
    return made


def _listed(options: queries.QueryOptions) -> list[list[Transaction]]:
    batches: list[list[Transaction]] = []
    asyncio.run(queries.query_transactions(load_settings(), options, OpenOptions(), batches.append))
    return batches


@pytest.fixture
def made(master_key: bytes, monkeypatch: pytest.MonkeyPatch) -> list[Transaction]:
    """The stored transactions, with batches of three rows."""
    del master_key
    monkeypatch.setattr(queries, "BATCH", 3)
    return asyncio.run(_stored())


def _newest_first(items: list[Transaction]) -> list[str]:
    return [t.id for t in sorted(items, key=lambda t: (t.time, t.id), reverse=True)]


def test_every_row_comes_once_newest_first_and_ties_by_id(made: list[Transaction]) -> None:
    """Across seven batches the rows are exactly those stored, newest first, ties by id."""
    batches = _listed(queries.QueryOptions(offline=True))
    assert [len(b) for b in batches] == [3, 3, 3, 3, 3, 3, 2]
    listed = [t for b in batches for t in b]
    assert [t.id for t in listed] == _newest_first(made)
    assert listed == sorted(made, key=lambda t: (t.time, t.id), reverse=True)


def test_a_limit_across_batches_gives_the_newest(made: list[Transaction]) -> None:
    """--limit 7 with batches of three: the seven newest, in order, and nothing after."""
    batches = _listed(queries.QueryOptions(offline=True, limit=7))
    assert [t.id for b in batches for t in b] == _newest_first(made)[:7]


def test_filters_checked_after_opening_span_batches(made: list[Transaction]) -> None:
    """A symbol (checked after opening) with a limit: the newest matches, however batches fall."""
    batches = _listed(queries.QueryOptions(offline=True, symbol="aapl", limit=4))
    wanted = [t for t in made if t.symbol == "AAPL"]
    assert [t.id for b in batches for t in b] == _newest_first(wanted)[:4]
    one_account = made[0].account_id
    batches = _listed(queries.QueryOptions(offline=True, account=one_account, types=("trade",)))
    wanted = [t for t in made if t.account_id == one_account and t.kind is Kind.TRADE]
    assert [t.id for b in batches for t in b] == _newest_first(wanted)


async def _writes() -> tuple[list[store.Counts], list[tuple[str, str, str]], list[Transaction]]:
    async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
        tokens = TokenSet(
            access_token="access",
            refresh_token=None,
            token_type="Bearer",
            issued_at=NOW,
            access_expires_at=NOW + dt.timedelta(days=365 * 20),
            refresh_expires_at=None,
        )
        info = await save_login(vault, provider="schwab", name="main", tokens=tokens)
        (item,) = await store.write_accounts(vault, info, [_account(info, "55556666")], NOW)
        aid = item.account.id
        first = [_transaction(item.account, n) for n in range(3)]
        changed = first[1].model_copy(update={"amount": decimal.Decimal("-9.99")})
        counts = [
            await store.write_changes(
                vault,
                info,
                Changes(transactions=batch, completed={aid: None}),
                through={aid: NOW},
                now=NOW,
            )
            for batch in (first, [first[0], changed, first[2]])
        ]
        table = schema.transactions
        async with vault.reading() as conn:
            rows = (
                await conn.execute(
                    select(table.c.id, table.c.kind, table.c.payload, table.c.occurred_at)
                )
            ).all()
        opened = [
            (
                row.id,
                row.occurred_at,
                vault.unseal_text(table.name, row.id, "payload", row.payload, owner=aid),
            )
            for row in rows
        ]
    return counts, opened, [first[0], changed, first[2]]


def test_a_changed_transaction_is_rewritten_in_place_never_added(master_key: bytes) -> None:
    """Three new; then one changed, two unchanged; the vault holds the three, the change in it."""
    del master_key
    counts, opened, latest = asyncio.run(_writes())
    assert [(c.new, c.changed, c.unchanged) for c in counts] == [(3, 0, 0), (0, 1, 2)]
    stored = {row_id: (occurred, text) for row_id, occurred, text in opened}
    assert len(opened) == 3
    for txn in latest:
        occurred, text = stored[txn.id]
        assert Transaction.model_validate_json(text) == txn
        assert dt.datetime.fromisoformat(occurred) == txn.time
