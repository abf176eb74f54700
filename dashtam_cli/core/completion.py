"""Names a shell completes (connections), read from the vault without its key."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["connection_names"]


def connection_names(vault_file: Path, prefix: str = "") -> list[str]:
    """The connection names starting with ``prefix``; empty when there is no readable vault.

    Names are stored in the clear, so completion needs neither the master key
    nor a prompt. The vault is opened read-only, and any failure (no vault, a
    lock, a damaged file) yields no names rather than an error: a shell's
    completion must never print one.
    """
    if not vault_file.is_file():
        return []
    try:
        uri = f"{vault_file.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.5)) as db:
            rows = db.execute("SELECT name FROM connections ORDER BY name").fetchall()
    except (sqlite3.Error, OSError, ValueError):
        return []
    return [row[0] for row in rows if isinstance(row[0], str) and row[0].startswith(prefix)]
