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
from sqlalchemy import bindparam, func, select, update

from dashtam_cli.core.vault import crypto, db, files, schema
from dashtam_cli.core.vault.errors import (
    KeyMissing,
    NoKeySource,
    RecordTampered,
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
    from collections.abc import AsyncIterator, Callable, Mapping
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from dashtam_cli.core.settings import Settings

__all__ = ["OpenOptions", "RotationResult", "Vault", "destroy_vault", "open_vault"]

log = logging.getLogger(__name__)

_META_VAULT_ID: Final = "vault_id"
_META_KEY_ID: Final = "key_id"
_META_KEY_CHECK: Final = "key_check"
_META_KEY_STORE: Final = "key_store"
_META_CREATED: Final = "created_at"


@dataclasses.dataclass(frozen=True, slots=True)
class OpenOptions:
    """How to open the vault.

    ``create``: make the vault (and its key) if it does not exist yet.
    ``key_store``: where a new vault's key goes (``keyring`` or ``passphrase``);
    ``None`` takes the ``key_store`` setting.
    ``prompt``: asks the user for the key file's passphrase (``confirm`` = ask
    twice); without it, only ``DASHTAM_PASSPHRASE`` is used.
    """

    create: bool = False
    key_store: str | None = None
    prompt: Callable[[bool], str] | None = None
    environ: Mapping[str, str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RotationResult:
    """What a key rotation did."""

    old_key_id: str
    new_key_id: str
    fields_resealed: int


async def _read_meta(conn: AsyncConnection) -> dict[str, bytes]:
    rows = await conn.execute(select(schema.vault_meta.c.key, schema.vault_meta.c.value))
    return {key: bytes(value) for key, value in rows.all()}


async def _write_meta(conn: AsyncConnection, values: Mapping[str, bytes]) -> None:
    from sqlalchemy.dialects.sqlite import insert

    for key, value in values.items():
        stmt = insert(schema.vault_meta).values(key=key, value=value)
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
        return PassphraseKeySource(settings.paths.key_file, environ=env, prompt=options.prompt)
    return KeyringKeySource(vault_id, timeout=settings.keyring_timeout)


class Vault:
    """An open vault: its engine, its key, and the sealing of its fields."""

    def __init__(
        self,
        *,
        path: Path,
        engine: AsyncEngine,
        vault_id: str,
        sealer: crypto.Sealer,
        key_source: KeySource,
    ) -> None:
        """Hold the pieces :func:`open_vault` assembled."""
        self.path = path
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

    def seal(self, table: str, row_id: str, field: str, plaintext: bytes | str) -> bytes:
        """Seal one field of one row."""
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
        return self._sealer.seal(table, row_id, field, data)

    def unseal(self, table: str, row_id: str, field: str, blob: bytes) -> bytes:
        """Open one sealed field; a blob that does not belong there raises RecordTampered.

        So does a value that is not a blob at all (TEXT, an integer, a float in a
        damaged file): ``bytes()`` of a large integer would try to allocate it.
        """
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise RecordTampered(table, row_id, field)
        try:
            return self._sealer.open(table, row_id, field, bytes(blob))
        except (InvalidTag, crypto.BlobFormatError):
            raise RecordTampered(table, row_id, field) from None

    def unseal_text(self, table: str, row_id: str, field: str, blob: bytes) -> str:
        """Open a sealed text field."""
        return self.unseal(table, row_id, field, blob).decode("utf-8")

    async def counts(self) -> dict[str, int]:
        """Rows per table."""
        return await _counts(self.engine)

    async def rotate_key(
        self, *, on_progress: Callable[[str, int], None] | None = None
    ) -> RotationResult:
        """Re-seal every sealed field with a new key, in one transaction.

        Order, so that a failure or a kill at any point loses nothing:
        1. the new key is stored as *pending* beside the current one;
        2. one write transaction re-seals every field and records the new key id;
        3. after the commit, the pending key replaces the current one.
        Opening the vault finishes or discards an interrupted rotation: the
        vault's key id says which of the two keys it was sealed with.
        """
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
        try:
            async with self.writing() as conn:
                for table_name, fields in schema.SEALED_FIELDS.items():
                    table = schema.metadata.tables[table_name]
                    rows = (
                        await conn.execute(select(table.c.id, *(table.c[f] for f in fields)))
                    ).all()
                    batch: list[dict[str, Any]] = []
                    for row in rows:
                        values: dict[str, Any] = {"_id": row.id}
                        for field in fields:
                            blob = row._mapping[field]  # noqa: SLF001 - SQLAlchemy's public API
                            if blob is not None:
                                plain = self.unseal(table_name, row.id, field, blob)
                                blob = new.seal(table_name, row.id, field, plain)
                                count += 1
                            values[field] = blob
                        batch.append(values)
                        progress("resealed", count)
                    if batch:
                        stmt = (
                            update(table)
                            .where(table.c.id == bindparam("_id"))
                            .values({f: bindparam(f) for f in fields})
                        )
                        await conn.execute(stmt, batch)
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
            # old key. Forget the new one (best effort: opening does it too).
            with contextlib.suppress(Exception):
                await source.discard_pending()
            raise
        progress("committed", count)
        self._sealer = new
        await source.promote_pending()
        progress("promoted", count)
        log.info("vault key rotated: %d fields re-sealed", count)
        return RotationResult(old.key_id.hex(), new.key_id.hex(), count)


async def _counts(engine: AsyncEngine) -> dict[str, int]:
    result: dict[str, int] = {}
    async with db.reading(engine) as conn:
        for name in schema.TABLES:
            table = schema.metadata.tables[name]
            result[name] = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
    return result


def _prepare_files(path: Path, *, create: bool) -> None:
    """Create the 0700 directory and 0600 database if asked; check them either way."""
    if create:
        files.ensure_private_dir(path.parent)
        with contextlib.suppress(FileExistsError):
            files.create_private_file(path)
    elif not path.exists():
        raise VaultNotFound(
            f"there is no vault at {path} yet",
            hint="create one with: dashtam vault init",
        )
    files.check_private(path.parent, directory=True)
    for file in files.sidecar_files(path):
        files.check_private(file)


async def _unlock(
    engine: AsyncEngine, settings: Settings, options: OpenOptions, env: Mapping[str, str]
) -> tuple[str, crypto.Sealer, KeySource]:
    """Find and verify the vault's key, creating it for a new vault (never over an old one)."""
    path = settings.paths.vault_file
    async with db.reading(engine) as conn:
        meta = await _read_meta(conn)
    if _META_KEY_ID not in meta:
        if not options.create:
            raise VaultNotFound(
                f"the vault at {path} was never initialised",
                hint="run: dashtam vault init",
            )
        return await _initialise(engine, settings, options, env)

    vault_id = meta[_META_VAULT_ID].decode()
    kind = meta.get(_META_KEY_STORE, b"keyring").decode()
    source = _key_source(kind, vault_id, settings, options, env)
    expected = meta[_META_KEY_ID].decode()
    key = await source.load()
    if key is not None and crypto.key_id_of(key).hex() == expected:
        with contextlib.suppress(VaultError):
            await source.discard_pending()  # a rotation that never committed
    else:
        pending = await source.load_pending()
        if pending is not None and crypto.key_id_of(pending).hex() == expected:
            # The rotation committed but was stopped before its last step.
            log.warning("finishing an interrupted key rotation")
            await source.promote_pending()
            key = pending
        elif key is None:
            raise KeyMissing(
                f"the vault at {path} holds data but its master key is not in {source.description}",
                hint=_restore_hint(kind, vault_id, settings),
            )
        else:
            raise WrongKey(
                f"the master key from {source.description} is not this vault's key "
                f"(key id {crypto.key_id_of(key).hex()}, the vault expects {expected})",
                hint=_restore_hint(kind, vault_id, settings),
            )
    sealer = crypto.Sealer(key)
    if not sealer.verify_key_check(vault_id, meta.get(_META_KEY_CHECK, b"")):
        raise RecordTampered("vault_meta", vault_id, _META_KEY_CHECK)
    return vault_id, sealer, source


def _restore_hint(kind: str, vault_id: str, settings: Settings) -> str:
    where = {
        "keyring": f"the OS keyring entry dashtam/vault-{vault_id}",
        "passphrase": f"the key file {settings.paths.key_file}",
        "env": ENV_KEY,
    }.get(kind, kind)
    return (
        f"restore the key to {where} from your backup, or set {ENV_KEY} to it; "
        "dashtam never makes a new key over a vault that has one"
    )


async def _initialise(
    engine: AsyncEngine, settings: Settings, options: OpenOptions, env: Mapping[str, str]
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
            sealer = crypto.Sealer(key)
            await _write_meta(
                conn,
                {
                    _META_VAULT_ID: vault_id.encode(),
                    _META_KEY_STORE: kind.encode(),
                    _META_KEY_ID: sealer.key_id.hex().encode(),
                    _META_KEY_CHECK: sealer.key_check(vault_id),
                    _META_CREATED: db.utcnow_text().encode(),
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
    migrations are applied.
    """
    opts = options or OpenOptions()
    env = os.environ if opts.environ is None else opts.environ
    path = settings.paths.vault_file
    _prepare_files(path, create=opts.create)
    engine = db.create_engine(path)
    try:
        async with db.reading(engine) as conn:
            version = await db.read_schema_version(conn)
        db.check_not_too_new(version, path)
        if version == 0:
            if not opts.create:
                raise VaultNotFound(
                    f"the vault at {path} was never initialised", hint="run: dashtam vault init"
                )
            await db.migrate(engine, path)
            vault_id, sealer, source = await _unlock(engine, settings, opts, env)
        else:
            # The key is verified before any migration writes to an existing vault.
            vault_id, sealer, source = await _unlock(engine, settings, opts, env)
            applied = await db.migrate(engine, path)
            if applied:
                log.info("vault schema migrated to version %d", applied[-1])
        yield Vault(path=path, engine=engine, vault_id=vault_id, sealer=sealer, key_source=source)
    finally:
        await engine.dispose()


async def read_plain_meta(
    settings: Settings, *, modes: bool = True
) -> tuple[int, dict[str, bytes], dict[str, int]]:
    """Read what needs no key: schema version, plain metadata and row counts.

    ``modes=False`` reads a vault whose files have loose permissions (for
    destroy, which removes them anyway); links and other owners stay refused.
    """
    path = settings.paths.vault_file
    files.check_private(path.parent, directory=True, modes=modes)
    for file in files.sidecar_files(path):
        files.check_private(file, modes=modes)
    engine = db.create_engine(path)
    try:
        async with db.reading(engine) as conn:
            version = await db.read_schema_version(conn)
            db.check_not_too_new(version, path)
            meta = await _read_meta(conn) if version else {}
        counts = await _counts(engine) if version else {}
    finally:
        await engine.dispose()
    return version, meta, counts


async def destroy_vault(settings: Settings) -> list[str]:
    """Delete the vault's files and its key; return what was removed (paths and key entries)."""
    path = settings.paths.vault_file
    removed: list[str] = []
    meta: dict[str, bytes] = {}
    if path.exists():
        # Loose modes do not stop a destroy from finding the vault id, so the
        # keyring entry goes with the files; a link or another owner's file does.
        with contextlib.suppress(VaultError):
            _, meta, _ = await read_plain_meta(settings, modes=False)
    if _META_VAULT_ID in meta:
        kind = meta.get(_META_KEY_STORE, b"keyring").decode()
        vault_id = meta[_META_VAULT_ID].decode()
        if kind == "keyring":
            source: KeySource = KeyringKeySource(vault_id, timeout=settings.keyring_timeout)
            try:
                await source.delete()
                removed.append(f"keyring entry dashtam/vault-{vault_id}")
            except NoKeySource as exc:
                log.warning("could not remove the key from the keyring: %s", exc.message)
    for key_file in (
        settings.paths.key_file,
        settings.paths.key_file.with_name("vault.key.pending"),
    ):
        if key_file.exists():
            key_file.unlink()
            removed.append(str(key_file))
    for file in files.sidecar_files(path):
        if file.exists():
            file.unlink()
            removed.append(str(file))
    return removed
