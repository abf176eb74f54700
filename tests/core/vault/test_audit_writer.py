"""The background audit writer batches entries without losing, reordering or leaking any."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

import pytest

from dashtam_cli.core import audit
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.errors import VaultError
from dashtam_cli.core.vault.vault import OpenOptions, Vault, open_vault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from dashtam_cli.core.models import AuditEntry

pytestmark = pytest.mark.usefixtures("master_key")


def run(job: Callable[[Vault], Awaitable[Any]]) -> Any:
    """Open a new vault and run ``job`` on it."""

    async def scenario() -> Any:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(scenario())


def count_writes(vault: Vault) -> list[int]:
    """Count the write transactions ``vault`` opens from now on (one list item each)."""
    original = vault.writing
    opened: list[int] = []

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        opened.append(1)
        async with original() as conn:
            yield conn

    # Replaced on this instance only, to watch or break its write transactions.
    vault.writing = counted  # type: ignore[method-assign]
    return opened


def test_entries_from_concurrent_tasks_all_land_in_fewer_writes() -> None:
    """Fifty calls at once: fifty rows, in far fewer write transactions than fifty."""

    async def job(vault: Vault) -> tuple[list[AuditEntry], int, int]:
        writes = count_writes(vault)

        async def call(n: int) -> None:
            await asyncio.sleep(0)
            writer.add(operation=f"schwab.op{n}", outcome="ok", http_status=200, duration_ms=n)

        async with audit.AuditWriter(vault) as writer:
            await asyncio.gather(*(call(n) for n in range(50)))
        return await audit.list_audit(vault), len(writes), writer.written

    entries, writes, written = run(job)
    assert sorted(e.duration_ms or 0 for e in entries) == list(range(50))
    assert {e.operation for e in entries} == {f"schwab.op{n}" for n in range(50)}
    assert written == 50
    # Batched: far fewer write transactions than entries (one per entry before).
    assert writes < 50


def test_each_entry_is_stamped_when_added_not_when_written() -> None:
    """The time is the call's, not the batch's."""
    early = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    async def job(vault: Vault) -> list[AuditEntry]:
        async with audit.AuditWriter(vault) as writer:
            writer.add(operation="first", outcome="ok", at=early)
            writer.add(operation="second", outcome="ok")
        return await audit.list_audit(vault)

    before = dt.datetime.now(dt.UTC)
    entries = run(job)
    times = {e.operation: e.time for e in entries}
    assert times["first"] == early
    assert times["second"] >= before - dt.timedelta(seconds=1)


def test_entries_are_redacted_before_they_are_queued() -> None:
    """A registered secret in a detail is stored as ***."""
    secret = "tok-3f9a1c77e2b04d5f"
    register_secret(secret)

    async def job(vault: Vault) -> list[AuditEntry]:
        async with audit.AuditWriter(vault) as writer:
            writer.add(operation="schwab.accounts", outcome="error", detail=f"echoed {secret}")
        return await audit.list_audit(vault)

    (entry,) = run(job)
    assert entry.detail is not None
    assert secret not in entry.detail
    assert "***" in entry.detail


def test_a_failed_write_is_raised_once_when_the_block_ends() -> None:
    """The work is not cut short by a failed audit write, but its end reports it."""

    async def job(vault: Vault) -> tuple[str, list[AuditEntry]]:
        @contextlib.asynccontextmanager
        async def broken() -> AsyncIterator[Any]:
            msg = "disk full"
            raise VaultError(msg)
            yield  # type: ignore[unreachable]  # pragma: no cover - only makes this a generator

        original = vault.writing
        # Replaced on this instance only, to watch or break its write transactions.
        vault.writing = broken  # type: ignore[method-assign]
        writer = audit.AuditWriter(vault)
        with pytest.raises(VaultError) as caught:
            async with writer:
                writer.add(operation="schwab.accounts", outcome="ok")
        vault.writing = original  # type: ignore[method-assign]  # the real method back
        # Reported once: a later flush with nothing queued is quiet.
        await writer.flush()
        return str(caught.value), await audit.list_audit(vault)

    message, entries = run(job)
    assert "disk full" in message
    assert entries == []


def test_nothing_queued_means_no_write_at_all() -> None:
    """An idle writer costs no write transaction."""

    async def job(vault: Vault) -> int:
        writes = count_writes(vault)
        async with audit.AuditWriter(vault):
            pass
        return len(writes)

    assert run(job) == 0


class WatchedLock(asyncio.Lock):
    """The vault's write lock, with an event set when a task has to wait for it."""

    def __init__(self) -> None:
        """Start unlocked and uncontended."""
        super().__init__()
        self.contended = asyncio.Event()

    async def acquire(self) -> Literal[True]:
        """Take the lock, noting first whether someone else holds it."""
        if self.locked():
            self.contended.set()
        return await super().acquire()


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_write_transactions_of_one_process_never_overlap() -> None:
    """A second writer waits on the in-process lock, not in SQLite's busy handler.

    SQLite would serialize the two anyway, but only after the second has
    taken a connection and gone to sleep in its busy handler (in steps of up
    to 100 ms); here it takes no connection until the first has ended.
    """

    async def job(vault: Vault) -> tuple[list[str], int]:
        events: list[str] = []
        first_inside = asyncio.Event()
        pool = vault.engine.sync_engine.pool
        in_use: list[int] = []
        lock = WatchedLock()
        vault._write_lock = lock

        async def first() -> None:
            async with vault.writing():
                events.append("first in")
                first_inside.set()
                # Until the second writer is queued on the in-process lock. A writer
                # that skipped the lock would never queue: the bound turns that hang
                # into a failure.
                await asyncio.wait_for(lock.contended.wait(), 60)
                # The engine's pool is a QueuePool, typed as the base Pool without checkedout().
                in_use.append(pool.checkedout())  # type: ignore[attr-defined]
                events.append("first out")

        async def second() -> None:
            await first_inside.wait()
            async with vault.writing():
                events.append("second in")

        await asyncio.gather(first(), second())
        return events, in_use[0]

    events, connections_in_use = run(job)
    assert events == ["first in", "first out", "second in"]
    assert connections_in_use == 1


def test_a_provider_detail_is_stored_as_one_clean_bounded_line() -> None:
    """A detail with escapes, controls, an encoded secret and an account number is sanitized."""
    register_secret("R0.audit/refresh+token@")

    async def job(vault: Vault) -> list[Any]:
        await audit.record(
            vault,
            operation="schwab.accounts",
            outcome="error",
            correlation_id="corr\x1b[2J-1",
            detail="\x1b[31mno\x1b[0m\r\naccount 12345678 for R0.audit%2Frefresh%2Btoken%40"
            + " x" * 2000,
        )
        return await audit.list_audit(vault)

    (entry,) = run(job)
    assert entry.correlation_id == "corr-1"
    assert entry.detail is not None
    assert entry.detail.startswith("no account *** for *** x x")
    assert len(entry.detail) <= 500
