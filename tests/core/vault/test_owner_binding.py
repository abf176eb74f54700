"""Sealed fields are bound to their row's owner; vaults sealed before that are upgraded once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from vault_seed import (
    UNDO_MIGRATION_4,
    Seeded,
    assert_reads_back,
    read_all,
    seed,
    without_migration_4,
)

from dashtam_cli.core.connections import load_tokens
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import crypto, migrations, schema
from dashtam_cli.core.vault.errors import RecordTampered
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Iterator

# The sealed rows are moved with sqlite3, behind dashtam's back: local vault only.
pytestmark = [pytest.mark.usefixtures("master_key"), pytest.mark.sqlite_only]


def _create() -> Seeded:
    """Create and fill a vault."""

    async def run() -> Seeded:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await seed(vault, transactions=12)

    return asyncio.run(run())


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    """A plain connection to the vault file, as an attacker with write access has; committed."""
    with contextlib.closing(sqlite3.connect(load_settings().paths.vault_file)) as db, db:
        yield db


def _connections() -> list[tuple[str, str]]:
    """The (id, name) of every connection."""
    with _db() as db:
        return list(db.execute("SELECT id, name FROM connections ORDER BY name"))


def test_a_token_row_moved_to_another_connection_fails_its_check() -> None:
    """The review's attack: point conn-0's token row at conn-1; conn-1's tokens no longer open."""
    _create()
    (a_id, _), (b_id, b_name), _ = _connections()
    with _db() as db:
        db.execute("DELETE FROM tokens WHERE connection_id = ?", (b_id,))
        db.execute("UPDATE tokens SET connection_id = ? WHERE connection_id = ?", (b_id, a_id))

    async def read() -> None:
        async with open_vault(load_settings()) as vault:
            await load_tokens(vault, b_name)

    with pytest.raises(RecordTampered, match="tokens/"):
        asyncio.run(read())


@pytest.mark.parametrize(
    ("table", "column", "other"),
    [
        ("transactions", "account_id", "SELECT id FROM accounts"),
        ("positions", "account_id", "SELECT id FROM accounts"),
        ("accounts", "connection_id", "SELECT id FROM connections"),
        ("provider_credentials", "provider", "SELECT 'another-provider'"),
    ],
)
def test_any_sealed_row_moved_to_another_owner_fails(table: str, column: str, other: str) -> None:
    """A row of each sealed table re-pointed at another owner no longer opens; the rest does."""
    _create()
    with _db() as db:
        row_id, owner = db.execute(f"SELECT id, {column} FROM {table} LIMIT 1").fetchone()  # noqa: S608
        target = next(o for (o,) in db.execute(other) if o != owner)
        db.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (target, row_id))  # noqa: S608

    async def read() -> None:
        async with open_vault(load_settings()) as vault:
            await read_all(vault)

    with pytest.raises(RecordTampered, match=f"{table}/{row_id}"):
        asyncio.run(read())


def _downgrade_to_format_1(key: bytes, seeded: Seeded) -> Seeded:
    """Rewrite the vault as dashtam sealed it before owners: format-1 blobs, no seal_format.

    Returns what is left of ``seeded`` in a vault of that age (schema version 2).
    """
    with _db() as db:
        for statement in UNDO_MIGRATION_4:
            db.execute(statement)
    seeded = without_migration_4(seeded)
    aead = AESGCM(key)
    key_id = crypto.key_id_of(key)

    def old_blob(table: str, row_id: str, field: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = b"\0".join(
            (b"dashtam/v1", table.encode(), row_id.encode(), field.encode(), key_id.hex().encode())
        )
        return bytes([1]) + key_id + nonce + aead.encrypt(nonce, plain, aad)

    with _db() as db:
        for (table, row_id, field), plain in seeded.plaintexts.items():
            db.execute(
                f"UPDATE {table} SET {field} = ? WHERE id = ?",  # noqa: S608 - test names
                (old_blob(table, row_id, field, plain), row_id),
            )
        (vault_id,) = db.execute("SELECT value FROM vault_meta WHERE key = 'vault_id'").fetchone()
        check = old_blob(
            "vault_meta", vault_id.decode(), "key_check", b"dashtam vault key check v1"
        )
        db.execute("UPDATE vault_meta SET value = ? WHERE key = 'key_check'", (check,))
        db.execute("DELETE FROM vault_meta WHERE key = 'seal_format'")
        # And the schema as that dashtam left it: version 2.
        db.execute("DROP INDEX ix_accounts_connection")
        db.execute("DELETE FROM schema_version WHERE version >= 3")
    return seeded


def test_a_vault_of_format_1_is_resealed_once_and_reads_back(
    master_key: bytes,
) -> None:
    """Opening an old vault re-seals every field in format 2; every value reads back.

    Afterwards a format-1 blob put back into a row is refused: the upgrade is
    not a permanent way around the owner binding.
    """
    seeded = _downgrade_to_format_1(master_key, _create())
    with _db() as db:
        token_id, old_blob = db.execute("SELECT id, access_token FROM tokens LIMIT 1").fetchone()

    async def reopen() -> None:
        async with open_vault(load_settings()) as vault:
            assert await vault.seal_format() == 2
            await assert_reads_back(vault, seeded)

    with _db() as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (2,)

    asyncio.run(reopen())
    with _db() as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (
            migrations.LATEST,
        )
        formats = {
            blob[0]
            for table, fields in schema.SEALED_FIELDS.items()
            for field in fields
            for (blob,) in db.execute(f"SELECT {field} FROM {table} WHERE {field} IS NOT NULL")  # noqa: S608
        }
        assert formats == {2}
        db.execute("UPDATE tokens SET access_token = ? WHERE id = ?", (old_blob, token_id))

    async def read() -> None:
        async with open_vault(load_settings()) as vault:
            await read_all(vault)

    with pytest.raises(RecordTampered, match=f"tokens/{token_id}"):
        asyncio.run(read())


def test_the_format_1_upgrade_skips_a_damaged_row(
    master_key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A format-1 row that no longer opens does not stop the upgrade: it is left as it was.

    A damaged token (not a cache row) is skipped too: the vault opens and is
    upgraded, the damage is logged, and the damaged blob is kept untouched.
    """
    _downgrade_to_format_1(master_key, _create())
    with _db() as db:
        token_id, blob = db.execute("SELECT id, access_token FROM tokens LIMIT 1").fetchone()
        damaged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        db.execute("UPDATE tokens SET access_token = ? WHERE id = ?", (damaged, token_id))

    async def upgrade() -> int:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            return await vault.seal_format()

    with caplog.at_level("WARNING"):
        assert asyncio.run(upgrade()) == 2
    assert "1 row(s) that already failed their integrity check" in caplog.text
    with _db() as db:
        assert db.execute(
            "SELECT access_token FROM tokens WHERE id = ?", (token_id,)
        ).fetchone() == (damaged,)
