"""The vault's engine and its transactions, on SQLite or on a shared vault's PostgreSQL.

SQLite: WAL, busy timeout, foreign keys, and BEGIN IMMEDIATE for writes.
PostgreSQL: an advisory lock for writes, REPEATABLE READ snapshots for reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dashtam_cli.core.vault import migrations
from dashtam_cli.core.vault.errors import SchemaTooNew, VaultBusy, VaultCorrupt, VaultError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = [
    "BUSY_TIMEOUT_MS",
    "create_engine",
    "describe",
    "insert",
    "migrate",
    "read_schema_version",
    "reading",
    "translate_errors",
    "utcnow_text",
    "writing",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 30_000
# The page cache of each connection, in KiB (SQLite takes a negative cache_size as KiB).
PAGE_CACHE_KIB: Final = 16_384
# A write that waits this long for another process's lock says so, then again every so often.
WAIT_NOTICE_AFTER_S: Final = 2.0
WAIT_NOTICE_EVERY_S: Final = 5.0
_last_notice: weakref.WeakKeyDictionary[AsyncEngine, float] = weakref.WeakKeyDictionary()
_WRITE: Final = "dashtam_write"
# What each shared vault's engine is called in messages (its URL, password masked).
_labels: weakref.WeakKeyDictionary[AsyncEngine, str] = weakref.WeakKeyDictionary()


def describe(engine: AsyncEngine, label: str) -> AsyncEngine:
    """Name ``engine`` for error messages (a shared vault's masked URL); returns it."""
    _labels[engine] = label
    return engine


def insert(bind: AsyncConnection | AsyncEngine, table: Any) -> Any:  # noqa: ANN401 - a dialect's Insert
    """An INSERT that takes ``on_conflict_do_update``, in the dialect of ``bind``."""
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def utcnow_text(now: dt.datetime | None = None) -> str:
    """A UTC time as fixed-width ISO 8601 text, so text order is time order."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.isoformat(timespec="microseconds")


def create_engine(path: Path) -> AsyncEngine:
    """Open the database at ``path`` (which must exist) with the vault's pragmas."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:  # noqa: ANN401
        # Let SQLAlchemy's begin event, not the driver, start transactions, so
        # writes can take the lock up front with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _ensure_wal(cursor)
            cursor.execute("PRAGMA foreign_keys = ON")
            # FULL: a committed write survives a power cut, not just a crash.
            cursor.execute("PRAGMA synchronous = FULL")
            # 16 MB of page cache, not SQLite's 2: a sync writes each row into
            # four B-trees, the id's at random places; 2 MB held too few of
            # their pages (about 2 us of 15 per row; taken only as used).
            cursor.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:  # noqa: ANN401
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _ensure_wal(cursor: Any) -> None:  # noqa: ANN401 - a DB-API cursor
    """Switch a new vault to WAL; WAL persists in the file, so later opens only read the mode.

    Changing the mode needs the database to itself and SQLite answers "locked"
    at once, without its busy handler, when another connection is using it
    (two processes creating the vault together): retry until the busy timeout.
    """
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.fetchall()
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # runs in the driver's thread, not on the event loop
        else:
            return


def _is_server_error(exc: BaseException) -> bool:
    """An error from the PostgreSQL driver (a refused login, a server gone away)."""
    return type(exc).__module__.startswith("asyncpg")


@contextlib.contextmanager
def translate_errors(engine: AsyncEngine | None = None) -> Any:  # noqa: ANN401 - a context manager
    """Turn the database's errors into vault errors with a hint."""
    label = None if engine is None else _labels.get(engine)
    if label is not None:
        try:
            yield
        except DBAPIError as exc:
            from dashtam_cli.core.vault.database import unreachable

            raise unreachable(label, exc.orig if exc.orig is not None else exc) from None
        except Exception as exc:
            if not _is_server_error(exc):
                raise
            from dashtam_cli.core.vault.database import unreachable

            raise unreachable(label, exc) from None
        return
    try:
        yield
    except OperationalError as exc:
        detail = str(exc.orig)
        if "locked" in detail or "busy" in detail:
            raise VaultBusy(
                f"the vault stayed locked by another dashtam process for over "
                f"{BUSY_TIMEOUT_MS // 1000} s",
                hint="wait for the other command to finish, then retry",
            ) from None
        raise VaultError(
            f"the vault database failed: {detail}",
            hint="check free disk space and the file's permissions",
        ) from None
    except DBAPIError as exc:
        detail = str(exc.orig)
        if "not a database" in detail or "malformed" in detail:
            raise VaultCorrupt(
                f"the vault database is damaged: {detail}",
                hint="restore the vault file from a backup",
            ) from None
        raise VaultError(f"the vault database failed: {detail}") from None


async def _say_while_waiting(engine: AsyncEngine, started: float) -> None:
    """Log, after a short wait and then every so often, that another process holds the lock.

    Every so often per engine (one command), not per write: a command whose
    many short writes each wait a little says so once in a while, not on every line.
    """
    await asyncio.sleep(WAIT_NOTICE_AFTER_S)
    while True:
        now = time.monotonic()
        due = _last_notice.get(engine, -math.inf) + WAIT_NOTICE_EVERY_S
        if now >= due:
            _last_notice[engine] = now
            log.warning(
                "waiting for another dashtam process to release the vault (%d s)",
                round(now - started),
            )
            due = now + WAIT_NOTICE_EVERY_S
        await asyncio.sleep(due - now)


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction: BEGIN IMMEDIATE, so read-modify-write never races another process.

    BEGIN IMMEDIATE waits (in the driver's thread, up to the busy timeout)
    while another process writes; a wait longer than a moment is logged as a
    warning, so the user sees why the command stands still.
    """
    with translate_errors(engine):
        async with engine.connect() as conn:
            await conn.execution_options(**{_WRITE: True})
            notice = asyncio.ensure_future(_say_while_waiting(engine, time.monotonic()))
            try:
                async with conn.begin():
                    if conn.dialect.name == "postgresql":
                        from dashtam_cli.core.vault.database import WRITE

                        # The shared vault's BEGIN IMMEDIATE: one writer at a time,
                        # on every machine; READ COMMITTED, so what it reads after
                        # the lock is what the last writer committed.
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE})
                    notice.cancel()
                    yield conn
            finally:
                notice.cancel()


@contextlib.asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read transaction: a consistent snapshot, no write lock."""
    with translate_errors(engine):
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn


async def _has_table(conn: AsyncConnection, name: str) -> bool:
    return await conn.run_sync(lambda sync: inspect(sync).has_table(name))


async def _read_versions(conn: AsyncConnection) -> tuple[int | None, int]:
    """The version Alembic's table records (None without one) and the one ``schema_version`` does.

    A revision that is not one of dashtam's ids is refused as too new.
    """
    stamped: int | None = None
    if await _has_table(conn, "alembic_version"):
        for (revision,) in await conn.execute(text("SELECT version_num FROM alembic_version")):
            number = migrations.version_of(revision)
            if number is None:
                raise SchemaTooNew(
                    f"the vault is at schema revision {revision!r}, which this dashtam does "
                    f"not know (it knows up to {migrations.HEAD})",
                    hint=_TOO_NEW_HINT,
                )
            stamped = max(stamped or 0, number)
    legacy = 0
    if await _has_table(conn, "schema_version"):
        legacy = int(await conn.scalar(text("SELECT max(version) FROM schema_version")) or 0)
    return stamped, legacy


async def read_schema_version(conn: AsyncConnection) -> int:
    """Return the schema version of the vault, 0 for an empty database.

    Alembic's ``alembic_version`` holds it ("0005" is 5). A vault from before
    Alembic has only ``schema_version``, whose highest row is its version. The
    two are kept in step, and the higher counts: a vault either table says is
    newer than this dashtam is refused, and one a dashtam from before Alembic
    upgraded (``schema_version`` only) is not upgraded again.
    """
    stamped, legacy = await _read_versions(conn)
    return max(stamped or 0, legacy)


_TOO_NEW_HINT: Final = "upgrade dashtam (uv tool upgrade dashtam); the vault was left untouched"


def check_not_too_new(version: int, path: Path | str, latest: int = migrations.LATEST) -> None:
    """Refuse a vault written by a newer dashtam, before anything touches it."""
    if version > latest:
        raise SchemaTooNew(
            f"the vault at {path} has schema version {version}; this dashtam knows up to {latest}",
            hint=_TOO_NEW_HINT,
        )


async def migrate(
    engine: AsyncEngine,
    path: Path | str,
    *,
    revisions: Path | None = None,
) -> list[int]:
    """Apply every schema revision newer than the vault, each in its own write transaction.

    Returns the versions applied. Each step takes the write lock (BEGIN
    IMMEDIATE) and reads the version again under it, so two processes
    upgrading one vault apply each revision once; a failing revision rolls
    back whole (SQLite's DDL is transactional), leaving the vault at the
    previous version. A vault from before Alembic is stamped at its version
    in the first step's transaction. ``revisions`` (tests) is another folder
    of revisions; Alembic is imported only when there is something to do.
    """
    applied: list[int] = []
    folder = migrations.REVISIONS if revisions is None else revisions
    latest = migrations.LATEST if revisions is None else _head_of(revisions)
    async with reading(engine) as conn:
        stamped, legacy = await _read_versions(conn)
    check_not_too_new(max(stamped or 0, legacy), path, latest)
    if stamped == latest:
        # Up to date (the usual case): no write lock taken, no Alembic imported.
        return applied
    while True:
        async with writing(engine) as conn:
            stamped, legacy = await _read_versions(conn)
            version = max(stamped or 0, legacy)
            check_not_too_new(version, path, latest)
            if version and stamped != version:
                # A vault from before Alembic (or one a dashtam from before
                # Alembic upgraded since): Alembic's table catches up first.
                await conn.run_sync(
                    functools.partial(migrations.stamp, version=version, revisions=folder)
                )
            if version == latest:
                return applied
            done, description = await conn.run_sync(
                functools.partial(
                    migrations.upgrade_one,
                    current=version,
                    revisions=folder,
                )
            )
            # Kept in step with Alembic's table, so a dashtam from before
            # Alembic still reads the version (and refuses a newer vault).
            await conn.execute(
                text(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (:v, :d, :t)"
                ),
                {"v": done, "d": description, "t": utcnow_text()},
            )
            applied.append(done)


def _head_of(revisions: Path) -> int:
    """The version of the newest revision in the folder ``revisions`` (another folder: tests)."""
    return int(migrations.script_directory(revisions).get_current_head() or 0)
