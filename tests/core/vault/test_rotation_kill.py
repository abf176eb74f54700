"""Key rotation that fails or is killed at any stage leaves a vault that opens and loses nothing."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import pytest
from fake_keyrings import FileKeyring
from vault_seed import Seeded, assert_reads_back, seed

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.crypto import key_id_of
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable

    from fake_keyrings import MemoryKeyring

TESTS_DIR = Path(__file__).resolve().parents[2]
TRANSACTIONS = 200
MARKER_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 10.0


class InjectedFailure(Exception):
    """The failure a test injects into a rotation."""


def _key_id(encoded: str | None) -> str | None:
    """The key id of a base64url key as the keyring stores it."""
    if encoded is None:
        return None
    return key_id_of(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))).hex()


async def _create_and_seed() -> tuple[str, str, Seeded]:
    """Create the vault, fill it, and return its id, its key id and what was written."""
    async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
        seeded = await seed(vault, transactions=TRANSACTIONS)
        return vault.vault_id, vault.key_id, seeded


async def _reopen_and_check(seeded: Seeded) -> str:
    """Open the vault with default options, check every value, and return the key id in use."""
    async with open_vault(load_settings()) as vault:
        await assert_reads_back(vault, seeded)
        return vault.key_id


def _fail_at(stage: str, after: int) -> Callable[[str, int], None]:
    """A progress callback that raises at ``stage`` once ``after`` fields are done."""

    def on_progress(name: str, count: int) -> None:
        if name == stage and count >= after:
            raise InjectedFailure(f"{stage} at {count}")

    return on_progress


@pytest.mark.parametrize(
    ("stage", "committed"),
    [("resealed", False), ("committing", False), ("committed", True)],
)
def test_injected_failure_loses_nothing(
    memory_keyring: MemoryKeyring, stage: str, committed: bool
) -> None:
    """A rotation failing mid-transaction, before or after the commit, leaves one working key.

    Before the commit the old key stays; after it the reopen finishes the
    rotation with the pending key. Either way every sealed value reads back
    and no pending key is left in the keyring.
    """
    vault_id, old_key_id, seeded = asyncio.run(_create_and_seed())
    main_user, pending_user = f"vault-{vault_id}", f"vault-{vault_id}-pending"
    # Half-way through the re-sealing, so some rows are re-sealed in the open transaction.
    after = len(seeded.plaintexts) // 2 if stage == "resealed" else 0

    async def rotate() -> None:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            await vault.rotate_key(on_progress=_fail_at(stage, after))

    with pytest.raises(InjectedFailure):
        asyncio.run(rotate())

    entries = memory_keyring.entries
    assert _key_id(entries[("dashtam", main_user)]) == old_key_id
    pending = entries.get(("dashtam", pending_user))
    if committed:
        # Killed between the commit and the promotion: only the reopen can finish it.
        assert pending is not None
        assert _key_id(pending) != old_key_id
    new_key_id = _key_id(pending)

    key_id = asyncio.run(_reopen_and_check(seeded))

    assert key_id == (new_key_id if committed else old_key_id)
    assert ("dashtam", pending_user) not in memory_keyring.entries
    assert _key_id(memory_keyring.entries[("dashtam", main_user)]) == key_id


_ROTATOR = """
import asyncio
import pathlib
import sys
import time

tests_dir, keyring_file, stage, after, marker = sys.argv[1:6]
sys.path.insert(0, tests_dir)

import keyring
from fake_keyrings import FileKeyring, trust_test_backends

trust_test_backends()
keyring.set_keyring(FileKeyring(keyring_file))

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, open_vault


def on_progress(name, count):
    if name == stage and count >= int(after):
        # Written whole, then renamed: the test may kill us the moment the name appears.
        pathlib.Path(marker + ".tmp").write_text(f"{name} {count}")
        pathlib.Path(marker + ".tmp").replace(marker)
        while True:  # hold everything (the write lock too) until SIGKILL
            time.sleep(0.05)


async def main():
    async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
        await vault.rotate_key(on_progress=on_progress)


asyncio.run(main())
sys.exit("the rotation finished without reaching its stage")
"""


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (bounded) until the rotator reaches its stage; fail with its stderr if it died."""
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"rotator exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"rotator did not reach its stage in {MARKER_TIMEOUT_S} s")
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("stage", "committed"),
    [
        ("pending-stored", False),
        ("resealed", False),
        ("committing", False),
        ("committed", True),
    ],
)
def test_killed_rotation_loses_nothing(tmp_path: Path, stage: str, committed: bool) -> None:
    """A process SIGKILLed at any stage of a rotation leaves a vault that opens with one key.

    The rotator runs in a subprocess sharing a file-backed keyring; it stops
    at the stage (holding the write transaction for the middle stages) and is
    killed there. The vault then opens in this process, every sealed value
    reads back, and the pending key is gone.
    """
    keyring_file = tmp_path / "keyring.json"
    store = FileKeyring(keyring_file)
    keyring.set_keyring(store)  # the autouse memory keyring fixture restores its own afterwards
    vault_id, old_key_id, seeded = asyncio.run(_create_and_seed())
    main_user, pending_user = f"vault-{vault_id}", f"vault-{vault_id}-pending"

    script = tmp_path / "rotator.py"
    script.write_text(textwrap.dedent(_ROTATOR))
    marker = tmp_path / "reached"
    log = tmp_path / "rotator.log"
    after = len(seeded.plaintexts) // 2 if stage == "resealed" else 0
    args = [str(TESTS_DIR), str(keyring_file), stage, str(after), str(marker)]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=dict(os.environ),
            cwd=tmp_path,
        )
        try:
            _wait_for(marker, proc, log)
            pending_at_kill = store.get_password("dashtam", pending_user)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=EXIT_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text().split()[0] == stage

    # The kill left the keyring as it was mid-rotation: old key, and a pending one.
    assert _key_id(store.get_password("dashtam", main_user)) == old_key_id
    new_key_id = _key_id(pending_at_kill)
    assert new_key_id not in {None, old_key_id}

    key_id = asyncio.run(_reopen_and_check(seeded))

    assert key_id == (new_key_id if committed else old_key_id)
    assert store.get_password("dashtam", pending_user) is None
    assert _key_id(store.get_password("dashtam", main_user)) == key_id
