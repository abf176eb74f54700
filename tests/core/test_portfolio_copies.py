"""Copies of one account that concurrent fetches left in a vault are merged, losing nothing.

Before account rows were created under the write lock, sixteen first fetches
at once could leave one row per process for the same account, each with its
own copies of the transactions. These tests build such a vault by hand and
check that the next fetch folds the copies into one row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from schwab_support import BASE_URL, add_connection, mock_connection_api, transaction_text
from sqlalchemy import select

from dashtam_cli.core.errors import InputError
from dashtam_cli.core.models import Transaction
from dashtam_cli.core.portfolio import (
    FetchOptions,
    fetch_accounts,
    fetch_transactions,
    transaction_id,
)
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from dashtam_cli.core.portfolio import FetchResult
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import Vault

FIRST, SECOND = "11111111", "22222222"
SINCE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
ACTIVITIES = (101, 102, 103, 104)
COPY = "0c0c0c0c-0000-4000-8000-000000000001"


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """One connection, 'brokerage', with two accounts and four transactions in each."""
    mock = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    add_connection("brokerage", "token-b")
    # Each with its own amount, so no two records of an account look alike.
    body = "[" + ",".join(transaction_text(i, net_amount=f"-{i}.25") for i in ACTIVITIES) + "]"
    mock_connection_api(mock, "token-b", [FIRST, SECOND], transactions=body)
    return mock


def fetch(
    job: Callable[[Settings, FetchOptions, OpenOptions], Coroutine[Any, Any, FetchResult[Any]]],
    router: respx.MockRouter,
    **options: Any,
) -> FetchResult[Any]:
    """Run one of the fetch functions with its HTTP going to ``router``."""
    opts = FetchOptions(transport=httpx.MockTransport(router.async_handler), **options)
    return asyncio.run(job(load_settings(), opts, OpenOptions()))


def _records(vault: Vault, rows: Any) -> dict[str, dict[str, Any]]:
    return {
        row.id: json.loads(
            vault.unseal_text("transactions", row.id, "payload", row.payload, owner=row.account_id)
        )
        for row in rows
    }


def _content(record: dict[str, Any]) -> str:
    """A record without its ids: the same for two copies of one transaction."""
    return json.dumps({k: v for k, v in record.items() if k not in {"id", "account_id"}})


async def _account_of(vault: Vault, number: str) -> str:
    table = schema.accounts
    async with vault.reading() as conn:
        rows = (await conn.execute(select(table.c.id, table.c.connection_id, table.c.number))).all()
    (found,) = [
        r.id
        for r in rows
        if vault.unseal_text(table.name, r.id, "number", r.number, owner=r.connection_id) == number
    ]
    return str(found)


async def _transactions_of(vault: Vault, account_id: str) -> dict[str, dict[str, Any]]:
    table = schema.transactions
    async with vault.reading() as conn:
        rows = (await conn.execute(select(table).where(table.c.account_id == account_id))).all()
    return _records(vault, rows)


async def _add_copy(vault: Vault, original: str) -> dict[str, dict[str, Any]]:
    """A second, newer row for the account ``original``, as the old race left them.

    The copy holds copies of the original's transactions but the first two,
    and one record of its own (the second, changed). Returns the copy's
    transactions by id.
    """
    accounts, txns = schema.accounts, schema.transactions
    written = {}
    async with vault.writing() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.id == original))).one()
        newer = (dt.datetime.fromisoformat(row.fetched_at) + dt.timedelta(seconds=1)).isoformat()
        owner = row.connection_id
        number = vault.unseal_text("accounts", original, "number", row.number, owner=owner)
        payload = json.loads(
            vault.unseal_text("accounts", original, "payload", row.payload, owner=owner)
        )
        await conn.execute(
            accounts.insert().values(
                id=COPY,
                connection_id=row.connection_id,
                number=vault.seal("accounts", COPY, "number", number, owner=owner),
                payload=vault.seal(
                    "accounts", COPY, "payload", json.dumps({**payload, "id": COPY}), owner=owner
                ),
                fetched_at=newer,
                provider_ref=None,
            )
        )
        query = select(txns).where(txns.c.account_id == original).order_by(txns.c.id)
        for index, txn in enumerate((await conn.execute(query)).all()):
            if index == 0:
                continue  # only the original has this one
            record = json.loads(
                vault.unseal_text("transactions", txn.id, "payload", txn.payload, owner=original)
            )
            if index == 1:
                record["description"] = "a record only the copy has"
            new_id = transaction_id(COPY, f"activity-{index}")
            record.update(id=new_id, account_id=COPY)
            written[new_id] = record
            await conn.execute(
                txns.insert().values(
                    id=new_id,
                    account_id=COPY,
                    occurred_at=txn.occurred_at,
                    payload=vault.seal(
                        "transactions", new_id, "payload", json.dumps(record), owner=COPY
                    ),
                    fetched_at=txn.fetched_at,
                )
            )
    return written


def test_copies_of_an_account_merge_into_one_row_keeping_every_transaction(
    router: respx.MockRouter,
) -> None:
    """The next fetch keeps one row per account, and every distinct cached record under it.

    The row kept is the newest (the one every run used since the copies were
    made); a record both rows hold stays once; records only the older row had
    move to the row kept with their ids; the older row's id is then unknown.
    """
    fetch(fetch_transactions, router, since=SINCE, until=UNTIL)

    async def before() -> tuple[str, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        async with open_vault(load_settings()) as vault:
            original = await _account_of(vault, FIRST)
            records = await _transactions_of(vault, original)
            return original, records, await _add_copy(vault, original)

    original, original_records, copy_records = asyncio.run(before())
    assert len(original_records) == len(ACTIVITIES)

    accounts = fetch(fetch_accounts, router).items
    assert {a.number: a.id for a in accounts} == {
        "****1111": COPY,
        "****2222": next(a.id for a in accounts if a.number == "****2222"),
    }

    async def after() -> tuple[list[str], dict[str, dict[str, Any]]]:
        async with open_vault(load_settings()) as vault:
            async with vault.reading() as conn:
                ids = list((await conn.execute(select(schema.accounts.c.id))).scalars())
            return ids, await _transactions_of(vault, COPY)

    ids, kept = asyncio.run(after())
    assert len(ids) == 2  # one row for each of the two accounts
    assert original not in ids
    assert all(record["account_id"] == COPY for record in kept.values())
    every = [*original_records.values(), *copy_records.values()]
    assert sorted(_content(r) for r in kept.values()) == sorted({_content(r) for r in every})
    assert set(copy_records) <= set(kept)
    moved = set(kept) - set(copy_records)
    assert len(moved) == 2  # the first (only the original had it) and the second (changed)
    assert moved <= set(original_records)

    with pytest.raises(InputError, match="no account matches"):
        fetch(fetch_transactions, router, account=original, since=SINCE, until=UNTIL)
    assert fetch(fetch_transactions, router, account=COPY, since=SINCE, until=UNTIL).items


def test_transactions_of_an_account_removed_meanwhile_are_not_cached(
    router: respx.MockRouter,
) -> None:
    """A write for an account whose row is gone (merged or disconnected) stores nothing, and fails not.

    The foreign key would otherwise refuse the whole write and fail the command
    after everything was downloaded.
    """
    from dashtam_cli.core import portfolio

    fetch(fetch_transactions, router, since=SINCE, until=UNTIL)

    async def store() -> tuple[int, int]:
        async with open_vault(load_settings()) as vault:
            account = await _account_of(vault, FIRST)
            kept = await _transactions_of(vault, account)
            record = next(iter(kept.values()))
            gone = Transaction.model_validate(
                {**record, "id": transaction_id(COPY, 1), "account_id": COPY}
            )
            mine = Transaction.model_validate({**record, "id": transaction_id(account, 999)})
            await portfolio._store_transactions(vault, [gone, mine])
            return len(await _transactions_of(vault, COPY)), len(
                await _transactions_of(vault, account)
            )

    assert asyncio.run(store()) == (0, len(ACTIVITIES) + 1)
