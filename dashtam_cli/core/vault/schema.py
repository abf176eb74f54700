"""The vault's tables as they stand after the latest migration, and which fields are sealed."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)

__all__ = ["OWNER_COLUMNS", "SEALED_FIELDS", "TABLES", "metadata"]

metadata = MetaData()

vault_meta = Table(
    "vault_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Text, nullable=False),
)

provider_credentials = Table(
    "provider_credentials",
    metadata,
    Column("id", Text, primary_key=True),
    Column("provider", Text, nullable=False, unique=True),
    Column("client_id", LargeBinary, nullable=False),
    Column("client_secret", LargeBinary, nullable=False),
    Column("redirect_uri", Text),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)

connections = Table(
    "connections",
    metadata,
    Column("id", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("name", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    # Added by migration 4: the credential record of a provider that does not refresh, sealed.
    Column("secret", LargeBinary, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "connection_id",
        Text,
        ForeignKey("connections.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("access_token", LargeBinary, nullable=False),
    Column("refresh_token", LargeBinary),
    Column("token_type", Text, nullable=False),
    Column("issued_at", Text, nullable=False),
    Column("access_expires_at", Text, nullable=False),
    Column("refresh_expires_at", Text),
    Column("updated_at", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("connection_id", Text, ForeignKey("connections.id", ondelete="CASCADE"), nullable=False),
    Column("number", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("fetched_at", Text, nullable=False),
    # Added by migration 2: the provider's reference (Schwab's hashValue), sealed.
    Column("provider_ref", LargeBinary, nullable=True),
    # Added by migration 3.
    Index("ix_accounts_connection", "connection_id"),
)

positions = Table(
    "positions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("fetched_at", Text, nullable=False),
    # Added by migration 4.
    Index("ix_positions_account_time", "account_id", "fetched_at"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("occurred_at", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("fetched_at", Text, nullable=False),
    Index("ix_transactions_account_time", "account_id", "occurred_at"),
    # Added by migration 4: the neutral kind (NULL in rows cached before).
    Column("kind", Text, nullable=True),
    Index("ix_transactions_account_kind", "account_id", "kind", "occurred_at"),
    # Added by migration 6: 1 when the payload is the record's JSON line as
    # printed (core/lines.py: LINE_FORM); NULL in rows stored before.
    Column("form", Integer, nullable=True),
)

balances = Table(
    "balances",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("at", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_balances_account_time", "account_id", "at"),
)

sync_points = Table(
    "sync_points",
    metadata,
    Column("id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("connection_id", Text, ForeignKey("connections.id", ondelete="CASCADE"), nullable=False),
    Column("through", Text, nullable=False),
    Column("cursor", LargeBinary, nullable=True),
    Column("synced_at", Text, nullable=False),
    Index("ix_sync_points_connection", "connection_id"),
)

request_budget = Table(
    "request_budget",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("day", Text, primary_key=True),
    Column("used", Integer, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Text, primary_key=True),
    Column("at", Text, nullable=False),
    Column("connection_id", Text),
    Column("connection_name", Text),
    Column("provider", Text),
    Column("operation", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("http_status", Integer),
    Column("duration_ms", Integer),
    Column("correlation_id", Text),
    Column("detail", Text),
    Index("ix_audit_log_at", "at"),
)

# Every sealed column, by table: rotation re-seals exactly these, and a test
# checks that each LargeBinary column outside vault_meta is listed.
SEALED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "provider_credentials": ("client_id", "client_secret"),
    "connections": ("secret",),
    "tokens": ("access_token", "refresh_token"),
    "accounts": ("number", "payload", "provider_ref"),
    "positions": ("payload",),
    "transactions": ("payload",),
    "balances": ("payload",),
    "sync_points": ("cursor",),
}

# The column naming each sealed table's owner, which every sealed field of the
# row is bound to: moving a row to another owner breaks its seal.
OWNER_COLUMNS: Final[dict[str, str]] = {
    "provider_credentials": "provider",
    "connections": "id",
    "tokens": "connection_id",
    "accounts": "connection_id",
    "positions": "account_id",
    "transactions": "account_id",
    "balances": "account_id",
    "sync_points": "connection_id",
}

# The tables `vault status` counts, in the order it prints them.
TABLES: Final = (
    "provider_credentials",
    "connections",
    "tokens",
    "accounts",
    "positions",
    "transactions",
    "balances",
    "sync_points",
    "audit_log",
)
