"""The vault operations behind `dashtam vault ...`, each returning a record for the CLI to show."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.models import (
    KeyExport,
    KeyImport,
    KeyRotation,
    PassphraseChange,
    VaultCopy,
    VaultInit,
    VaultStatus,
)
from dashtam_cli.core.vault import files
from dashtam_cli.core.vault.errors import VaultError
from dashtam_cli.core.vault.keys import ENV_KEY, ENV_NEW_PASSPHRASE, PassphraseKeySource
from dashtam_cli.core.vault.vault import OpenOptions, destroy_vault, open_vault, read_plain_meta

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from dashtam_cli.core.settings import Settings

__all__ = [
    "change_passphrase",
    "copy",
    "destroy",
    "export_key",
    "import_key",
    "init",
    "rotate_key",
    "status",
    "store_database_password",
]


def _database(settings: Settings) -> str | None:
    """The shared vault's URL with its password masked; None for the local vault."""
    if settings.database_url is None:
        return None
    from dashtam_cli.core.vault.database import masked_url

    return masked_url(settings.database_url)


async def init(settings: Settings, options: OpenOptions) -> VaultInit:
    """Create the vault and its key; on an existing vault, change nothing and say so."""
    shared = settings.database_url is not None
    path = None if shared else settings.paths.vault_file
    existed = False
    if shared or settings.paths.vault_file.exists():
        with contextlib.suppress(DashtamError):
            _, meta, _ = await read_plain_meta(settings)
            existed = "key_id" in meta
    opts = dataclasses.replace(options, create=not existed)
    async with open_vault(settings, opts) as vault:
        return VaultInit(
            created=not existed,
            path=path,
            database=_database(settings),
            vault_id=vault.vault_id,
            key_source=vault.key_source.description,
            key_id=vault.key_id,
        )


async def status(settings: Settings, options: OpenOptions) -> VaultStatus:
    """Report on the vault without changing it; problems are reported, not raised."""
    shared = settings.database_url is not None
    path = settings.paths.vault_file
    fields: dict[str, object] = dict.fromkeys(VaultStatus.model_fields)
    fields.update(path=None if shared else path, database=_database(settings), state="absent")
    if not shared and not path.exists():
        fields["hint"] = "create one with: dashtam vault init"
        return VaultStatus.model_validate(fields)
    if not shared:
        fields["size_bytes"] = sum(
            f.stat().st_size for f in files.sidecar_files(path) if f.exists()
        )
    try:
        version, meta, counts = await read_plain_meta(settings, size=shared)
        if shared and not version:
            fields["hint"] = "create one with: dashtam vault init"
            return VaultStatus.model_validate(fields)
        fields.update(schema_version=version, counts=counts)
        if "size_bytes" in meta:
            fields["size_bytes"] = int(meta["size_bytes"])
        if "vault_id" in meta:
            fields["vault_id"] = meta["vault_id"].decode()
        if "key_store" in meta:
            fields["key_store"] = meta["key_store"].decode()
        async with open_vault(settings, dataclasses.replace(options, create=False)) as vault:
            fields.update(
                state="ok",
                key_source=vault.key_source.description,
                keyring_backend=vault.key_source.backend_name(),
                key_id=vault.key_id,
                counts=await vault.counts(),
            )
    except DashtamError as exc:
        fields.update(state="error", error=exc.message, hint=exc.hint)
    return VaultStatus.model_validate(fields)


async def rotate_key(settings: Settings, options: OpenOptions) -> KeyRotation:
    """Re-seal the vault with a new master key."""
    opts = dataclasses.replace(options, create=False, exclusive=True)
    async with open_vault(settings, opts) as vault:
        result = await vault.rotate_key()
        return KeyRotation(
            old_key_id=result.old_key_id,
            new_key_id=result.new_key_id,
            fields_resealed=result.fields_resealed,
            damaged_rows=result.damaged_rows,
            key_source=vault.key_source.description,
        )


async def change_passphrase(
    settings: Settings, options: OpenOptions, *, new_prompt: Callable[[bool], str] | None
) -> PassphraseChange:
    """Wrap the vault's master key under a new passphrase; the vault's data is not touched.

    The old passphrase unlocks the key file (``DASHTAM_PASSPHRASE`` or the
    prompt); the new one comes from ``DASHTAM_NEW_PASSPHRASE`` or
    ``new_prompt`` (typed twice). The vault is held alone meanwhile, as for a
    key rotation, so no other process reads the key file half-way.
    """
    env = os.environ if options.environ is None else options.environ
    only_key_files = "only a vault whose key is in a passphrase-protected key file has a passphrase"
    if env.get(ENV_KEY, "").strip():
        raise VaultError(
            f"the master key comes from {ENV_KEY}, which has no passphrase to change",
            hint=f"{only_key_files}; unset {ENV_KEY} to change the key file's passphrase",
        )
    if settings.database_url is not None or settings.paths.vault_file.exists():
        _, meta, _ = await read_plain_meta(settings)
        # A shared vault's key is kept as this machine's setting says.
        kind = meta.get("key_store", b"").decode()
        if settings.database_url is not None and "key_store" in settings.sources:
            kind = settings.key_store
        if kind and kind != "passphrase":
            where = {"keyring": "the OS keyring", "env": ENV_KEY}.get(kind, kind)
            raise VaultError(
                f"this vault's master key is kept in {where}, not under a passphrase",
                hint=only_key_files,
            )
    opts = dataclasses.replace(options, create=False, exclusive=True)
    async with open_vault(settings, opts) as vault:
        source = vault.key_source
        if not isinstance(source, PassphraseKeySource):  # pragma: no cover - refused above
            raise VaultError(
                "this vault's master key is not under a passphrase", hint=only_key_files
            )
        key = await source.load()
        if key is None:  # pragma: no cover - open_vault has just unlocked it
            raise VaultError(f"the key file {source.path} went missing")
        await source.change_passphrase(key, variable=ENV_NEW_PASSPHRASE, prompt=new_prompt)
        return PassphraseChange(key_file=source.path, key_id=vault.key_id)


async def destroy(settings: Settings) -> list[str]:
    """Delete the vault and its key."""
    return await destroy_vault(settings)


async def export_key(settings: Settings, options: OpenOptions, destination: Path) -> KeyExport:
    """Write the vault's key, proved to open it, to a new 0600 file (never to standard output).

    The file is created exclusively: an existing file is never overwritten.
    """
    from dashtam_cli.core.vault.vault import export_key as read_key
    from dashtam_cli.core.vault.vault import key_text

    vault_id, key_id, key = await read_key(settings, options)
    line = key_text(vault_id, key) + "\n"
    try:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise VaultError(
            f"{destination} exists already; the key was not written",
            hint="give a new file to --output (dashtam never overwrites one with a key)",
        ) from None
    except OSError as exc:
        raise VaultError(
            f"cannot create {destination}: {exc.strerror or exc.__class__.__name__}",
            hint="give --output a file in a directory you can write",
        ) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return KeyExport(path=destination, vault_id=vault_id, key_id=key_id)


async def import_key(settings: Settings, options: OpenOptions, text: str) -> KeyImport:
    """Store an exported key here once it is proved to open the vault (else nothing is written)."""
    from dashtam_cli.core.vault.vault import import_key as store_key

    vault_id, key_id, source = await store_key(settings, options, text)
    return KeyImport(vault_id=vault_id, key_id=key_id, key_source=source)


async def copy(settings: Settings, options: OpenOptions, target: str) -> VaultCopy:
    """Copy the vault, sealed as it is, to an empty PostgreSQL database or a new SQLite file."""
    from dashtam_cli.core.vault.vault import copy_vault

    source, destination, counts = await copy_vault(settings, options, target)
    return VaultCopy(source=source, destination=destination, counts=counts)


async def store_database_password(settings: Settings, password: str) -> tuple[str, str]:
    """Keep the shared vault's database password in the OS keyring, then log in with it.

    For a URL with no password of its own and no pgpass line: dashtam then
    reads the password from the keyring. Returns the keyring entry and the
    masked URL.
    """
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.redact import register_secret
    from dashtam_cli.core.vault.database import keyring_entry, masked_url, password_of
    from dashtam_cli.core.vault.keys import KEYRING_SERVICE, store_keyring_text

    url = settings.database_url
    if url is None:
        raise InputError(
            "there is no shared vault to keep a password for (DASHTAM_DATABASE_URL is not set)",
            hint="set DASHTAM_DATABASE_URL or [database] url first (docs/shared-vault.md)",
        )
    if password_of(url):
        raise InputError(
            "the database URL holds a password already; the keyring's would never be used",
            hint="take the password out of the URL, then store it here",
        )
    secret = password.strip("\r\n")
    if not secret:
        raise InputError("no password was given", hint="type it at the prompt, or pipe it in")
    register_secret(secret)
    entry = keyring_entry(url)
    await store_keyring_text(entry, secret, timeout=settings.keyring_timeout)
    await read_plain_meta(settings)  # logs in with it: a wrong password is said now
    return f"{KEYRING_SERVICE}/{entry}", masked_url(url)
