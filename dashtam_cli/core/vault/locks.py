"""The vault's process lock: every open vault shares it; a key rotation holds it alone.

A key rotation must never overlap another process's use of the vault: an
opener that read the old key id could discard the rotation's pending key
(losing the vault), and one that sealed a value with the old key after the
rotation committed would leave a field no key opens. So:

- every opener holds a *shared* ``flock`` on ``vault.lock`` for as long as the
  vault is open;
- a rotation (and a destroy) holds it *exclusively*, from before the pending
  key is stored until the new key is confirmed in its store;
- a second file, ``vault.gate``, is taken exclusively for a moment by each
  opener on its way to the shared lock, and held by a rotation for all of
  its run, so that a rotation waiting for the current openers to finish is
  not starved by new ones, and new openers wait for the rotation;
- finishing or discarding an interrupted rotation's pending key happens only
  under ``vault.recover``, an exclusive lock held for the few calls it takes,
  while the shared lock proves no rotation is running.

``flock`` locks belong to an open file, so the kernel drops them when a
process dies: a killed rotation leaves its pending key, never a stale lock.
Waits are bounded, polled (so a Ctrl-C is never stuck in a blocking call),
and say on stderr, through logging, what they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.vault.errors import VaultBusy
from dashtam_cli.core.vault.files import ensure_private_dir, open_lock_file

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from dashtam_cli.core.errors import DashtamError

__all__ = [
    "OPEN_WAIT_S",
    "ROTATE_WAIT_S",
    "exclusive_file",
    "exclusive_use",
    "lock_files",
    "recovering",
    "shared_use",
]

log = logging.getLogger(__name__)

# An opener waits this long for a running rotation (a rotation re-seals about
# 100,000 fields a second here, so this covers vaults of tens of millions).
OPEN_WAIT_S: Final = 600.0
# A rotation waits this long for the commands already using the vault.
ROTATE_WAIT_S: Final = 120.0
# How long a wait stays quiet before it says what it waits for.
_QUIET_S: Final = 1.0
_POLL_S: Final = 0.02
_POLL_MAX_S: Final = 0.2


def _lock_paths(vault_file: Path) -> tuple[Path, Path, Path]:
    base = vault_file.parent
    return base / "vault.lock", base / "vault.gate", base / "vault.recover"


def lock_files(vault_file: Path) -> tuple[Path, ...]:
    """The lock files beside the vault."""
    return _lock_paths(vault_file)


async def poll(  # noqa: PLR0913 - each wait names what it waits for
    take: Callable[[], Awaitable[bool]],
    *,
    timeout: float,  # noqa: ASYNC109 - polled, not a blocking call with a timeout
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> None:
    """Call ``take`` until it gets the lock (True), backing off; say ``waiting`` once it shows.

    Past ``timeout``, ``error(failure, hint=hint)``. A wait without ``waiting``
    stays quiet. Each try returns at once, so the wait has a bound and a
    Ctrl-C is never stuck in a blocking call (a file lock here, a shared
    vault's advisory lock in :mod:`.database`).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    announced = False
    delay = _POLL_S
    while not await take():
        elapsed = loop.time() - start
        if elapsed > timeout:
            raise error(failure, hint=hint)
        if waiting is not None and not announced and elapsed >= _QUIET_S:
            log.warning("%s (waiting up to %d s)", waiting, round(timeout))
            announced = True
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX_S)


async def _acquire(  # noqa: PLR0913 - each wait names what it waits for
    fd: int,
    operation: int,
    *,
    timeout: float,  # noqa: ASYNC109 - polled, not a blocking call with a timeout
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> None:
    """Take ``flock(operation)`` on ``fd``, polling (see :func:`poll`)."""

    async def take() -> bool:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    await poll(take, timeout=timeout, waiting=waiting, failure=failure, hint=hint, error=error)


@contextlib.asynccontextmanager
async def shared_use(vault_file: Path, *, timeout: float = OPEN_WAIT_S) -> AsyncIterator[None]:  # noqa: ASYNC109
    """Hold the vault open alongside other openers; wait for a rotation in progress."""
    lock_path, gate_path, _ = _lock_paths(vault_file)
    lock_fd = open_lock_file(lock_path)
    try:
        gate_fd = open_lock_file(gate_path)
        try:
            await _acquire(
                gate_fd,
                fcntl.LOCK_EX,
                timeout=timeout,
                waiting="another dashtam process is rotating the vault's key; waiting for it",
                failure=f"another dashtam process kept the vault locked for over {timeout:g} s "
                "(a key rotation or a destroy)",
                hint="wait for `dashtam vault rotate-key` to finish, then run the command again",
            )
            try:
                # A rotation takes the gate before this lock, so holding the gate
                # means no rotation holds this one: the shared lock comes at once.
                await _acquire(
                    lock_fd,
                    fcntl.LOCK_SH,
                    timeout=timeout,
                    waiting="another dashtam process holds the vault alone; waiting for it",
                    failure=f"the vault stayed locked for over {timeout:g} s",
                    hint="wait for the other dashtam command to finish, then run this one again",
                )
            finally:
                fcntl.flock(gate_fd, fcntl.LOCK_UN)
        finally:
            os.close(gate_fd)
        yield
    finally:
        os.close(lock_fd)  # closing the file releases its lock


@contextlib.asynccontextmanager
async def exclusive_use(vault_file: Path, *, timeout: float = ROTATE_WAIT_S) -> AsyncIterator[None]:  # noqa: ASYNC109
    """Hold the vault alone: new openers wait, and this waits for the current ones to close."""
    lock_path, gate_path, _ = _lock_paths(vault_file)
    gate_fd = open_lock_file(gate_path)
    try:
        await _acquire(
            gate_fd,
            fcntl.LOCK_EX,
            timeout=timeout,
            waiting="another dashtam process is rotating or destroying the vault; waiting for it",
            failure=f"another dashtam process kept the vault locked for over {timeout:g} s",
            hint="wait for it to finish, then run the command again",
        )
        lock_fd = open_lock_file(lock_path)
        try:
            await _acquire(
                lock_fd,
                fcntl.LOCK_EX,
                timeout=timeout,
                waiting="waiting for the other dashtam commands using the vault to finish "
                "(new ones wait for this one)",
                failure=f"other dashtam commands kept the vault open for over {timeout:g} s; "
                "nothing was changed",
                hint="stop them (a running sync or dashboard, say) and run the command again",
            )
            yield
        finally:
            os.close(lock_fd)
    finally:
        os.close(gate_fd)


@contextlib.asynccontextmanager
async def recovering(vault_file: Path, *, timeout: float = 60.0) -> AsyncIterator[None]:  # noqa: ASYNC109
    """Serialise the openers that finish or discard an interrupted rotation's pending key."""
    _, _, recover_path = _lock_paths(vault_file)
    fd = open_lock_file(recover_path)
    try:
        await _acquire(
            fd,
            fcntl.LOCK_EX,
            timeout=timeout,
            waiting="another dashtam process is finishing an interrupted key rotation; waiting",
            failure=f"another dashtam process held the key recovery lock for over {timeout:g} s",
            hint="run the command again; if it persists, check for a hung dashtam process",
        )
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def exclusive_file(  # noqa: PLR0913 - the lock, what it waits for, and how it fails
    path: Path,
    *,
    timeout: float,  # noqa: ASYNC109 - polled, not a blocking call with a timeout
    waiting: str | None,
    failure: str,
    hint: str,
    error: type[DashtamError] = VaultBusy,
) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (0600, in a 0700 directory).

    Waits up to ``timeout`` seconds for another holder, saying ``waiting``
    on stderr once the wait is noticeable (unless it is None); then
    ``error`` (a VaultBusy by default) with ``failure``.
    """
    ensure_private_dir(path.parent)
    fd = open_lock_file(path)
    try:
        await _acquire(
            fd,
            fcntl.LOCK_EX,
            timeout=timeout,
            waiting=waiting,
            failure=failure,
            hint=hint,
            error=error,
        )
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
