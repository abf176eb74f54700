"""The vault rows a sync writes: one row per account, copies merged, damaged rows survived."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sqlite3
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import pytest
import respx
from schwab_support import BASE_URL, add_connection, mock_connection_api, transaction_text
from sqlalchemy import select
from sync_support import NOW, accounts, at, rows_in, run_sync, transactions

from dashtam_cli.core import lines, store
from dashtam_cli.core.connections import list_connections
from dashtam_cli.core.errors import InputError
from dashtam_cli.core.models import Transaction
from dashtam_cli.core.providers.base import Changes, FetchedAccount, transaction_id
from dashtam_cli.core.queries import QueryOptions, query_transactions
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.vault.vault import Vault

FIRST, SECOND = "11111111", "22222222"
ACTIVITIES: Final = (101, 102, 103, 104)
COPY: Final = "0c0c0c0c-0000-4000-8000-000000000001"
DAY: Final = dt.timedelta(days=1)


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


def with_vault(job: Callable[[Vault], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``job`` on the test's vault."""

    async def main() -> Any:
        async with open_vault(load_settings()) as vault:
            return await job(vault)

    return asyncio.run(main())


def raw_sql(statement: str, *params: Any) -> list[Any]:
    """Run SQL on the vault behind dashtam's back, as a bit flip or an editor would.

    On the SQLite file, or on a shared vault's database (``?`` marks become asyncpg's ``$n``).
    """
    settings = load_settings()
    if settings.database_url is not None:
        import asyncpg

        parts = statement.split("?")
        numbered = "".join(f"{p}${n}" for n, p in enumerate(parts[:-1], 1)) + parts[-1]
        dsn = "postgresql://" + settings.database_url.partition("://")[2]

        async def run() -> list[Any]:
            conn = await asyncpg.connect(dsn)
            try:
                return [tuple(r) for r in await conn.fetch(numbered, *params)]
            finally:
                await conn.close()

        return asyncio.run(run())
    with sqlite3.connect(settings.paths.vault_file) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


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
    """A second, newer row for the account ``original``, as old versions' races left them.

    The copy holds copies of the original's transactions but the first, one
    of them changed (a record only the copy has). Returns its transactions by id.
    """
    accounts_table, txns = schema.accounts, schema.transactions
    written = {}
    async with vault.writing() as conn:
        row = (
            await conn.execute(select(accounts_table).where(accounts_table.c.id == original))
        ).one()
        newer = (dt.datetime.fromisoformat(row.fetched_at) + dt.timedelta(seconds=1)).isoformat()
        owner = row.connection_id
        number = vault.unseal_text("accounts", original, "number", row.number, owner=owner)
        payload = json.loads(
            vault.unseal_text("accounts", original, "payload", row.payload, owner=owner)
        )
        await conn.execute(
            accounts_table.insert().values(
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
                    kind=txn.kind,
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
    """The next sync keeps one row per account, and every distinct stored record under it.

    The row kept is the newest; a record both rows hold stays once; records
    only the older row had move to the row kept; the older row's id is then unknown.
    """
    run_sync(router, clock=at(NOW))

    async def before(vault: Vault) -> tuple[str, dict[str, Any], dict[str, Any]]:
        original = await _account_of(vault, FIRST)
        records = await _transactions_of(vault, original)
        return original, records, await _add_copy(vault, original)

    original, original_records, copy_records = with_vault(before)
    assert len(original_records) == len(ACTIVITIES)

    result = run_sync(router, clock=at(NOW + DAY))
    assert result.outcome.failures == []
    found = {a.number: a.id for a in accounts()[0]}
    assert found["****1111"] == COPY

    async def after(vault: Vault) -> tuple[list[str], dict[str, dict[str, Any]]]:
        async with vault.reading() as conn:
            ids = list((await conn.execute(select(schema.accounts.c.id))).scalars())
        return ids, await _transactions_of(vault, COPY)

    ids, kept = with_vault(after)
    assert len(ids) == 2
    assert original not in ids
    assert all(record["account_id"] == COPY for record in kept.values())
    every = [*original_records.values(), *copy_records.values()]
    # What was stored, plus what the sync fetched again under the kept id.
    assert {_content(r) for r in every} <= {_content(r) for r in kept.values()}
    assert set(copy_records) <= set(kept)
    # Moved under the kept row as json.dumps wrote them: a form to check when printed.
    forms = dict(raw_sql("SELECT id, form FROM transactions WHERE account_id = ?", COPY))
    moved = set(original_records) & set(forms)
    assert moved
    assert {forms[row_id] for row_id in moved} == {None}

    with pytest.raises(InputError, match="no account matches"):
        transactions(account=original)
    assert transactions(account=COPY)[0]


def _fetched(info: ConnectionInfo, key: str, account_id: str) -> FetchedAccount:
    """One account as a provider would list it, under ``account_id``."""
    from dashtam_cli.core.models import Account

    account = Account(
        id=account_id,
        connection=info.name,
        provider=info.provider,
        name="Joint",
        type="MARGIN",
        number=store.mask_key(key),
        currency="USD",
        cash=Decimal("10.50"),
        market_value=Decimal(0),
        total_value=Decimal("10.50"),
        buying_power=None,
        fetched_at=NOW,
    )
    return FetchedAccount(key=key, reference="ref-" + key, account=account, positions=[])


def test_concurrent_first_writes_converge_to_one_row_per_account() -> None:
    """Two writers that each gave a new account its own new id: one row, the first writer's id."""
    add_connection("brokerage", "token-b")

    async def write(vault: Vault) -> tuple[list[str], list[str]]:
        (info,) = await list_connections(vault)
        first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
        first = await store.write_accounts(vault, info, [_fetched(info, FIRST, first_id)], NOW)
        second = await store.write_accounts(
            vault, info, [_fetched(info, FIRST, second_id)], NOW + DAY
        )
        return [first_id, first[0].account.id], [second_id, second[0].account.id]

    (given, kept), (other, settled) = with_vault(write)
    assert kept == given
    assert settled == given != other
    assert rows_in(schema.accounts) == 1
    assert rows_in(schema.balances) == 2
    assert [a.id for a in accounts()[0]] == [given]


def test_concurrent_first_syncs_converge_to_one_row_per_account(router: respx.MockRouter) -> None:
    """Four first syncs of one connection at once: two accounts, four transactions each, once."""
    from sync_support import transport

    from dashtam_cli.core.sync import SyncOptions, sync
    from dashtam_cli.core.vault.vault import OpenOptions

    async def many() -> list[Any]:
        opts = SyncOptions(transport=transport(router), clock=at(NOW))
        return list(
            await asyncio.gather(*(sync(load_settings(), opts, OpenOptions()) for _ in range(4)))
        )

    results = asyncio.run(many())

    assert all(r.outcome.outcome() is None for r in results)
    assert rows_in(schema.accounts) == 2
    assert rows_in(schema.transactions) == 2 * len(ACTIVITIES)


def test_transactions_of_an_account_removed_meanwhile_are_not_stored(
    router: respx.MockRouter,
) -> None:
    """A batch for an account whose row is gone (merged or disconnected) stores the rest, fails not.

    The foreign key would otherwise refuse the whole write, after everything
    was downloaded.
    """
    run_sync(router, clock=at(NOW))

    async def write(vault: Vault) -> tuple[int, int, store.Counts]:
        (info,) = await list_connections(vault)
        account = await _account_of(vault, FIRST)
        record = next(iter((await _transactions_of(vault, account)).values()))
        gone = Transaction.model_validate(
            {**record, "id": transaction_id(COPY, 1), "account_id": COPY}
        )
        mine = Transaction.model_validate({**record, "id": transaction_id(account, 999)})
        counts = await store.write_changes(
            vault,
            info,
            Changes(transactions=[gone, mine], completed={COPY: None, account: None}),
            through={COPY: NOW, account: NOW + DAY},
            now=NOW + DAY,
        )
        return (
            len(await _transactions_of(vault, COPY)),
            len(await _transactions_of(vault, account)),
            counts,
        )

    gone_count, mine_count, counts = with_vault(write)
    assert (gone_count, mine_count) == (0, len(ACTIVITIES) + 1)
    assert counts.new == 1
    assert rows_in(schema.sync_points) == 2  # none for the account that is gone


# --- damaged rows -----------------------------------------------------------------------------------


def test_a_damaged_transaction_is_left_out_then_written_anew(
    router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction whose seal does not open: queries leave it out (a warning); a sync rewrites it."""
    run_sync(router, clock=at(NOW))
    ((victim,),) = raw_sql("SELECT id FROM transactions ORDER BY id LIMIT 1")
    raw_sql("UPDATE transactions SET payload = ? WHERE id = ?", b"\x00\x11\x22\x33", victim)

    with caplog.at_level("WARNING", logger="dashtam_cli"):
        found, _ = transactions()
    assert len(found) == 2 * len(ACTIVITIES) - 1
    assert victim not in {t.id for t in found}
    assert "a damaged transaction is left out" in caplog.text

    report = run_sync(router, clock=at(NOW + DAY), full=True).reports[0]
    assert (report.changed, report.unchanged) == (1, 2 * len(ACTIVITIES) - 1)
    assert victim in {t.id for t in transactions()[0]}


def test_a_damaged_sync_point_means_a_full_sync_of_its_account(router: respx.MockRouter) -> None:
    """A sync point whose time is not a time: that account fetches its whole history again."""
    run_sync(router, clock=at(NOW))
    raw_sql("UPDATE sync_points SET through = 'next tuesday'")

    result = run_sync(router, clock=at(NOW + DAY))

    assert result.outcome.failures == []
    assert result.reports[0].since == NOW + DAY - 730 * DAY
    assert rows_in(schema.transactions) == 2 * len(ACTIVITIES)


def test_a_damaged_account_stamp_does_not_break_the_next_sync(router: respx.MockRouter) -> None:
    """An accounts row whose fetched_at is a blob (or has no zone): the next sync still works."""
    run_sync(router, clock=at(NOW))
    ((first_id,), (second_id,)) = raw_sql("SELECT id FROM accounts ORDER BY id")
    raw_sql("UPDATE accounts SET fetched_at = x'37' WHERE id = ?", first_id)
    raw_sql("UPDATE accounts SET fetched_at = '2099-01-01T00:00:00' WHERE id = ?", second_id)

    result = run_sync(router, clock=at(NOW + DAY))

    assert result.outcome.failures == []
    assert sorted(a.id for a in accounts()[0]) == sorted([first_id, second_id])
    assert rows_in(schema.transactions) == 2 * len(ACTIVITIES)


def test_mask_key_shows_four_characters_at_most() -> None:
    """A key is masked to its last four characters."""
    assert store.mask_key("123456789") == "****6789"
    assert dataclasses.is_dataclass(store.Counts())


@pytest.mark.parametrize("column", ["number", "payload", "provider_ref"])
def test_a_damaged_account_row_blocks_neither_queries_nor_syncs(
    router: respx.MockRouter, column: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An account field whose seal does not open: queries answer the rest, a sync restores it.

    Before, every query and every sync of the connection failed on that one
    row, for ever: only deleting the connection got out of it.
    """
    run_sync(router, clock=at(NOW))
    ((victim,),) = raw_sql("SELECT id FROM accounts ORDER BY id LIMIT 1")
    raw_sql(f"UPDATE accounts SET {column} = ? WHERE id = ?", b"\x00\x11", victim)  # noqa: S608

    with caplog.at_level("WARNING", logger="dashtam_cli"):
        found, _ = accounts()
        found_transactions, _ = transactions()
    expected = 2 if column == "provider_ref" else 1
    assert len(found) == expected
    assert len({t.account_id for t in found_transactions}) == expected
    if column != "provider_ref":
        assert victim not in {a.id for a in found}
        assert "failed its integrity check" in caplog.text
    assert FIRST not in caplog.text
    assert SECOND not in caplog.text

    result = run_sync(router, clock=at(NOW + DAY))

    assert result.outcome.failures == []
    assert sorted(a.number for a in accounts()[0]) == ["****1111", "****2222"]
    assert len(transactions()[0]) == 2 * len(ACTIVITIES)


# --- the stored form --------------------------------------------------------------------------------


def _jsonl_line(model: Transaction) -> str:
    """The line `transactions list --format jsonl` prints for ``model`` (validated, as always)."""
    import io

    from rich.console import Console

    from dashtam_cli.cli.output import Renderer

    stream = io.StringIO()
    renderer = Renderer(fmt="jsonl", console=Console(file=stream), stream=stream)
    with renderer.streaming(Transaction) as emit:
        emit([model])
    return stream.getvalue().removesuffix("\n")


def _stored() -> dict[str, tuple[str, int | None, str]]:
    """Every stored transaction: its opened text, its form, its fetched_at."""

    async def read(vault: Vault) -> dict[str, tuple[str, int | None, str]]:
        table = schema.transactions
        async with vault.reading() as conn:
            rows = (await conn.execute(select(table))).all()
        return {
            row.id: (
                vault.unseal_text(table.name, row.id, "payload", row.payload, owner=row.account_id),
                row.form,
                row.fetched_at,
            )
            for row in rows
        }

    stored: dict[str, tuple[str, int | None, str]] = with_vault(read)
    return stored


def _store_as_before(texts: dict[str, str]) -> None:
    """Rewrite transactions as a dashtam before form 1 stored them: the text given, no form."""

    async def write(vault: Vault) -> None:
        table = schema.transactions
        async with vault.writing() as conn:
            rows = (await conn.execute(select(table.c.id, table.c.account_id))).all()
            owners = {row.id: row.account_id for row in rows}
            for row_id, text in texts.items():
                sealed = vault.seal(table.name, row_id, "payload", text, owner=owners[row_id])
                await conn.execute(
                    table.update().where(table.c.id == row_id).values(payload=sealed, form=None)
                )

    with_vault(write)


def test_a_sync_stores_each_transaction_as_the_line_jsonl_prints(router: respx.MockRouter) -> None:
    """The stored text is the record's JSON line, marked form 1; it reads back as the same model."""
    run_sync(router, clock=at(NOW))
    stored = _stored()
    found = {t.id: t for t in transactions()[0]}
    assert set(stored) == set(found)
    for row_id, (text, form, _) in stored.items():
        assert form == lines.LINE_FORM
        assert text == _jsonl_line(found[row_id])
        assert '+00:00"' in text  # printed as isoformat prints UTC, not pydantic's Z
        assert Transaction.model_validate_json(text) == found[row_id]


def test_a_row_of_the_older_form_counts_unchanged_and_is_rewritten_as_its_line(
    router: respx.MockRouter,
) -> None:
    """Rows stored before form 1: the same record is unchanged (not rewritten anew), now as a line.

    A query hands such rows on as text to check (not as a line to print as
    it is) until then; their fetched_at stays, as for any unchanged row.
    One of them changed meanwhile: counted changed, stored as its line.
    """
    run_sync(router, clock=at(NOW))
    lines_before = _stored()
    models = {t.id: t for t in transactions()[0]}
    old = {row_id: model.model_dump_json() for row_id, model in models.items()}
    changed = min(old)
    old[changed] = models[changed].model_copy(update={"description": "then"}).model_dump_json()
    _store_as_before(old)
    assert {row_id: form for row_id, (_, form, _) in _stored().items()} == dict.fromkeys(old)

    def records() -> list[object]:
        found: list[object] = []
        options = QueryOptions(offline=True)
        asyncio.run(
            query_transactions(load_settings(), options, OpenOptions(), found.extend, records=True)
        )
        return found

    assert {type(r) for r in records()} == {str}

    report = run_sync(router, clock=at(NOW + DAY), full=True).reports[0]
    assert (report.new, report.changed, report.unchanged) == (0, 1, len(old) - 1)
    after = _stored()
    assert {row_id: text for row_id, (text, _, _) in after.items()} == {
        row_id: text for row_id, (text, _, _) in lines_before.items()
    }
    assert {form for _, form, _ in after.values()} == {lines.LINE_FORM}
    kept = {row_id: at_ for row_id, (_, _, at_) in after.items() if row_id != changed}
    assert kept == {
        row_id: at_ for row_id, (_, _, at_) in lines_before.items() if row_id != changed
    }
    assert after[changed][2] != lines_before[changed][2]
    assert {type(r) for r in records()} == {lines.Printed}


def test_a_transaction_without_a_line_form_is_stored_as_dumped_and_left_alone(
    router: respx.MockRouter,
) -> None:
    """A description with a quote in it (escaped in JSON): stored as model_dump_json, form NULL.

    Printing it checks it as ever; the next sync finds it unchanged and
    does not rewrite it.
    """
    run_sync(router, clock=at(NOW))

    async def write(vault: Vault, when: dt.datetime) -> store.Counts:
        (info,) = await list_connections(vault)
        account = await _account_of(vault, FIRST)
        record = next(iter((await _transactions_of(vault, account)).values()))
        quoted = Transaction.model_validate(
            {**record, "id": transaction_id(account, 500), "description": 'say "cheese"'}
        )
        return await store.write_changes(
            vault, info, Changes(transactions=[quoted]), through={}, now=when
        )

    first = with_vault(lambda vault: write(vault, NOW + DAY))
    assert (first.new, first.unchanged) == (1, 0)
    account = with_vault(lambda vault: _account_of(vault, FIRST))
    text, form, fetched_at = _stored()[transaction_id(account, 500)]
    assert form is None
    model = Transaction.model_validate_json(text)
    assert text == model.model_dump_json()
    assert '\\"cheese\\"' in text
    again = with_vault(lambda vault: write(vault, NOW + 2 * DAY))
    assert (again.new, again.changed, again.unchanged) == (0, 0, 1)
    assert _stored()[transaction_id(account, 500)] == (text, None, fetched_at)
    (printed,) = [t for t in transactions()[0] if t.id == transaction_id(account, 500)]
    assert printed == model


def test_rows_of_an_account_removed_meanwhile_are_neither_written_nor_counted() -> None:
    """The batch's record of what it writes drops a removed account's rows, and their counts.

    New, changed and rewritten-unchanged rows alike; another account's stay.
    """
    from dashtam_cli.core.vault.vault import OpenOptions as Options
    from dashtam_cli.core.vault.vault import open_vault as opened

    async def main() -> store._Writes:
        async with opened(load_settings(), Options(create=True)) as vault:
            writes = store._Writes()
            for n, account in enumerate(("kept", "gone", "gone", "gone", "kept")):
                record = {
                    "id": f"t-{n}",
                    "account_id": account,
                    "account": "****1111",
                    "time": NOW,
                    "trade_date": None,
                    "settlement_date": None,
                    "type": "JOURNAL",
                    "kind": "fee",
                    "description": "FEE",
                    "amount": Decimal("-1.5"),
                    "symbol": None,
                    "quantity": None,
                    "price": None,
                    "fees": Decimal(0),
                    "status": "VALID",
                }
                txn = Transaction.model_validate(record)
                dumped = txn.model_dump_json()
                old = [
                    None,
                    None,
                    store._Stored("then", lines.LINE_FORM),
                    store._Stored(dumped, None),
                    store._Stored(dumped, None),
                ][n]
                writes.add(vault, txn, dumped, old, "stamp")
            return writes

    writes = asyncio.run(main())
    assert dataclasses.astuple(writes.counts) == (2, 1, 2, 0)
    assert writes.accounts() == {"kept", "gone"}
    writes.drop({"gone"})
    assert dataclasses.astuple(writes.counts) == (1, 0, 1, 0)
    assert [row[0] for row in writes.rows] == ["t-0"]
    assert [row[0] for row in writes.reformed] == ["t-4"]


def test_ids_are_looked_up_only_for_accounts_with_transactions_stored(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync looks up none of its ids (an id is made from its account's); the next, all."""
    asked: list[str] = []
    looked_up = store._existing

    async def existing(vault: Vault, ids: list[str]) -> dict[str, Any]:
        asked.extend(ids)
        return await looked_up(vault, ids)

    monkeypatch.setattr(store, "_existing", existing)
    first = run_sync(router, clock=at(NOW)).reports[0]
    assert first.new == 2 * len(ACTIVITIES)
    assert asked == []
    again = run_sync(router, clock=at(NOW + DAY), full=True).reports[0]
    assert (again.new, again.unchanged) == (0, 2 * len(ACTIVITIES))
    assert sorted(asked) == sorted(t.id for t in transactions()[0])
