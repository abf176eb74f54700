"""The vault's less travelled paths: check_key, rotation recovery, failed creations, destroy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import sqlite3
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import crypto, files, locks
from dashtam_cli.core.vault import vault as vault_module
from dashtam_cli.core.vault.errors import (
    KeyMissing,
    RecordTampered,
    VaultError,
    VaultNotFound,
    WrongKey,
)
from dashtam_cli.core.vault.keys import KeyringKeySource
from dashtam_cli.core.vault.vault import (
    OpenOptions,
    check_key,
    destroy_vault,
    open_vault,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fake_keyrings import MemoryKeyring


def _encode(key: bytes) -> str:
    """A key as the keyring stores it (unpadded base64url)."""
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def _decode(encoded: str) -> bytes:
    """The raw key of a keyring entry."""
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def _create() -> str:
    """Create a keyring-keyed vault and return its id."""

    async def run() -> str:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return vault.vault_id

    return asyncio.run(run())


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    """A plain connection to the vault file, committed and closed after the block."""
    with contextlib.closing(sqlite3.connect(load_settings().paths.vault_file)) as db, db:
        yield db


def _check() -> str:
    """Run check_key on the vault of the current settings."""
    return asyncio.run(check_key(load_settings()))


# check_key ---------------------------------------------------------------------------


def test_check_key_names_the_keyring_of_a_sound_vault() -> None:
    """A vault whose key is in the keyring passes the check, which names the keyring."""
    _create()
    assert "keyring" in _check()


def test_check_key_refuses_a_vault_never_initialised() -> None:
    """An empty database file (a creation stopped at once) is reported as never initialised."""
    path = load_settings().paths.vault_file
    files.ensure_private_dir(path.parent)
    files.create_private_file(path)
    with pytest.raises(VaultNotFound, match="never initialised"):
        _check()


def test_check_key_reports_a_key_missing_from_the_keyring(memory_keyring: MemoryKeyring) -> None:
    """With the keyring entry gone the check raises KeyMissing, naming where it looked."""
    vault_id = _create()
    del memory_keyring.entries[("dashtam", f"vault-{vault_id}")]
    with pytest.raises(KeyMissing, match="keyring"):
        _check()


def test_check_key_refuses_another_key(memory_keyring: MemoryKeyring) -> None:
    """A keyring entry holding another key is WrongKey, not a pass."""
    vault_id = _create()
    memory_keyring.entries[("dashtam", f"vault-{vault_id}")] = _encode(crypto.new_key())
    with pytest.raises(WrongKey):
        _check()


def test_check_key_recognises_an_interrupted_rotation(memory_keyring: MemoryKeyring) -> None:
    """The vault's key waiting as the pending one is reported as a rotation to finish.

    The check changes nothing: the pending entry is still there afterwards.
    """
    vault_id = _create()
    user = ("dashtam", f"vault-{vault_id}")
    pending = ("dashtam", f"vault-{vault_id}-pending")
    memory_keyring.entries[pending] = memory_keyring.entries[user]
    memory_keyring.entries[user] = _encode(crypto.new_key())
    assert "interrupted rotation" in _check()
    assert pending in memory_keyring.entries


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_check_key_refuses_a_tampered_key_check() -> None:
    """A key check that the right key does not open is RecordTampered."""
    _create()
    with _db() as db:
        db.execute("UPDATE vault_meta SET value = ? WHERE key = 'key_check'", (b"\x02" * 60,))
    with pytest.raises(RecordTampered, match="key_check"):
        _check()


# seal format -------------------------------------------------------------------------


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_an_unreadable_seal_format_is_tampering() -> None:
    """A seal_format that is not a number refuses to open, rather than guessing a format."""
    _create()
    with _db() as db:
        db.execute("UPDATE vault_meta SET value = ? WHERE key = 'seal_format'", (b"\xff",))

    async def run() -> None:
        async with open_vault(load_settings()):
            pass

    with pytest.raises(RecordTampered, match="seal_format"):
        asyncio.run(run())


def test_upgrade_needs_exclusive_use_and_is_idempotent() -> None:
    """Shared use cannot upgrade; an exclusive upgrade of a format-2 vault does nothing."""
    _create()

    async def run() -> int:
        async with open_vault(load_settings()) as vault:
            with pytest.raises(VaultError, match="exclusive"):
                await vault.upgrade_seal_format()
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            return await vault.upgrade_seal_format()

    assert asyncio.run(run()) == 0


# rotation recovery ---------------------------------------------------------------------


def test_rotation_of_an_environment_key_is_refused(master_key: bytes) -> None:
    """A key from DASHTAM_MASTER_KEY cannot rotate; the refusal says why, the key is kept."""
    _create()

    async def run() -> None:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            await vault.rotate_key()

    with pytest.raises(VaultError, match="DASHTAM_MASTER_KEY"):
        asyncio.run(run())
    assert "DASHTAM_MASTER_KEY" in _check()
    assert crypto.key_id_of(master_key).hex()


def _rotate() -> str:
    """Rotate the key; return the new key id."""

    async def run() -> str:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            return (await vault.rotate_key()).new_key_id

    return asyncio.run(run())


def test_a_pending_key_that_vanishes_is_stored_again(
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key store that loses the pending key on promotion still ends with the new key.

    The rotation has the key in memory and stores it outright; the vault opens afterwards.
    """
    vault_id = _create()

    async def lose_pending(self: KeyringKeySource) -> None:
        await self.discard_pending()

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(KeyringKeySource, "promote_pending", lose_pending)
        new_id = _rotate()
    assert "went missing" in caplog.text
    stored = memory_keyring.entries[("dashtam", f"vault-{vault_id}")]
    assert crypto.key_id_of(_decode(stored)).hex() == new_id
    assert "keyring" in _check()


def test_a_key_store_that_keeps_nothing_fails_the_rotation_loudly(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that neither promotes nor saves: the error says the key is kept as pending.

    Once the store works again, opening the vault finishes the rotation.
    """
    vault_id = _create()

    async def nothing(self: KeyringKeySource, *_args: object) -> None:
        del self

    with monkeypatch.context() as patch:
        patch.setattr(KeyringKeySource, "promote_pending", nothing)
        patch.setattr(KeyringKeySource, "save", nothing)
        with pytest.raises(VaultError, match="does not hold it after the rotation") as err:
            _rotate()
    assert "pending key" in err.value.message
    pending = memory_keyring.entries[("dashtam", f"vault-{vault_id}-pending")]

    async def reopen() -> None:
        async with open_vault(load_settings()):
            pass

    asyncio.run(reopen())
    stored = memory_keyring.entries[("dashtam", f"vault-{vault_id}")]
    assert stored == pending
    assert ("dashtam", f"vault-{vault_id}-pending") not in memory_keyring.entries


def test_an_interrupted_rotation_whose_store_will_not_promote_is_reported(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finishing a stopped rotation on a store that will not promote fails with a hint.

    The pending key is kept, so nothing is lost.
    """
    vault_id = _create()
    user = ("dashtam", f"vault-{vault_id}")
    pending = ("dashtam", f"vault-{vault_id}-pending")
    memory_keyring.entries[pending] = memory_keyring.entries[user]
    memory_keyring.entries[user] = _encode(crypto.new_key())

    async def nothing(self: KeyringKeySource) -> None:
        del self

    monkeypatch.setattr(KeyringKeySource, "promote_pending", nothing)

    async def reopen() -> None:
        async with open_vault(load_settings()):
            pass

    with pytest.raises(VaultError, match="could not make the rotated key current"):
        asyncio.run(reopen())
    assert pending in memory_keyring.entries


# failed creations ----------------------------------------------------------------------


def test_holds_key_id_answers_yes_when_in_doubt(tmp_path: Path) -> None:
    """Only a file that surely records no key id may be removed as a half-made vault."""
    assert vault_module._holds_key_id(tmp_path / "absent") is False
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert vault_module._holds_key_id(empty) is False
    tableless = tmp_path / "tableless.db"
    sqlite3.connect(tableless).execute("CREATE TABLE other (x)").connection.close()
    assert vault_module._holds_key_id(tableless) is False
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all, " * 100)
    assert vault_module._holds_key_id(garbage) is True
    unopenable = tmp_path / "dir.db"
    unopenable.mkdir()
    assert vault_module._holds_key_id(unopenable) is True


def test_a_failed_creation_leaves_a_vault_alone_when_its_lock_is_unsafe(tmp_path: Path) -> None:
    """Cleanup that cannot take the lock safely (a planted link) removes nothing."""
    home = tmp_path / "v"
    home.mkdir(mode=0o700)
    path = home / "vault.db"
    path.write_bytes(b"")
    lock = locks.lock_files(path)[0]
    lock.symlink_to(tmp_path / "elsewhere")
    attempt = vault_module._Attempt(created_file=True)
    asyncio.run(vault_module._discard_failed_creation(path, attempt))
    assert path.exists()


def test_a_failed_creation_deletes_only_its_new_key(memory_keyring: MemoryKeyring) -> None:
    """An attempt that made a key but not the file deletes the key and keeps the file."""
    path = load_settings().paths.vault_file
    files.ensure_private_dir(path.parent)
    files.create_private_file(path)
    memory_keyring.entries[("dashtam", "vault-x")] = _encode(crypto.new_key())
    source = KeyringKeySource("x", timeout=5)
    attempt = vault_module._Attempt(new_key=source)
    asyncio.run(vault_module._discard_failed_creation(path, attempt))
    assert ("dashtam", "vault-x") not in memory_keyring.entries
    assert path.exists()


def test_a_failed_creation_that_cannot_unlink_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An OSError while removing the half-made files is logged, never raised over the cause."""
    path = load_settings().paths.vault_file
    files.ensure_private_dir(path.parent)
    files.create_private_file(path)

    def refuse(self: Path, *, missing_ok: bool = False) -> None:
        del self, missing_ok
        raise PermissionError(13, "refused")

    attempt = vault_module._Attempt(created_file=True)
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(type(path), "unlink", refuse)
        asyncio.run(vault_module._discard_failed_creation(path, attempt))
    assert "could not remove the half-made vault" in caplog.text
    assert path.exists()


# destroy ---------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_destroy_goes_ahead_past_an_unsafe_lock_file(
    tmp_path: Path, memory_keyring: MemoryKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    """A planted link as the lock file does not keep a vault from being destroyed.

    The link itself (someone else's file, perhaps) is left alone.
    """
    vault_id = _create()
    path = load_settings().paths.vault_file
    target = tmp_path / "victim"
    target.write_text("keep")
    for lock in locks.lock_files(path):
        lock.unlink(missing_ok=True)
        lock.symlink_to(target)
    with caplog.at_level(logging.WARNING):
        removed = asyncio.run(destroy_vault(load_settings()))
    assert "without the vault's lock" in caplog.text
    assert str(path) in removed
    assert not path.exists()
    assert ("dashtam", f"vault-{vault_id}") not in memory_keyring.entries
    assert target.read_text() == "keep"
    assert all(lock.is_symlink() for lock in locks.lock_files(path))


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_destroy_removes_key_files_and_survives_a_broken_keyring(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Key files (and a pending one) are removed; a keyring that fails is only a warning."""
    _create()
    settings = load_settings()
    key_file = settings.paths.key_file
    pending = key_file.with_name("vault.key.pending")
    key_file.write_text("k")
    pending.write_text("p")
    from dashtam_cli.core.vault.errors import NoKeySource

    async def broken(self: KeyringKeySource) -> None:
        del self
        raise NoKeySource("no keyring here")

    monkeypatch.setattr(KeyringKeySource, "delete", broken)
    with caplog.at_level(logging.WARNING):
        removed = asyncio.run(destroy_vault(settings))
    assert str(key_file) in removed
    assert str(pending) in removed
    assert not key_file.exists()
    assert not pending.exists()
    assert not any(r.startswith("keyring entry") for r in removed)
    assert "could not remove the key from the keyring" in caplog.text
    assert list(settings.paths.vault_file.parent.iterdir()) == []


def test_destroy_with_no_vault_removes_nothing() -> None:
    """Destroying where no vault was ever made succeeds and reports nothing removed."""
    assert asyncio.run(destroy_vault(load_settings())) == []
    assert not load_settings().paths.vault_file.parent.exists()


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_destroy_of_an_environment_keyed_vault_touches_no_keyring(
    master_key: bytes, memory_keyring: MemoryKeyring
) -> None:
    """A vault keyed by DASHTAM_MASTER_KEY has no keyring entry to delete: none is reported."""
    del master_key
    _create()
    memory_keyring.entries[("dashtam", "unrelated")] = "kept"
    removed = asyncio.run(destroy_vault(load_settings()))
    assert str(load_settings().paths.vault_file) in removed
    assert not any(r.startswith("keyring entry") for r in removed)
    assert memory_keyring.entries == {("dashtam", "unrelated"): "kept"}


# opening what is not (yet) a vault -----------------------------------------------------------


def _open() -> None:
    """Open the vault of the current settings for shared use, without creating it."""

    async def run() -> None:
        async with open_vault(load_settings()):
            pass

    asyncio.run(run())


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_an_empty_vault_file_is_not_opened_as_a_vault() -> None:
    """An empty database (a creation stopped at once) opens only with create: no tables appear."""
    path = load_settings().paths.vault_file
    files.ensure_private_dir(path.parent)
    files.create_private_file(path)
    with pytest.raises(VaultNotFound, match="never initialised"):
        _open()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_a_vault_without_a_key_id_is_not_opened(memory_keyring: MemoryKeyring) -> None:
    """A vault whose key id was lost is never initialised again by a plain open."""
    _create()
    with _db() as db:
        db.execute("DELETE FROM vault_meta WHERE key = 'key_id'")
    before = dict(memory_keyring.entries)
    with pytest.raises(VaultNotFound, match="never initialised"):
        _open()
    assert memory_keyring.entries == before
