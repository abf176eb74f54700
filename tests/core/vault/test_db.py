"""The vault's database layer on its own: WAL set up against a busy file, SQLite errors translated."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from dashtam_cli.core.vault import db
from dashtam_cli.core.vault.errors import SchemaTooNew, VaultBusy, VaultCorrupt, VaultError
from dashtam_cli.core.vault.migrations import LATEST

if TYPE_CHECKING:
    from pathlib import Path


class ScriptedCursor:
    """A DB-API cursor whose ``PRAGMA journal_mode = WAL`` fails as scripted, then succeeds."""

    def __init__(self, mode: str, failures: list[Exception]) -> None:
        """Report journal mode ``mode``; raise each of ``failures`` in turn when asked for WAL."""
        self.mode = mode
        self.failures = failures
        self.executed: list[str] = []
        self._row: tuple[str] | None = None

    def execute(self, sql: str) -> None:
        """Run one statement of the script."""
        self.executed.append(sql)
        if sql == "PRAGMA journal_mode = WAL":
            if self.failures:
                raise self.failures.pop(0)
            self.mode = "wal"
        self._row = (self.mode,)

    def fetchone(self) -> tuple[str] | None:
        """The journal mode."""
        return self._row

    def fetchall(self) -> list[tuple[str]]:
        """The journal mode, as a list."""
        return [] if self._row is None else [self._row]


def test_a_database_already_in_wal_mode_is_left_alone() -> None:
    """WAL is asked for only when the file is not in WAL mode yet."""
    cursor = ScriptedCursor("wal", [])
    db._ensure_wal(cursor)
    assert cursor.executed == ["PRAGMA journal_mode"]


def test_switching_to_wal_retries_while_another_connection_has_the_file() -> None:
    """SQLite's immediate "locked" (no busy handler for this pragma) is retried until it passes."""
    locked: list[Exception] = [sqlite3.OperationalError("database is locked") for _ in range(3)]
    cursor = ScriptedCursor("delete", locked)
    db._ensure_wal(cursor)
    assert cursor.executed.count("PRAGMA journal_mode = WAL") == 4
    assert cursor.mode == "wal"


def test_switching_to_wal_gives_up_on_any_other_error() -> None:
    """An error that is not "locked" is not retried."""
    cursor = ScriptedCursor("delete", [sqlite3.OperationalError("disk I/O error")])
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        db._ensure_wal(cursor)
    assert cursor.executed.count("PRAGMA journal_mode = WAL") == 1


def _raise_in_translation(error: Exception) -> VaultError:
    """The vault error ``translate_errors`` makes of ``error``."""
    with pytest.raises(VaultError) as caught, db.translate_errors():
        raise error
    return caught.value


def test_sqlite_errors_become_vault_errors_with_a_hint() -> None:
    """Busy, damaged and other failures each get their own error, and no SQLAlchemy text."""
    busy = _raise_in_translation(
        OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked"))
    )
    assert isinstance(busy, VaultBusy)
    assert "wait for the other command" in (busy.hint or "")

    full = _raise_in_translation(
        OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    )
    assert type(full) is VaultError
    assert full.message == "the vault database failed: database or disk is full"
    assert "free disk space" in (full.hint or "")

    damaged = _raise_in_translation(
        DBAPIError("SELECT", {}, sqlite3.DatabaseError("file is not a database"))
    )
    assert isinstance(damaged, VaultCorrupt)
    assert damaged.message == "the vault database is damaged: file is not a database"
    assert "backup" in (damaged.hint or "")

    other = _raise_in_translation(
        DBAPIError("SELECT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: x.id"))
    )
    assert type(other) is VaultError
    assert other.message == "the vault database failed: UNIQUE constraint failed: x.id"
    assert "[SQL:" not in str(other)


def _versions(path: Path) -> list[int]:
    """The schema versions recorded in the database at ``path``."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_migrate_refuses_a_vault_from_a_newer_dashtam(tmp_path: Path) -> None:
    """db.migrate on a vault at a version it does not know raises SchemaTooNew, writing nothing."""
    path = tmp_path / "vault.db"

    async def run() -> None:
        engine = db.create_engine(path)
        try:
            await db.migrate(engine, path)
            async with db.writing(engine) as conn:
                await conn.exec_driver_sql(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, 'future', 'now')",
                    (LATEST + 1,),
                )
            with pytest.raises(SchemaTooNew):
                await db.migrate(engine, path)
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert _versions(path) == [*range(1, LATEST + 1), LATEST + 1]


_FIRST = """
\"\"\"schema_version, and a newer dashtam's work.\"\"\"
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("description", sa.Text),
        sa.Column("applied_at", sa.Text),
    )
    op.execute("INSERT INTO schema_version VALUES ({future}, 'future', 'now')")
"""

_SECOND = """
\"\"\"Never applied.\"\"\"
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("CREATE TABLE never (x)")
"""


def test_migrate_stops_when_a_newer_dashtam_migrated_meanwhile(tmp_path: Path) -> None:
    """A vault a newer dashtam upgraded between two revisions is refused, not downgraded.

    The first revision stands in for the other process: it records a version
    past every one this dashtam knows, so the second step finds the vault too new.
    """
    path = tmp_path / "vault.db"
    revisions = tmp_path / "revisions"
    revisions.mkdir()
    (revisions / "first.py").write_text(_FIRST.format(future=LATEST + 5))
    (revisions / "second.py").write_text(_SECOND)

    async def run() -> None:
        engine = db.create_engine(path)
        try:
            with pytest.raises(SchemaTooNew):
                await db.migrate(engine, path, revisions=revisions)
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert _versions(path) == [1, LATEST + 5]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'never'").fetchall() == []


def test_every_connection_gets_the_vault_s_pragmas(tmp_path: Path) -> None:
    """WAL, FULL sync, foreign keys, the busy timeout and a 16 MB page cache, on each connection."""
    path = tmp_path / "vault.db"
    sqlite3.connect(path).close()

    async def run() -> list[tuple[object, ...]]:
        engine = db.create_engine(path)
        try:
            seen = []
            for _ in range(2):  # a second connection, beside the first, gets them too
                async with engine.connect() as conn:
                    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                    values = [
                        (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                        for name in (*names, "cache_size")
                    ]
                    seen.append(tuple(values))
                await engine.dispose()
            return seen
        finally:
            await engine.dispose()

    expected = ("wal", 2, 1, db.BUSY_TIMEOUT_MS, -db.PAGE_CACHE_KIB)
    assert asyncio.run(run()) == [expected, expected]
    assert db.PAGE_CACHE_KIB == 16_384
