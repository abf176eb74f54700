"""Opening, creating, rotating and destroying the vault, and sealing its fields."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from sqlalchemy import bindparam, func, select, text, update

from dashtam_cli.core.vault import crypto, db, files, locks, schema
from dashtam_cli.core.vault.errors import (
    KeyMissing,
    NoKeySource,
    RecordTampered,
    UnsafeFiles,
    VaultBusy,
    VaultError,
    VaultNotFound,
    WrongKey,
)
from dashtam_cli.core.vault.keys import (
    ENV_KEY,
    EnvKeySource,
    KeyringKeySource,
    KeySource,
    PassphraseKeySource,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.settings import Settings

__all__ = [
    "OpenOptions",
    "RotationResult",
    "Vault",
    "check_key",
    "destroy_vault",
    "open_vault",
    "read_plain_meta",
    "store_kind",
    "vault_absent",
    "where",
]

log = logging.getLogger(__name__)

_META_VAULT_ID: Final = "vault_id"
_META_KEY_ID: Final = "key_id"
_META_KEY_CHECK: Final = "key_check"
_META_KEY_STORE: Final = "key_store"
_META_CREATED: Final = "created_at"
_META_SEAL_FORMAT: Final = "seal_format"


def where(settings: Settings) -> str:
    """The vault, for messages: its file, or the shared vault's URL with the password masked."""
    if settings.database_url is not None:
        from dashtam_cli.core.vault.database import masked_url

        return f"the shared vault at {masked_url(settings.database_url)}"
    return f"the vault at {settings.paths.vault_file}"


async def vault_absent(settings: Settings) -> bool:
    """Whether there is no vault yet: no local file, or a shared database with no vault in it.

    The commands that only read answer "nothing yet" then, rather than make one.
    """
    if settings.database_url is None:
        return not settings.paths.vault_file.exists()
    version, meta, _ = await read_plain_meta(settings)
    return version == 0 or _META_KEY_ID not in meta


def _engine(settings: Settings) -> AsyncEngine:
    """An engine on the vault's database: the shared vault's, or the local file's."""
    if settings.database_url is not None:
        from dashtam_cli.core.redact import register_secret
        from dashtam_cli.core.vault.database import create_pg_engine, masked_url, password_of

        secret = password_of(settings.database_url)
        if secret:
            register_secret(secret)
        engine = create_pg_engine(settings.database_url, keyring_timeout=settings.keyring_timeout)
        return db.describe(engine, f"the shared vault at {masked_url(settings.database_url)}")
    return db.create_engine(settings.paths.vault_file)


def store_kind(meta: Mapping[str, bytes], settings: Settings, options: OpenOptions) -> str:
    """Where this machine keeps the vault's key.

    A local vault records it. A shared vault's key is kept by each machine
    in its own store (its keyring, or a key file): the machine's ``key_store``
    setting says, when it is set; otherwise the store the vault was made with.
    """
    recorded = meta.get(_META_KEY_STORE, b"keyring").decode()
    if settings.database_url is not None:
        if options.key_store:
            return options.key_store
        if "key_store" in settings.sources:
            return settings.key_store
    return recorded


# The sealing format of every field: 2 binds each field to its row's owner.
# A vault without the entry was sealed in format 1 and is upgraded on open.
SEAL_FORMAT: Final = 2


@dataclasses.dataclass(frozen=True, slots=True)
class OpenOptions:
    """How to open the vault.

    ``create``: make the vault (and its key) if it does not exist yet.
    ``key_store``: where a new vault's key goes (``keyring`` or ``passphrase``);
    ``None`` takes the ``key_store`` setting.
    ``prompt``: asks the user for the key file's passphrase (``confirm`` = ask
    twice); without it, only ``DASHTAM_PASSPHRASE`` is used.
    ``exclusive``: hold the vault alone (no other dashtam process has it open
    meanwhile); a key rotation needs it.
    ``prompt_timeout``: how long the passphrase prompt waits for an answer.
    ``weak_passphrase``: accept a new passphrase shorter than 12 characters.
    """

    create: bool = False
    key_store: str | None = None
    prompt: Callable[[bool], str] | None = None
    environ: Mapping[str, str] | None = None
    exclusive: bool = False
    prompt_timeout: float = 600.0
    weak_passphrase: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RotationResult:
    """What a key rotation did.

    ``damaged_rows``: cached rows (accounts, positions, transactions) that
    already failed their integrity check; they are left exactly as they were
    (still unreadable) rather than stop the rotation, and the next fetch
    replaces them.
    """

    old_key_id: str
    new_key_id: str
    fields_resealed: int
    damaged_rows: int = 0


async def _read_meta(conn: AsyncConnection) -> dict[str, bytes]:
    rows = await conn.execute(select(schema.vault_meta.c.key, schema.vault_meta.c.value))
    return {key: bytes(value) for key, value in rows.all()}


async def _write_meta(conn: AsyncConnection, values: Mapping[str, bytes]) -> None:

    for key, value in values.items():
        stmt = db.insert(conn, schema.vault_meta).values(key=key, value=value)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value})
        )


def _key_source(
    kind: str, vault_id: str, settings: Settings, options: OpenOptions, env: Mapping[str, str]
) -> KeySource:
    raw = env.get(ENV_KEY, "")
    if raw.strip():
        return EnvKeySource(raw)
    if kind == "env":
        raise KeyMissing(
            f"this vault was created with {ENV_KEY}, which is not set",
            hint=f"set {ENV_KEY} to the key the vault was created with",
        )
    if kind == "passphrase":
        return PassphraseKeySource(
            settings.paths.key_file,
            environ=env,
            prompt=options.prompt,
            timeout=options.prompt_timeout,
            allow_weak=options.weak_passphrase,
        )
    return KeyringKeySource(vault_id, timeout=settings.keyring_timeout)


def exclusive_lock(  # noqa: PLR0913 - the lock, what it waits for, and how it fails
    engine: AsyncEngine | None,
    directory: Path,
    name: str,
    *,
    timeout: float,
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> contextlib.AbstractAsyncContextManager[None]:
    """An exclusive lock on ``name`` for every dashtam process using the vault.

    The local vault's is a file lock, ``directory/NAME.lock`` (every process
    on this machine); a shared vault's (``engine`` on PostgreSQL) is an
    advisory lock in its database (every process on every machine).
    """
    if engine is not None and engine.dialect.name == "postgresql":
        from dashtam_cli.core.vault.database import named_lock

        return named_lock(
            engine, name, timeout=timeout, waiting=waiting, failure=failure, hint=hint, error=error
        )
    return locks.exclusive_file(
        directory / f"{name}.lock",
        timeout=timeout,
        waiting=waiting,
        failure=failure,
        hint=hint,
        error=error,
    )


class Vault:
    """An open vault: its engine, its key, and the sealing of its fields."""

    def __init__(  # noqa: PLR0913 - keyword-only, as open_vault assembles them
        self,
        *,
        path: Path,
        engine: AsyncEngine,
        vault_id: str,
        sealer: crypto.Sealer,
        key_source: KeySource,
        exclusive: bool = False,
    ) -> None:
        """Hold the pieces :func:`open_vault` assembled."""
        self.path = path
        self.exclusive = exclusive
        self.engine = engine
        self.vault_id = vault_id
        self.key_source = key_source
        self._sealer = sealer
        # One write transaction at a time from this process: a second one would
        # wait in SQLite's busy handler, which sleeps in steps of up to 100 ms.
        # Other processes are still kept out by BEGIN IMMEDIATE and that handler.
        self._write_lock = asyncio.Lock()

    @property
    def key_id(self) -> str:
        """The hex id of the key in use."""
        return self._sealer.key_id.hex()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A BEGIN IMMEDIATE transaction: use it for every read-modify-write (never nested)."""
        async with self._write_lock, db.writing(self.engine) as conn:
            yield conn

    def reading(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A read-only snapshot."""
        return db.reading(self.engine)

    def lock(  # noqa: PLR0913 - the lock, what it waits for, and how it fails
        self,
        name: str,
        directory: Path,
        *,
        timeout: float,
        waiting: str | None,
        failure: str,
        hint: str,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """An exclusive lock on ``name`` for every user of the vault: :func:`exclusive_lock`."""
        return exclusive_lock(
            self.engine,
            directory,
            name,
            timeout=timeout,
            waiting=waiting,
            failure=failure,
            hint=hint,
        )

    def seal(
        self, table: str, row_id: str, field: str, plaintext: bytes | str, *, owner: str
    ) -> bytes:
        """Seal one field of one row; ``owner`` is the row's value of ``schema.OWNER_COLUMNS``."""
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
        return self._sealer.seal(table, row_id, field, data, owner=owner)

    def unseal(self, table: str, row_id: str, field: str, blob: bytes, *, owner: str) -> bytes:
        """Open one sealed field; a blob that does not belong there raises RecordTampered."""
        return _open_field(self._sealer, table, row_id, field, blob, owner=owner)

    def unseal_text(self, table: str, row_id: str, field: str, blob: bytes, *, owner: str) -> str:
        """Open a sealed text field."""
        return self.unseal(table, row_id, field, blob, owner=owner).decode("utf-8")

    def unseal_texts(
        self, table: str, field: str, items: Iterable[tuple[str, str, object]]
    ) -> list[str | None]:
        """Open one text field of many rows, each item (row id, owner, blob), in one call.

        None where a field does not open this way: :meth:`unseal_text` of
        that one says why (RecordTampered), or opens what it still can.
        """
        return self._sealer.open_texts(table, field, items)

    async def counts(self) -> dict[str, int]:
        """Rows per table."""
        return await _counts(self.engine)

    async def rotate_key(
        self, *, on_progress: Callable[[str, int], None] | None = None
    ) -> RotationResult:
        """Re-seal every sealed field with a new key, in one transaction.

        The vault must be open with ``exclusive=True``: no other dashtam
        process has it open until this returns (see :mod:`.locks`). Order, so
        that a failure or a kill at any point loses nothing:

        1. the new key is stored as *pending* beside the current one;
        2. one write transaction re-seals every field, reading the rows in
           batches so memory does not grow with the vault, and records the
           new key id;
        3. after the commit, the pending key replaces the current one, and the
           key store is read back: success is reported only when it holds the
           key the vault is now sealed with. Otherwise the rotation fails
           loudly and the pending key stays, for the next opener to finish.

        Opening the vault finishes or discards an interrupted rotation: the
        vault's key id says which of the two keys it was sealed with.
        """
        if not self.exclusive:
            raise VaultError(
                "a key rotation needs the vault opened for exclusive use",
                hint="use dashtam vault rotate-key",
            )
        progress = on_progress or (lambda _stage, _n: None)
        source = self.key_source
        if not source.rotatable:
            await source.save_pending(b"")  # raises the source's own explanation
        old = self._sealer
        new_key = crypto.new_key()
        new = crypto.Sealer(new_key)
        await source.save_pending(new_key)
        progress("pending-stored", 0)
        count = 0
        damaged = 0
        try:
            async with self.writing() as conn:
                for table_name, fields in schema.SEALED_FIELDS.items():
                    done = count

                    def on_row(n: int, done: int = done) -> None:
                        progress("resealed", done + n)

                    resealed, skipped = await _reseal_table(
                        conn, table_name, fields, old=old, new=new, on_row=on_row
                    )
                    count += resealed
                    damaged += skipped
                await _write_meta(
                    conn,
                    {
                        _META_KEY_ID: new.key_id.hex().encode(),
                        _META_KEY_CHECK: new.key_check(self.vault_id),
                    },
                )
                progress("committing", count)
        except BaseException:
            # The transaction rolled back: the vault is still sealed with the
            # old key, and only this process may touch the pending one (it holds
            # the vault alone). Forget it; an opener does it too if this fails.
            with contextlib.suppress(Exception):
                await source.discard_pending()
            raise
        progress("committed", count)
        self._sealer = new
        await self._confirm_key(new_key)
        progress("promoted", count)
        if damaged:
            log.warning(
                "%d cached row(s) already failed their integrity check and were left as they "
                "were; the next fetch replaces them",
                damaged,
            )
        log.info("vault key rotated: %d fields re-sealed", count)
        return RotationResult(old.key_id.hex(), new.key_id.hex(), count, damaged)

    async def seal_format(self) -> int:
        """The sealing format the vault records (1 when it records none)."""
        async with self.reading() as conn:
            value = (await _read_meta(conn)).get(_META_SEAL_FORMAT, b"1")
        try:
            return int(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise RecordTampered("vault_meta", self.vault_id, _META_SEAL_FORMAT) from None

    async def upgrade_seal_format(self) -> int:
        """Re-seal every field of a format-1 vault in format 2, with the same key.

        One transaction, so a kill leaves the vault as it was. Rows that do
        not open are left as they were (still unreadable), so a damaged row
        never stops a vault from opening; returns how many there were.
        """
        if not self.exclusive:
            raise VaultError("upgrading the vault needs it opened for exclusive use")
        sealer = self._sealer
        damaged = 0
        async with self.writing() as conn:
            if (await _read_meta(conn)).get(_META_SEAL_FORMAT) == str(SEAL_FORMAT).encode():
                return 0
            for table_name, fields in schema.SEALED_FIELDS.items():
                _, skipped = await _reseal_table(
                    conn,
                    table_name,
                    fields,
                    old=sealer,
                    new=sealer,
                    on_row=lambda _n: None,
                    legacy=True,
                    skip_damaged=True,
                )
                damaged += skipped
            await _write_meta(
                conn,
                {
                    _META_KEY_CHECK: sealer.key_check(self.vault_id),
                    _META_SEAL_FORMAT: str(SEAL_FORMAT).encode(),
                },
            )
        if damaged:
            log.warning(
                "%d row(s) that already failed their integrity check were left as they were",
                damaged,
            )
        return damaged

    async def _confirm_key(self, new_key: bytes) -> None:
        """Make the committed key the stored one, and prove it by reading the store back."""
        source = self.key_source
        new_id = crypto.key_id_of(new_key)
        kept = (
            f"the vault is now sealed with the new key (id {new_id.hex()}), which is kept as the "
            f"pending key in {source.description}"
        )
        finish = "fix the key store, then run `dashtam vault status`: opening the vault finishes it"
        try:
            await source.promote_pending()
            stored = await source.load()
            if stored is None or crypto.key_id_of(stored) != new_id:
                # The pending key is not where this rotation left it. The key is
                # still in memory: store it outright rather than lose the vault.
                log.warning("the rotation's pending key went missing; storing the new key again")
                await source.save(new_key)
                stored = await source.load()
        except VaultError as exc:
            raise VaultError(f"{kept}, but storing it failed: {exc.message}", hint=finish) from None
        if stored is None or crypto.key_id_of(stored) != new_id:
            raise VaultError(
                f"{kept}, but {source.description} does not hold it after the rotation",
                hint=finish,
            )
        async with self.reading() as conn:
            committed = (await _read_meta(conn)).get(_META_KEY_ID, b"").decode()
        if committed != new_id.hex():
            raise VaultError(
                f"after the rotation the vault records key id {committed}, not the new key "
                f"{new_id.hex()}; both keys are kept",
                hint="run `dashtam vault status` and report this as a bug",
            )
        with contextlib.suppress(VaultError):
            await source.discard_pending()


# Rows re-sealed per statement during a rotation: bounds memory whatever the vault's size.
_RESEAL_BATCH: Final = 2000
# Tables whose rows are a cache of the provider's data: a damaged one is left
# as it is rather than stop a rotation (the next fetch replaces it). A damaged
# token or credential still stops it: those cannot be fetched again.
_CACHE_TABLES: Final = frozenset(
    {"accounts", "positions", "transactions", "balances", "sync_points"}
)


async def _reseal_table(  # noqa: PLR0913 - the pieces of one pass
    conn: AsyncConnection,
    table_name: str,
    fields: tuple[str, ...],
    *,
    old: crypto.Sealer,
    new: crypto.Sealer,
    on_row: Callable[[int], None],
    legacy: bool = False,
    skip_damaged: bool = False,
) -> tuple[int, int]:
    """Re-seal one table in batches, in id order; return fields re-sealed and rows skipped.

    ``legacy``: the table may hold format-1 blobs (a vault being upgraded).
    ``skip_damaged``: leave rows that do not open in any table, not only the cache.
    """
    table = schema.metadata.tables[table_name]
    owner_column = table.c[schema.OWNER_COLUMNS[table_name]]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({f: bindparam(f) for f in fields})
    )
    count = 0
    skipped = 0
    last: str | None = None
    while True:
        query = select(table.c.id, owner_column.label("_owner"), *(table.c[f] for f in fields))
        query = query.order_by(table.c.id)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = (await conn.execute(query.limit(_RESEAL_BATCH))).all()
        if not rows:
            return count, skipped
        batch: list[dict[str, Any]] = []
        # Unpacked as the tuples they are: a row's columns read by name cost 0.7 us each.
        for row_id, owner, *blobs in rows:
            values: dict[str, Any] = {"_id": row_id}
            try:
                for field, blob in zip(fields, blobs, strict=True):
                    if blob is not None:
                        plain = _open_field(
                            old, table_name, row_id, field, blob, owner=owner, legacy=legacy
                        )
                        blob = new.seal(table_name, row_id, field, plain, owner=owner)  # noqa: PLW2901 - re-sealed in place
                    values[field] = blob
            except RecordTampered:
                if table_name not in _CACHE_TABLES and not skip_damaged:
                    raise
                skipped += 1
                continue
            count += sum(1 for f in fields if values[f] is not None)
            batch.append(values)
            on_row(count)
        if batch:
            await conn.execute(stmt, batch)
        last = rows[-1][0]


def _open_field(  # noqa: PLR0913 - the whole address of a field
    sealer: crypto.Sealer,
    table: str,
    row_id: str,
    field: str,
    blob: object,
    *,
    owner: object,
    legacy: bool = False,
) -> bytes:
    """Open one sealed field; anything that is not a blob sealed there raises RecordTampered."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or not isinstance(owner, str):
        raise RecordTampered(table, str(row_id), field)
    try:
        return sealer.open(table, row_id, field, bytes(blob), owner=owner, legacy=legacy)
    except (InvalidTag, crypto.BlobFormatError):
        raise RecordTampered(table, row_id, field) from None


async def _counts(engine: AsyncEngine) -> dict[str, int]:
    result: dict[str, int] = {}
    async with db.reading(engine) as conn:
        for name in schema.TABLES:
            table = schema.metadata.tables[name]
            result[name] = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
    return result


def _prepare_files(path: Path, *, create: bool) -> bool:
    """Create the 0700 directory and 0600 database if asked; check them either way.

    Returns whether this call created the database file.
    """
    created = False
    if create:
        files.ensure_private_dir(path.parent)
        with contextlib.suppress(FileExistsError):
            files.create_private_file(path)
            created = True
    elif not path.exists():
        raise VaultNotFound(
            f"there is no vault at {path} yet",
            hint="create one with: dashtam vault init",
        )
    files.check_private(path.parent, directory=True)
    for file in files.sidecar_files(path):
        files.check_private(file)
    return created


@dataclasses.dataclass(slots=True)
class _Attempt:
    """What one open made that a failed creation must take back."""

    created_file: bool = False
    new_key: KeySource | None = None


def _holds_key_id(path: Path) -> bool:
    """Whether the database at ``path`` records a key id (when in doubt: yes)."""
    import sqlite3

    try:
        if path.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error:
        return True
    try:
        row = conn.execute("SELECT 1 FROM vault_meta WHERE key = ?", (_META_KEY_ID,)).fetchone()
    except sqlite3.OperationalError as exc:
        return "no such table" not in str(exc)
    except sqlite3.Error:
        return True
    finally:
        conn.close()
    return row is not None


async def _discard_failed_creation(path: Path, attempt: _Attempt) -> None:
    """Remove what a creation that failed before the vault got its key made.

    Only this attempt's own files go, and only while no other process has the
    vault open (another creator may be finishing the job) and the database
    records no key id: a vault that holds a key is never touched.
    """
    import fcntl

    if not attempt.created_file and attempt.new_key is None:
        return
    try:
        fd = files.open_lock_file(locks.lock_files(path)[0])
    except VaultError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        if _holds_key_id(path):
            return
        if attempt.new_key is not None:
            with contextlib.suppress(Exception):
                await attempt.new_key.delete()
        if attempt.created_file:
            for file in files.sidecar_files(path):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
            log.info("removed the half-made vault at %s", path)
    except OSError as exc:
        log.warning("could not remove the half-made vault at %s: %s", path, exc)
    finally:
        os.close(fd)


async def _discard_failed_shared_creation(settings: Settings, attempt: _Attempt) -> None:
    """Take back the key a failed creation of a shared vault stored, if the vault records none.

    The database itself is the administrator's and stays; only a key this
    attempt made, for a vault that never recorded it, is deleted.
    """
    if attempt.new_key is None:
        return
    try:
        _, meta, _ = await read_plain_meta(settings)
    except VaultError:
        return
    if _META_KEY_ID in meta:
        return
    with contextlib.suppress(Exception):
        await attempt.new_key.delete()


async def _unlock(
    engine: AsyncEngine,
    settings: Settings,
    options: OpenOptions,
    env: Mapping[str, str],
    attempt: _Attempt | None = None,
) -> tuple[str, crypto.Sealer, KeySource]:
    """Find and verify the vault's key, creating it for a new vault (never over an old one)."""
    async with db.reading(engine) as conn:
        meta = await _read_meta(conn)
    if _META_KEY_ID not in meta:
        if not options.create:
            raise VaultNotFound(
                f"{where(settings)} was never initialised",
                hint="run: dashtam vault init",
            )
        return await _initialise(engine, settings, options, env, attempt or _Attempt())

    vault_id = meta[_META_VAULT_ID].decode()
    kind = store_kind(meta, settings, options)
    source = _key_source(kind, vault_id, settings, options, env)
    expected = meta[_META_KEY_ID].decode()
    key = await source.load()
    pending = await source.load_pending()
    if pending is not None or key is None or crypto.key_id_of(key).hex() != expected:
        # The caller holds the vault's shared (or exclusive) lock, so no rotation
        # is running: a pending key is what a stopped one left behind. Decide
        # under the recovery lock, on a fresh reading of the vault and the store,
        # so two openers never act on what the other has just changed.
        async with _recovering(settings, engine):
            async with db.reading(engine) as conn:
                meta = await _read_meta(conn)
            expected = meta[_META_KEY_ID].decode()
            key = await source.load()
            pending = await source.load_pending()
            key = await _settle_pending(
                source,
                key,
                pending,
                expected=expected,
                where=where(settings),
                hint=_restore_hint(kind, vault_id, settings),
            )
    sealer = crypto.Sealer(key)
    if not sealer.verify_key_check(vault_id, meta.get(_META_KEY_CHECK, b"")):
        raise RecordTampered("vault_meta", vault_id, _META_KEY_CHECK)
    return vault_id, sealer, source


def _recovering(
    settings: Settings, engine: AsyncEngine
) -> contextlib.AbstractAsyncContextManager[None]:
    if settings.database_url is not None:
        from dashtam_cli.core.vault import database

        return database.recovering(engine)
    return locks.recovering(settings.paths.vault_file)


async def _settle_pending(  # noqa: PLR0913 - keyword-only: the state being settled
    source: KeySource,
    key: bytes | None,
    pending: bytes | None,
    *,
    expected: str,
    where: str,
    hint: str,
) -> bytes:
    """Return the key the vault is sealed with, finishing or discarding a stopped rotation."""
    if key is not None and crypto.key_id_of(key).hex() == expected:
        if pending is not None:
            log.info("discarding the new key of a key rotation that never committed")
            await source.discard_pending()
        return key
    if pending is not None and crypto.key_id_of(pending).hex() == expected:
        # The rotation committed but was stopped before its last step.
        log.warning("finishing an interrupted key rotation")
        await source.promote_pending()
        stored = await source.load()
        if stored is None or crypto.key_id_of(stored).hex() != expected:
            raise VaultError(
                f"could not make the rotated key current in {source.description}",
                hint="the new key is kept as pending; fix the key store and run the command again",
            )
        return pending
    if key is None:
        raise KeyMissing(
            f"{where} holds data but its master key is not in {source.description}",
            hint=hint,
        )
    raise WrongKey(
        f"the master key from {source.description} is not this vault's key "
        f"(key id {crypto.key_id_of(key).hex()}, the vault expects {expected})",
        hint=hint,
    )


def _restore_hint(kind: str, vault_id: str, settings: Settings) -> str:
    where = {
        "keyring": f"the OS keyring entry dashtam/vault-{vault_id}",
        "passphrase": f"the key file {settings.paths.key_file}",
        "env": ENV_KEY,
    }.get(kind, kind)
    if settings.database_url is not None:
        return (
            f"bring the shared vault's key to {where} on this machine: `dashtam vault export-key` "
            "on a machine that opens the vault, then `dashtam vault import-key` here (after a key "
            "rotation, again); dashtam never makes a new key over a vault that has one"
        )
    return (
        f"restore the key to {where} from your backup, or set {ENV_KEY} to it; "
        "dashtam never makes a new key over a vault that has one"
    )


async def _initialise(
    engine: AsyncEngine,
    settings: Settings,
    options: OpenOptions,
    env: Mapping[str, str],
    attempt: _Attempt,
) -> tuple[str, crypto.Sealer, KeySource]:
    """Give a new vault its id and key, under the write lock so two processes agree on one."""
    async with db.writing(engine) as conn:
        meta = await _read_meta(conn)
        if _META_KEY_ID in meta:
            # Another process initialised it while we waited for the lock.
            pass
        else:
            vault_id = meta.get(_META_VAULT_ID, str(uuid.uuid4()).encode()).decode()
            if env.get(ENV_KEY, "").strip():
                kind = "env"
            else:
                kind = options.key_store or settings.key_store
            source = _key_source(kind, vault_id, settings, options, env)
            # A key left by an earlier attempt that died before this commit is adopted.
            key = await source.load()
            if key is None:
                key = crypto.new_key()
                await source.save(key)
                attempt.new_key = source
            sealer = crypto.Sealer(key)
            await _write_meta(
                conn,
                {
                    _META_VAULT_ID: vault_id.encode(),
                    _META_KEY_STORE: kind.encode(),
                    _META_KEY_ID: sealer.key_id.hex().encode(),
                    _META_KEY_CHECK: sealer.key_check(vault_id),
                    _META_CREATED: db.utcnow_text().encode(),
                    _META_SEAL_FORMAT: str(SEAL_FORMAT).encode(),
                },
            )
            log.info("created the vault's master key in %s", source.description)
            return vault_id, sealer, source
    return await _unlock(engine, settings, dataclasses.replace(options, create=False), env)


@contextlib.asynccontextmanager
async def open_vault(
    settings: Settings, options: OpenOptions | None = None
) -> AsyncIterator[Vault]:
    """Open (or with ``create``, make) the vault, yield it, and close it.

    Checks, in order: file ownership and modes; the schema version (a newer
    vault is refused untouched); the key (wrong and missing keys are told
    apart, and a new key is never made over an existing vault); then pending
    migrations are applied. A vault sealed before fields were bound to their
    owner is re-sealed once, holding the vault alone (see :mod:`.locks`).
    """
    opts = options or OpenOptions()
    env = os.environ if opts.environ is None else opts.environ
    for _ in range(2):
        async with _opened(settings, opts, env) as (vault, needs_upgrade):
            if not needs_upgrade:
                yield vault
                return
        # Upgrading takes the vault alone: let go of it, upgrade, open again.
        log.warning("re-sealing the vault once so every field is bound to its owner")
        exclusive = dataclasses.replace(opts, create=False, exclusive=True)
        async with _opened(settings, exclusive, env):
            pass
    raise VaultError(  # pragma: no cover - the exclusive open above upgrades it
        "the vault could not be upgraded to the current sealing format",
        hint="run the command again",
    )


@contextlib.asynccontextmanager
async def _opened(
    settings: Settings, opts: OpenOptions, env: Mapping[str, str]
) -> AsyncIterator[tuple[Vault, bool]]:
    """Open the vault under its lock; yield it and whether it still needs the owner upgrade."""
    path = settings.paths.vault_file
    shared = settings.database_url is not None
    if shared and opts.create:
        # This machine's copy of a shared vault's key may go in a key file here.
        files.ensure_private_dir(path.parent)
    attempt = _Attempt(created_file=not shared and _prepare_files(path, create=opts.create))
    opened = False
    try:
        async with _opened_locked(settings, opts, env, attempt) as result:
            opened = True
            yield result
    except BaseException:
        # A creation that failed (a refused keyring, an unanswered prompt, a
        # Ctrl-C, a full disk) leaves no half-made vault behind.
        if not opened:
            if shared:
                await _discard_failed_shared_creation(settings, attempt)
            else:
                await _discard_failed_creation(path, attempt)
        raise


@contextlib.asynccontextmanager
async def _opened_locked(
    settings: Settings, opts: OpenOptions, env: Mapping[str, str], attempt: _Attempt
) -> AsyncIterator[tuple[Vault, bool]]:
    """The body of :func:`_opened`, once the files are prepared."""
    path = settings.paths.vault_file
    label = where(settings).removeprefix("the vault at ").removeprefix("the shared vault at ")
    async with _in_use(settings, exclusive=opts.exclusive) as engine:
        async with db.reading(engine) as conn:
            version = await db.read_schema_version(conn)
        db.check_not_too_new(version, label)
        if version == 0:
            if not opts.create:
                if settings.database_url is not None:
                    place = where(settings).replace("shared vault", "shared database")
                    raise VaultNotFound(
                        f"there is no vault in {place} yet",
                        hint="create one with: dashtam vault init",
                    )
                raise VaultNotFound(
                    f"{where(settings)} was never initialised",
                    hint="run: dashtam vault init",
                )
            await db.migrate(engine, label)
            vault_id, sealer, source = await _unlock(engine, settings, opts, env, attempt)
        else:
            # The key is verified before any migration writes to an existing vault.
            vault_id, sealer, source = await _unlock(engine, settings, opts, env)
            applied = await db.migrate(engine, label)
            if applied:
                log.info("vault schema migrated to version %d", applied[-1])
        vault = Vault(
            path=path,
            engine=engine,
            vault_id=vault_id,
            sealer=sealer,
            key_source=source,
            exclusive=opts.exclusive,
        )
        needs_upgrade = await vault.seal_format() < SEAL_FORMAT
        if needs_upgrade and opts.exclusive:
            await vault.upgrade_seal_format()
            needs_upgrade = False
        yield vault, needs_upgrade


@contextlib.asynccontextmanager
async def _in_use(settings: Settings, *, exclusive: bool) -> AsyncIterator[AsyncEngine]:
    """An engine on the vault, held in shared (or exclusive) use for the block (:mod:`.locks`)."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.database_url is not None:
            from dashtam_cli.core.vault import database

            engine = _engine(settings)
            stack.push_async_callback(engine.dispose)
            await stack.enter_async_context(
                database.vault_use(
                    engine,
                    exclusive=exclusive,
                    open_wait=locks.OPEN_WAIT_S,
                    rotate_wait=locks.ROTATE_WAIT_S,
                )
            )
        else:
            path = settings.paths.vault_file
            use = locks.exclusive_use(path) if exclusive else locks.shared_use(path)
            await stack.enter_async_context(use)
            engine = _engine(settings)
            stack.push_async_callback(engine.dispose)
        yield engine


async def read_plain_meta(
    settings: Settings, *, modes: bool = True, size: bool = False
) -> tuple[int, dict[str, bytes], dict[str, int]]:
    """Read what needs no key: schema version, plain metadata and row counts.

    ``modes=False`` reads a vault whose files have loose permissions (for
    destroy, which removes them anyway); links and other owners stay refused.
    ``size=True`` adds a shared vault's database size to the metadata (``size_bytes``).
    """
    path = settings.paths.vault_file
    if settings.database_url is None:
        files.check_private(path.parent, directory=True, modes=modes)
        for file in files.sidecar_files(path):
            files.check_private(file, modes=modes)
    engine = _engine(settings)
    label = where(settings).removeprefix("the vault at ").removeprefix("the shared vault at ")
    try:
        async with db.reading(engine) as conn:
            version = await db.read_schema_version(conn)
            db.check_not_too_new(version, label)
            meta = await _read_meta(conn) if version else {}
            if size and conn.dialect.name == "postgresql":
                total = await conn.scalar(text("SELECT pg_database_size(current_database())"))
                meta["size_bytes"] = str(int(total or 0)).encode()
        counts = await _counts(engine) if version else {}
    finally:
        await engine.dispose()
    return version, meta, counts


async def check_key(settings: Settings, options: OpenOptions | None = None) -> str:
    """Prove the vault's key opens its key check, changing nothing; return the source's name.

    Raises what opening would (KeyMissing, WrongKey, RecordTampered, ...), but
    neither migrates, nor finishes an interrupted rotation, nor takes a lock.
    """
    opts = options or OpenOptions()
    env = os.environ if opts.environ is None else opts.environ
    _, meta, _ = await read_plain_meta(settings)
    if _META_KEY_ID not in meta:
        raise VaultNotFound(
            f"{where(settings)} was never initialised",
            hint="run: dashtam vault init",
        )
    vault_id = meta[_META_VAULT_ID].decode()
    kind = store_kind(meta, settings, opts)
    source = _key_source(kind, vault_id, settings, opts, env)
    key = await source.load()
    expected = meta[_META_KEY_ID].decode()
    hint = _restore_hint(kind, vault_id, settings)
    if key is None:
        raise KeyMissing(f"the vault's master key is not in {source.description}", hint=hint)
    if crypto.key_id_of(key).hex() != expected:
        pending = await source.load_pending()
        if pending is not None and crypto.key_id_of(pending).hex() == expected:
            return f"{source.description} (an interrupted rotation's key; any command finishes it)"
        raise WrongKey(
            f"the master key from {source.description} is not this vault's key",
            hint=hint,
        )
    if not crypto.Sealer(key).verify_key_check(vault_id, meta.get(_META_KEY_CHECK, b"")):
        raise RecordTampered("vault_meta", vault_id, _META_KEY_CHECK)
    return source.description


async def destroy_vault(settings: Settings) -> list[str]:
    """Delete the vault's files and its key; return what was removed (paths and key entries).

    It waits for the vault to be free (no rotation, no other command using
    it), so a running rotation cannot store a key for a vault already gone.
    """
    if settings.database_url is not None:
        return await _destroy_shared(settings)
    path = settings.paths.vault_file
    async with contextlib.AsyncExitStack() as stack:
        if path.parent.is_dir():
            try:
                await stack.enter_async_context(locks.exclusive_use(path))
            except UnsafeFiles as exc:
                # A lock file that is a link or another user's: destroy anyway.
                log.warning("destroying without the vault's lock: %s", exc.message)
        return await _destroy(settings)
    raise AssertionError  # pragma: no cover - the block above always returns (for mypy)


async def _destroy_shared(settings: Settings) -> list[str]:
    """Drop the shared vault's tables (holding it alone), then this machine's copy of its key.

    Other machines keep their copies of the key, which open nothing once the
    tables are gone; the database itself, and its roles, are the administrator's.
    """
    from sqlalchemy import MetaData

    from dashtam_cli.core.vault.database import schema_names

    removed: list[str] = []
    meta: dict[str, bytes] = {}
    async with _in_use(settings, exclusive=True) as engine:
        with contextlib.suppress(VaultError):
            async with db.reading(engine) as conn:
                meta = await _read_meta(conn)
        async with db.writing(engine) as conn:
            names = set(await conn.run_sync(schema_names))
            known = [t for t in schema.metadata.sorted_tables if t.name in names]
            others = sorted(names & {"alembic_version"} - {t.name for t in known})
            for table in reversed(known):
                await conn.run_sync(table.drop)
            if others:
                extra = MetaData()
                await conn.run_sync(lambda c: extra.reflect(c, only=others))
                await conn.run_sync(extra.drop_all)
        if known:
            removed.append(f"{len(known)} table(s) of {where(settings)}")
    removed.extend(await _delete_keyring_key(settings, meta))
    removed.extend(_remove_key_files(settings))
    return removed


def _remove_key_files(settings: Settings) -> list[str]:
    """Delete this machine's key file and a rotation's pending one; return the paths removed."""
    removed = []
    for key_file in (
        settings.paths.key_file,
        settings.paths.key_file.with_name("vault.key.pending"),
    ):
        if key_file.exists():
            key_file.unlink()
            removed.append(str(key_file))
    return removed


async def _delete_keyring_key(settings: Settings, meta: Mapping[str, bytes]) -> list[str]:
    if _META_VAULT_ID not in meta or store_kind(meta, settings, OpenOptions()) != "keyring":
        return []
    vault_id = meta[_META_VAULT_ID].decode()
    source = KeyringKeySource(vault_id, timeout=settings.keyring_timeout)
    try:
        await source.delete()
    except NoKeySource as exc:
        log.warning("could not remove the key from the keyring: %s", exc.message)
        return []
    return [f"keyring entry dashtam/vault-{vault_id}"]


async def _destroy(settings: Settings) -> list[str]:
    path = settings.paths.vault_file
    removed: list[str] = []
    meta: dict[str, bytes] = {}
    if path.exists():
        # Loose modes do not stop a destroy from finding the vault id, so the
        # keyring entry goes with the files; a link or another owner's file does.
        with contextlib.suppress(VaultError):
            _, meta, _ = await read_plain_meta(settings, modes=False)
    removed.extend(await _delete_keyring_key(settings, meta))
    removed.extend(_remove_key_files(settings))
    for file in files.sidecar_files(path):
        if file.exists():
            file.unlink()
            removed.append(str(file))
    for lock_file in locks.lock_files(path):
        # Not reported: they hold nothing. Removed last, while still locked.
        if not lock_file.is_symlink():
            lock_file.unlink(missing_ok=True)
    return removed


_KEY_PREFIX: Final = "dashtam-vault-key:v1"


def key_text(vault_id: str, key: bytes) -> str:
    """A vault key as one line of text (for export-key): the vault it opens, and the key."""
    import base64

    encoded = base64.urlsafe_b64encode(key).decode().rstrip("=")
    return f"{_KEY_PREFIX}:{vault_id}:{encoded}"


def parse_key_text(text: str) -> tuple[str, bytes]:
    """The vault id and key of an exported key line; an InputError that never repeats it."""
    import base64
    import binascii

    from dashtam_cli.core.errors import InputError

    hint = "give the whole line `dashtam vault export-key` wrote (dashtam-vault-key:...)"
    parts = text.strip().split(":")
    if len(parts) != 4 or ":".join(parts[:2]) != _KEY_PREFIX:  # noqa: PLR2004 - prefix, version, id, key
        raise InputError("that is not a key exported by `dashtam vault export-key`", hint=hint)
    vault_id, encoded = parts[2], parts[3]
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise InputError("the exported key is damaged (not base64)", hint=hint) from None
    if len(key) != crypto.KEY_BYTES:
        raise InputError("the exported key is damaged (wrong length)", hint=hint)
    return vault_id, key


async def export_key(settings: Settings, options: OpenOptions) -> tuple[str, str, bytes]:
    """The open vault's id, key id and key, proved to open it (for `dashtam vault export-key`)."""
    async with open_vault(settings, dataclasses.replace(options, create=False)) as vault:
        key = await vault.key_source.load()
        if key is None or crypto.key_id_of(key).hex() != vault.key_id:  # pragma: no cover
            raise VaultError("the vault's key could not be read back from its store")
        return vault.vault_id, vault.key_id, key


async def import_key(settings: Settings, options: OpenOptions, text: str) -> tuple[str, str, str]:
    """Store an exported key in this machine's key store, once it is proved to open the vault.

    The key must name this vault and open its key check; otherwise nothing is
    written. Returns the vault id, the key id and where the key now is.
    """
    from dashtam_cli.core.redact import register_secret

    register_secret(text.strip())
    vault_id, key = parse_key_text(text)
    _, meta, _ = await read_plain_meta(settings)
    if _META_KEY_ID not in meta:
        raise VaultNotFound(
            f"{where(settings)} holds no vault yet, so no key can be checked against it",
            hint="create it on one machine with: dashtam vault init",
        )
    own_id = meta[_META_VAULT_ID].decode()
    if vault_id != own_id:
        raise WrongKey(
            f"that key belongs to another vault ({vault_id}); {where(settings)} is {own_id}",
            hint="export the key on a machine that opens this vault",
        )
    sealer = crypto.Sealer(key)
    if sealer.key_id.hex() != meta[_META_KEY_ID].decode() or not sealer.verify_key_check(
        own_id, meta.get(_META_KEY_CHECK, b"")
    ):
        raise WrongKey(
            "that key does not open this vault (it was rotated since it was exported?); "
            "nothing was written",
            hint="export the key again on a machine that opens the vault now",
        )
    env = os.environ if options.environ is None else options.environ
    kind = store_kind(meta, settings, options)
    if kind == "env" or env.get(ENV_KEY, "").strip():
        raise VaultError(
            f"the key comes from {ENV_KEY} on this machine, which dashtam cannot write",
            hint=f"set {ENV_KEY} to the key instead, or unset it and use the keyring "
            "(DASHTAM_KEY_STORE=keyring)",
        )
    if kind == "passphrase":
        # A machine that never opened a vault has no data directory for the key file yet.
        files.ensure_private_dir(settings.paths.key_file.parent)
    source = _key_source(kind, own_id, settings, options, env)
    await source.save(key)
    stored = await source.load()
    if stored != key:
        raise VaultError(
            f"{source.description} did not keep the key", hint="check the key store and retry"
        )
    return own_id, sealer.key_id.hex(), source.description


def _copy_target(settings: Settings, target: str) -> Settings:
    """The settings that name the copy's destination: a PostgreSQL URL, or an SQLite file."""
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.vault.database import check_database_url, password_of

    if target.startswith(("postgresql", "postgres:")):
        try:
            check_database_url(target)
        except ValueError as exc:
            raise InputError(
                f"invalid --to URL: {exc}", hint="postgresql+asyncpg://USER@HOST/DATABASE"
            ) from None
        if password_of(target):
            raise InputError(
                "the --to URL holds a password, which would be seen in the process list",
                hint="put the password in ~/.pgpass (or the file PGPASSFILE names) and leave it "
                "out of the URL",
            )
        return dataclasses.replace(settings, database_url=target)
    from pathlib import Path

    raw = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    path = Path(raw).expanduser().absolute()
    if path.suffix not in {".sqlite3", ".sqlite", ".db"}:
        raise InputError(
            f"--to {target!r} is neither a PostgreSQL URL nor an SQLite file (.sqlite3)",
            hint="give postgresql+asyncpg://USER@HOST/DATABASE, or a path ending in .sqlite3",
        )
    paths = dataclasses.replace(settings.paths, data_dir=path.parent)
    if path.name != paths.vault_file.name:
        raise InputError(
            f"an SQLite copy is named {paths.vault_file.name}, not {path.name}",
            hint=f"give a directory's {paths.vault_file.name}, e.g. ~/vault-copy/vault.sqlite3",
        )
    return dataclasses.replace(settings, database_url=None, paths=paths)


_COPY_BATCH: Final = 500


def _prepare_copy_file(destination: Settings) -> None:
    """A new 0600 file in a 0700 directory for an SQLite copy; an existing one is refused."""
    if destination.database_url is not None:
        return
    path = destination.paths.vault_file
    if path.exists() and path.stat().st_size > 0:
        raise VaultError(
            f"there is a file at {path} already; nothing was copied",
            hint="give a new file (dashtam never writes over one)",
        )
    files.ensure_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        files.create_private_file(path)


async def _check_counts(engine: AsyncEngine, counts: Mapping[str, int]) -> None:
    """Every copied table holds as many rows as were read."""
    async with db.reading(engine) as conn:
        for name, expected in counts.items():
            table = schema.metadata.tables[name]
            found = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            if found != expected:
                raise VaultError(
                    f"the copy of {name} holds {found} rows, not {expected}; do not use it",
                    hint="drop the destination's tables and copy again",
                )


async def copy_vault(
    settings: Settings, options: OpenOptions, target: str
) -> tuple[str, str, dict[str, int]]:
    """Copy every row of the vault, sealed as it is, into an empty vault elsewhere.

    The source is read in one snapshot; the destination gets the same schema
    (its migrations), then every table's rows in one write transaction, then
    the row counts are compared. The same key opens the copy (it has the same
    vault id), and opening it is part of the check. A destination that holds
    a vault already is refused untouched. Returns the two places and the counts.
    """
    destination = _copy_target(settings, target)
    if where(destination) == where(settings):
        raise VaultError("the copy's destination is the vault itself", hint="give another --to")
    opts = dataclasses.replace(options, create=False)
    async with open_vault(settings, opts) as source:
        counts: dict[str, int] = {}
        _prepare_copy_file(destination)
        label = where(destination)
        engine = _engine(destination)
        try:
            async with db.reading(engine) as conn:
                version = await db.read_schema_version(conn)
            if version:
                raise VaultError(
                    f"{label} holds a vault already; nothing was copied",
                    hint="copy into an empty database (or drop its tables first)",
                )
            await db.migrate(
                engine, label.removeprefix("the vault at ").removeprefix("the shared vault at ")
            )
            async with source.reading() as reader, db.writing(engine) as writer:
                for table in schema.metadata.sorted_tables:
                    if table.name == "schema_version":
                        continue  # written by the destination's own migrations
                    result = await reader.stream(select(table))
                    copied = 0
                    async for batch in result.mappings().partitions(_COPY_BATCH):
                        await writer.execute(table.insert(), [dict(row) for row in batch])
                        copied += len(batch)
                    counts[table.name] = copied
            await _check_counts(engine, counts)
        finally:
            await engine.dispose()
    # The copy opens with the same key: proof that every sealed value came across whole.
    async with open_vault(destination, opts) as copy:
        if copy.vault_id != source.vault_id:  # pragma: no cover - copied with vault_meta
            raise VaultError("the copy is not the same vault")
    return where(settings), label, counts
