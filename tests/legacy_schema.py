"""The vault's schema as dashtam wrote it before Alembic: the frozen SQL of each version, 1 to 5.

This was ``dashtam_cli/core/vault/migrations.py`` until the migrations became
Alembic revisions; the tests keep it to build vaults exactly as an older
dashtam left them, and to check that the revisions make the same tables.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

_V1: Final = (
    """CREATE TABLE vault_meta (
        key TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    )""",
    """CREATE TABLE schema_version (
        version INTEGER NOT NULL PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TEXT NOT NULL
    )""",
    """CREATE TABLE provider_credentials (
        id TEXT NOT NULL PRIMARY KEY,
        provider TEXT NOT NULL UNIQUE,
        client_id BLOB NOT NULL,
        client_secret BLOB NOT NULL,
        redirect_uri TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE connections (
        id TEXT NOT NULL PRIMARY KEY,
        provider TEXT NOT NULL,
        name TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE tokens (
        id TEXT NOT NULL PRIMARY KEY,
        connection_id TEXT NOT NULL UNIQUE REFERENCES connections (id) ON DELETE CASCADE,
        access_token BLOB NOT NULL,
        refresh_token BLOB,
        token_type TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        access_expires_at TEXT NOT NULL,
        refresh_expires_at TEXT,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE accounts (
        id TEXT NOT NULL PRIMARY KEY,
        connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
        number BLOB NOT NULL,
        payload BLOB NOT NULL,
        fetched_at TEXT NOT NULL
    )""",
    """CREATE TABLE positions (
        id TEXT NOT NULL PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        payload BLOB NOT NULL,
        fetched_at TEXT NOT NULL
    )""",
    """CREATE TABLE transactions (
        id TEXT NOT NULL PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        occurred_at TEXT NOT NULL,
        payload BLOB NOT NULL,
        fetched_at TEXT NOT NULL
    )""",
    "CREATE INDEX ix_transactions_account_time ON transactions (account_id, occurred_at)",
    """CREATE TABLE audit_log (
        id TEXT NOT NULL PRIMARY KEY,
        at TEXT NOT NULL,
        connection_id TEXT,
        connection_name TEXT,
        provider TEXT,
        operation TEXT NOT NULL,
        outcome TEXT NOT NULL,
        http_status INTEGER,
        duration_ms INTEGER,
        correlation_id TEXT,
        detail TEXT
    )""",
    "CREATE INDEX ix_audit_log_at ON audit_log (at)",
)

_V2: Final = (
    # The provider's own reference for an account (Schwab's hashValue), sealed,
    # so a fetch soon after another need not ask for the numbers again.
    "ALTER TABLE accounts ADD COLUMN provider_ref BLOB",
)

_V3: Final = (
    # Version 3 marks the sealing format 2, in which every sealed field is bound
    # to its row's owner: a dashtam that knows only format 1 then refuses the
    # vault as too new instead of reporting every field as tampered with. The
    # re-sealing itself needs the key, so it runs when the vault is opened
    # (vault.upgrade_seal_format). The index serves the per-connection account
    # lookups every fetch makes.
    "CREATE INDEX ix_accounts_connection ON accounts (connection_id)",
)

_V4: Final = (
    # The provider interface: a connection whose provider does not refresh
    # keeps its credential record here, sealed, instead of a token pair.
    "ALTER TABLE connections ADD COLUMN secret BLOB",
    # The neutral kind of a transaction (trade, dividend, ...), which queries
    # filter on; NULL for rows cached before, whose kind is read from its type.
    "ALTER TABLE transactions ADD COLUMN kind TEXT",
    "CREATE INDEX ix_transactions_account_kind ON transactions (account_id, kind, occurred_at)",
    # Each sync keeps the positions it saw: the newest per account are current.
    "CREATE INDEX ix_positions_account_time ON positions (account_id, fetched_at)",
    # A balance snapshot per account per sync, sealed.
    """CREATE TABLE balances (
        id TEXT NOT NULL PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
    "CREATE INDEX ix_balances_account_time ON balances (account_id, at)",
    # Where each account's last successful sync reached: the time its window
    # ended, and the provider's cursor (sealed) for providers that page by one.
    """CREATE TABLE sync_points (
        id TEXT NOT NULL PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
        through TEXT NOT NULL,
        cursor BLOB,
        synced_at TEXT NOT NULL
    )""",
    "CREATE INDEX ix_sync_points_connection ON sync_points (connection_id)",
)

_V5: Final = (
    # Requests spent per day against a provider's daily budget (SimpleFIN's
    # Bridge allows about 24 a day per access). ``scope`` is the provider's
    # digest of what the budget belongs to, never a credential; ``day`` is the
    # UTC date. Not sealed: a count says nothing about anyone's money.
    """CREATE TABLE request_budget (
        scope TEXT NOT NULL,
        day TEXT NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (scope, day)
    )""",
)

# (version, description, statements), as the old runner recorded them in schema_version.
LEGACY: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (1, "initial schema: credentials, connections, tokens, cache, audit log", _V1),
    (2, "accounts keep the provider's account reference, sealed", _V2),
    (3, "sealed fields bound to their owner (sealing format 2)", _V3),
    (4, "sync: kinds, balance snapshots, sync points, opaque credentials", _V4),
    (5, "daily request budgets of providers that have one", _V5),
)


def build(path: Path, version: int) -> None:
    """Make at ``path`` an empty database at ``version``, as the old runner left it.

    Each version's statements and its ``schema_version`` row in one
    transaction, as that runner did; no ``alembic_version`` table.
    """
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number, description, statements in LEGACY[:version]:
            db.execute("BEGIN")
            for statement in statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (number, description, "2025-01-01T00:00:00.000000+00:00"),
            )
            db.execute("COMMIT")
