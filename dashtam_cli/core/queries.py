"""Answers from the vault: accounts, positions and transactions, filtered in the database.

Queries never touch the network, except to sync first a connection that
was never synced (so `connect` then `accounts list` just works) or when
asked to (``sync_first``). Transactions are read, opened and handed on in
batches, so memory does not grow with the number of rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, literal_column, or_, select

from dashtam_cli.core import store
from dashtam_cli.core.connections import ConnectionNotFound, list_connections
from dashtam_cli.core.errors import DashtamError, InputError
from dashtam_cli.core.lines import LINE_FORM, Printed
from dashtam_cli.core.models import KINDS, Account, Position, Transaction
from dashtam_cli.core.providers import provider as provider_named
from dashtam_cli.core.providers import provider_names
from dashtam_cli.core.vault import db, schema
from dashtam_cli.core.vault.errors import RecordTampered

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import httpx
    from sqlalchemy import ColumnElement

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.results import FetchResult
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "QueryOptions",
    "QueryResult",
    "query_accounts",
    "query_positions",
    "query_transactions",
    "type_filter",
]

log = logging.getLogger(__name__)

# Rows read, opened and handed on at a time.
BATCH: Final = 1000


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class QueryOptions:
    """What to answer: which connection and account, the filters, and whether to sync first."""

    connection: str | None = None
    account: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    types: Sequence[str] = ()
    symbol: str | None = None
    limit: int | None = None
    offline: bool = False
    sync_first: bool = False
    transport: httpx.AsyncBaseTransport | None = None
    clock: Callable[[], dt.datetime] = _utcnow


@dataclasses.dataclass(slots=True)
class QueryResult:
    """How the answer went: the sync it needed (if any), and how old the data is.

    ``sync`` holds the failures of the sync run first (a first sync, or
    ``sync_first``); ``oldest`` is the oldest sync time of the accounts
    answered (None when each was synced, or none is stored); ``never``
    names connections that have no data yet.
    """

    sync: FetchResult[Any] | None = None
    oldest: dt.datetime | None = None
    count: int = 0
    never: list[str] = dataclasses.field(default_factory=list)


def type_filter(types: Sequence[str]) -> tuple[set[str], set[str]]:
    """Split ``--type`` values into kinds and provider types; an unknown one is an InputError.

    A kind is matched in lower case, a provider type in upper case, against
    every provider dashtam knows.
    """
    kinds: set[str] = set()
    provider_types: set[str] = set()
    if not types:
        return kinds, provider_types
    known = {t for name in provider_names() for t in provider_named(name).transaction_types}
    unknown = []
    for raw in types:
        value = raw.strip()
        if value.lower() in KINDS:
            kinds.add(value.lower())
        elif value.upper() in known:
            provider_types.add(value.upper())
        else:
            unknown.append(raw)
    if unknown:
        raise InputError(
            f"unknown type {', '.join(unknown)}",
            hint=f"give a kind ({', '.join(KINDS)}) or a provider's type, e.g. "
            + ", ".join(sorted(known)[:3]),
        )
    return kinds, provider_types


@dataclasses.dataclass(slots=True)
class _Scope:
    """The accounts a query is about, with what is needed to read their rows."""

    accounts: list[Account]
    providers: dict[str, str]  # account id -> provider name
    synced: dict[str, dt.datetime]  # account id -> when its last sync completed


def _selector(selector: str) -> str:
    cleaned = selector.strip().lstrip("*").strip().lower()
    if not cleaned:
        raise InputError(
            f"{selector!r} names no account",
            hint="give the account id, or the last digits of its number: dashtam accounts list",
        )
    return cleaned


async def _scope(vault: Vault, infos: Sequence[ConnectionInfo], selector: str | None) -> _Scope:
    """The stored accounts of these connections (the one selected, if any), newest row per key."""
    accounts: list[Account] = []
    providers: dict[str, str] = {}
    synced: dict[str, dt.datetime] = {}
    wanted = _selector(selector) if selector is not None else None
    table = schema.accounts
    for info in infos:
        known = await store.known_accounts(vault, info.id)
        keep = {k.id: k for k in known}
        if wanted is not None:
            keep = {
                i: k
                for i, k in keep.items()
                if i.lower() == wanted or k.key.lower().endswith(wanted)
            }
        if not keep:
            continue
        points = await store.sync_points(vault, info.id)
        async with vault.reading() as conn:
            rows = (
                await conn.execute(
                    select(table.c.id, table.c.payload).where(table.c.id.in_(list(keep)))
                )
            ).all()
        for row in rows:
            try:
                text = vault.unseal_text(table.name, row.id, "payload", row.payload, owner=info.id)
            except RecordTampered as exc:
                log.warning("%s; the next `dashtam sync` stores the account again", exc.message)
                continue
            account = Account.model_validate_json(text)
            point = points.get(row.id)
            if point is not None:
                account = account.model_copy(update={"synced_at": point.synced_at})
                synced[row.id] = point.synced_at
            accounts.append(account)
            providers[row.id] = info.provider
    accounts.sort(key=lambda a: (a.connection, a.name, a.id))
    exact = any(a.id.lower() == wanted for a in accounts)
    if wanted is not None and len(accounts) > 1 and not exact:
        raise InputError(
            f"{selector!r} matches {len(accounts)} accounts",
            hint="give more digits, or the account id from: dashtam accounts list",
        )
    return _Scope(accounts, providers, synced)


async def _sync_first(
    settings: Settings, options: QueryOptions, open_options: OpenOptions, names: Sequence[str]
) -> FetchResult[Any] | None:
    """Sync the connections ``names`` (all selected ones with ``sync_first``) before answering."""
    from dashtam_cli.core.sync import SyncOptions, sync

    result = await sync(
        settings,
        SyncOptions(
            connections=tuple(names),
            only_new=not options.sync_first,
            transport=options.transport,
            clock=options.clock,
        ),
        open_options,
    )
    return result.outcome if result.reports else None


def _no_connections(options: QueryOptions) -> DashtamError:
    if options.connection is not None:
        return ConnectionNotFound.named(options.connection)
    return DashtamError(
        "there are no connections yet", hint="log in first: dashtam connect PROVIDER"
    )


async def _open(
    settings: Settings,
    options: QueryOptions,
    open_options: OpenOptions,
    answer: Callable[[Vault, Sequence[ConnectionInfo], QueryResult], Any],
) -> QueryResult:
    """Open the vault and answer from it; sync first what needs it (and only then).

    Without ``sync_first``, the connections never synced are synced first;
    when every one has been (the usual case), nothing of the sync machinery
    (HTTP client, TLS, token manager) is even imported.
    """
    from dashtam_cli.core.vault.vault import open_vault, vault_absent

    if await vault_absent(settings):
        raise _no_connections(options)
    result = QueryResult()
    async with open_vault(settings, open_options) as vault:
        infos = await list_connections(vault, name=options.connection)
        if not infos:
            raise _no_connections(options)
        pending: list[str] = []
        if options.sync_first:
            pending = [i.name for i in infos]
        elif not options.offline:
            pending = [i.name for i in infos if not await store.has_synced(vault, i.id)]
        if not pending:
            await answer(vault, infos, result)
            return result
    result.sync = await _sync_first(settings, options, open_options, pending)
    async with open_vault(settings, open_options) as vault:
        infos = await list_connections(vault, name=options.connection)
        await answer(vault, infos, result)
    return result


def _oldest(scope: _Scope, accounts: Sequence[Account]) -> dt.datetime | None:
    times = [scope.synced.get(a.id) or a.fetched_at for a in accounts]
    return min(times) if times else None


def _never(infos: Sequence[ConnectionInfo], scope: _Scope) -> list[str]:
    having = {a.connection for a in scope.accounts}
    return [i.name for i in infos if i.name not in having]


def _missing(options: QueryOptions, scope: _Scope, result: QueryResult) -> None:
    """An account asked for and not stored: an InputError, unless a sync failure explains it."""
    if options.account is None or scope.accounts:
        return
    if result.sync is not None and result.sync.failures:
        return
    raise InputError(f"no account matches {options.account!r}", hint="see: dashtam accounts list")


async def query_accounts(
    settings: Settings, options: QueryOptions, open_options: OpenOptions
) -> tuple[list[Account], QueryResult]:
    """The stored accounts with their balances (the one selected, if any)."""
    found: list[Account] = []

    async def answer(vault: Vault, infos: Sequence[ConnectionInfo], result: QueryResult) -> None:
        scope = await _scope(vault, infos, options.account)
        _missing(options, scope, result)
        found.extend(scope.accounts)
        result.oldest = _oldest(scope, scope.accounts)
        result.never = _never(infos, scope)
        result.count = len(found)

    result = await _open(settings, options, open_options, answer)
    return found, result


async def query_positions(
    settings: Settings, options: QueryOptions, open_options: OpenOptions
) -> tuple[list[Position], QueryResult]:
    """Each selected account's positions as of its last sync."""
    found: list[Position] = []
    table = schema.positions

    async def answer(vault: Vault, infos: Sequence[ConnectionInfo], result: QueryResult) -> None:
        scope = await _scope(vault, infos, options.account)
        _missing(options, scope, result)
        ids = [a.id for a in scope.accounts]
        if ids:
            # The positions of the account's last sync (written with its row's stamp):
            # none when it listed none, not the last ones some earlier sync listed.
            accounts = schema.accounts
            query = (
                select(table.c.id, table.c.account_id, table.c.payload)
                .join(
                    accounts,
                    and_(
                        table.c.account_id == accounts.c.id,
                        table.c.fetched_at == accounts.c.fetched_at,
                    ),
                )
                .where(accounts.c.id.in_(ids))
            )
            async with vault.reading() as conn:
                rows = (await conn.execute(query)).all()
            order = {a.id: n for n, a in enumerate(scope.accounts)}
            for row_id, account_id, payload in sorted(rows, key=lambda r: order[r[1]]):
                text = vault.unseal_text(table.name, row_id, "payload", payload, owner=account_id)
                found.append(Position.model_validate_json(text))
        result.oldest = _oldest(scope, scope.accounts)
        result.never = _never(infos, scope)
        result.count = len(found)

    result = await _open(settings, options, open_options, answer)
    return found, result


def _opened(vault: Vault, row_id: str, account_id: str, payload: bytes) -> str | None:
    """The opened text of one stored transaction, or None (with a warning) when its seal fails."""
    try:
        return vault.unseal_text(
            schema.transactions.name, row_id, "payload", payload, owner=account_id
        )
    except RecordTampered as exc:
        log.warning("a damaged transaction is left out (%s); `dashtam sync --full` fetches it", exc)
        return None


def _transaction(
    vault: Vault,
    row: tuple[str, str, str | None, bytes, int | None],
    opened: str | None,
    providers: dict[str, str],
) -> Transaction | None:
    """One stored transaction, or None (with a warning) when its seal does not open.

    ``opened`` is its text if the batch opened it, else None: it is opened here.
    """
    row_id, account_id, kind, payload, _ = row
    text = opened if opened is not None else _opened(vault, row_id, account_id, payload)
    if text is None:
        return None
    if kind is None:
        # Stored before kinds existed: the kind is read from the provider's type.
        record = json.loads(text)
        record["kind"] = provider_named(providers[account_id]).kind_of(record.get("type", ""))
        return Transaction.model_validate(record)
    return Transaction.model_validate_json(text)


def _record(
    vault: Vault,
    row: tuple[str, str, str | None, bytes, int | None],
    opened: str | None,
    providers: dict[str, str],
    *,
    parse: bool,
) -> Transaction | dict[str, Any] | str | None:
    """One stored transaction as it was stored, not validated: its JSON text, or that object.

    Its seal is checked (AES-GCM, bound to the row and its account), so the
    text is what dashtam wrote: its JSON line (:data:`lines.LINE_FORM`),
    handed on as :class:`lines.Printed`, or for rows stored before,
    ``model_dump_json``'s text, whose shape the reader checks (validating it
    as a Transaction when it is not the expected one). The text is handed on
    as it is unless ``parse`` (the record is to be checked against a filter)
    or it was stored before kinds existed: then it is parsed, and such a
    record gets its kind. Text that is not a JSON object is validated here
    (and so refused as before).

    ``row`` is (id, account_id, kind, payload, form), unpacked as a tuple:
    reading a result row's columns by name cost about 0.7 us each, 3 us a row.
    ``opened`` is its text if the batch opened it, else None: it is opened here.
    """
    row_id, account_id, kind, payload, form = row
    text = opened if opened is not None else _opened(vault, row_id, account_id, payload)
    if text is None:
        return None
    if not parse and kind is not None:
        return Printed(text) if form == LINE_FORM else text
    record = json.loads(text)
    if not isinstance(record, dict):
        return Transaction.model_validate_json(text)
    if kind is None:
        kind_of = provider_named(providers[account_id]).kind_of
        record["kind"] = kind_of(record.get("type", ""))
    return record


def _conditions(
    options: QueryOptions,
    scope: _Scope,
    kinds: set[str],
    provider_types: set[str],
    dialect: str = "sqlite",
) -> list[ColumnElement[bool]]:
    """The WHERE of a transactions query: accounts, dates, and the kinds asked for.

    Rows stored before kinds existed (no kind) are read and checked one by one.
    """
    table = schema.transactions
    ids = [a.id for a in scope.accounts]
    # One account is found through its index; for several, SQLite would look up
    # every row of each through the index and then sort them all: reading the
    # table straight through is faster (a unary + keeps the index out). PostgreSQL's
    # planner chooses for itself (and has no unary + for text).
    account: ColumnElement[str] = (
        table.c.account_id
        if len(ids) == 1 or dialect == "postgresql"
        else literal_column("+transactions.account_id")
    )
    conditions: list[ColumnElement[bool]] = [account.in_(ids)]
    if options.since is not None:
        conditions.append(table.c.occurred_at >= db.utcnow_text(options.since))
    if options.until is not None:
        conditions.append(table.c.occurred_at <= db.utcnow_text(options.until))
    # A provider's type can stand for several kinds (Schwab's DIVIDEND_OR_INTEREST is a
    # dividend, interest, a fee or tax by its description), and the type is sealed: with
    # one asked for, the kinds are not narrowed here and each record is checked when opened.
    if kinds and not provider_types:
        conditions.append(or_(table.c.kind.in_(sorted(kinds)), table.c.kind.is_(None)))
    return conditions


@dataclasses.dataclass(frozen=True, slots=True)
class _Checks:
    """What is checked on each opened record: the kinds or types asked, the symbol."""

    kinds: set[str]
    provider_types: set[str]
    symbol: str | None

    @property
    def active(self) -> bool:
        """Whether any record can be left out."""
        return bool(self.kinds or self.provider_types or self.symbol is not None)

    def __call__(self, txn: Transaction | dict[str, Any] | str) -> bool:
        """Whether the record (a model, or the stored JSON of one) is one asked for."""
        kind: object
        provider_type: object
        symbol: object
        if isinstance(txn, Transaction):
            kind, provider_type, symbol = txn.kind.value, txn.type, txn.symbol
        else:
            record: Any = json.loads(txn) if isinstance(txn, str) else txn
            if not isinstance(record, dict):
                return True  # not an object: its reader refuses it
            kind, provider_type, symbol = (record.get(k) for k in ("kind", "type", "symbol"))
        if (self.kinds or self.provider_types) and not (
            kind in self.kinds or provider_type in self.provider_types
        ):
            return False
        return self.symbol is None or (symbol.upper() if isinstance(symbol, str) else "") == (
            self.symbol
        )


async def _stream(  # noqa: PLR0913 - the query and where its rows go
    vault: Vault,
    *,
    scope: _Scope,
    conditions: Sequence[ColumnElement[bool]],
    wanted: _Checks,
    limit: int | None,
    emit: Callable[[list[Any]], None],
    records: bool,
) -> int:
    """Read, open, check and hand on the rows in batches, newest first; return how many.

    One query, sorted once and streamed: SQLite's sorter keeps what does not
    fit its cache in temporary files, so memory does not grow with the rows
    (the payloads it sorts are sealed). Paging by the last key instead
    sorted every remaining row again for each batch (quadratic, since no
    index holds the order); sorting row numbers and then reading each batch
    by row number read every row twice, the second time out of order.
    """
    table = schema.transactions
    query = (
        select(table.c.id, table.c.account_id, table.c.kind, table.c.payload, table.c.form)
        .where(*conditions)
        .order_by(table.c.occurred_at.desc(), table.c.id.desc())
    )
    remaining = limit
    count = 0
    checked = wanted.active

    def decode(row: Any, text: str | None) -> Transaction | dict[str, Any] | str | None:  # noqa: ANN401 - a row
        if records:
            return _record(vault, row, text, scope.providers, parse=checked)
        return _transaction(vault, row, text, scope.providers)

    if limit is not None and not checked:
        query = query.limit(limit)  # SQLite keeps only the newest while it sorts
    # One snapshot for the whole answer: a sync committing meanwhile is not half seen.
    async with vault.reading() as conn:
        ordered = await conn.stream(query)
        async for rows in ordered.partitions(BATCH):
            # Opened in one call per batch: the per-row layers cost as much as the cipher.
            texts = vault.unseal_texts(table.name, "payload", [(r[0], r[1], r[3]) for r in rows])
            opened = (decode(row, text) for row, text in zip(rows, texts, strict=True))
            batch = [txn for txn in opened if txn is not None and (not checked or wanted(txn))]
            if remaining is not None:
                batch = batch[:remaining]
                remaining -= len(batch)
            if batch:
                count += len(batch)
                emit(batch)
            if remaining is not None and remaining <= 0:
                break
        await ordered.close()
    return count


async def query_transactions(
    settings: Settings,
    options: QueryOptions,
    open_options: OpenOptions,
    emit: Callable[[list[Any]], None],
    *,
    records: bool = False,
) -> QueryResult:
    """Hand the selected transactions to ``emit`` newest first, a batch at a time.

    Account, connection, dates and kinds are filtered in the database; a
    provider's type and the symbol (sealed with the rest of the record) as
    each batch is opened. ``limit`` stops after that many.

    A batch holds :class:`Transaction` models; with ``records``, the stored
    records instead, not validated: each the JSON text of a record with
    every field, or a JSON object (see :func:`_record`), for a reader that
    checks their shape itself and validates only what does not fit.
    """
    if options.since and options.until and options.since >= options.until:
        raise InputError("--since: must be before --until")
    kinds, provider_types = type_filter(options.types)
    symbol = options.symbol.strip().upper() if options.symbol else None
    wanted = _Checks(kinds, provider_types, symbol)

    async def answer(vault: Vault, infos: Sequence[ConnectionInfo], result: QueryResult) -> None:
        scope = await _scope(vault, infos, options.account)
        _missing(options, scope, result)
        result.oldest = _oldest(scope, scope.accounts)
        result.never = _never(infos, scope)
        if scope.accounts:
            conditions = _conditions(
                options, scope, kinds, provider_types, vault.engine.dialect.name
            )
            result.count = await _stream(
                vault,
                scope=scope,
                conditions=conditions,
                wanted=wanted,
                limit=options.limit,
                emit=emit,
                records=records,
            )

    return await _open(settings, options, open_options, answer)
