"""The vault's directory is 0700 and its files 0600; anything looser, or foreign, is refused."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import files
from dashtam_cli.core.vault.errors import UnsafeFiles
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

# Local vault only: the local vault file's modes and sidecars.
pytestmark = pytest.mark.sqlite_only

if TYPE_CHECKING:
    from pathlib import Path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def normal_umask() -> object:
    """Run with the common umask 022, under which SQLite would create 0644 files."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("master_key")
def test_new_vault_is_private_including_wal_and_shm() -> None:
    """The data dir is 0700; the database, -wal and -shm files are 0600 while the vault is open."""
    settings = load_settings()

    async def scenario() -> dict[str, int]:
        async with open_vault(settings, OpenOptions(create=True)) as vault:
            async with vault.writing() as conn:
                await conn.exec_driver_sql("INSERT INTO vault_meta VALUES ('probe', x'00')")
            modes = {p.name: _mode(p) for p in settings.paths.data_dir.iterdir()}
            modes["dir"] = _mode(settings.paths.data_dir)
            return modes

    modes = asyncio.run(scenario())
    assert modes == {
        "dir": 0o700,
        "vault.sqlite3": 0o600,
        "vault.sqlite3-wal": 0o600,
        "vault.sqlite3-shm": 0o600,
        "vault.lock": 0o600,
        "vault.gate": 0o600,
    }


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize(
    ("target", "mode", "fix"),
    [("data", 0o755, "chmod 700"), ("db", 0o644, "chmod 600"), ("db", 0o660, "chmod 600")],
)
def test_loose_modes_are_refused_with_the_fix(target: str, mode: int, fix: str) -> None:
    """A directory or database open to others is refused; the hint is the chmod that fixes it."""
    settings = load_settings()

    async def create() -> None:
        async with open_vault(settings, OpenOptions(create=True)):
            pass

    asyncio.run(create())
    path = settings.paths.data_dir if target == "data" else settings.paths.vault_file
    path.chmod(mode)
    before = settings.paths.vault_file.read_bytes()

    async def reopen() -> None:
        async with open_vault(settings):
            pass

    with pytest.raises(UnsafeFiles) as caught:
        asyncio.run(reopen())
    assert f"{fix} '{path}'" in (caught.value.hint or "")
    assert f"{mode:o}" in caught.value.message
    assert settings.paths.vault_file.read_bytes() == before


def test_unsafe_sidecar_is_refused(tmp_path: Path) -> None:
    """A -wal file readable by the group is refused like the database itself."""
    wal = tmp_path / "vault.sqlite3-wal"
    wal.write_bytes(b"")
    wal.chmod(0o640)
    with pytest.raises(UnsafeFiles, match="640"):
        files.check_private(wal)


def test_file_of_another_owner_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file owned by another user id is refused, with a chown hint."""
    path = tmp_path / "vault.sqlite3"
    files.create_private_file(path)
    monkeypatch.setattr(os, "geteuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(UnsafeFiles, match="owned by user id") as caught:
        files.check_private(path)
    assert "chown" in (caught.value.hint or "")


def test_symlink_is_refused(tmp_path: Path) -> None:
    """The vault must be a real file, not a link that could point anywhere."""
    real = tmp_path / "elsewhere.sqlite3"
    files.create_private_file(real)
    link = tmp_path / "vault.sqlite3"
    link.symlink_to(real)
    with pytest.raises(UnsafeFiles, match="symbolic link"):
        files.check_private(link)


def test_create_private_file_is_exclusive_and_0600(tmp_path: Path) -> None:
    """The database file is created 0600 whatever the umask, and never over an existing file."""
    path = tmp_path / "f"
    files.create_private_file(path)
    assert _mode(path) == 0o600
    with pytest.raises(FileExistsError):
        files.create_private_file(path)


def test_write_private_file_replaces_atomically(tmp_path: Path) -> None:
    """A private file is replaced whole, 0600, with no temporary file left behind."""
    path = tmp_path / "vault.key"
    files.write_private_file(path, b"one")
    files.write_private_file(path, b"two")
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.key"]


def test_ensure_private_dir_creates_0700_parents(tmp_path: Path) -> None:
    """A missing data dir is made 0700 even under umask 022."""
    path = tmp_path / "a" / "b"
    files.ensure_private_dir(path)
    assert _mode(path) == 0o700


def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    """When the target cannot be replaced (a directory is there), the temporary copy is removed."""
    path = tmp_path / "vault.key"
    path.mkdir()
    (path / "inside").write_bytes(b"kept")
    with pytest.raises(OSError, match=r"Is a directory|Directory not empty"):
        files.write_private_file(path, b"secret")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.key"]
    assert (path / "inside").read_bytes() == b"kept"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """A FIFO planted as the lock file is refused with the command that removes it, never locked."""
    path = tmp_path / "vault.lock"
    os.mkfifo(path, 0o600)
    with pytest.raises(UnsafeFiles, match="is not a regular file") as caught:
        files.open_lock_file(path)
    assert f"rm -r '{path}'" in (caught.value.hint or "")


def test_a_lock_file_of_another_owner_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file another user owns is refused with the command that removes it."""
    path = tmp_path / "vault.lock"
    path.write_bytes(b"")
    monkeypatch.setattr(os, "geteuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(UnsafeFiles, match="owned by user id") as caught:
        files.open_lock_file(path)
    assert "sudo rm" in (caught.value.hint or "")


def test_a_loose_lock_file_is_made_private(tmp_path: Path) -> None:
    """A lock file others could open is narrowed to 0600 before it is used."""
    path = tmp_path / "vault.lock"
    path.write_bytes(b"")
    path.chmod(0o666)
    fd = files.open_lock_file(path)
    os.close(fd)
    assert _mode(path) == 0o600


def test_a_link_to_a_trusted_file_is_checked_at_both_ends(tmp_path: Path) -> None:
    """A link of yours to a file of yours passes; the same link to a group-writable file does not."""
    real = tmp_path / "real.toml"
    real.write_bytes(b"")
    real.chmod(0o644)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    files.check_trusted(link, what="config file")
    real.chmod(0o664)
    with pytest.raises(UnsafeFiles, match="other users may change it"):
        files.check_trusted(link, what="config file")


def test_without_user_ids_the_owner_checks_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the OS has no user ids (Windows) the owner checks pass; the mode check still applies."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"")
    path.chmod(0o644)
    monkeypatch.delattr(os, "geteuid")
    files.check_trusted(path, what="config file")
    path.chmod(0o666)
    with pytest.raises(UnsafeFiles, match="other users may change it"):
        files.check_trusted(path, what="config file")
