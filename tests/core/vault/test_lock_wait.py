"""A write that waits for another process's lock on the vault says so while it waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core import audit
from dashtam_cli.core.credentials import list_providers
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

# Local vault only: the local vault's file locks and SQLite's busy wait.
pytestmark = pytest.mark.sqlite_only

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAITING = "waiting for another dashtam process to release the vault"
DEADLINE_S = 120.0  # a guard against a hang on a busy machine, not a timing check


def _create_vault() -> Path:
    async def create() -> Path:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return vault.path

    return asyncio.run(create())


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer: a plain SQLite connection holding BEGIN IMMEDIATE until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.usefixtures("master_key")
def test_a_write_that_waits_for_the_lock_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """While another connection holds the write lock, a write logs that it is waiting, then goes on.

    The lock is released only once the warning is there, so the write must
    both say it waits and complete (the audit entry is written) afterwards.
    """
    path = _create_vault()

    async def main() -> int:
        async with open_vault(load_settings()) as vault:
            with write_lock(path):
                write = asyncio.ensure_future(
                    audit.record(vault, operation="test.wait", outcome="ok")
                )
                deadline = time.monotonic() + DEADLINE_S
                while not any(WAITING in r.getMessage() for r in caplog.records):
                    if write.done():
                        pytest.fail(f"the write ended without saying it waited: {write!r}")
                    assert time.monotonic() < deadline, "no waiting message"
                    await asyncio.sleep(0.02)
                assert not write.done()  # still waiting: the lock is still held
            await write
            return len(await audit.list_audit(vault))

    with caplog.at_level(logging.WARNING, logger="dashtam_cli.core.vault.db"):
        assert asyncio.run(main()) == 1
    (record,) = {r.getMessage()[: len(WAITING)] for r in caplog.records}
    assert record == WAITING
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.usefixtures("master_key")
def test_a_command_waiting_for_the_lock_says_so_on_stderr(tmp_path: Path) -> None:
    """A real `dashtam` process that must write while another holds the lock tells the user so.

    The message is on stderr while the command waits; once the lock is
    released, the command completes (exit 0) and its write is there.
    """
    path = _create_vault()
    err_path = tmp_path / "stderr"
    with write_lock(path), err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dashtam_cli",
                "providers",
                "configure",
                "schwab",
                "--client-id",
                "dashtam-test-app-key-000000000000",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"the-test-secret\n")
            proc.stdin.close()
            deadline = time.monotonic() + DEADLINE_S
            while WAITING not in err_path.read_text():
                if proc.poll() is not None:
                    pytest.fail(
                        f"exited {proc.returncode} without the message: {err_path.read_text()}"
                    )
                assert time.monotonic() < deadline, "no waiting message"
                time.sleep(0.02)
            assert proc.poll() is None  # still waiting for the lock
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    assert proc.wait(timeout=DEADLINE_S) == 0, err_path.read_text()

    async def stored() -> dict[str, str | None]:
        async with open_vault(load_settings()) as vault:
            return {p.name: p.credentials for p in await list_providers(vault, environ={})}

    assert asyncio.run(stored())["schwab"] == "vault"


@pytest.mark.usefixtures("master_key")
def test_opening_an_up_to_date_vault_takes_no_write_lock(caplog: pytest.LogCaptureFixture) -> None:
    """A command that only reads opens and reads while another process holds the write lock.

    Opening checks for migrations to apply; on an up-to-date vault that
    check reads, so it neither waits for the writer nor says it waits.
    """
    path = _create_vault()

    async def read() -> int:
        async with open_vault(load_settings()) as vault:
            return len(await audit.list_audit(vault))

    with caplog.at_level(logging.WARNING, logger="dashtam_cli.core.vault.db"), write_lock(path):
        assert asyncio.run(read()) == 0
    assert not [r for r in caplog.records if WAITING in r.getMessage()]
