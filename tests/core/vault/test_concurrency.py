"""Several processes writing one vault at once lose no write and corrupt nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select, text

from dashtam_cli.core import audit
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from pathlib import Path

PROCESSES = 6
INCREMENTS = 25
READY_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 120.0

_WORKER = """
import asyncio
import pathlib
import sys
import time

from sqlalchemy import select
from sqlalchemy.dialects.sqlite import insert

from dashtam_cli.core import audit
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

index, increments, ready, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
meta = schema.vault_meta


async def increment(vault):
    # Read, then write what was read plus one: only the write lock taken by
    # BEGIN IMMEDIATE keeps two processes from both writing n + 1.
    async with vault.writing() as conn:
        raw = await conn.scalar(select(meta.c.value).where(meta.c.key == "test_counter"))
        value = int(bytes(raw).decode()) if raw is not None else 0
        await asyncio.sleep(0.001)  # widen the window a missing lock would lose writes in
        new = str(value + 1).encode()
        stmt = insert(meta).values(key="test_counter", value=new)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": new}))


async def main():
    async with open_vault(load_settings()) as vault:
        pathlib.Path(ready).write_text("ready")
        deadline = time.monotonic() + 30
        while not pathlib.Path(go).exists():
            if time.monotonic() > deadline:
                sys.exit("no start signal within 30 s")
            await asyncio.sleep(0.005)
        for i in range(increments):
            await increment(vault)
            await audit.record(
                vault,
                operation="test.increment",
                outcome="ok",
                connection_name=f"worker-{index}",
                correlation_id=f"{index}:{i}",
            )


asyncio.run(main())
"""


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill and reap every worker still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(timeout=10)


def _wait_ready(ready: list[Path], procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Wait (bounded) until every worker has opened the vault."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(path.exists() for path in ready):
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"worker exited {proc.returncode} early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers not ready within {READY_TIMEOUT_S} s")
        time.sleep(0.02)


def test_concurrent_read_modify_write_loses_nothing(master_key: bytes, tmp_path: Path) -> None:
    """Six processes each increment one counter 25 times and log 25 audit entries, all at once.

    The counter is read and rewritten inside one vault.writing() transaction;
    any lost update would leave it short of 150. Every audit entry, from
    every worker, must be there once.
    """
    del master_key  # sets DASHTAM_MASTER_KEY, which every worker inherits

    async def create() -> None:
        async with open_vault(load_settings(), OpenOptions(create=True)):
            pass

    asyncio.run(create())

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    logs = [tmp_path / f"worker-{i}.log" for i in range(PROCESSES)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(PROCESSES):
            with logs[i].open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(script),
                            str(i),
                            str(INCREMENTS),
                            str(ready[i]),
                            str(go),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        env=dict(os.environ),
                        cwd=tmp_path,
                    )
                )
        _wait_ready(ready, procs, logs)
        go.touch()
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text()
    finally:
        _kill_all(procs)

    async def read() -> tuple[int, list[str], str]:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            meta = schema.vault_meta
            raw = await conn.scalar(select(meta.c.value).where(meta.c.key == "test_counter"))
            log = schema.audit_log
            ids = (
                await conn.scalars(
                    select(log.c.correlation_id).where(log.c.operation == "test.increment")
                )
            ).all()
            total = await conn.scalar(select(func.count()).select_from(log))
            assert total == len(ids)
            check = await conn.scalar(text("PRAGMA integrity_check"))
            entries = await audit.list_audit(vault)
            assert len(entries) == len(ids)
            return int(bytes(raw).decode()), list(ids), str(check)

    counter, ids, integrity = asyncio.run(read())
    assert counter == PROCESSES * INCREMENTS
    assert len(ids) == PROCESSES * INCREMENTS
    assert set(ids) == {f"{p}:{i}" for p in range(PROCESSES) for i in range(INCREMENTS)}
    assert integrity == "ok"
