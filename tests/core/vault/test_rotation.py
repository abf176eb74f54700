"""Key rotation in one process: exclusive use, damaged rows, and a key store that lies."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

import pytest
from fake_keyrings import MemoryKeyring
from vault_seed import Seeded, assert_reads_back, read_all, seed

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.crypto import key_id_of
from dashtam_cli.core.vault.errors import RecordTampered, UnsafeFiles, VaultError
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from pathlib import Path


def _create() -> tuple[str, Seeded]:
    """Create a keyring-keyed vault, fill it, and return its id and what was written."""

    async def run() -> tuple[str, Seeded]:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return vault.vault_id, await seed(vault, transactions=30)

    return asyncio.run(run())


def _key_id(encoded: str | None) -> str | None:
    """The key id of a base64url key as the keyring stores it."""
    if encoded is None:
        return None
    return key_id_of(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))).hex()


def _first_id(table: str) -> str:
    """The id of the first row of ``table`` in id order."""

    async def run() -> str:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            t = schema.metadata.tables[table]
            return str(await conn.scalar(t.select().with_only_columns(t.c.id).order_by(t.c.id)))

    return asyncio.run(run())


def _set_blob(table: str, row_id: str, field: str, value: object) -> None:
    """Overwrite one sealed column, as damage or an attacker would."""

    async def run() -> None:
        async with open_vault(load_settings()) as vault, vault.writing() as conn:
            # Plain SQL: SQLite keeps whatever type it is given, as a damaged file may.
            await conn.exec_driver_sql(
                f"UPDATE {table} SET {field} = ? WHERE id = ?",  # noqa: S608 - test names
                (value, row_id),
            )

    asyncio.run(run())


def _rotate() -> tuple[str, int]:
    """Rotate the key; return the new key id and the damaged rows reported."""

    async def run() -> tuple[str, int]:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            result = await vault.rotate_key()
            return result.new_key_id, result.damaged_rows

    return asyncio.run(run())


def test_rotation_needs_exclusive_use() -> None:
    """A vault opened for shared use refuses to rotate, and nothing changes."""
    _create()

    async def run() -> None:
        async with open_vault(load_settings()) as vault:
            await vault.rotate_key()

    with pytest.raises(VaultError, match="exclusive use"):
        asyncio.run(run())


@pytest.mark.parametrize(
    ("table", "value"),
    [("transactions", b"\x01" + b"\x00" * 40), ("positions", "text, not a blob"), ("accounts", 7)],
)
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_a_damaged_cache_row_does_not_stop_a_rotation(
    memory_keyring: MemoryKeyring, table: str, value: object
) -> None:
    """A cached row that fails its check is left as it was; everything else is re-sealed."""
    vault_id, seeded = _create()
    row_id = _first_id(table)
    field = "payload"
    _set_blob(table, row_id, field, value)

    new_key_id, damaged = _rotate()

    assert damaged == 1
    assert _key_id(memory_keyring.entries[("dashtam", f"vault-{vault_id}")]) == new_key_id

    async def check() -> None:
        async with open_vault(load_settings()) as vault:
            assert vault.key_id == new_key_id
            async with vault.reading() as conn:
                kept = await conn.exec_driver_sql(
                    f"SELECT {field} FROM {table} WHERE id = ?",  # noqa: S608 - test names
                    (row_id,),
                )
                assert kept.scalar() == value  # untouched, type and bytes
            with pytest.raises(RecordTampered):
                await read_all(vault)
            # Every other field opens under the new key.
            async with vault.reading() as conn:
                for (name, rid, fname), plain in seeded.plaintexts.items():
                    if (name, rid) == (table, row_id):
                        continue
                    blob = await conn.exec_driver_sql(
                        f"SELECT {fname} FROM {name} WHERE id = ?",  # noqa: S608 - test names
                        (rid,),
                    )
                    sealed = blob.scalar()
                    owner = await conn.exec_driver_sql(
                        f"SELECT {schema.OWNER_COLUMNS[name]} FROM {name} WHERE id = ?",  # noqa: S608
                        (rid,),
                    )
                    owner_id = owner.scalar()
                    assert sealed is not None
                    assert owner_id is not None
                    assert vault.unseal(name, rid, fname, sealed, owner=owner_id) == plain

    asyncio.run(check())


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_a_damaged_token_stops_the_rotation_and_keeps_the_old_key(
    memory_keyring: MemoryKeyring,
) -> None:
    """A token cannot be fetched again: its damage stops the rotation, which changes nothing."""
    vault_id, _ = _create()
    token_id = _first_id("tokens")
    _set_blob("tokens", token_id, "access_token", b"\x01" + b"\x00" * 40)
    old = memory_keyring.entries[("dashtam", f"vault-{vault_id}")]

    with pytest.raises(RecordTampered, match=f"tokens/{token_id}"):
        _rotate()

    assert memory_keyring.entries[("dashtam", f"vault-{vault_id}")] == old
    assert ("dashtam", f"vault-{vault_id}-pending") not in memory_keyring.entries


class ForgetfulKeyring(MemoryKeyring):
    """A keyring that, once armed, silently keeps its old value for the vault's main entry."""

    def __init__(self) -> None:
        """Start empty and unarmed."""
        super().__init__()
        self.armed = False

    def set_password(self, service: str, username: str, password: str) -> None:
        """Drop writes to the main entry while armed."""
        if self.armed and not username.endswith("-pending"):
            return
        super().set_password(service, username, password)


def test_a_key_store_that_does_not_keep_the_new_key_fails_the_rotation_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Success is reported only once the store holds the new key; else exit 1, pending kept.

    The next open, with a store that works again, finishes the rotation: the
    vault was committed under the new key and every field reads back.
    """
    import keyring

    from dashtam_cli.core.vault.keys import trust_keyring_backend

    trust_keyring_backend(ForgetfulKeyring)
    backend = ForgetfulKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    vault_id, seeded = _create()
    main, pending = ("dashtam", f"vault-{vault_id}"), ("dashtam", f"vault-{vault_id}-pending")
    old = backend.entries[main]
    backend.armed = True

    with pytest.raises(VaultError, match="sealed with the new key") as caught:
        _rotate()

    assert caught.value.exit_code == 1
    assert backend.entries[main] == old
    new_key_id = _key_id(backend.entries[pending])
    assert new_key_id not in {None, _key_id(old)}

    backend.armed = False

    async def reopen() -> str:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, seeded)
            return vault.key_id

    assert asyncio.run(reopen()) == new_key_id
    assert _key_id(backend.entries[main]) == new_key_id
    assert pending not in backend.entries


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_a_planted_link_as_the_vault_lock_is_refused(tmp_path: Path) -> None:
    """vault.lock as a symbolic link (another user's trap) stops the open with a clear error."""
    _create()
    lock = load_settings().paths.vault_file.with_name("vault.lock")
    lock.unlink()
    lock.symlink_to(tmp_path / "elsewhere")

    async def run() -> None:
        async with open_vault(load_settings()):
            pass

    with pytest.raises(UnsafeFiles, match="symbolic link"):
        asyncio.run(run())
    assert not (tmp_path / "elsewhere").exists()
