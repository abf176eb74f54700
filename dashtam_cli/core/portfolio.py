"""Accounts, positions and transactions from every connection, fetched at once, cached sealed."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import decimal
import functools
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import pydantic
from sqlalchemy import bindparam, delete, literal_column, select, update

from dashtam_cli.core import audit
from dashtam_cli.core.connections import ConnectionNotFound, list_connections
from dashtam_cli.core.errors import (
    DashtamError,
    InputError,
    PartialFailure,
    ReauthRequired,
)
from dashtam_cli.core.models import Account, ConnectionInfo, Position, Record, Transaction
from dashtam_cli.core.providers.schwab_api import (
    ApiError,
    CallRecord,
    Fields,
    SchwabClient,
    bad_field,
)
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.resilience import gather_all
from dashtam_cli.core.tokens import token_manager
from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import httpx
    from sqlalchemy import Select
    from sqlalchemy.ext.asyncio import AsyncConnection

    from dashtam_cli.core.resilience import Backoff
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.tokens import TokenManager
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "Failure",
    "FetchOptions",
    "FetchResult",
    "connected_elsewhere",
    "fetch_accounts",
    "fetch_positions",
    "fetch_transactions",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
ACCOUNTS_IN_FLIGHT: Final = 8
# How long an account list (numbers and Schwab's hashes) fetched by one command
# serves the next one, which then skips asking for the numbers again.
ACCOUNT_LIST_REUSE: Final = dt.timedelta(minutes=15)
# Answers to a call made with a stored hash that may mean the hash is stale.
_STALE_REFERENCE_STATUSES: Final = frozenset({400, 403, 404})
_QUANTITY_TYPES: Final = frozenset({"TRADE", "RECEIVE_AND_DELIVER"})
_TXN_NAMESPACE: Final = uuid.UUID("6f1c1d2e-8a3b-4c5d-9e7f-0a1b2c3d4e5f")


@dataclasses.dataclass(frozen=True, slots=True)
class FetchOptions:
    """What to fetch: which connection and account, and for transactions the filters."""

    connection: str | None = None
    account: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    types: Sequence[str] = ()
    symbol: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    max_in_flight: int = 16
    backoff: Backoff | None = None
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A connection, or one account of it (``account``: its masked number), that failed, and why."""

    connection: str
    error: DashtamError
    account: str | None = None

    @property
    def label(self) -> str:
        """``beta``, or ``alpha ****2222`` for one account of alpha."""
        return self.connection if self.account is None else f"{self.connection} {self.account}"

    def described(self) -> DashtamError:
        """The error, naming the account it is about, with its class and exit code."""
        if self.account is None:
            return self.error
        # Made without __init__ (whose arguments differ by class), with every attribute kept.
        kind = type(self.error)
        error = kind.__new__(kind)
        error.__dict__.update(self.error.__dict__)
        error.message = f"{self.account}: {self.error.message}"
        error.args = (error.message,)
        return error


@dataclasses.dataclass(frozen=True, slots=True)
class FetchResult(Generic[T]):
    """The items fetched, what failed, and how many requests it took.

    ``failures`` are connections (or single accounts of one) that failed;
    ``succeeded`` counts the connections that answered, whole or in part.
    ``ignored`` are failures of connections the command turned out not to
    need (the account asked for was found in another): they do not change
    the outcome.
    """

    items: list[T]
    failures: list[Failure]
    succeeded: int
    requests: int = 0
    ignored: list[Failure] = dataclasses.field(default_factory=list)
    connections: int = 0

    def summary(self) -> str:
        """``1 of 2 connections failed (beta)``, ``1 account failed (alpha ****2222)``, or both."""
        whole = [f for f in self.failures if f.account is None]
        single = [f for f in self.failures if f.account is not None]
        total = self.connections or self.succeeded + len(whole)
        parts = []
        if whole:
            names = ", ".join(f.label for f in whole)
            parts.append(f"{len(whole)} of {total} connections failed ({names})")
        if single:
            names = ", ".join(f.label for f in single)
            plural = "s" if len(single) > 1 else ""
            parts.append(f"{len(single)} account{plural} failed ({names})")
        return "; ".join(parts)

    def outcome(self, *, detail: bool = True) -> DashtamError | None:
        """The error to exit with: none, a new login (4) when that is all that failed, partial (3).

        When nothing succeeded, the failure itself (or one error naming them all).
        ``detail`` puts each failure's message in a partial outcome's message;
        the CLI, which prints each on its own line first, leaves them out.
        """
        if not self.failures:
            return None
        lines = "; ".join(f"{f.label}: {f.error.message}" for f in self.failures)
        relogin = all(isinstance(f.error, ReauthRequired) for f in self.failures)
        if self.succeeded:
            summary = f"{self.summary()} ({lines})" if detail else self.summary()
            if relogin:
                hint = (
                    self.failures[0].error.hint
                    if len(self.failures) == 1
                    else "log in again: the command for each is on its line above"
                )
                # Logins are a connection's: every failure here is a whole connection.
                names = ", ".join(f.label for f in self.failures)
                total = self.connections or self.succeeded + len(self.failures)
                verb = "needs" if len(self.failures) == 1 else "need"
                return ReauthRequired(
                    f"{len(self.failures)} of {total} connections {verb} a new login ({names});"
                    " the rest was printed",
                    hint=hint,
                )
            return PartialFailure(
                summary, hint="the rest was printed; each failure is on its line above"
            )
        if len(self.failures) == 1:
            return self.failures[0].described()
        if relogin:
            return ReauthRequired(lines, hint="log in again: dashtam connect schwab --name NAME")
        return DashtamError(lines, hint="see the messages above; retry later")


def mask_number(number: str) -> str:
    """``****5678``: the last four digits only."""
    return "****" + number[-4:]


def _dumps(model: Record) -> str:
    # pydantic's own serializer: Decimal as a string, times in ISO 8601.
    return model.model_dump_json()


@dataclasses.dataclass(slots=True)
class _Known:
    """An account dashtam has seen: its stable id and full number (in memory only)."""

    id: str
    number: str
    hash_value: str | None = None
    fetched_at: str | None = None


async def _known_accounts(vault: Vault, connection_id: str) -> list[_Known]:
    """The connection's stored accounts, one per number (see :func:`_newest_first`)."""
    table = schema.accounts
    async with vault.reading() as conn:
        rows = (
            await conn.execute(
                _newest_first(
                    select(table.c.id, table.c.number, table.c.provider_ref, table.c.fetched_at)
                ).where(table.c.connection_id == connection_id)
            )
        ).all()
    known: dict[str, _Known] = {}
    for row in rows:
        number = vault.unseal_text(table.name, row.id, "number", row.number, owner=connection_id)
        register_secret(number)
        if number in known:
            continue  # an older copy (see _newest_first), merged at the next write
        reference = (
            None
            if row.provider_ref is None
            else vault.unseal_text(
                table.name, row.id, "provider_ref", row.provider_ref, owner=connection_id
            )
        )
        # The cached hash goes into request paths: masked before the first one.
        register_secret(reference)
        # A damaged stamp (not text) only means the list is not reused.
        stamp = row.fetched_at if isinstance(row.fetched_at, str) else None
        known[number] = _Known(row.id, number, reference, stamp)
    return list(known.values())


def _newest_first(query: Select[Any]) -> Select[Any]:
    """Accounts in the order that says which row of a number is the one to keep: the first.

    Only one row per number is ever written now; a vault may still hold
    copies that concurrent first fetches made before the rows were created
    under the write lock. Since then every run used (and printed) the row
    stored last, so that is the one kept: newest ``fetched_at``, then newest row.
    """
    table = schema.accounts
    return query.order_by(table.c.fetched_at.desc(), literal_column("accounts.rowid").desc())


def _recent_list(known: Sequence[_Known], now: dt.datetime) -> list[_Known] | None:
    """The accounts of the connection's last account list, if it is recent and complete.

    One fetch of the accounts stamps all of them alike, so the last list is the
    rows with the newest stamp; older rows are accounts that list no longer had.
    """
    if not known:
        return None
    newest = max(k.fetched_at or "" for k in known)
    listed = [k for k in known if k.fetched_at == newest]
    try:
        age = now - dt.datetime.fromisoformat(newest)
    except (ValueError, TypeError):  # damaged, or without a zone
        return None
    if not dt.timedelta(0) <= age <= ACCOUNT_LIST_REUSE or any(not k.hash_value for k in listed):
        return None
    return listed


def _validated(what: str, build: Callable[[], T]) -> T:
    """Build a record; a value pydantic refuses becomes one ApiError naming the field.

    The readers of :class:`Fields` check every field first; this is the net
    under them, so that no provider value ever surfaces as a traceback.
    """
    try:
        return build()
    except pydantic.ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "item"
        raise ApiError(
            f"Schwab {what}: field {field} is unusable ({first['msg']})",
            hint="Schwab sent data dashtam cannot use; retry later, and report it if it persists",
        ) from None


def _account_model(
    info: ConnectionInfo,
    account_id: str,
    raw: Fields,
    now: dt.datetime,
    nickname: str | None = None,
) -> Account:
    """The account record; named by its nickname, else by its type and masked number."""
    sec = raw.obj("securitiesAccount")
    number = sec.identifier("accountNumber") or ""
    current = sec.obj("currentBalances")
    aggregated = raw.obj("aggregatedBalance")
    positions = sec.objects("positions")
    market = sum(
        (p.money("marketValue") or decimal.Decimal(0) for p in positions), decimal.Decimal(0)
    )
    account_type = sec.text("type") or "UNKNOWN"
    total = current.money("liquidationValue")
    if total is None:
        total = aggregated.money("currentLiquidationValue")
    cash = current.money("cashBalance")
    if cash is None:
        cash = current.money("totalCash")  # the spec's CashBalance has no cashBalance
    buying_power = current.money("buyingPower")
    if account_type == "CASH" or buying_power is None:
        # A cash account (most IRAs) has no buying power, only cash available for trading.
        available = current.money("cashAvailableForTrading")
        buying_power = available if available is not None else buying_power
    return _validated(
        "accounts",
        lambda: Account(
            id=account_id,
            connection=info.name,
            provider=info.provider,
            name=nickname or f"{account_type.title()} {mask_number(number)}",
            type=account_type,
            number=mask_number(number),
            currency="USD",
            cash=cash,
            market_value=market if positions else decimal.Decimal(0),
            total_value=total,
            buying_power=buying_power,
            fetched_at=now,
        ),
    )


def _positions(account: Account, raw: Fields) -> list[Position]:
    result = []
    for item in raw.obj("securitiesAccount").objects("positions"):
        instrument = item.obj("instrument")
        long_q = item.money("longQuantity") or decimal.Decimal(0)
        short_q = item.money("shortQuantity") or decimal.Decimal(0)
        fields: dict[str, Any] = {
            "account_id": account.id,
            "account": account.number,
            "symbol": instrument.text("symbol") or "",
            "description": instrument.text("description"),
            "asset_type": instrument.text("assetType") or "UNKNOWN",
            "quantity": long_q - short_q,
            "average_price": item.money("averagePrice"),
            "market_value": item.money("marketValue"),
            "day_profit_loss": item.money("currentDayProfitLoss"),
        }
        result.append(_validated("accounts", functools.partial(Position.model_validate, fields)))
    return result


def transaction_id(account_id: str, activity: object) -> str:
    """``str(uuid.uuid5(NAMESPACE, f"{account_id}:{activity}"))``, computed without the UUID object.

    The same text as uuid5 gives (a test holds it to that), so ids already in
    a cache stay valid; a third of the cost, which counts at thousands of rows.
    """
    name = f"{account_id}:{activity}".encode()
    digest = bytearray(hashlib.sha1(_TXN_NAMESPACE.bytes + name).digest()[:16])  # noqa: S324 - uuid5's own hash
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _fees(items: Sequence[Fields], main: Fields | None, *, trade: bool) -> decimal.Decimal:
    """What a transaction's fee lines cost, positive when money left for them.

    A fee line is an item with a ``feeType`` and, in a trade, also any
    currency line beside the instrument traded: Schwab sends some fees (a
    futures option's exchange and NFA fees) as ``CURRENCY_USD`` lines without
    a ``feeType``. Each line's ``cost`` counts with its sign (money out is
    negative, a rebate positive), so a trade's ``netAmount`` is the traded
    item's cost minus these fees; a line without ``cost`` counts its
    ``amount`` as money out.
    """
    total = decimal.Decimal(0)
    for line in items:
        if line is main:
            continue
        currency = line.obj("instrument").text("assetType") == "CURRENCY"
        if not (line.get("feeType") or (trade and main is not None and currency)):
            continue
        cost = line.money("cost")
        if cost is None:
            cost = -abs(line.money("amount") or decimal.Decimal(0))
        total -= cost
    return total


def _transaction(account_id: str, masked: str, raw: dict[str, Any]) -> Transaction:
    """One transaction; any field of the wrong type (or an unreadable time) is an ApiError."""
    what = f"transactions of {masked}"
    item = Fields(raw, what=what)
    activity = item.identifier("activityId")
    if activity is None:
        raise bad_field(what, "activityId", "a number or short text", None)
    item = item.labelled(f"activity {activity}")
    trade_date = item.date("tradeDate")
    moment = item.time("time")
    if moment is None:
        if trade_date is None:
            raise bad_field(what, f"time of activity {activity}", "a readable date-time", None)
        moment = dt.datetime.combine(trade_date, dt.time(), tzinfo=dt.UTC)
    items = item.objects("transferItems")
    main = next((i for i in items if i.obj("instrument").text("assetType") != "CURRENCY"), None)
    kind = item.text("type")
    fees = _fees(items, main, trade=kind == "TRADE")
    instrument = main.obj("instrument") if main is not None else Fields(None, what=what)
    fields: dict[str, Any] = {
        "id": transaction_id(account_id, activity),
        "account_id": account_id,
        "account": masked,
        "time": moment,
        "trade_date": trade_date,
        "settlement_date": item.date("settlementDate"),
        "type": kind or "UNKNOWN",
        "description": item.text("description") or instrument.text("description"),
        "amount": item.money("netAmount") or decimal.Decimal(0),
        "symbol": instrument.text("symbol"),
        # Only trades move a quantity of an instrument; other items carry cash amounts.
        "quantity": main.money("amount") if main is not None and kind in _QUANTITY_TYPES else None,
        "price": main.money("price") if main is not None else None,
        "fees": fees,
        "status": item.text("status"),
    }
    return _validated(what, lambda: Transaction.model_validate(fields))


class _Session:
    """One connection's client and the audit hook for its calls."""

    def __init__(  # noqa: PLR0913 - the session's parts, injected
        self,
        vault: Vault,
        manager: TokenManager,
        info: ConnectionInfo,
        *,
        audit_log: audit.AuditWriter,
        max_in_flight: int,
        backoff: Backoff | None,
    ) -> None:
        self.vault = vault
        self.info = info
        # Accounts of this connection that failed alone, and whether the selection found one.
        self.failures: list[Failure] = []
        self.matched = 0
        from dashtam_cli.core.providers import get_provider

        spec = get_provider(info.provider)

        async def token() -> str:
            return await manager.access_token(info.name)

        async def refresh(rejected: str) -> str:
            return await manager.replace_rejected(info.name, rejected)

        async def record(call: CallRecord) -> None:
            # Queued, not awaited on the disk: the response goes on at once.
            audit_log.add(
                operation=f"schwab.{call.operation.replace(' ', '_')}",
                outcome=call.outcome,
                provider=info.provider,
                connection_id=info.id,
                connection_name=info.name,
                http_status=call.http_status,
                duration_ms=call.duration_ms,
                correlation_id=call.correlation_id,
                detail=call.detail,
            )

        self.client = SchwabClient(
            manager.client,
            base_url=spec.base_url(),
            token=token,
            refresh=refresh,
            record=record,
            reauth_hint=f"run: dashtam connect {info.provider} --name {info.name}",
            max_in_flight=max_in_flight,
            backoff=backoff,
        )


def _selector(selector: str) -> str:
    """The selector as compared: ``****4063`` (as tables print it) is ``4063``; ids in any case."""
    cleaned = selector.strip().lstrip("*").strip().lower()
    if not cleaned:
        raise InputError(
            f"{selector!r} names no account",
            hint="give the account id, or the last digits of its number: dashtam accounts list",
        )
    return cleaned


def _matching(accounts: Sequence[_Known], selector: str | None) -> list[_Known]:
    """The accounts the selector names (all without one): by id, or by the end of the number."""
    if selector is None:
        return list(accounts)
    wanted = _selector(selector)
    return [a for a in accounts if a.id.lower() == wanted or a.number.endswith(wanted)]


def _select(accounts: Sequence[_Known], selector: str | None) -> list[_Known]:
    chosen = _matching(accounts, selector)
    if selector is None:
        return chosen
    if len(chosen) > 1 and not any(a.id.lower() == _selector(selector) for a in chosen):
        raise InputError(
            f"{selector!r} matches {len(chosen)} accounts",
            hint="give more digits, or the account id from: dashtam accounts list",
        )
    return chosen


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    """One account ready to write: its records, and its rows sealed under ``account.id``."""

    account: Account
    number: str
    positions: list[Position]
    raw: Fields
    nickname: str | None
    row: dict[str, Any]
    position_rows: list[dict[str, Any]]


def _prepare_account(  # noqa: PLR0913 - the parts of one account's rows
    vault: Vault,
    info: ConnectionInfo,
    raw: Fields,
    account_id: str,
    *,
    references: Mapping[str, str],
    now: dt.datetime,
    nickname: str | None = None,
) -> _Prepared:
    """Build and seal one account's rows, outside any transaction (sealing is the slow part)."""
    table, ptable = schema.accounts, schema.positions
    number = raw.obj("securitiesAccount").identifier("accountNumber") or ""
    account = _account_model(info, account_id, raw, now, nickname)
    positions = _positions(account, raw)
    stamp = db.utcnow_text(now)
    row = {
        "id": account_id,
        "connection_id": info.id,
        "number": vault.seal(table.name, account_id, "number", number, owner=info.id),
        "payload": vault.seal(table.name, account_id, "payload", _dumps(account), owner=info.id),
        "fetched_at": stamp,
        "provider_ref": (
            vault.seal(table.name, account_id, "provider_ref", references[number], owner=info.id)
            if number in references
            else None
        ),
    }
    position_rows = []
    for position in positions:
        row_id = str(uuid.uuid4())
        position_rows.append(
            {
                "id": row_id,
                "account_id": account_id,
                "payload": vault.seal(
                    ptable.name, row_id, "payload", _dumps(position), owner=account_id
                ),
                "fetched_at": stamp,
            }
        )
    return _Prepared(account, number, positions, raw, nickname, row, position_rows)


async def _stored_ids(
    vault: Vault, conn: AsyncConnection, connection_id: str
) -> dict[str, list[str]]:
    """Each stored account number of the connection and its rows' ids, the one to keep first."""
    table = schema.accounts
    query = _newest_first(select(table.c.id, table.c.number)).where(
        table.c.connection_id == connection_id
    )
    ids: dict[str, list[str]] = {}
    for row in (await conn.execute(query)).all():
        number = vault.unseal_text(table.name, row.id, "number", row.number, owner=connection_id)
        ids.setdefault(number, []).append(row.id)
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
    """Fold copies of one account into the row kept, losing no cached transaction.

    A copy's transaction that the kept row already holds (the same record,
    fetched by a concurrent run) goes with the copy; any other moves to the
    kept row under its own id, so nothing cached is lost. Positions go with
    the copy: every fetch replaces them.
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
                # The compact form pydantic writes, as for every other record.
                compact = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
                # Sealed again: a transaction is bound to its account.
                payload = vault.seal(table.name, row.id, "payload", compact, owner=keep)
                moved.append({"_id": row.id, "account_id": keep, "payload": payload})
    if moved:
        await conn.execute(
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values(account_id=bindparam("account_id"), payload=bindparam("payload")),
            moved,
        )
    accounts = schema.accounts
    await conn.execute(delete(accounts).where(accounts.c.id.in_(list(copies))))
    log.info(
        "merged %d copies of an account into one (%d transactions moved)", len(copies), len(moved)
    )


async def _store_accounts(
    vault: Vault,
    info: ConnectionInfo,
    prepared: Sequence[_Prepared],
    references: Mapping[str, str],
    now: dt.datetime,
) -> list[_Prepared]:
    """Write the accounts and replace their positions in one short transaction; return them.

    The rows come sealed. Which id an account has is settled inside the
    write transaction: a number already stored (perhaps by another process
    a moment ago) keeps its row, so any number of concurrent fetches end with
    one row per account and print the same ids. Only then, and only for
    such an account, is it sealed again under the stored id.
    ``references`` maps each number to the provider's own reference for it
    (Schwab's hash), kept sealed so the next fetch can skip asking for it.
    """
    from sqlalchemy.dialects.sqlite import insert

    if not prepared:
        return []
    table, ptable = schema.accounts, schema.positions
    upsert = insert(table)
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
        for item in prepared:
            ids = stored.get(item.number)
            if ids and ids[0] != item.account.id:
                # Stored meanwhile by another process: its id wins; seal again under it.
                final.append(
                    _prepare_account(
                        vault,
                        info,
                        item.raw,
                        ids[0],
                        references=references,
                        now=now,
                        nickname=item.nickname,
                    )
                )
            else:
                final.append(item)
        for ids in stored.values():
            if len(ids) > 1:
                await _merge_copies(vault, conn, ids[0], ids[1:])
        await conn.execute(upsert, [item.row for item in final])
        await conn.execute(
            delete(ptable).where(ptable.c.account_id.in_([item.account.id for item in final]))
        )
        position_rows = [row for item in final for row in item.position_rows]
        if position_rows:
            await conn.execute(ptable.insert(), position_rows)
    return final


_UPSERT_TRANSACTION: Final = (
    "INSERT INTO transactions (id, account_id, occurred_at, payload, fetched_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " account_id = excluded.account_id, occurred_at = excluded.occurred_at,"
    " payload = excluded.payload, fetched_at = excluded.fetched_at"
)


async def _store_transactions(vault: Vault, transactions: Sequence[Transaction]) -> None:
    """Upsert the transactions, sealed beforehand, in one transaction and one executemany.

    Plain SQL handed to the driver: SQLAlchemy's per-row parameter handling
    cost more than the sealing itself on a few thousand rows. Transactions
    of an account that is gone by the time of the write (its connection
    removed, or a copy merged away by another process) are not cached.
    """
    if not transactions:
        return
    table = schema.transactions.name
    now = db.utcnow_text()
    rows = [
        (
            txn.id,
            txn.account_id,
            db.utcnow_text(txn.time),
            vault.seal(table, txn.id, "payload", txn.model_dump_json(), owner=txn.account_id),
            now,
        )
        for txn in transactions
    ]
    accounts = schema.accounts
    wanted = sorted({txn.account_id for txn in transactions})
    async with vault.writing() as conn:
        present = set(
            (await conn.execute(select(accounts.c.id).where(accounts.c.id.in_(wanted)))).scalars()
        )
        if len(present) < len(wanted):
            log.debug(
                "not caching the transactions of %d removed accounts", len(wanted) - len(present)
            )
            rows = [row for row in rows if row[1] in present]
        if rows:
            await conn.exec_driver_sql(_UPSERT_TRANSACTION, rows)


async def _nicknames(session: _Session) -> tuple[dict[str, str], DashtamError | None]:
    """The accounts' nicknames by number; or none, and why Schwab did not give them.

    Only names depend on them: without them the accounts are printed all the
    same, named by their type and masked number. (The error is returned in a
    tuple, not alone: gather_all raises any exception it is handed back.)
    """
    try:
        return await session.client.nicknames(), None
    except DashtamError as exc:
        return {}, exc


async def _connection_accounts(
    session: _Session,
    options: FetchOptions,
    numbers: Sequence[tuple[str, str]] | None = None,
) -> tuple[
    list[tuple[Account, str, list[Position]]], dict[str, str], list[tuple[_Known, DashtamError]]
]:
    """Fetch and store one connection's accounts with positions; return them and their hashes.

    ``numbers`` are the (number, hash) pairs when the caller has just asked for
    them; otherwise they are asked for alongside the accounts. An account whose
    answer dashtam cannot use fails alone: it is returned last, with its
    error, and the others are stored and returned.
    """
    client, vault, info = session.client, session.vault, session.info
    # The nicknames are asked for alongside, so naming the accounts costs no wait.
    names_task = asyncio.ensure_future(_nicknames(session))
    raws_task = asyncio.ensure_future(client.accounts())
    if numbers is None:
        numbers_task = asyncio.ensure_future(client.account_numbers())
        await gather_all(numbers_task, raws_task, names_task)
        numbers = numbers_task.result()
    else:
        await gather_all(raws_task, names_task)
    raws, (names, unnamed) = raws_task.result(), names_task.result()
    if unnamed is not None:
        # Said only now that the accounts did arrive: a failed fetch says enough.
        log.warning(
            "%s: the accounts' nicknames are unavailable, so they are named by type and number"
            " (%s)",
            info.name,
            unnamed.message,
        )
    for number, _ in numbers:
        register_secret(number)
    hashes = dict(numbers)
    # The stored ids are a first guess (new accounts get a random one, never
    # derived from the number): the write settles them under the lock.
    known = {k.number: k.id for k in await _known_accounts(vault, info.id)}
    now = options.clock()
    prepared = []
    failed: list[tuple[_Known, DashtamError]] = []
    for index, raw in enumerate(raws):
        item = Fields(raw, what="accounts", path=f"[{index}]")
        number = item.obj("securitiesAccount").identifier("accountNumber") or ""
        if number not in hashes:
            continue
        account_id = known.get(number) or str(uuid.uuid4())
        try:
            prepared.append(
                _prepare_account(
                    vault,
                    info,
                    item,
                    account_id,
                    references=hashes,
                    now=now,
                    nickname=names.get(number),
                )
            )
        except ApiError as exc:  # this account's record is unusable: it fails alone
            failed.append((_Known(account_id, number, hashes[number]), exc))
    stored = await _store_accounts(vault, info, prepared, hashes, now)
    return [(item.account, item.number, item.positions) for item in stored], hashes, failed


def _no_connections(options: FetchOptions) -> DashtamError:
    if options.connection is not None:
        return ConnectionNotFound.named(options.connection)
    return DashtamError("there are no connections yet", hint="log in first: dashtam connect schwab")


def _account_failures(
    session: _Session, failed: Sequence[tuple[_Known, DashtamError]], selector: str | None
) -> None:
    """Record the failures of the accounts the command asked for (all, or the one selected)."""
    wanted = {k.id for k in _matching([k for k, _ in failed], selector)}
    session.failures.extend(
        Failure(session.info.name, error, mask_number(known.number))
        for known, error in failed
        if known.id in wanted
    )


async def _for_connections(
    settings: Settings,
    options: FetchOptions,
    open_options: OpenOptions,
    work: Callable[[_Session], Any],
) -> FetchResult[Any]:
    """Run ``work`` on every connection (or the one named) at once, and gather what came back.

    A connection whose ``work`` raises fails whole; one whose accounts failed
    in part (``session.failures``) answered in part. When an account was
    asked for and found, the failures of the connections that did not hold it
    are ``ignored``: the command did not need them.
    """
    if not settings.paths.vault_file.exists():
        # No vault means no login yet: point at `connect` (which creates it), not `vault init`.
        raise _no_connections(options)
    async with token_manager(
        settings, open_options, transport=options.transport, clock=options.clock
    ) as manager:
        infos = await list_connections(manager.vault, name=options.connection)
        if not infos:
            raise _no_connections(options)
        async with audit.AuditWriter(manager.vault) as audit_log:
            sessions = [
                _Session(
                    manager.vault,
                    manager,
                    info,
                    audit_log=audit_log,
                    max_in_flight=options.max_in_flight,
                    backoff=options.backoff,
                )
                for info in infos
            ]
            outcomes = await asyncio.gather(*(work(s) for s in sessions), return_exceptions=True)
    items: list[Any] = []
    failures: list[Failure] = []
    whole: list[Failure] = []
    succeeded = found = 0
    for session, outcome in zip(sessions, outcomes, strict=True):
        if isinstance(outcome, DashtamError):
            whole.append(Failure(session.info.name, outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            items.extend(outcome)
            failures.extend(session.failures)
            found += session.matched
            # Answered, unless every account it was asked for failed.
            if not session.failures or session.matched:
                succeeded += 1
    ignored: list[Failure] = []
    if options.account is not None and found:
        ignored = whole
    else:
        failures = whole + failures
    if options.account is not None and not failures and not found:
        raise InputError(
            f"no account matches {options.account!r}", hint="see: dashtam accounts list"
        )
    requests = sum(s.client.requests for s in sessions)
    return FetchResult(items, failures, succeeded, requests, ignored, len(sessions))


async def fetch_accounts(
    settings: Settings, options: FetchOptions, open_options: OpenOptions
) -> FetchResult[Account]:
    """Every account (or the one selected) with balances, from every connection (or one)."""

    async def work(session: _Session) -> list[Account]:
        accounts, _, failed = await _connection_accounts(session, options)
        known = [_Known(a.id, n) for a, n, _ in accounts]
        chosen = {k.id for k in _select(known, options.account)}
        session.matched = len(chosen)
        _account_failures(session, failed, options.account)
        return [a for a, _, _ in accounts if a.id in chosen]

    return await _for_connections(settings, options, open_options, work)


async def fetch_positions(
    settings: Settings, options: FetchOptions, open_options: OpenOptions
) -> FetchResult[Position]:
    """Positions of every account (or the one selected)."""

    async def work(session: _Session) -> list[Position]:
        accounts, _, failed = await _connection_accounts(session, options)
        known = [_Known(a.id, n) for a, n, _ in accounts]
        chosen = {k.id for k in _select(known, options.account)}
        session.matched = len(chosen)
        _account_failures(session, failed, options.account)
        return [p for a, _, positions in accounts if a.id in chosen for p in positions]

    return await _for_connections(settings, options, open_options, work)


async def _account_transactions(
    session: _Session,
    accounts: Sequence[_Known],
    window: tuple[dt.datetime, dt.datetime],
    options: FetchOptions,
) -> tuple[list[Transaction], dict[str, tuple[_Known, DashtamError]]]:
    """The accounts' transactions, a few accounts at a time, each account stored as it arrives.

    An account whose request or answer fails fails alone: it is returned
    (by number) with its error, and the others' transactions are kept. A
    failure that is not about the account (a login to renew, the token
    endpoint, a certificate) fails the connection.
    """
    client, vault = session.client, session.vault
    gate = asyncio.Semaphore(ACCOUNTS_IN_FLIGHT)
    failed: dict[str, tuple[_Known, DashtamError]] = {}
    symbol = options.symbol.strip().upper() if options.symbol else None

    async def one(account: _Known) -> list[Transaction]:
        try:
            async with gate:
                raws = await client.transactions(
                    account.hash_value or "", *window, types=options.types, symbol=symbol
                )
            masked = mask_number(account.number)
            page = [_transaction(account.id, masked, raw) for raw in raws]
        except ApiError as exc:
            # About this account's call or answer. Anything else (a login to renew, a
            # token endpoint down, a certificate) is the connection's, and fails it whole.
            failed[account.number] = (account, exc)
            return []
        # Stored as each account arrives: SQLite writes on its own thread
        # while the next accounts' responses are parsed here.
        await _store_transactions(vault, page)
        return page

    pages = await gather_all(*(one(a) for a in accounts))
    return sorted((t for page in pages for t in page), key=lambda t: t.time, reverse=True), failed


async def _listed_accounts(
    session: _Session, stored: Sequence[_Known], options: FetchOptions
) -> list[_Known]:
    """The accounts as Schwab lists them now, each with its stored id and current hash.

    An account seen for the first time whose record dashtam cannot use is
    recorded as a failure (when selected) and left out.
    """
    numbers = await session.client.account_numbers()
    for number, _ in numbers:
        register_secret(number)
    ids = {k.number: k.id for k in stored}
    if any(number not in ids for number, _ in numbers):
        # Accounts seen for the first time get their row (and stable id) first,
        # so their transactions have a parent.
        accounts, _, failed = await _connection_accounts(session, options, numbers)
        ids.update((number, account.id) for account, number, _ in accounts)
        _account_failures(session, failed, options.account)
    return [_Known(ids[n], n, h) for n, h in numbers if n in ids]


def _stale(error: DashtamError) -> bool:
    """An answer to a call made with a stored hash that may mean the hash is stale."""
    return isinstance(error, ApiError) and error.http_status in _STALE_REFERENCE_STATUSES


async def fetch_transactions(
    settings: Settings, options: FetchOptions, open_options: OpenOptions
) -> FetchResult[Transaction]:
    """Transactions of every account (or the one selected) between ``since`` and ``until``.

    ``symbol`` is matched without regard to case: it goes to the provider in
    upper case, as symbols are written.
    """
    until = options.until or options.clock()
    since = options.since or until - dt.timedelta(days=90)
    if since >= until:
        raise InputError("--since: must be before --until")
    window = (since, until)

    async def work(session: _Session) -> list[Transaction]:
        stored = await _known_accounts(session.vault, session.info.id)
        recent = _recent_list(stored, options.clock())
        chosen = _select(recent, options.account) if recent is not None else []
        if not chosen:
            chosen = _select(await _listed_accounts(session, stored, options), options.account)
            transactions, failed = await _account_transactions(session, chosen, window, options)
        else:
            # The last account list is minutes old: use its hashes and skip a round trip.
            transactions, failed = await _account_transactions(session, chosen, window, options)
            if any(_stale(error) for _, error in failed.values()):
                # Perhaps a hash Schwab no longer knows: ask for the list, and try again
                # the accounts whose hash did change (else the error is about something else).
                listed = await _listed_accounts(session, stored, options)
                before = {k.number: k.hash_value for k in chosen}
                chosen = _select(listed, options.account)
                again = [
                    k
                    for k in chosen
                    if k.number not in before
                    or (k.number in failed and before[k.number] != k.hash_value)
                ]
                # An account no longer listed was closed since: it is simply not there.
                failed = {n: f for n, f in failed.items() if n not in {k.number for k in again}}
                failed = {n: f for n, f in failed.items() if n in {k.number for k in chosen}}
                more, more_failed = await _account_transactions(session, again, window, options)
                transactions = sorted([*transactions, *more], key=lambda t: t.time, reverse=True)
                failed.update(more_failed)
        session.matched = len(chosen) - len(failed)
        _account_failures(session, list(failed.values()), None)
        return transactions

    return await _for_connections(settings, options, open_options, work)


async def connected_elsewhere(
    vault: Vault,
    client: httpx.AsyncClient,
    info: ConnectionInfo,
    access_token: str,
) -> list[tuple[str, list[str]]]:
    """The other connections that hold accounts of this new login: (name, masked numbers) each.

    The login's account numbers (asked once, with its new access token) are
    compared with the accounts cached for the provider's other connections,
    those fetched at least once; without any, no request is made. Only
    masked numbers come back.
    """
    from dashtam_cli.core.providers import get_provider
    from dashtam_cli.core.resilience import Backoff

    cached: dict[str, set[str]] = {}
    for other in await list_connections(vault):
        if other.provider == info.provider and other.id != info.id:
            numbers = {k.number for k in await _known_accounts(vault, other.id)}
            if numbers:
                cached[other.name] = numbers
    if not cached:
        return []

    async def token() -> str:
        return access_token

    async def refresh(_rejected: str) -> str:
        raise ReauthRequired("the new login's access token was refused")

    async def record(call: CallRecord) -> None:
        await audit.record(
            vault,
            operation=f"{info.provider}.{call.operation.replace(' ', '_')}",
            outcome=call.outcome,
            provider=info.provider,
            connection_id=info.id,
            connection_name=info.name,
            http_status=call.http_status,
            duration_ms=call.duration_ms,
            correlation_id=call.correlation_id,
            detail=call.detail,
        )

    schwab = SchwabClient(
        client,
        base_url=get_provider(info.provider).base_url(),
        token=token,
        refresh=refresh,
        record=record,
        backoff=Backoff(attempts=1),  # a check after the login: never worth a wait
    )
    mine = {number for number, _ in await schwab.account_numbers()}
    return [
        (name, sorted(mask_number(n) for n in numbers & mine))
        for name, numbers in sorted(cached.items())
        if numbers & mine
    ]
