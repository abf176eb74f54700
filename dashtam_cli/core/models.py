"""Records the core returns to its callers, as pydantic models with stable field names."""

from __future__ import annotations

import enum
import re
from datetime import date, datetime  # noqa: TC003 - pydantic resolves annotations at runtime
from decimal import Decimal
from pathlib import Path  # noqa: TC003
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "KINDS",
    "Account",
    "AuditEntry",
    "Balance",
    "BookAccountName",
    "CashFlow",
    "ConnectionInfo",
    "ConnectionState",
    "KeyRotation",
    "Kind",
    "NetWorth",
    "NetWorthPoint",
    "PathEntry",
    "Position",
    "ProviderInfo",
    "Record",
    "RefreshResult",
    "RefreshState",
    "SyncReport",
    "TokenState",
    "TokenStatus",
    "Total",
    "Transaction",
    "VaultInit",
    "VaultStatus",
]


class Kind(enum.StrEnum):
    """What a transaction is, in words every provider maps its own types to.

    The provider's own type stays beside it (``Transaction.type``), so
    nothing is lost; `--type` takes either. The sign of the amount says the
    direction, so ``transfer`` covers both ways.
    """

    TRADE = "trade"  # a buy or sell of a security
    DIVIDEND = "dividend"
    INTEREST = "interest"
    DEPOSIT = "deposit"  # money in from outside (ACH in, wire in, cash, a check deposited)
    WITHDRAWAL = "withdrawal"  # money out to outside (ACH out, wire out, a check written)
    TRANSFER = "transfer"  # between accounts, journal entries, securities moved in or out
    PURCHASE = "purchase"  # a card or debit purchase
    PAYMENT = "payment"  # a card or loan payment, a bill paid
    REFUND = "refund"
    FEE = "fee"
    TAX = "tax"
    ADJUSTMENT = "adjustment"  # a correction, a margin or money-market sweep, a corporate action
    OTHER = "other"


KINDS = tuple(kind.value for kind in Kind)


class ConnectionState(enum.StrEnum):
    """Whether a connection's login still works (the ``connections.status`` column)."""

    ACTIVE = "active"
    REAUTH_REQUIRED = "reauth_required"


class TokenState(enum.StrEnum):
    """The state of a connection's credentials, as `dashtam tokens status` shows it."""

    OK = "ok"
    ACCESS_EXPIRED = "access_expired"  # refreshed automatically on next use
    REFRESH_EXPIRING = "refresh_expiring"  # under 24 h left: log in again soon
    REAUTH_REQUIRED = "reauth_required"


class RefreshState(enum.StrEnum):
    """What `dashtam tokens refresh` did for one connection."""

    REFRESHED = "refreshed"
    FRESH = "fresh"  # more than the margin left: nothing sent
    SKIPPED = "skipped"  # its provider's credential does not expire
    REAUTH_REQUIRED = "reauth_required"
    FAILED = "failed"


# An OCC option symbol: the root (up to 6 characters, padded with spaces), the
# expiry YYMMDD, C or P, and the strike in thousandths on 8 digits.
_OCC = re.compile(r"([A-Z0-9./]{1,6}) *(\d{2})(\d{2})(\d{2})([CP])(\d{8})")


def currency_label(currency: str) -> str:
    """How a table names a currency: its code, or a custom currency's short name from its URL."""
    if "/" not in currency:
        return currency.upper()
    name = currency.rstrip("/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isalnum() or ch in "-_.")[:16]
    return name or "units"


class _ShortCurrency:
    """A table shows a custom currency (a URL) by its short name; machine formats keep the URL."""

    def table_value(self, name: str) -> object:
        value = getattr(self, name)
        return currency_label(value) if name == "currency" else value


def option_label(symbol: str) -> str | None:
    """``META 01/24/2027 $550 Call`` for the OCC symbol ``META  270124C00550000``, else None."""
    match = _OCC.fullmatch(symbol.strip())
    if match is None:
        return None
    root, year, month, day, kind, strike = match.groups()
    price = format(Decimal(strike).scaleb(-3).normalize(), "f")
    return f"{root} {month}/{day}/20{year} ${price} {'Call' if kind == 'C' else 'Put'}"


class Record(BaseModel):
    """Base of every record: immutable, and strict about unknown fields.

    Each model's validator is built on its first use, not when this module is
    imported: a command pays only for the records it handles.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    # The columns a table shows people; machine formats always carry every field.
    table_columns: ClassVar[tuple[str, ...] | None] = None
    # Table columns to leave out first, in this order, when the terminal is narrow.
    table_drop: ClassVar[tuple[str, ...]] = ()
    # Table columns of free text, cut with an ellipsis rather than widening the table.
    table_text: ClassVar[frozenset[str]] = frozenset()
    # Fields that are amounts of money: two decimal places at least in every format.
    money_fields: ClassVar[frozenset[str]] = frozenset()

    def table_value(self, name: str) -> object:
        """The value a table shows in the column ``name`` (the field itself by default)."""
        return getattr(self, name)


class PathEntry(Record):
    """One directory or file dashtam uses."""

    name: str
    path: Path
    exists: bool


class AuditEntry(Record):
    """One provider operation, as the audit log recorded it (never with a secret)."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "time",
        "connection",
        "operation",
        "outcome",
        "http_status",
        "duration_ms",
        "correlation_id",
    )
    table_drop: ClassVar[tuple[str, ...]] = (
        "correlation_id",
        "duration_ms",
        "http_status",
        "connection",
    )

    time: datetime
    connection: str | None
    provider: str | None
    operation: str
    outcome: str
    http_status: int | None
    duration_ms: int | None
    correlation_id: str | None
    detail: str | None
    id: str


class VaultStatus(Record):
    """What `dashtam vault status` reports; ``state`` is ok, absent or error."""

    state: str
    path: Path | None
    database: str | None
    size_bytes: int | None
    schema_version: int | None
    vault_id: str | None
    key_store: str | None
    key_source: str | None
    keyring_backend: str | None
    key_id: str | None
    counts: dict[str, int] | None
    error: str | None
    hint: str | None


class VaultInit(Record):
    """The outcome of `dashtam vault init`."""

    created: bool
    path: Path | None
    database: str | None
    vault_id: str
    key_source: str
    key_id: str


class KeyRotation(Record):
    """The outcome of `dashtam vault rotate-key`."""

    old_key_id: str
    new_key_id: str
    fields_resealed: int
    # Cached rows that already failed their integrity check, left as they were.
    damaged_rows: int = 0
    key_source: str


class KeyExport(Record):
    """The outcome of `dashtam vault export-key`: where the key went (never the key)."""

    path: Path
    vault_id: str
    key_id: str


class VaultCopy(Record):
    """The outcome of `dashtam vault copy`: from where, to where, and the rows of each table."""

    source: str
    destination: str
    counts: dict[str, int]


class KeyImport(Record):
    """The outcome of `dashtam vault import-key`: the key, proved to open the vault, stored here."""

    vault_id: str
    key_id: str
    key_source: str


class PassphraseChange(Record):
    """The outcome of `dashtam vault change-passphrase`: the same key, wrapped anew."""

    key_file: Path
    key_id: str


class ProviderInfo(Record):
    """A provider dashtam supports, and where its app credentials come from.

    A provider without app credentials (one that logs in with a pasted token)
    has ``credentials`` and ``base_url`` null.
    """

    name: str
    display_name: str
    credentials: str | None
    base_url: str | None


class ConnectionInfo(Record):
    """One login to one provider, with its token lifetimes (never the tokens)."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "name",
        "provider",
        "status",
        "created_at",
        "access_expires_at",
        "refresh_expires_at",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("created_at", "provider", "access_expires_at")

    name: str
    provider: str
    status: ConnectionState
    created_at: datetime
    updated_at: datetime
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    id: str


class TokenStatus(Record):
    """The lifetimes and state of one connection's tokens.

    ``state`` is a :class:`TokenState`: ``ok``, ``access_expired`` (refreshed
    automatically), ``refresh_expiring`` (under 24 h left: log in again soon)
    or ``reauth_required``. A provider whose credential does not expire is
    ``ok`` with its expiry words ``does not expire``.
    """

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "connection",
        "state",
        "access_expires",
        "refresh_expires",
        "action",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("access_expires",)
    table_text: ClassVar[frozenset[str]] = frozenset({"action"})

    connection: str
    provider: str
    state: TokenState
    access_expires_at: datetime | None
    access_expires_in_seconds: int | None
    access_expires: str | None
    refresh_expires_at: datetime | None
    refresh_expires_in_seconds: int | None
    refresh_expires: str | None
    action: str


class RefreshResult(Record):
    """What `dashtam tokens refresh` did for one connection.

    ``result`` is ``refreshed``, ``fresh`` (nothing to do yet), ``skipped``
    (its provider's credential does not expire), ``reauth_required`` or
    ``failed``.
    """

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "connection",
        "result",
        "access_expires_at",
        "refresh_expires_at",
        "message",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("access_expires_at",)
    table_text: ClassVar[frozenset[str]] = frozenset({"message"})

    connection: str
    provider: str
    result: RefreshState
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    message: str | None


class Account(Record):
    """An account at a provider, in dashtam's provider-neutral shape.

    ``id`` is stable across runs; ``number`` is masked (``****5678``), never
    the full number. Money is Decimal, in ``currency``.
    """

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "name",
        "connection",
        "number",
        "cash",
        "market_value",
        "total_value",
        "buying_power",
    )
    # The masked number already names the account.
    table_drop: ClassVar[tuple[str, ...]] = ("name", "market_value", "connection", "buying_power")
    table_text: ClassVar[frozenset[str]] = frozenset({"name"})
    money_fields: ClassVar[frozenset[str]] = frozenset(
        {"cash", "market_value", "total_value", "buying_power"}
    )

    id: str
    connection: str
    provider: str
    name: str
    type: str
    number: str
    currency: str
    cash: Decimal | None
    market_value: Decimal | None
    total_value: Decimal | None
    buying_power: Decimal | None
    fetched_at: datetime
    # When a sync last completed for this account (None: it never has).
    synced_at: datetime | None = None
    # The institution that holds it, as the provider names it (an aggregator's
    # accounts come from many), when the provider says.
    institution: str | None = None


class Balance(Record):
    """One account's balances at one moment: what each sync keeps, so history accumulates."""

    money_fields: ClassVar[frozenset[str]] = frozenset(
        {"cash", "market_value", "total_value", "buying_power"}
    )

    account_id: str
    at: datetime
    currency: str
    cash: Decimal | None
    market_value: Decimal | None
    total_value: Decimal | None
    buying_power: Decimal | None


class SyncReport(Record):
    """What `dashtam sync` did for one connection."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "connection",
        "result",
        "accounts",
        "new",
        "changed",
        "unchanged",
        "removed",
        "requests",
        "requests_left",
        "message",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("requests_left", "requests", "removed", "unchanged")
    table_text: ClassVar[frozenset[str]] = frozenset({"message"})

    connection: str
    provider: str
    # ok, partial (some accounts failed), failed, reauth_required, skipped (synced meanwhile)
    result: str
    accounts: int
    new: int
    changed: int
    unchanged: int
    removed: int
    failed_accounts: list[str]
    requests: int
    since: datetime | None
    until: datetime | None
    message: str | None
    # Requests left in the provider's daily budget (None: it keeps none).
    requests_left: int | None = None


class Position(Record):
    """A holding; ``quantity`` is signed: long minus short."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "account",
        "symbol",
        "asset_type",
        "quantity",
        "average_price",
        "market_value",
        "unrealized_gain",
        "day_profit_loss",
    )
    table_drop: ClassVar[tuple[str, ...]] = (
        "asset_type",
        "day_profit_loss",
        "average_price",
        "unrealized_gain",
        "account",
    )
    money_fields: ClassVar[frozenset[str]] = frozenset(
        {"market_value", "day_profit_loss", "cost_basis", "unrealized_gain"}
    )

    def table_value(self, name: str) -> object:
        """An option shows what it is ("META 01/24/2027 $550 Call"), not its OCC symbol."""
        if name == "symbol":
            return option_label(self.symbol) or self.symbol
        return getattr(self, name)

    account_id: str
    account: str
    symbol: str
    description: str | None
    asset_type: str
    quantity: Decimal
    average_price: Decimal | None
    market_value: Decimal | None
    day_profit_loss: Decimal | None
    # What the holding cost, and its market value less that, where the provider says.
    cost_basis: Decimal | None = None
    unrealized_gain: Decimal | None = None


class Transaction(Record):
    """A transaction; ``amount`` is positive when money comes into the account."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "time",
        "account",
        "type",
        "symbol",
        "description",
        "amount",
        "fees",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("fees", "symbol", "type", "account")
    table_text: ClassVar[frozenset[str]] = frozenset({"description"})
    money_fields: ClassVar[frozenset[str]] = frozenset({"amount", "fees"})

    def table_value(self, name: str) -> object:
        """An option shows what it is ("META 01/24/2027 $550 Call"), not its OCC symbol."""
        if name == "symbol" and self.symbol is not None:
            return option_label(self.symbol) or self.symbol
        return getattr(self, name)

    id: str
    account_id: str
    account: str
    time: datetime
    trade_date: date | None
    settlement_date: date | None
    type: str
    kind: Kind
    description: str | None
    amount: Decimal
    symbol: str | None
    quantity: Decimal | None
    price: Decimal | None
    fees: Decimal
    status: str | None


class BookAccountName(Record):
    """An account and its name in exported books (`dashtam export --show-accounts`)."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "connection",
        "number",
        "name",
        "book_account",
        "source",
    )
    table_drop: ClassVar[tuple[str, ...]] = ("name", "connection")
    table_text: ClassVar[frozenset[str]] = frozenset({"name"})

    account_id: str
    connection: str
    number: str
    name: str
    institution: str
    book_account: str
    # ``default`` (from institution and account) or ``config`` ([export.accounts]).
    source: str


class NetWorth(_ShortCurrency, Record):
    """One group's worth in one currency (`dashtam networth`)."""

    table_columns: ClassVar[tuple[str, ...] | None] = ("group", "currency", "total", "accounts")
    money_fields: ClassVar[frozenset[str]] = frozenset({"total"})

    group: str
    currency: str
    total: Decimal
    accounts: int
    # The newest balance counted (the accounts' last syncs, or the last snapshot by --at).
    as_of: datetime | None


class NetWorthPoint(_ShortCurrency, Record):
    """One group's worth in one currency at the end of one interval (`dashtam networth history`)."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "period",
        "group",
        "currency",
        "total",
        "accounts",
    )
    money_fields: ClassVar[frozenset[str]] = frozenset({"total"})

    period: date
    group: str
    currency: str
    # None: no account of the group has a snapshot in the interval (a gap, not a zero).
    total: Decimal | None
    accounts: int


class CashFlow(_ShortCurrency, Record):
    """Money in and out of one group in one currency over one interval (`dashtam cashflow`)."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "period",
        "group",
        "currency",
        "inflow",
        "outflow",
        "net",
        "transactions",
    )
    money_fields: ClassVar[frozenset[str]] = frozenset({"inflow", "outflow", "net"})

    period: date
    group: str
    currency: str
    inflow: Decimal
    outflow: Decimal
    net: Decimal
    transactions: int


class Total(_ShortCurrency, Record):
    """The sum of rows in one currency: `accounts list` and `positions list` end with it."""

    table_columns: ClassVar[tuple[str, ...] | None] = (
        "label",
        "currency",
        "cash",
        "market_value",
        "total_value",
        "day_profit_loss",
        "rows",
    )
    money_fields: ClassVar[frozenset[str]] = frozenset(
        {"cash", "market_value", "total_value", "day_profit_loss"}
    )

    label: str
    currency: str
    cash: Decimal | None
    market_value: Decimal | None
    total_value: Decimal | None
    day_profit_loss: Decimal | None
    # The rows summed (an account reached twice is one).
    rows: int
