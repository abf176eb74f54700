"""Synced data in the vault: accounts, positions, balance snapshots, transactions, sync points.

Every field that holds money, a number or a provider reference is sealed and
bound to its row's owner. Rows are sealed outside the write transaction (the
slow part) and written in one short transaction per batch, so readers and
other writers wait as little as possible.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import bindparam, delete, literal_column, select, update

from dashtam_cli.core import lines
from dashtam_cli.core.models import Balance, Transaction
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from sqlalchemy import Select
    from sqlalchemy.ext.asyncio import AsyncConnection

    from dashtam_cli.core.models import ConnectionInfo, Record
    from dashtam_cli.core.providers.base import Changes, FetchedAccount
    from dashtam_cli.core.vault.vault import Vault

__all__ = [
    "Counts",
    "Known",
    "SyncPoint",
    "account_keys",
    "balance_snapshots",
    "has_synced",
    "known_accounts",
    "load_secret",
    "mask_key",
    "spend_request",
    "sync_points",
    "write_accounts",
    "write_changes",
]

log = logging.getLogger(__name__)

# Ids looked up in one IN (...) clause: well under SQLite's variable limit.
_ID_CHUNK: Final = 500

# A transaction written, or rewritten in place when its id is stored (see write_changes).
_UPSERT_TRANSACTIONS: Final = (
    "INSERT INTO transactions (id, account_id, occurred_at, kind, payload, form, fetched_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id,"
    " occurred_at = excluded.occurred_at, kind = excluded.kind, payload = excluded.payload,"
    " form = excluded.form, fetched_at = excluded.fetched_at"
)
# An unchanged transaction stored in an older form, written again in the current one.
_REFORM_TRANSACTION: Final = "UPDATE transactions SET payload = ?, form = ? WHERE id = ?"


def _driver_sql(conn: AsyncConnection, statement: str) -> str:
    """``statement`` (written with ``?`` marks, SQLite's) in the driver's parameter style.

    asyncpg numbers its parameters ($1, $2, ...); no statement here has a
    literal question mark.
    """
    if conn.dialect.name != "postgresql":
        return statement
    parts = statement.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


def mask_key(key: str) -> str:
    """``****5678``: the last four characters of a provider's account key, never more."""
    return "****" + key[-4:]


def _dumps(model: Record) -> str:
    # pydantic's own serializer: Decimal as a string, times in ISO 8601.
    return model.model_dump_json()


@dataclasses.dataclass(frozen=True, slots=True)
class _Stored:
    """A stored transaction's opened text and the form it is written in (see core/lines.py)."""

    text: str
    form: int | None


@dataclasses.dataclass(slots=True)
class Known:
    """An account dashtam has stored: its stable id, its provider key (in memory only)."""

    id: str
    key: str
    reference: str | None = None
    fetched_at: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SyncPoint:
    """Where an account's last successful sync reached."""

    through: dt.datetime
    cursor: str | None
    synced_at: dt.datetime


@dataclasses.dataclass(slots=True)
class Counts:
    """What one write did to the transactions."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0

    def add(self, other: Counts) -> None:
        """Add another write's counts to these."""
        self.new += other.new
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.removed += other.removed


def _newest_first(query: Select[Any], dialect: str) -> Select[Any]:
    """Accounts in the order that says which row of a key is the one to keep: the first.

    Only one row per key is written now; a vault may still hold copies that
    concurrent first fetches of older versions made. Every run since used the
    row stored last, so that is the one kept: newest ``fetched_at``, then newest
    row (SQLite's rowid; a shared vault on PostgreSQL, which has no such order,
    was only ever written one row per key, or copied so: its id decides).
    """
    table = schema.accounts
    last = table.c.id if dialect == "postgresql" else literal_column("accounts.rowid")
    return query.order_by(table.c.fetched_at.desc(), last.desc())


def _opened(vault: Vault, row_id: str, field: str, blob: bytes, owner: str) -> str | None:
    """One sealed field of an accounts row, or None (with a warning) when its seal does not open.

    One damaged row must not stop every sync and query of its connection: the
    account is left out, and the next sync stores it again from the provider.
    """
    from dashtam_cli.core.vault.errors import RecordTampered

    try:
        return vault.unseal_text(schema.accounts.name, row_id, field, blob, owner=owner)
    except RecordTampered as exc:
        log.warning("%s; the next `dashtam sync` stores the account again", exc.message)
        return None


async def known_accounts(vault: Vault, connection_id: str) -> list[Known]:
    """The connection's stored accounts, one per key (see :func:`_newest_first`)."""
    table = schema.accounts
    async with vault.reading() as conn:
        rows = (
            await conn.execute(
                _newest_first(
                    select(table.c.id, table.c.number, table.c.provider_ref, table.c.fetched_at),
                    conn.dialect.name,
                ).where(table.c.connection_id == connection_id)
            )
        ).all()
    known: dict[str, Known] = {}
    for row in rows:
        key = _opened(vault, row.id, "number", row.number, connection_id)
        if key is None:
            continue  # stored anew, under a new id, by the next sync
        register_secret(key)
        if key in known:
            continue  # an older copy (see _newest_first), merged at the next write
        reference = (
            None
            if row.provider_ref is None
            else _opened(vault, row.id, "provider_ref", row.provider_ref, connection_id)
        )
        # A stored reference may go into request paths: masked before the first one.
        register_secret(reference)
        stamp = row.fetched_at if isinstance(row.fetched_at, str) else None
        known[key] = Known(row.id, key, reference, stamp)
    return list(known.values())


async def has_synced(vault: Vault, connection_id: str) -> bool:
    """Whether the connection holds data from an earlier sync (a sync point, or accounts)."""
    table, points = schema.accounts, schema.sync_points
    async with vault.reading() as conn:
        for query in (
            select(points.c.id).where(points.c.connection_id == connection_id).limit(1),
            select(table.c.id).where(table.c.connection_id == connection_id).limit(1),
        ):
            if await conn.scalar(query) is not None:
                return True
    return False


async def load_secret(vault: Vault, info: ConnectionInfo) -> str:
    """The connection's sealed credential record (providers that do not refresh)."""
    from dashtam_cli.core.errors import ReauthRequired
    from dashtam_cli.core.providers import relogin_command

    table = schema.connections
    async with vault.reading() as conn:
        blob = await conn.scalar(select(table.c.secret).where(table.c.id == info.id))
    if blob is None:
        raise ReauthRequired(
            f"connection {info.name!r} holds no credential",
            hint=f"log in again: {relogin_command(info.provider, info.name)}",
        )
    secret = vault.unseal_text(table.name, info.id, "secret", blob, owner=info.id)
    register_secret(secret)
    return secret


async def _stored_ids(
    vault: Vault, conn: AsyncConnection, connection_id: str
) -> dict[str, list[str]]:
    """Each stored account key of the connection and its rows' ids, the one to keep first."""
    table = schema.accounts
    query = _newest_first(select(table.c.id, table.c.number), vault.engine.dialect.name).where(
        table.c.connection_id == connection_id
    )
    ids: dict[str, list[str]] = {}
    for row in (await conn.execute(query)).all():
        key = _opened(vault, row.id, "number", row.number, connection_id)
        if key is not None:  # a damaged row is left alone (known_accounts leaves it out)
            ids.setdefault(key, []).append(row.id)
    return ids


def _content(vault: Vault, row_id: str, account_id: str, blob: bytes) -> tuple[str, dict[str, Any]]:
    """A cached transaction's record, and its text without the ids (equal for two copies)."""
    record: dict[str, Any] = json.loads(
        vault.unseal_text(schema.transactions.name, row_id, "payload", blob, owner=account_id)
    )
    rest = {k: v for k, v in record.items() if k not in {"id", "account_id"}}
    return json.dumps(rest, sort_keys=True), record


async def _merge_copies(
    vault: Vault, conn: AsyncConnection, keep: str, copies: Sequence[str]
) -> None:
    """Fold copies of one account into the row kept, losing no stored transaction.

    A copy's transaction that the kept row already holds (the same record)
    goes with the copy; any other moves to the kept row under its own id.
    Positions, balances and sync points go with the copy: the next sync
    writes them anew.
    """
    table = schema.transactions
    query = select(table.c.id, table.c.account_id, table.c.payload)
    held: collections.Counter[str] = collections.Counter()
    for row in (await conn.execute(query.where(table.c.account_id == keep))).all():
        held[_content(vault, row.id, row.account_id, row.payload)[0]] += 1
    moved = []
    for copy in copies:
        seen: collections.Counter[str] = collections.Counter()
        for row in (await conn.execute(query.where(table.c.account_id == copy))).all():
            text, record = _content(vault, row.id, row.account_id, row.payload)
            seen[text] += 1
            if seen[text] > held[text]:
                held[text] += 1
                record["account_id"] = keep
                compact = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
                payload = vault.seal(table.name, row.id, "payload", compact, owner=keep)
                moved.append({"_id": row.id, "account_id": keep, "payload": payload})
    if moved:
        # Written as json.dumps writes it: a form checked when printed (NULL).
        await conn.execute(
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values(account_id=bindparam("account_id"), payload=bindparam("payload"), form=None),
            moved,
        )
    accounts = schema.accounts
    await conn.execute(delete(accounts).where(accounts.c.id.in_(list(copies))))
    log.info(
        "merged %d copies of an account into one (%d transactions moved)", len(copies), len(moved)
    )


def _with_id(item: FetchedAccount, account_id: str) -> FetchedAccount:
    """The same account under another id (one another process stored first)."""
    account = item.account.model_copy(update={"id": account_id})
    positions = [p.model_copy(update={"account_id": account_id}) for p in item.positions]
    return dataclasses.replace(item, account=account, positions=positions)


def _account_rows(
    vault: Vault, info: ConnectionInfo, item: FetchedAccount, stamp: str
) -> dict[str, list[dict[str, Any]]]:
    """Seal one account's row, its positions and its balance snapshot."""
    account = item.account
    aid = account.id
    accounts, positions, balances = schema.accounts, schema.positions, schema.balances
    row = {
        "id": aid,
        "connection_id": info.id,
        "number": vault.seal(accounts.name, aid, "number", item.key, owner=info.id),
        "payload": vault.seal(accounts.name, aid, "payload", _dumps(account), owner=info.id),
        "fetched_at": stamp,
        "provider_ref": (
            None
            if item.reference is None
            else vault.seal(accounts.name, aid, "provider_ref", item.reference, owner=info.id)
        ),
    }
    position_rows = []
    for position in item.positions:
        row_id = str(uuid.uuid4())
        sealed = vault.seal(positions.name, row_id, "payload", _dumps(position), owner=aid)
        position_rows.append(
            {"id": row_id, "account_id": aid, "payload": sealed, "fetched_at": stamp}
        )
    balance = Balance(
        account_id=aid,
        at=item.balance_at or account.fetched_at,
        currency=account.currency,
        cash=account.cash,
        market_value=account.market_value,
        total_value=account.total_value,
        buying_power=account.buying_power,
    )
    balance_id = str(uuid.uuid4())
    balance_row = {
        "id": balance_id,
        "account_id": aid,
        "at": db.utcnow_text(balance.at),
        "payload": vault.seal(balances.name, balance_id, "payload", _dumps(balance), owner=aid),
    }
    return {"account": [row], "positions": position_rows, "balances": [balance_row]}


async def write_accounts(
    vault: Vault, info: ConnectionInfo, fetched: Sequence[FetchedAccount], now: dt.datetime
) -> list[FetchedAccount]:
    """Store the accounts, their positions and a balance snapshot each, in one transaction.

    Which id an account has is settled inside the write transaction: a key
    already stored (perhaps by another process a moment ago) keeps its row,
    so concurrent first syncs end with one row per account. Returns the
    accounts under their settled ids.
    """
    if not fetched:
        return []
    stamp = db.utcnow_text(now)
    sealed = {item.account.id: _account_rows(vault, info, item, stamp) for item in fetched}
    table = schema.accounts
    upsert = db.insert(vault.engine, table)
    upsert = upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={
            name: upsert.excluded[name]
            for name in ("connection_id", "number", "payload", "fetched_at", "provider_ref")
        },
    )
    async with vault.writing() as conn:
        stored = await _stored_ids(vault, conn, info.id)
        final = []
        for item in fetched:
            ids = stored.get(item.key)
            if ids and ids[0] != item.account.id:
                # Stored meanwhile by another process: its id wins; sealed again under it.
                item = _with_id(item, ids[0])  # noqa: PLW2901 - the same account, settled
                sealed[item.account.id] = _account_rows(vault, info, item, stamp)
            final.append(item)
        for ids in stored.values():
            if len(ids) > 1:
                await _merge_copies(vault, conn, ids[0], ids[1:])
        rows = [sealed[item.account.id] for item in final]
        await conn.execute(upsert, [r["account"][0] for r in rows])
        positions = [p for r in rows for p in r["positions"]]
        if positions:
            await conn.execute(schema.positions.insert(), positions)
        await conn.execute(schema.balances.insert(), [r["balances"][0] for r in rows])
    return final


async def sync_points(vault: Vault, connection_id: str) -> dict[str, SyncPoint]:
    """Each account's sync point, by account id; an unreadable one is left out (a full sync)."""
    table = schema.sync_points
    async with vault.reading() as conn:
        rows = (
            await conn.execute(
                select(table.c.id, table.c.through, table.c.cursor, table.c.synced_at).where(
                    table.c.connection_id == connection_id
                )
            )
        ).all()
    points = {}
    for row in rows:
        try:
            cursor = (
                None
                if row.cursor is None
                else vault.unseal_text(
                    table.name, row.id, "cursor", row.cursor, owner=connection_id
                )
            )
            points[row.id] = SyncPoint(
                dt.datetime.fromisoformat(row.through),
                cursor,
                dt.datetime.fromisoformat(row.synced_at),
            )
        except (ValueError, TypeError) as exc:
            log.warning("a damaged sync point is ignored: its account syncs anew (%s)", exc)
    return points


def _time_text(moment: dt.datetime) -> str:
    """:func:`db.utcnow_text` of a transaction's time; one already in UTC needs no conversion."""
    if moment.tzinfo is dt.UTC:
        return moment.isoformat(timespec="microseconds")
    return db.utcnow_text(moment)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield ids[start : start + _ID_CHUNK]


async def _existing(vault: Vault, ids: Sequence[str]) -> dict[str, _Stored]:
    """The stored transactions among ``ids`` that exist (unreadable ones as '')."""
    from dashtam_cli.core.vault.errors import RecordTampered

    table = schema.transactions
    found: dict[str, _Stored] = {}
    async with vault.reading() as conn:
        for chunk in _chunks(ids):
            # The driver's own parameters: SQLAlchemy's expanding IN cost more than the lookup.
            marks = ",".join("?" * len(chunk))
            rows = await conn.exec_driver_sql(
                _driver_sql(
                    conn,
                    f"SELECT id, account_id, payload, form FROM transactions WHERE id IN ({marks})",  # noqa: S608 - only placeholders are formatted in
                ),
                tuple(chunk),
            )
            # Unpacked, not read by name (0.7 us a column on a result row).
            stored = cast("Iterable[tuple[str, str, bytes, int | None]]", rows)
            for row_id, account_id, payload, form in stored:
                try:
                    text = vault.unseal_text(
                        table.name, row_id, "payload", payload, owner=account_id
                    )
                except RecordTampered:
                    text = ""  # damaged: written anew
                found[row_id] = _Stored(text, form)
    return found


async def _holding(vault: Vault, account_ids: Iterable[str]) -> set[str]:
    """Those of ``account_ids`` with at least one stored transaction (an index probe each)."""
    table = schema.transactions
    found: set[str] = set()
    async with vault.reading() as conn:
        for account_id in sorted(account_ids):
            probe = select(table.c.id).where(table.c.account_id == account_id).limit(1)
            if (await conn.execute(probe)).first() is not None:
                found.add(account_id)
    return found


async def _present(conn: AsyncConnection, connection_id: str, ids: Iterable[str]) -> set[str]:
    """Those of the account ids ``ids`` that are stored rows of the connection."""
    table = schema.accounts
    found: set[str] = set()
    for chunk in _chunks(sorted(ids)):
        query = select(table.c.id).where(
            table.c.id.in_(chunk), table.c.connection_id == connection_id
        )
        found.update((await conn.execute(query)).scalars())
    return found


@dataclasses.dataclass(slots=True)
class _Writes:
    """What a batch writes to the transactions table, and what it counts."""

    counts: Counts = dataclasses.field(default_factory=Counts)
    # New and changed: (id, account_id, occurred_at, kind, payload, form, fetched_at).
    rows: list[tuple[str, str, str, str, bytes, int | None, str]] = dataclasses.field(
        default_factory=list
    )
    # Unchanged, stored in an older form: (id, account_id, payload, form).
    reformed: list[tuple[str, str, bytes, int]] = dataclasses.field(default_factory=list)
    new_ids: set[str] = dataclasses.field(default_factory=set)

    def add(
        self, vault: Vault, txn: Transaction, dumped: str, old: _Stored | None, stamp: str
    ) -> None:
        """Count one fetched transaction, and write it if it is new or changed.

        It is stored as its JSON line where it has one (core/lines.py), so
        printing it is writing it. A row stored in another form holds the
        same record when its text is what the transaction dumps as: counted
        unchanged, and written again in the current form.
        """
        tid = txn.id
        table = schema.transactions.name
        txn, dumped = _first_seen(txn, dumped, None if old is None else old.text)
        text, form = lines.stored_form(Transaction, dumped)
        if old is not None:
            if old.form == form:
                unchanged = old.text == text
            else:
                unchanged = old.form is None and old.text == dumped
            if unchanged:
                self.counts.unchanged += 1
                if form is not None and old.form != form:
                    sealed = vault.seal(table, tid, "payload", text, owner=txn.account_id)
                    self.reformed.append((tid, txn.account_id, sealed, form))
                return
            self.counts.changed += 1
        else:
            self.counts.new += 1
            self.new_ids.add(tid)
        self.rows.append(
            (
                tid,
                txn.account_id,
                _time_text(txn.time),
                str(txn.kind),  # a StrEnum: its value, a third of the cost of .value
                vault.seal(table, tid, "payload", text, owner=txn.account_id),
                form,
                stamp,
            )
        )

    def accounts(self) -> set[str]:
        """The accounts whose rows are written."""
        return {row[1] for row in self.rows} | {row[1] for row in self.reformed}

    def drop(self, gone: set[str]) -> None:
        """Leave out, and uncount, the rows of the accounts ``gone``."""
        for row in self.rows:
            if row[1] in gone:
                if row[0] in self.new_ids:
                    self.counts.new -= 1
                else:
                    self.counts.changed -= 1
        self.counts.unchanged -= sum(1 for row in self.reformed if row[1] in gone)
        self.rows = [row for row in self.rows if row[1] not in gone]
        self.reformed = [row for row in self.reformed if row[1] not in gone]


async def write_changes(
    vault: Vault,
    info: ConnectionInfo,
    changes: Changes,
    *,
    through: Mapping[str, dt.datetime],
    now: dt.datetime,
) -> Counts:
    """Store one batch: new and changed transactions, removals, and the sync points it completes.

    A completed account's point moves to ``through[account_id]``; an account
    missing from ``through`` keeps its point (its window left a gap before it).

    A transaction already stored with the same content is left alone
    (``unchanged``); one whose content changed is replaced under the same id,
    never added twice. Everything is written in one transaction, so a batch
    is stored whole or not at all, with its sync points.
    """
    table = schema.transactions
    stamp = db.utcnow_text(now)
    texts = {t.id: (t, _dumps(t)) for t in changes.transactions}
    # A transaction's id is made from its account's: an account with none stored
    # (its first sync) has none of these, and its ids need no lookup.
    holding = await _holding(vault, {t.account_id for t in changes.transactions})
    before = await _existing(vault, [t.id for t in changes.transactions if t.account_id in holding])
    writes = _Writes()
    for tid, (txn, dumped) in texts.items():
        writes.add(vault, txn, dumped, before.get(tid), stamp)
    counts = writes.counts
    points = schema.sync_points
    point_rows = [
        {
            "id": account_id,
            "connection_id": info.id,
            "through": db.utcnow_text(through[account_id]),
            "cursor": (
                None
                if cursor is None
                else vault.seal(points.name, account_id, "cursor", cursor, owner=info.id)
            ),
            "synced_at": stamp,
        }
        for account_id, cursor in changes.completed.items()
        if account_id in through  # fetched over a window that does not reach its point: kept
    ]
    point_upsert = db.insert(vault.engine, points)
    point_upsert = point_upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={name: point_upsert.excluded[name] for name in ("through", "cursor", "synced_at")},
    )
    async with vault.writing() as conn:
        # An account removed meanwhile (merged, or its connection removed) takes nothing:
        # its rows would fail the foreign key, and with it the whole batch.
        gone: set[str] = set(changes.completed) | writes.accounts()
        gone -= await _present(conn, info.id, gone)
        if gone:
            log.info("%d accounts were removed during the sync; their rows are dropped", len(gone))
            writes.drop(gone)
            point_rows = [row for row in point_rows if row["id"] not in gone]
        if writes.rows:
            # The driver's executemany with tuples: SQLAlchemy's per-row parameter
            # processing cost more than the row's insert.
            await conn.exec_driver_sql(_driver_sql(conn, _UPSERT_TRANSACTIONS), writes.rows)
        if writes.reformed:
            reformed = [(payload, form, tid) for tid, _, payload, form in writes.reformed]
            await conn.exec_driver_sql(_driver_sql(conn, _REFORM_TRANSACTION), reformed)
        if changes.removed:
            owned = select(schema.accounts.c.id).where(schema.accounts.c.connection_id == info.id)
            for chunk in _chunks(list(changes.removed)):
                result = await conn.execute(
                    delete(table).where(table.c.id.in_(chunk), table.c.account_id.in_(owned))
                )
                counts.removed += result.rowcount or 0
        if changes.pending_from:
            kept = set(texts) | set(changes.removed)
            pending = {a: t for a, t in changes.pending_from.items() if a not in gone}
            counts.removed += await _drop_stale_pending(vault, conn, pending, kept)
        if point_rows:
            await conn.execute(point_upsert, point_rows)
    return counts


def _first_seen(txn: Transaction, text: str, old: str | None) -> tuple[Transaction, str]:
    """A pending transaction the provider gives no date of its own keeps the time first stored.

    Such a provider dates it when it is seen (SimpleFIN's ``posted: 0``
    without ``transacted_at``): without this, each day's sync would move it
    to that day and count it as changed.
    """
    if not old or old == text or txn.status != "PENDING" or txn.trade_date is not None:
        return txn, text
    try:
        stored = json.loads(old)
        first = dt.datetime.fromisoformat(stored["time"])
    except (ValueError, KeyError, TypeError):
        return txn, text
    if stored.get("status") != "PENDING" or first == txn.time:
        return txn, text
    kept = txn.model_copy(update={"time": first})
    return kept, _dumps(kept)


async def _drop_stale_pending(
    vault: Vault,
    conn: AsyncConnection,
    pending_from: Mapping[str, dt.datetime],
    kept: set[str],
) -> int:
    """Remove each account's stored pending transactions from its time on that are not in ``kept``.

    Only rows outside the batch are opened (those a provider stopped listing:
    few), so the cost is that of the transactions that went away.
    """
    from dashtam_cli.core.vault.errors import RecordTampered

    table = schema.transactions
    stale: list[str] = []
    for account_id, since in pending_from.items():
        rows = await conn.execute(
            select(table.c.id, table.c.payload).where(
                table.c.account_id == account_id, table.c.occurred_at >= _time_text(since)
            )
        )
        for row in rows:
            if row.id in kept:
                continue
            try:
                text = vault.unseal_text(
                    table.name, row.id, "payload", row.payload, owner=account_id
                )
                status = json.loads(text).get("status")
            except (RecordTampered, ValueError, AttributeError):
                continue  # unreadable: left for the integrity check to report, never guessed at
            if status == "PENDING":
                stale.append(row.id)
    for chunk in _chunks(stale):
        await conn.execute(delete(table).where(table.c.id.in_(chunk)))
    return len(stale)


_BUDGET_DAYS_KEPT: Final = 7


async def spend_request(
    vault: Vault, scope: str, limit: int, now: dt.datetime
) -> tuple[int, dt.datetime]:
    """Count one request against ``scope``'s budget for today (UTC): how many are left, and when.

    Atomic across processes (one write transaction): two processes can never
    both take the last request. Past ``limit`` nothing is counted and
    :class:`~dashtam_cli.core.errors.RequestBudgetSpent` is raised. Counts
    older than a week are dropped as it goes.
    """
    from dashtam_cli.core.errors import RequestBudgetSpent

    table = schema.request_budget
    today = now.astimezone(dt.UTC).date()
    resets_at = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    day = today.isoformat()
    async with vault.writing() as conn:
        used = (
            await conn.execute(
                select(table.c.used).where(table.c.scope == scope, table.c.day == day)
            )
        ).scalar_one_or_none() or 0
        if used >= limit:
            raise RequestBudgetSpent(
                f"the daily budget of {limit} requests is spent ({used} sent today)",
                limit=limit,
                resets_at=resets_at,
            )
        upsert = db.insert(conn, table).values(scope=scope, day=day, used=1)
        upsert = upsert.on_conflict_do_update(
            index_elements=["scope", "day"], set_={"used": table.c.used + 1}
        )
        await conn.execute(upsert)
        oldest = (today - dt.timedelta(days=_BUDGET_DAYS_KEPT)).isoformat()
        await conn.execute(delete(table).where(table.c.scope == scope, table.c.day < oldest))
    return limit - used - 1, resets_at


async def account_keys(vault: Vault) -> dict[str, tuple[str, str]]:
    """Every stored account's provider and provider key, by account id (unreadable ones left out).

    The same provider key under two connections is the same account reached
    twice: totals count it once.
    """
    accounts, connections = schema.accounts, schema.connections
    query = select(
        accounts.c.id, accounts.c.connection_id, accounts.c.number, connections.c.provider
    ).join(connections, accounts.c.connection_id == connections.c.id)
    async with vault.reading() as conn:
        rows = (await conn.execute(query)).all()
    keys: dict[str, tuple[str, str]] = {}
    for row in rows:
        key = _opened(vault, row.id, "number", row.number, row.connection_id)
        if key is not None:
            register_secret(key)
            keys[row.id] = (row.provider, key)
    return keys


async def balance_snapshots(
    vault: Vault, account_ids: Sequence[str], *, until: dt.datetime | None = None
) -> list[Balance]:
    """The balance snapshots of ``account_ids`` (up to ``until``), oldest first.

    A snapshot whose seal does not open is left out with a warning.
    """
    from dashtam_cli.core.vault.errors import RecordTampered

    table = schema.balances
    found: list[Balance] = []
    async with vault.reading() as conn:
        for chunk in _chunks(list(account_ids)):
            query = select(table.c.id, table.c.account_id, table.c.payload).where(
                table.c.account_id.in_(chunk)
            )
            if until is not None:
                query = query.where(table.c.at <= db.utcnow_text(until))
            for row in (await conn.execute(query)).all():
                try:
                    text = vault.unseal_text(
                        table.name, row.id, "payload", row.payload, owner=row.account_id
                    )
                except RecordTampered as exc:
                    log.warning("a balance snapshot is left out: %s", exc.message)
                    continue
                found.append(Balance.model_validate_json(text))
    found.sort(key=lambda b: (b.at, b.account_id))
    return found
