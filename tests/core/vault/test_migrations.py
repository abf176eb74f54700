"""The schema's Alembic revisions: what they build, vaults from before Alembic adopted, races."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from legacy_schema import LEGACY, build
from subprocess_env import coverage_variables
from vault_seed import Seeded, assert_reads_back, seed, without_migration_4

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import crypto, db, migrations, schema
from dashtam_cli.core.vault.errors import SchemaTooNew, VaultError
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

# Local vault only: vaults built with the old code's SQLite schema.
pytestmark = pytest.mark.sqlite_only

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAITING = "waiting for another dashtam process to release the vault"
DEADLINE_S = 120.0  # a guard against a hang on a busy machine, not a timing check


@contextlib.contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to ``path``, committed at the end of the block."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        yield conn


def _create(transactions: int = 6) -> tuple[Path, Seeded]:
    """Create a vault with the current code and seal a row into every sealed table."""

    async def run() -> tuple[Path, Seeded]:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return vault.path, await seed(vault, transactions=transactions)

    return asyncio.run(run())


def _describe(path: Path) -> dict[str, Any]:
    """Every table's columns, indexes and foreign keys, as SQLite reports them."""
    with _db(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        described: dict[str, Any] = {}
        for table in tables:
            indexes = {
                name: (unique, [c for (_, _, c) in conn.execute(f"PRAGMA index_info('{name}')")])
                for (_, name, unique, _, _) in conn.execute(f"PRAGMA index_list('{table}')")
            }
            described[table] = {
                "columns": conn.execute(f"PRAGMA table_info('{table}')").fetchall(),
                "indexes": indexes,
                "foreign_keys": sorted(
                    (fk[2], fk[3], fk[4], fk[6])
                    for fk in conn.execute(f"PRAGMA foreign_key_list('{table}')")
                ),
            }
    return described


@pytest.mark.usefixtures("master_key")
def test_the_revisions_build_what_the_old_sql_built_and_schema_py_declares(tmp_path: Path) -> None:
    """Replayed on SQLite, the revisions make the old SQL's tables, and schema.py's, exactly.

    Columns (name, declared type, NOT NULL, primary key), indexes (unique or
    not, their columns) and foreign keys (with ON DELETE CASCADE) are compared
    with a database built from the frozen SQL of dashtam before Alembic, and
    with the tables ``schema.py`` declares. Only Alembic's own table is new.
    """
    path, _ = _create()
    old = tmp_path / "old.sqlite3"
    build(old, len(LEGACY))
    # The revisions made since Alembic, applied to the old SQL's tables as dashtam does.
    engine = db.create_engine(old)
    try:
        applied = asyncio.run(db.migrate(engine, old))
    finally:
        asyncio.run(engine.dispose())
    assert applied == list(range(len(LEGACY) + 1, migrations.LATEST + 1))
    new_tables = _describe(path)
    assert new_tables.pop("alembic_version")["columns"] == [
        (0, "version_num", "VARCHAR(32)", 1, None, 1)
    ]
    old_tables = _describe(old)
    old_tables.pop("alembic_version")
    assert new_tables == old_tables

    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    assert set(new_tables) == set(schema.metadata.tables)
    for table in schema.metadata.sorted_tables:
        described = new_tables[table.name]
        pk = [c.name for c in table.primary_key.columns]
        assert [
            (name, kind, bool(notnull), pk.index(name) + 1 if name in pk else 0)
            for (_, name, kind, notnull, _, _) in described["columns"]
        ] == [
            (
                c.name,
                c.type.compile(dialect=dialect),
                not c.nullable,
                c.primary_key and 1 + pk.index(c.name),
            )
            for c in table.columns
        ], table.name
        named = {k: v for k, v in described["indexes"].items() if not k.startswith("sqlite_")}
        assert named == {
            index.name: (int(bool(index.unique)), [c.name for c in index.columns])
            for index in table.indexes
        }, table.name
        # SQLite indexes a primary key (other than an INTEGER one, the rowid) and
        # each UNIQUE column itself.
        automatic = sorted(v for k, v in described["indexes"].items() if k.startswith("sqlite_"))
        expected = [(1, [c.name]) for c in table.columns if c.unique]
        if pk != ["version"]:  # schema_version's INTEGER key is the rowid
            expected.append((1, pk))
        assert automatic == sorted(expected), table.name
        assert described["foreign_keys"] == sorted(
            (fk.column.table.name, fk.parent.name, fk.column.name, "CASCADE")
            for fk in table.foreign_keys
        ), table.name


def test_the_revisions_are_numbered_one_line_and_never_go_back() -> None:
    """Ids 0001..LATEST, each after the one before, the last one HEAD; every downgrade raises."""
    script = migrations.script_directory()
    walked = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in walked] == [
        migrations.revision_id(n) for n in range(1, migrations.LATEST + 1)
    ]
    assert [r.down_revision for r in walked] == [None, *(r.revision for r in walked[:-1])]
    assert script.get_current_head() == migrations.HEAD == "0006"
    for revision in walked:
        doc = " ".join((revision.module.__doc__ or "").split()).lower()
        assert "downgrades are not supported" in doc
        with pytest.raises(NotImplementedError, match="cannot be downgraded"):
            revision.module.downgrade()


def test_the_same_revisions_render_for_postgresql() -> None:
    """Run offline for PostgreSQL, the revisions make BYTEA (never BLOB) columns and every table.

    No server is needed: Alembic writes the SQL it would run, which shows
    the generic types and operations carry over to the other engine.
    """
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    script = migrations.script_directory()
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={
            "as_sql": True,
            "output_buffer": buffer,
            "script": script,
            "fn": lambda heads, _ctx: script._upgrade_revs("head", heads),
        },
    )
    with Operations.context(context):
        context.run_migrations()
    sql = buffer.getvalue()
    assert "BLOB" not in sql
    assert sql.count("BYTEA") == sum(
        1
        for t in schema.metadata.sorted_tables
        for c in t.columns
        if c.type.__class__.__name__ == "LargeBinary"
    )
    for table in schema.metadata.tables:
        assert f"CREATE TABLE {table} (" in sql
    assert "ON DELETE CASCADE" in sql
    assert "UPDATE alembic_version SET version_num='0005'" in sql


def _format_1_blob(key: bytes, table: str, row_id: str, field: str, plain: bytes) -> bytes:
    """A field sealed as dashtam did before owners were bound (sealing format 1)."""
    key_id = crypto.key_id_of(key)
    nonce = os.urandom(12)
    aad = b"\0".join(
        (b"dashtam/v1", table.encode(), row_id.encode(), field.encode(), key_id.hex().encode())
    )
    return bytes([1]) + key_id + nonce + AESGCM(key).encrypt(nonce, plain, aad)


def _as_of(version: int, seeded: Seeded) -> Seeded:
    """What of ``seeded`` a vault at ``version`` holds, as it reads once upgraded."""
    if version < 4:
        seeded = without_migration_4(seeded)
    if version < 2:
        refs = {
            k for k in (*seeded.plaintexts, *seeded.nulls) if k[::2] == ("accounts", "provider_ref")
        }
        seeded = dataclasses.replace(
            seeded,
            plaintexts={k: v for k, v in seeded.plaintexts.items() if k not in refs},
            nulls=frozenset(seeded.nulls | refs),
        )
    return seeded


def _plain_columns(
    path: Path, like: dict[str, tuple[str, ...]] | None = None
) -> dict[str, tuple[str, ...]]:
    """Each table's columns that are not sealed (or those of ``like``) with every row's values.

    Sealed columns are left out: re-sealing changes them (their plaintexts
    are checked apart). Returns ``{table: (column names..., rows...)}``.
    """
    out: dict[str, Any] = {}
    with _db(path) as conn:
        for table in schema.TABLES:
            sealed = set(schema.SEALED_FIELDS.get(table, ()))
            if like is not None:
                if table not in like:
                    continue
                names = list(like[table][0])
            else:
                names = [
                    name
                    for (_, name, *_) in conn.execute(f"PRAGMA table_info('{table}')")
                    if name not in sealed
                ]
            if names:
                rows = conn.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()  # noqa: S608
                out[table] = (tuple(names), sorted(rows))
    return out


def _make_legacy(path: Path, version: int, key: bytes, seeded: Seeded) -> None:
    """Rebuild the vault at ``path`` as a dashtam before Alembic at ``version`` would hold it.

    The old SQL makes the tables; the rows (of the columns that version has)
    come from the vault as the current code sealed them; a vault older than
    3 has its fields sealed in format 1, as it was then.
    """
    legacy = path.with_name("legacy.sqlite3")
    build(legacy, version)
    with _db(legacy) as conn:
        conn.execute("ATTACH DATABASE ? AS src", (str(path),))
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")
            if name != "schema_version"
        ]
        for table in tables:
            names = ", ".join(
                n for (_, n, *_) in conn.execute(f"PRAGMA main.table_info('{table}')")
            )
            conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM src.{table}")  # noqa: S608
    with _db(legacy) as conn:
        if version < 3:
            expected = _as_of(version, seeded)
            for (table, row_id, field), plain in expected.plaintexts.items():
                conn.execute(
                    f"UPDATE {table} SET {field} = ? WHERE id = ?",  # noqa: S608 - test names
                    (_format_1_blob(key, table, row_id, field, plain), row_id),
                )
            (vault_id,) = conn.execute(
                "SELECT value FROM vault_meta WHERE key = 'vault_id'"
            ).fetchone()
            check = _format_1_blob(
                key, "vault_meta", vault_id.decode(), "key_check", b"dashtam vault key check v1"
            )
            conn.execute("UPDATE vault_meta SET value = ? WHERE key = 'key_check'", (check,))
            conn.execute("DELETE FROM vault_meta WHERE key = 'seal_format'")
    for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        old.unlink(missing_ok=True)
    legacy.rename(path)
    path.chmod(0o600)


@pytest.mark.parametrize("version", range(1, len(LEGACY) + 1))
def test_a_vault_from_before_alembic_is_adopted_and_reads_back(
    master_key: bytes, version: int
) -> None:
    """A vault the old code left at ``version`` opens: stamped, upgraded to the head, nothing lost.

    Every sealed field reads back its plaintext and every other column is as
    it was; a vault older than 3 is re-sealed in format 2 as before. The old
    ``schema_version`` rows stay as they were, and the new ones follow them.
    """
    path, seeded = _create()
    _make_legacy(path, version, master_key, seeded)
    before = _plain_columns(path)
    with _db(path) as conn:
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall()
            == []
        )

    async def reopen() -> int:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, _as_of(version, seeded))
            return await vault.seal_format()

    assert asyncio.run(reopen()) == 2
    assert _plain_columns(path, like=before) == before
    with _db(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (migrations.HEAD,)
        ]
        rows = conn.execute(
            "SELECT version, description FROM schema_version ORDER BY version"
        ).fetchall()
        formats = {
            blob[0]
            for table, fields in schema.SEALED_FIELDS.items()
            for field in fields
            for (blob,) in conn.execute(f"SELECT {field} FROM {table} WHERE {field} IS NOT NULL")  # noqa: S608
        }
    assert [v for v, _ in rows] == list(range(1, migrations.LATEST + 1))
    assert rows[:version] == [(n, d) for n, d, _ in LEGACY[:version]]
    assert formats == {2}


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (["UPDATE alembic_version SET version_num = '0007'"], "has schema version 7"),
        (
            ["UPDATE alembic_version SET version_num = 'ae1027a6acf'"],
            "schema revision 'ae1027a6acf', which this dashtam does not know",
        ),
        (
            [
                "DROP TABLE alembic_version",
                "INSERT INTO schema_version VALUES (7, 'from the future', '2030-01-01')",
            ],
            "has schema version 7",
        ),
    ],
)
def test_a_vault_newer_than_the_code_is_refused_untouched(
    statements: list[str], message: str
) -> None:
    """A revision this dashtam does not know, or a schema_version past its own: refused, unwritten.

    The error says why and how to fix it, and not one byte of the file changes.
    """
    path, _ = _create()
    with _db(path) as conn:
        for statement in statements:
            conn.execute(statement)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    async def reopen() -> None:
        async with open_vault(load_settings()):
            pass  # pragma: no cover - refused before

    with pytest.raises(SchemaTooNew) as caught:
        asyncio.run(reopen())
    assert message in caught.value.message
    assert "upgrade dashtam" in (caught.value.hint or "")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def _revisions_with(tmp_path: Path, **extra: str) -> Path:
    """A copy of dashtam's revisions plus ``extra`` (file stem: body) in a folder of its own."""
    folder = tmp_path / "revisions"
    shutil.copytree(migrations.REVISIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for stem, body in extra.items():
        (folder / f"{stem}.py").write_text(textwrap.dedent(body))
    return folder


_NOTE = '''
    """Add a note column."""
    import sqlalchemy as sa
    from alembic import op

    revision = "0007"
    down_revision = "0006"

    def upgrade() -> None:
        op.add_column("connections", sa.Column("note", sa.Text))
'''

_BROKEN = '''
    """Fails half-way."""
    import sqlalchemy as sa
    from alembic import op

    revision = "0008"
    down_revision = "0007"

    def upgrade() -> None:
        op.add_column("accounts", sa.Column("half_done", sa.Text))
        op.create_table("half_table", sa.Column("x", sa.Integer))
        op.execute("THIS IS NOT SQL")
'''


def _columns(path: Path, table: str) -> set[str]:
    with _db(path) as conn:
        return {name for (_, name, *_) in conn.execute(f"PRAGMA table_info('{table}')")}


@pytest.mark.usefixtures("master_key")
def test_a_later_revision_runs_once_and_a_failing_one_rolls_back_whole(tmp_path: Path) -> None:
    """On a copy of a vault: a new revision applies once; one failing midway leaves the one before.

    The failing revision's first operations (a column, a table) are gone, both
    version tables still say 7, and the data written before reads back.
    """
    path, seeded = _create()
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(path, copy)
    folder = _revisions_with(tmp_path, v0007_note=_NOTE)

    async def upgrade(revisions: Path) -> list[int]:
        engine = db.create_engine(copy)
        try:
            return await db.migrate(engine, copy, revisions=revisions)
        finally:
            await engine.dispose()

    assert asyncio.run(upgrade(folder)) == [7]
    assert asyncio.run(upgrade(folder)) == []
    assert "note" in _columns(copy, "connections")
    broken = _revisions_with(tmp_path / "broken", v0007_note=_NOTE, v0008_broken=_BROKEN)
    with pytest.raises(VaultError, match="syntax error"):
        asyncio.run(upgrade(broken))
    assert "half_done" not in _columns(copy, "accounts")
    with _db(copy) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0007",)]
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (7,)
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_table'").fetchall()
            == []
        )
    # The copy is back where the note revision left it; the data survived both.
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)
    shutil.copyfile(copy, path)
    path.chmod(0o600)
    with _db(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0006'")
        conn.execute("DELETE FROM schema_version WHERE version = 7")

    async def reopen() -> None:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, seeded)

    asyncio.run(reopen())


def test_two_upgraders_apply_each_revision_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade that waited for the write lock reads the version again and applies nothing twice.

    A vault at 3 (from before Alembic); this process reads it, then waits for
    the write lock, which another writer holds while it brings the vault to 5
    (as a dashtam before Alembic would). Once the lock is free this process
    finds version 5: it stamps Alembic's table there and applies only the
    revisions after 5, re-running none before (which would fail: the columns
    are there already).
    """
    path = tmp_path / "vault.sqlite3"
    build(path, 3)
    with _db(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # as any vault dashtam has opened

    async def main() -> list[int]:
        engine = db.create_engine(path)
        try:
            holder = sqlite3.connect(path, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                upgrade = asyncio.ensure_future(db.migrate(engine, path))
                deadline = time.monotonic() + DEADLINE_S
                while not any(WAITING in r.getMessage() for r in caplog.records):
                    if upgrade.done():
                        pytest.fail(f"the upgrade did not wait for the lock: {upgrade!r}")
                    assert time.monotonic() < deadline, "no waiting message"
                    await asyncio.sleep(0.02)
                for number, description, statements in LEGACY[3:]:
                    for statement in statements:
                        holder.execute(statement)
                    holder.execute(
                        "INSERT INTO schema_version VALUES (?, ?, 'then')", (number, description)
                    )
                holder.execute("COMMIT")
            finally:
                holder.close()
            return await upgrade
        finally:
            await engine.dispose()

    with caplog.at_level(logging.WARNING, logger="dashtam_cli.core.vault.db"):
        assert asyncio.run(main()) == list(range(len(LEGACY) + 1, migrations.LATEST + 1))
    with _db(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (migrations.HEAD,)
        ]
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")] == [
            *range(1, migrations.LATEST + 1)
        ]


@pytest.mark.usefixtures("master_key")
def test_a_vault_an_older_dashtam_upgraded_is_stamped_again_not_upgraded_again() -> None:
    """Alembic's table behind schema_version (a dashtam before Alembic upgraded it): caught up.

    The vault's tables are those of schema_version's version, so nothing is
    re-run (it would fail on columns already there); Alembic's table is moved
    up to that version, so the next revision starts from the right place.
    """
    path, seeded = _create()
    with _db(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0003'")

    async def reopen() -> None:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, seeded)

    asyncio.run(reopen())
    with _db(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (migrations.HEAD,)
        ]
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version")] == [
            *range(1, migrations.LATEST + 1)
        ]


_OPEN_AND_LIST_MODULES = """
import asyncio, json, sys
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import open_vault

async def main():
    async with open_vault(load_settings()):
        pass

asyncio.run(main())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _modules_loaded_opening_the_vault() -> set[str]:
    """The top-level packages a fresh interpreter loads to open the vault (this test's env)."""
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_LIST_MODULES],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **coverage_variables()},
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.usefixtures("master_key")
def test_opening_an_up_to_date_vault_does_not_import_alembic() -> None:
    """Alembic (and Mako under it) load only when a vault needs migrating: start-up time.

    The same check on a vault from before Alembic, which is adopted on open,
    shows that it does load then (the check is not blind).
    """
    path, _ = _create(transactions=1)
    loaded = _modules_loaded_opening_the_vault()
    assert "sqlalchemy" in loaded
    assert {"alembic", "mako"} & loaded == set()
    with _db(path) as conn:
        conn.execute("DROP TABLE alembic_version")
    assert "alembic" in _modules_loaded_opening_the_vault()
    assert "alembic" not in _modules_loaded_opening_the_vault()  # adopted by the open before
