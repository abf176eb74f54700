"""The vault's schema revisions (Alembic's, in ``revisions/``) and the one step that applies one.

The revisions are frozen once released: each writes out its own tables and
columns rather than deriving them from ``schema.py``, so upgrading a vault of
any age replays exactly what that version did; a test checks that replaying
them all yields the tables ``schema.py`` declares. Their ids are "0001",
"0002", ... so the schema version stays an integer (``vault status``,
``doctor``). They use SQLAlchemy's generic types, so one set serves SQLite
and PostgreSQL alike.

Alembic is imported only here, and only inside the functions that need it
(:func:`stamp`, :func:`upgrade_one`): opening an up-to-date vault, the usual
case, never loads it (a test checks, in a fresh interpreter).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

__all__ = [
    "HEAD",
    "LATEST",
    "REVISIONS",
    "revision_id",
    "script_directory",
    "stamp",
    "upgrade_one",
    "version_of",
]

LATEST: Final = 6
"""The newest schema version this dashtam knows: the number of revision ``HEAD``."""

REVISIONS: Final = Path(__file__).with_name("revisions")
"""The folder of the revision files (package data)."""

_ID: Final = re.compile(r"[0-9]{4}")


def revision_id(version: int) -> str:
    """The Alembic revision id of schema version ``version`` ("0003" for 3)."""
    return f"{version:04d}"


HEAD: Final = revision_id(LATEST)


def version_of(revision: str) -> int | None:
    """The schema version a revision id stands for, or None when it is not one of dashtam's."""
    return int(revision) if _ID.fullmatch(revision) else None


def script_directory(revisions: Path = REVISIONS) -> ScriptDirectory:
    """Alembic's view of the folder of revisions ``revisions``, built in code (no alembic.ini)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(revisions, version_locations=[revisions])


def stamp(connection: Connection, *, version: int, revisions: Path = REVISIONS) -> None:
    """Record in Alembic's table that the vault is at ``version``, creating the table if need be.

    Adopts a vault made before Alembic, whose ``schema_version`` alone says
    what its tables are: nothing but the version table changes.
    """
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection)
    context.stamp(script_directory(revisions), revision_id(version))


def upgrade_one(
    connection: Connection, *, current: int, revisions: Path = REVISIONS
) -> tuple[int, str]:
    """Apply the revision after version ``current`` on ``connection``; return its version and doc.

    ``connection`` is already in the caller's write transaction, so Alembic
    opens none of its own (``transaction_per_migration`` is set for the day it
    does) and the step commits or rolls back whole with it. Alembic's table
    must already say ``current`` (see :func:`stamp`), or be absent for 0.
    """
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext, MigrationStep

    script = script_directory(revisions)
    target = script.get_revision(revision_id(current + 1))
    step = MigrationStep.upgrade_from_script(script.revision_map, target)

    def steps(_heads: tuple[str, ...], _context: MigrationContext) -> list[MigrationStep]:
        # Exactly one step: the caller has stamped the table at its predecessor.
        return [step]

    context = MigrationContext.configure(
        connection,
        opts={"script": script, "fn": steps, "transaction_per_migration": True},
    )
    with Operations.context(context):
        context.run_migrations()
    return current + 1, (target.doc or "").strip()
