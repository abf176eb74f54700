"""Known plaintexts sealed into every sealed table of a vault, and the check that they read back."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from dashtam_cli.core.vault.vault import Vault

Field = tuple[str, str, str]  # table, row id, field


@dataclasses.dataclass(frozen=True)
class Seeded:
    """What :func:`seed` wrote: the plaintext of every sealed field, and the rows per table."""

    plaintexts: dict[Field, bytes]
    nulls: frozenset[Field]
    counts: dict[str, int]


def _id() -> str:
    return str(uuid.uuid4())


async def seed(vault: Vault, *, transactions: int = 200, positions_per_account: int = 2) -> Seeded:
    """Write a row of every sealed table (credentials to sync points), every field sealed.

    Every plaintext is unique (it carries a random marker), so a value read
    back from the wrong row or after a lost write cannot pass for the right one.
    One token has no refresh token, so a NULL sealed field is covered too.
    """
    plaintexts: dict[Field, bytes] = {}
    nulls: set[Field] = set()
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in schema.TABLES}
    now = db.utcnow_text()

    def sealed(table: str, row_id: str, field: str, plain: str | None, owner: str) -> bytes | None:
        if plain is None:
            nulls.add((table, row_id, field))
            return None
        data = plain.encode()
        plaintexts[(table, row_id, field)] = data
        return vault.seal(table, row_id, field, data, owner=owner)

    for provider in ("schwab", "fidelity"):
        row_id = _id()
        rows["provider_credentials"].append(
            {
                "id": row_id,
                "provider": provider,
                "client_id": sealed(
                    "provider_credentials", row_id, "client_id", f"cid-{provider}-{_id()}", provider
                ),
                "client_secret": sealed(
                    "provider_credentials",
                    row_id,
                    "client_secret",
                    f"csecret-{uuid.uuid4().hex}",
                    provider,
                ),
                "redirect_uri": "https://127.0.0.1:8182/callback",
                "created_at": now,
                "updated_at": now,
            }
        )

    account_ids: list[str] = []
    for i in range(3):
        conn_id = _id()
        rows["connections"].append(
            {
                "id": conn_id,
                "provider": "schwab",
                "name": f"conn-{i}",
                "status": "active",
                "created_at": now,
                "updated_at": now,
                # One connection with an opaque credential record (a provider that
                # does not refresh); the others have none: NULL sealed fields.
                "secret": sealed(
                    "connections",
                    conn_id,
                    "secret",
                    f'{{"access_url": "https://u:p@bridge/{_id()}"}}' if i == 1 else None,
                    conn_id,
                ),
            }
        )
        token_id = _id()
        refresh = None if i == 2 else f"refresh-{i}-{uuid.uuid4().hex}"
        rows["tokens"].append(
            {
                "id": token_id,
                "connection_id": conn_id,
                "access_token": sealed(
                    "tokens", token_id, "access_token", f"access-{_id()}", conn_id
                ),
                "refresh_token": sealed("tokens", token_id, "refresh_token", refresh, conn_id),
                "token_type": "Bearer",
                "issued_at": now,
                "access_expires_at": now,
                "refresh_expires_at": None,
                "updated_at": now,
            }
        )
        account_id = _id()
        account_ids.append(account_id)
        payload = json.dumps({"balance": f"{10000 + i}.{i:02d}", "marker": _id()})
        rows["accounts"].append(
            {
                "id": account_id,
                "connection_id": conn_id,
                "number": sealed(
                    "accounts", account_id, "number", f"ACCT-{i}-{_id()[:8]}", conn_id
                ),
                "payload": sealed("accounts", account_id, "payload", payload, conn_id),
                "fetched_at": now,
                # One account without a provider reference: a NULL sealed field.
                "provider_ref": sealed(
                    "accounts",
                    account_id,
                    "provider_ref",
                    None if i == 0 else f"HASH{_id()}",
                    conn_id,
                ),
            }
        )
        balance_id = _id()
        balance = json.dumps({"cash": f"{500 + i}.{i:02d}", "marker": _id()})
        rows["balances"].append(
            {
                "id": balance_id,
                "account_id": account_id,
                "at": now,
                "payload": sealed("balances", balance_id, "payload", balance, account_id),
            }
        )
        rows["sync_points"].append(
            {
                "id": account_id,
                "connection_id": conn_id,
                "through": now,
                # One account pages by cursor; the others by time: NULL sealed fields.
                "cursor": sealed(
                    "sync_points", account_id, "cursor", f"cur-{_id()}" if i == 1 else None, conn_id
                ),
                "synced_at": now,
            }
        )
        for j in range(positions_per_account):
            position_id = _id()
            payload = json.dumps({"symbol": f"SYM{i}{j}", "quantity": f"{j + 1}", "m": _id()})
            rows["positions"].append(
                {
                    "id": position_id,
                    "account_id": account_id,
                    "payload": sealed("positions", position_id, "payload", payload, account_id),
                    "fetched_at": now,
                }
            )

    for n in range(transactions):
        txn_id = _id()
        payload = json.dumps({"amount": f"-{n}.{n % 100:02d}", "description": f"payment {n}"})
        rows["transactions"].append(
            {
                "id": txn_id,
                "account_id": account_ids[n % len(account_ids)],
                "occurred_at": f"2024-01-01T00:00:{n % 60:02d}.000000+00:00",
                "payload": sealed(
                    "transactions",
                    txn_id,
                    "payload",
                    payload + _id(),
                    account_ids[n % len(account_ids)],
                ),
                "fetched_at": now,
            }
        )

    async with vault.writing() as conn:
        for name in schema.TABLES:
            if rows[name]:
                await conn.execute(schema.metadata.tables[name].insert(), rows[name])
    return Seeded(
        plaintexts=plaintexts,
        nulls=frozenset(nulls),
        counts={name: len(rows[name]) for name in schema.TABLES},
    )


async def read_all(vault: Vault) -> tuple[dict[Field, bytes], set[Field]]:
    """Open every sealed field in the vault with its current key.

    Returns the plaintexts and the fields that are NULL. Any field that does
    not open raises RecordTampered, naming it.
    """
    opened: dict[Field, bytes] = {}
    nulls: set[Field] = set()
    async with vault.reading() as conn:
        for name, fields in schema.SEALED_FIELDS.items():
            table = schema.metadata.tables[name]
            owner = schema.OWNER_COLUMNS[name]
            result = await conn.execute(
                select(table.c.id, table.c[owner], *(table.c[f] for f in fields))
            )
            for row in result.mappings():
                for field in fields:
                    blob = row[field]
                    if blob is None:
                        nulls.add((name, row["id"], field))
                    else:
                        opened[(name, row["id"], field)] = vault.unseal(
                            name, row["id"], field, blob, owner=row[owner]
                        )
    return opened, nulls


async def assert_reads_back(vault: Vault, seeded: Seeded) -> None:
    """Every sealed field written by :func:`seed` opens to exactly its plaintext; none is extra."""
    opened, nulls = await read_all(vault)
    assert nulls == set(seeded.nulls)
    assert opened.keys() == seeded.plaintexts.keys()
    wrong = [k for k, v in seeded.plaintexts.items() if opened[k] != v]
    assert not wrong, f"{len(wrong)} fields read back differently, e.g. {wrong[:3]}"
    counts = await vault.counts()
    assert {k: v for k, v in counts.items() if k != "audit_log"} == {
        k: v for k, v in seeded.counts.items() if k != "audit_log"
    }


# What migration 4 added, undone: the statements that take a vault of the
# latest schema back to version 3, for tests of upgrades from older vaults.
# Without Alembic's table too: the vault is then as a dashtam before Alembic
# left it, whose schema_version alone says its version.
UNDO_MIGRATION_4 = (
    "DROP TABLE alembic_version",
    "ALTER TABLE transactions DROP COLUMN form",  # migration 6, which comes back after 4
    "DROP TABLE request_budget",  # migration 5, which comes back after 4
    "DROP INDEX ix_sync_points_connection",
    "DROP TABLE sync_points",
    "DROP INDEX ix_balances_account_time",
    "DROP TABLE balances",
    "DROP INDEX ix_positions_account_time",
    "DROP INDEX ix_transactions_account_kind",
    "ALTER TABLE transactions DROP COLUMN kind",
    "ALTER TABLE connections DROP COLUMN secret",
    "DELETE FROM schema_version WHERE version >= 4",
)


def without_migration_4(seeded: Seeded) -> Seeded:
    """What :func:`seed` wrote, as it reads after :data:`UNDO_MIGRATION_4` and a new upgrade.

    The tables of migration 4 come back empty, and every connection's
    ``secret`` comes back NULL.
    """
    new_tables = {"balances", "sync_points"}
    connections = {
        row_id for table, row_id, _ in (*seeded.plaintexts, *seeded.nulls) if table == "connections"
    }

    def kept(item: Field) -> bool:
        table, _, field = item
        return table not in new_tables and (table, field) != ("connections", "secret")

    return Seeded(
        plaintexts={k: v for k, v in seeded.plaintexts.items() if kept(k)},
        nulls=frozenset(
            {k for k in seeded.nulls if kept(k)}
            | {("connections", row_id, "secret") for row_id in connections}
        ),
        counts={k: 0 if k in new_tables else v for k, v in seeded.counts.items()},
    )
