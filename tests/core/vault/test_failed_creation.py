"""A vault creation that fails or is interrupted leaves no half-made vault file behind."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import keyring.backends.fail
import pytest
from fake_keyrings import MemoryKeyring, PlaintextFileKeyring

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import locks
from dashtam_cli.core.vault import vault as vault_module
from dashtam_cli.core.vault.errors import KeyringUnavailable, NoKeySource, VaultError
from dashtam_cli.core.vault.files import create_private_file, ensure_private_dir, sidecar_files
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

# Local vault only: what a failed creation leaves of the local vault file.
pytestmark = pytest.mark.sqlite_only

if TYPE_CHECKING:
    from conftest import CliCall

DASHTAM = Path(sys.executable).parent / "dashtam"
PASSPHRASE = "a long enough passphrase"


def _vault_file(home: Path) -> Path:
    return home / "data" / "vault.sqlite3"


def _left_behind(home: Path) -> list[Path]:
    """The vault's database files and key files that exist."""
    vault = _vault_file(home)
    candidates = [*sidecar_files(vault), vault.with_name("vault.key")]
    candidates.append(vault.with_name("vault.key.pending"))
    return [path for path in candidates if path.exists()]


@pytest.mark.parametrize(
    "backend",
    [keyring.backends.fail.Keyring, PlaintextFileKeyring],
    ids=["no-keyring", "plaintext-keyring"],
)
def test_a_refused_keyring_leaves_no_vault_file(
    cli: CliCall, isolated_env: Path, backend: type[keyring.backend.KeyringBackend]
) -> None:
    """`vault init` with an untrusted keyring backend exits 1 and removes the file it made."""
    keyring.set_keyring(backend())
    result = cli("vault", "init")
    assert result.exit_code == 1
    assert "keyring" in result.stderr
    assert _left_behind(isolated_env) == []


def test_a_passphrase_prompt_that_times_out_leaves_no_vault_file(isolated_env: Path) -> None:
    """A prompt nobody answers ends the creation with its timeout, and the file is gone."""
    answered = threading.Event()

    def prompt(_confirm: bool) -> str:
        answered.wait(30)
        return PASSPHRASE

    options = OpenOptions(
        create=True, key_store="passphrase", prompt=prompt, environ={}, prompt_timeout=0.2
    )

    async def create() -> None:
        async with open_vault(load_settings(), options):
            pass

    try:
        with pytest.raises(NoKeySource, match="no passphrase was typed"):
            asyncio.run(create())
    finally:
        answered.set()
    assert _left_behind(isolated_env) == []


def test_a_failure_after_the_key_was_written_removes_the_key_file_too(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails after the key file was made takes the key file with the database."""

    async def full_disk(*_args: object, **_kwargs: object) -> None:
        raise VaultError("database or disk is full")

    monkeypatch.setattr(vault_module, "_write_meta", full_disk)
    options = OpenOptions(
        create=True, key_store="passphrase", environ={"DASHTAM_PASSPHRASE": PASSPHRASE}
    )

    async def create() -> None:
        async with open_vault(load_settings(), options):
            pass

    with pytest.raises(VaultError, match="disk is full"):
        asyncio.run(create())
    assert _left_behind(isolated_env) == []


def test_a_keyring_entry_made_by_the_failed_attempt_is_removed(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    """The keyring entry of a creation that failed after storing its key goes with the file."""

    async def full_disk(*_args: object, **_kwargs: object) -> None:
        raise VaultError("database or disk is full")

    monkeypatch.setattr(vault_module, "_write_meta", full_disk)

    async def create() -> None:
        async with open_vault(load_settings(), OpenOptions(create=True, environ={})):
            pass

    with pytest.raises(VaultError, match="disk is full"):
        asyncio.run(create())
    assert _left_behind(isolated_env) == []
    assert memory_keyring.entries == {}


def test_a_database_file_that_existed_before_is_kept(isolated_env: Path) -> None:
    """A failed creation removes only what it made: an empty file found there stays."""
    vault = _vault_file(isolated_env)
    ensure_private_dir(vault.parent)
    create_private_file(vault)
    keyring.set_keyring(keyring.backends.fail.Keyring())

    async def create() -> None:
        async with open_vault(load_settings(), OpenOptions(create=True, environ={})):
            pass

    with pytest.raises(KeyringUnavailable):
        asyncio.run(create())
    assert vault.exists()


def test_a_vault_that_holds_a_key_id_is_never_removed(isolated_env: Path) -> None:
    """Even told it made the file, the clean-up leaves a vault that records a key id."""

    async def create() -> None:
        async with open_vault(load_settings(), OpenOptions(create=True, environ={})):
            pass

    asyncio.run(create())
    vault = _vault_file(isolated_env)
    attempt = vault_module._Attempt(created_file=True)
    asyncio.run(vault_module._discard_failed_creation(vault, attempt))
    assert vault.exists()
    assert next(p.name for p in _left_behind(isolated_env)) == "vault.sqlite3"


def test_a_file_another_process_has_open_is_left_to_it(isolated_env: Path) -> None:
    """While another opener holds the vault (it may be finishing the creation), nothing goes."""
    vault = _vault_file(isolated_env)
    ensure_private_dir(vault.parent)
    create_private_file(vault)
    attempt = vault_module._Attempt(created_file=True)

    async def discard_while_shared() -> None:
        async with locks.shared_use(vault):
            await vault_module._discard_failed_creation(vault, attempt)

    asyncio.run(discard_while_shared())
    assert vault.exists()
    asyncio.run(vault_module._discard_failed_creation(vault, attempt))
    assert not vault.exists()


def test_ctrl_c_at_the_passphrase_prompt_leaves_no_vault_file(tmp_path: Path) -> None:
    """SIGINT to `vault init --key-store passphrase` at its prompt: exit 130, no vault file."""
    home = tmp_path / "home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "user"),
        "LANG": "C.UTF-8",
        "DASHTAM_HOME": str(home),
    }
    if "PYTHONPATH" in os.environ:  # a run against another checkout of dashtam
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(DASHTAM), "vault", "init", "--key-store", "passphrase"],
        env=env,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        start_new_session=True,  # no controlling terminal: the prompt uses the pty
    )
    os.close(terminal)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"Vault passphrase" not in seen and time.monotonic() < deadline:
            seen += os.read(controller, 1024)
        assert b"Vault passphrase" in seen
        assert _vault_file(home).exists()  # the attempt has made its file
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(controller)
        if process.stdout is not None:
            process.stdout.close()
    assert _left_behind(home) == []
