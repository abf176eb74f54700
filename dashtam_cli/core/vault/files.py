"""Creation and checking of the vault's private directory and files (0700 and 0600)."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING

from dashtam_cli.core.vault.errors import UnsafeFiles

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "check_private",
    "create_private_file",
    "ensure_private_dir",
    "sidecar_files",
    "write_private_file",
]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing; check it if present."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; set it outright.
        path.chmod(0o700)
    check_private(path, directory=True)


def create_private_file(path: Path) -> None:
    """Create an empty file that only its owner can read, failing if it already exists.

    SQLite creates a database with mode 0644 under a normal umask; creating it
    first, 0600, makes SQLite's -wal and -shm files inherit the same mode.
    """
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, synced to disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sidecar_files(db: Path) -> list[Path]:
    """The database and the -wal, -shm and -journal files SQLite keeps beside it."""
    return [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def check_private(path: Path, *, directory: bool = False, modes: bool = True) -> None:
    """Refuse ``path`` if another user owns it or group or others may read or write it.

    The error names the command that fixes it. ``modes=False`` lets loose
    permissions pass (a symbolic link or another owner is still refused).
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFiles(
            f"{path} is a symbolic link; dashtam keeps its vault in real files only",
            hint=f"replace the link by the file: mv \"$(readlink -f '{path}')\" '{path}'",
        )
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise UnsafeFiles(
            f"{path} is owned by user id {info.st_uid}, not by you",
            hint=f"take it back if it is yours: sudo chown $(id -u):$(id -g) '{path}'",
        )
    if modes and info.st_mode & 0o077:
        wanted = "700" if directory else "600"
        mode = stat.S_IMODE(info.st_mode)
        raise UnsafeFiles(
            f"{path} has mode {mode:o}: other users may read it",
            hint=f"make it private: chmod {wanted} '{path}'",
        )
