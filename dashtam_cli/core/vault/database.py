"""A shared vault on PostgreSQL: its URL, its engine, and its locks across machines.

The local vault is one SQLite file, and its locks are ``flock`` locks on files
beside it (:mod:`.locks`): they mean nothing to another machine. A shared
vault lives in a PostgreSQL database that several machines reach; the same
locks are PostgreSQL advisory locks there, which every session of the
database sees, and which the server drops when a session ends (a process
killed on any machine never leaves a stale lock):

- every opener holds the *shared* advisory lock ``USE`` for as long as the
  vault is open; a key rotation (or a destroy) holds it *exclusively*;
- ``GATE`` is taken for a moment by each opener on its way to ``USE`` and held
  by a rotation for all of its run, so new openers wait for the rotation and
  do not starve it;
- ``RECOVER`` serialises the openers that finish or discard an interrupted
  rotation's pending key;
- every write transaction takes ``WRITE`` for the transaction
  (``pg_advisory_xact_lock``), as SQLite's ``BEGIN IMMEDIATE`` takes the file:
  read-modify-write code behaves the same on both engines;
- a lock by name (:func:`named_lock`: one per connection for token refresh)
  is an advisory lock on a 64-bit digest of the name.

The URL may carry a password; it is shown only through :func:`masked_url`.
asyncpg reads the URL's libpq parameters itself (``sslmode``, ``sslrootcert``,
``sslcert``, ``sslkey``, ``passfile``) and, with no password in the URL,
``PGPASSFILE`` or ``~/.pgpass``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import urllib.parse
from typing import TYPE_CHECKING, Final

from sqlalchemy import text

from dashtam_cli.core.vault.errors import VaultBusy, VaultError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from dashtam_cli.core.errors import DashtamError

__all__ = [
    "GATE",
    "RECOVER",
    "USE",
    "WRITE",
    "advisory",
    "check_database_url",
    "create_pg_engine",
    "is_postgres",
    "lock_key",
    "masked_url",
    "named_lock",
]

log = logging.getLogger(__name__)

SCHEMES: Final = ("postgresql+asyncpg", "postgresql", "postgres")
_MASK: Final = "***"


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(f"dashtam:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


USE: Final = lock_key("vault.use")
GATE: Final = lock_key("vault.gate")
RECOVER: Final = lock_key("vault.recover")
WRITE: Final = lock_key("vault.write")


def check_database_url(url: str) -> None:
    """Raise ValueError unless ``url`` is usable; the message never repeats it (a password)."""
    if not url.isprintable():
        msg = "it holds control characters"
        raise ValueError(msg)
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme.startswith("sqlite"):
        msg = "the local vault is SQLite already; leave the database URL unset to use it"
        raise ValueError(msg)
    if scheme not in SCHEMES:
        msg = f"the scheme {scheme or '(none)'!r} is not PostgreSQL (use postgresql+asyncpg://)"
        raise ValueError(msg)
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        msg = "it names no database (postgresql+asyncpg://USER@HOST/DATABASE)"
        raise ValueError(msg)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        msg = "its port is not a number"
        raise ValueError(msg) from None


def masked_url(url: str) -> str:
    """``url`` with the password (in the authority or a ``password=`` parameter) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = f"{userinfo.split(':', 1)[0]}:{_MASK}"
        netloc = f"{userinfo}@{hostport}"
    query = "&".join(
        f"{name}={_MASK}" if name.lower() == "password" else f"{name}={value}"
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def password_of(url: str) -> str | None:
    """The password the URL carries (for redaction), if any."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.unquote(parts.password)
    for name, value in urllib.parse.parse_qsl(parts.query):
        if name.lower() == "password" and value:
            return value
    return None


def is_postgres(engine: AsyncEngine) -> bool:
    """Whether ``engine`` is a shared vault's."""
    return engine.dialect.name == "postgresql"


def dsn(url: str) -> str:
    """The URL as libpq's DSN (the scheme asyncpg reads), everything else as given."""
    _, _, rest = url.partition("://")
    return f"postgresql://{rest}"


def keyring_entry(url: str) -> str:
    """The keyring entry (service ``dashtam``) that may hold the password of ``url``'s login."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username or "")
    host = parts.hostname or "localhost"
    return f"database-{user}@{host}:{parts.port or 5432}/{parts.path.lstrip('/')}"


def _pgpass_fields(line: str) -> list[str]:
    r"""A pgpass line's fields: split at ``:``, with ``\:`` a colon and ``\\`` a backslash."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _pgpass_has(url: str, environ: dict[str, str] | None = None) -> bool:
    r"""Whether PGPASSWORD, or a line of PGPASSFILE or ~/.pgpass, gives this login a password.

    libpq's rules: ``host:port:database:user:password``, ``*`` matches
    anything, ``\\:`` is a colon. Unreadable files count as no line.
    """
    import os
    from pathlib import Path

    env = dict(os.environ) if environ is None else environ
    if env.get("PGPASSWORD"):
        return True
    parts = urllib.parse.urlsplit(url)
    wanted = (
        parts.hostname or "localhost",
        str(parts.port or 5432),
        parts.path.lstrip("/"),
        urllib.parse.unquote(parts.username or ""),
    )
    path = Path(env.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) < 5:  # noqa: PLR2004 - host, port, database, user, password
            continue
        if all(f in {"*", w} for f, w in zip(fields[:4], wanted, strict=True)):
            return True
    return False


def create_pg_engine(
    url: str, *, password: str | None = None, keyring_timeout: float = 10.0
) -> AsyncEngine:
    """An engine on the shared vault's database (``password``: when the URL has none)."""
    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    address = dsn(url)
    extra: dict[str, str | None] = {} if password is None else {"password": password}

    async def attempt() -> asyncpg.Connection:
        return await asyncpg.connect(
            address, server_settings={"application_name": "dashtam"}, timeout=30, **extra
        )

    async def connect() -> asyncpg.Connection:
        try:
            try:
                return await attempt()
            except asyncpg.exceptions.InvalidPasswordError:
                # The server wants a password that neither the URL, PGPASSWORD nor a
                # pgpass line gave: the keyring may hold one (`dashtam vault
                # db-password`). Asked only then, once per engine.
                if "password" in extra or password_of(url) or _pgpass_has(url):
                    raise
                extra["password"] = await _keyring_password(url, keyring_timeout)
                if extra["password"] is None:
                    raise
                return await attempt()
        except (OSError, TimeoutError) as exc:
            # Refused, unresolvable, timed out: said once, with the masked URL.
            raise unreachable(f"the shared vault at {masked_url(url)}", exc) from None

    # NullPool: a session-level advisory lock must end with the connection that
    # took it, never ride on into a pooled connection another holder checks out.
    return create_async_engine("postgresql+asyncpg://", async_creator=connect, poolclass=NullPool)


async def _keyring_password(url: str, timeout: float) -> str | None:  # noqa: ASYNC109
    """The login's password from the keyring (None when there is none, or no keyring)."""
    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.redact import register_secret
    from dashtam_cli.core.vault.keys import keyring_text

    try:
        found = await keyring_text(keyring_entry(url), timeout=timeout)
    except DashtamError as exc:
        log.info("no database password from the keyring: %s", exc.message)
        return None
    if found:
        register_secret(found)
    return found or None


def schema_names(conn: Connection) -> list[str]:
    """The tables in the database's current schema (a synchronous helper for ``run_sync``)."""
    from sqlalchemy import inspect

    return list(inspect(conn).get_table_names())


async def _poll(  # noqa: PLR0913 - each wait names what it waits for
    conn: AsyncConnection,
    key: int,
    *,
    shared: bool,
    timeout: float,  # noqa: ASYNC109 - polled, not a blocking call with a timeout
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> None:
    """Take the session-level advisory lock ``key`` on ``conn``, polling, within ``timeout``.

    Polled with ``pg_try_advisory_lock`` (:func:`.locks.poll`), so the wait has
    a bound and a Ctrl-C is never stuck in the server.
    """
    from dashtam_cli.core.vault.locks import poll

    query = text(
        "SELECT pg_try_advisory_lock_shared(:k)" if shared else "SELECT pg_try_advisory_lock(:k)"
    )

    async def take() -> bool:
        return bool(await conn.scalar(query, {"k": key}))

    await poll(take, timeout=timeout, waiting=waiting, failure=failure, hint=hint, error=error)


async def _release(conn: AsyncConnection, key: int, *, shared: bool) -> None:
    give = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
    # Shielded: a Ctrl-C must not leave the lock held on a connection that
    # lives on; if the release itself fails, closing the connection ends it.
    with contextlib.suppress(Exception):
        await asyncio.shield(conn.execute(text(f"SELECT {give}(:k)"), {"k": key}))


@contextlib.asynccontextmanager
async def advisory(  # noqa: PLR0913 - each wait names what it waits for
    conn: AsyncConnection,
    key: int,
    *,
    shared: bool = False,
    timeout: float,  # noqa: ASYNC109 - polled, not a blocking call with a timeout
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> AsyncIterator[None]:
    """Hold the session-level advisory lock ``key`` on ``conn`` (an AUTOCOMMIT connection).

    Released on exit, and by the server if the process dies.
    """
    await _poll(
        conn,
        key,
        shared=shared,
        timeout=timeout,
        waiting=waiting,
        failure=failure,
        hint=hint,
        error=error,
    )
    try:
        yield
    finally:
        await _release(conn, key, shared=shared)


@contextlib.asynccontextmanager
async def lock_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of its own for session-level locks (AUTOCOMMIT: no transaction held open)."""
    from dashtam_cli.core.vault import db

    with db.translate_errors(engine):
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn


@contextlib.asynccontextmanager
async def named_lock(  # noqa: PLR0913 - the lock, what it waits for, and how it fails
    engine: AsyncEngine,
    name: str,
    *,
    timeout: float,  # noqa: ASYNC109 - polled
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> AsyncIterator[None]:
    """An exclusive lock on ``name`` for every process of every machine using this database."""
    async with (
        lock_connection(engine) as conn,
        advisory(
            conn,
            lock_key(name),
            timeout=timeout,
            waiting=waiting,
            failure=failure,
            hint=hint,
            error=error,
        ),
    ):
        yield


def unreachable(where: str, exc: BaseException) -> VaultError:
    """The error for a database that cannot be reached or refuses the login (no secret in it)."""
    detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return VaultError(
        f"cannot use {where}: {detail}",
        hint="check that the server runs and the URL's host, port, user and database; "
        "a password comes from the URL or ~/.pgpass (or the file PGPASSFILE names)",
    )


@contextlib.asynccontextmanager
async def vault_use(
    engine: AsyncEngine,
    *,
    exclusive: bool,
    open_wait: float,
    rotate_wait: float,
) -> AsyncIterator[None]:
    """:func:`.locks.shared_use` and :func:`.locks.exclusive_use` of a shared vault."""
    async with lock_connection(engine) as conn:
        if exclusive:
            async with (
                advisory(
                    conn,
                    GATE,
                    timeout=rotate_wait,
                    waiting="another dashtam process is rotating or destroying the vault; "
                    "waiting for it",
                    failure="another dashtam process kept the vault locked for over "
                    f"{rotate_wait:g} s",
                    hint="wait for it to finish, then run the command again",
                ),
                advisory(
                    conn,
                    USE,
                    timeout=rotate_wait,
                    waiting="waiting for the other dashtam commands using the vault, on this "
                    "machine or another, to finish (new ones wait for this one)",
                    failure="other dashtam commands kept the shared vault open for over "
                    f"{rotate_wait:g} s; nothing was changed",
                    hint="stop them (a sync on another machine, a dashboard) and run the "
                    "command again",
                ),
            ):
                yield
            return
        async with advisory(
            conn,
            GATE,
            timeout=open_wait,
            waiting="another dashtam process is rotating the vault's key; waiting for it",
            failure=f"another dashtam process kept the vault locked for over {open_wait:g} s "
            "(a key rotation or a destroy)",
            hint="wait for `dashtam vault rotate-key` to finish, then run the command again",
        ):
            # A rotation takes the gate before USE, so holding the gate means
            # no rotation holds USE: the shared lock comes at once.
            await _poll(
                conn,
                USE,
                shared=True,
                timeout=open_wait,
                waiting="another dashtam process holds the vault alone; waiting for it",
                failure=f"the shared vault stayed locked for over {open_wait:g} s",
                hint="wait for the other dashtam command to finish, then run this one again",
            )
        try:
            yield
        finally:
            await _release(conn, USE, shared=True)


@contextlib.asynccontextmanager
async def recovering(engine: AsyncEngine, *, timeout: float = 60.0) -> AsyncIterator[None]:  # noqa: ASYNC109
    """The shared vault's :func:`.locks.recovering`."""
    async with named_lock(
        engine,
        "vault.recover",
        timeout=timeout,
        waiting="another dashtam process is finishing an interrupted key rotation; waiting",
        failure=f"another dashtam process held the key recovery lock for over {timeout:g} s",
        hint="run the command again; if it persists, check for a hung dashtam process",
    ):
        yield
