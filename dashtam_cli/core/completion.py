"""Names a shell completes (connections), read from the vault without its key."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SHARED_TIMEOUT", "connection_names"]

# Seconds a shared vault's database gets to answer a shell's completion, all told.
SHARED_TIMEOUT: Final = 2.0


def connection_names(
    vault_file: Path, prefix: str = "", *, database_url: str | None = None
) -> list[str]:
    """The connection names starting with ``prefix``; empty when there is no readable vault.

    Names are stored in the clear, so completion needs neither the master key
    nor a prompt. The vault is opened read-only, and any failure (no vault, a
    lock, a damaged file) yields no names rather than an error: a shell's
    completion must never print one. With ``database_url`` the names come
    from the shared vault's database instead (:func:`_shared_names`).
    """
    if database_url is not None:
        names = _shared_names(database_url)
    elif not vault_file.is_file():
        return []
    else:
        try:
            uri = f"{vault_file.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.5)) as db:
                names = [row[0] for row in db.execute("SELECT name FROM connections")]
        except (sqlite3.Error, OSError, ValueError):
            return []
    return sorted(n for n in names if isinstance(n, str) and n.startswith(prefix))


def _shared_names(url: str) -> list[object]:
    """A shared vault's connection names, within :data:`SHARED_TIMEOUT`; none on any failure.

    One plain asyncpg connection, no SQLAlchemy. The password only from the
    URL, ``PGPASSWORD`` or a pgpass file, which asyncpg reads itself: never
    from the OS keyring, which may wait or ask, and a shell's completion must
    do neither.
    """
    import asyncio

    async def fetch() -> list[object]:
        import asyncpg

        from dashtam_cli.core.vault.database import dsn

        conn = await asyncpg.connect(
            dsn(url), timeout=SHARED_TIMEOUT, server_settings={"application_name": "dashtam"}
        )
        try:
            return [row[0] for row in await conn.fetch("SELECT name FROM connections")]
        finally:
            await conn.close(timeout=SHARED_TIMEOUT)

    try:
        return asyncio.run(asyncio.wait_for(fetch(), SHARED_TIMEOUT))
    except Exception:  # noqa: BLE001 - refused, unreachable, no vault yet: nothing to offer
        return []
