"""Several processes writing one vault at once lose no write and corrupt nothing."""

from __future__ import annotations

import asyncio
import os
import select as io_wait
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
import sys

from sqlalchemy import select

from dashtam_cli.core import audit
from dashtam_cli.core.vault.db import insert
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

index, increments = int(sys.argv[1]), int(sys.argv[2])
meta = schema.vault_meta


async def increment(vault):
    # Read, then write what was read plus one: only the write lock taken by
    # BEGIN IMMEDIATE (an advisory lock on PostgreSQL) keeps two processes
    # from both writing n + 1.
    async with vault.writing() as conn:
        raw = await conn.scalar(select(meta.c.value).where(meta.c.key == "test_counter"))
        value = int(bytes(raw).decode()) if raw is not None else 0
        await asyncio.sleep(0.001)  # widen the window a missing lock would lose writes in
        new = str(value + 1).encode()
        stmt = insert(conn, meta).values(key="test_counter", value=new)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": new}))


async def main():
    async with open_vault(load_settings()) as vault:
        # Say so on stdout, then block until the test releases every worker at
        # once by writing a line to each one's stdin (end of file: it gave up).
        print("ready", flush=True)
        if sys.stdin.readline() != "go\\n":
            sys.exit("no start signal")
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


def _kill_all(procs: list[subprocess.Popen[str]]) -> None:
    """Kill and reap every worker still running, and close the pipes to every worker."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _wait_ready(procs: list[subprocess.Popen[str]], logs: list[Path]) -> None:
    """Block until every worker has opened the vault and said "ready" (bounded, for a hang)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for proc, log in zip(procs, logs, strict=True):
        assert proc.stdout is not None
        readable, _, _ = io_wait.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        if not readable:
            pytest.fail(f"workers not ready within {READY_TIMEOUT_S} s")
        if proc.stdout.readline() != "ready\n":
            proc.wait(timeout=10)
            pytest.fail(f"worker exited {proc.returncode} early:\n{log.read_text()}")


@pytest.mark.xdist_group("many_processes")
def test_concurrent_read_modify_write_loses_nothing(master_key: bytes, tmp_path: Path) -> None:
    """Six processes each increment one counter 25 times and log 25 audit entries, all at once.

    The counter is read and rewritten inside one vault.writing() transaction;
    any lost update would leave it short of 150. Every audit entry, from
    every worker, must be there once.

    Slow (over 10 s under coverage on a loaded 2-core machine) by design: six
    real processes contending for SQLite's write lock are what is tested.
    """
    del master_key  # sets DASHTAM_MASTER_KEY, which every worker inherits

    async def create() -> None:
        async with open_vault(load_settings(), OpenOptions(create=True)):
            pass

    asyncio.run(create())

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    logs = [tmp_path / f"worker-{i}.log" for i in range(PROCESSES)]
    procs: list[subprocess.Popen[str]] = []
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
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        env=dict(os.environ),
                        cwd=tmp_path,
                    )
                )
        _wait_ready(procs, logs)
        for proc in procs:  # the start signal, as close to at once as the test can send it
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc, log_path in zip(procs, logs, strict=True):
            assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, log_path.read_text()
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
            # SQLite checks its file; PostgreSQL has no such check to ask for.
            sqlite = conn.dialect.name == "sqlite"
            check = await conn.scalar(text("PRAGMA integrity_check")) if sqlite else "ok"
            entries = await audit.list_audit(vault)
            assert len(entries) == len(ids)
            assert raw is not None
            return int(bytes(raw).decode()), list(ids), str(check)

    counter, ids, integrity = asyncio.run(read())
    assert counter == PROCESSES * INCREMENTS
    assert len(ids) == PROCESSES * INCREMENTS
    assert set(ids) == {f"{p}:{i}" for p in range(PROCESSES) for i in range(INCREMENTS)}
    assert integrity == "ok"
