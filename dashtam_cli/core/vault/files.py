"""Creation and checking of the vault's private directory and files (0700 and 0600)."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING

from dashtam_cli.core.vault.errors import UnsafeFiles, VaultError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "check_private",
    "check_trusted",
    "create_private_file",
    "ensure_private_dir",
    "open_lock_file",
    "sidecar_files",
    "write_private_file",
]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask; check ``path``.

    A place where no directory can be made (a file in the way, a read-only
    file system, no permission) is a VaultError naming it, not an OSError.
    """
    try:
        missing = _missing_dirs(path)
        for directory in missing:
            with contextlib.suppress(FileExistsError):  # another process made it first
                directory.mkdir(mode=0o700)
                # mkdir's mode is filtered by the umask; set it outright.
                directory.chmod(0o700)
        info = path.lstat()
    except (OSError, ValueError) as exc:
        raise VaultError(
            f"cannot create the directory {path}: {getattr(exc, 'strerror', None) or exc}",
            hint="point DASHTAM_HOME at a directory you can write (dashtam paths shows them all)",
        ) from None
    check_private(path, directory=True)
    if not stat.S_ISDIR(info.st_mode):
        raise VaultError(
            f"{path} is not a directory",
            hint="move the file aside, or point DASHTAM_HOME elsewhere",
        )


def _missing_dirs(path: Path) -> list[Path]:
    """The directories to create for ``path`` to exist, outermost first."""
    missing: list[Path] = []
    for directory in (path, *path.parents):
        try:
            directory.lstat()
        except FileNotFoundError:
            missing.append(directory)
        else:
            break
    return missing[::-1]


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


def check_trusted(path: Path, *, what: str) -> None:
    """Refuse a file dashtam trusts (not secret) if another user could have changed it.

    ``path`` may be a symbolic link: the link (and its directory) and the file
    it resolves to (and that file's directory) are all checked. The file must
    be yours, a regular file, and not writable by group or others; a directory
    must belong to you or root and not be writable by others unless it is
    sticky (like /tmp, where others cannot replace your files). A missing
    file passes. ``what`` names the file in the message ("config file").
    """
    try:
        link = path.lstat()
        real = path.resolve(strict=True)
        info = real.stat()
    except FileNotFoundError:
        return
    except RuntimeError:  # Python 3.11 and 3.12 report a loop of links so
        raise UnsafeFiles(
            f"the {what} {path} is a loop of symbolic links", hint="point it at a real file"
        ) from None
    if stat.S_ISLNK(link.st_mode):
        _check_trusted_owner(path, link.st_uid, what=f"{what} (a symbolic link)")
        _check_trusted_dir(path.parent, what=what)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFiles(
            f"cannot read {what} {real}: not a regular file", hint="point it at a file"
        )
    _check_trusted_owner(real, info.st_uid, what=what)
    if info.st_mode & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        raise UnsafeFiles(
            f"the {what} {real} has mode {mode:o}: other users may change it",
            hint=f"make it writable by you only: chmod go-w '{real}'",
        )
    _check_trusted_dir(real.parent, what=what)


def _check_trusted_owner(path: Path, uid: int, *, what: str) -> None:
    if hasattr(os, "geteuid") and uid != os.geteuid():
        raise UnsafeFiles(
            f"the {what} {path} is owned by user id {uid}, not by you",
            hint=f"if it is yours, take it back: sudo chown $(id -u) '{path}'",
        )


def _check_trusted_dir(directory: Path, *, what: str) -> None:
    if not hasattr(os, "geteuid"):
        return
    info = directory.stat()
    if info.st_uid not in {os.geteuid(), 0}:
        raise UnsafeFiles(
            f"the directory {directory} of the {what} is owned by user id {info.st_uid}, "
            "who could replace the file",
            hint=f"keep the {what} in a directory of yours",
        )
    if info.st_mode & 0o002 and not info.st_mode & stat.S_ISVTX:
        raise UnsafeFiles(
            f"the directory {directory} of the {what} is writable by every user",
            hint=f"make it private: chmod o-w '{directory}'",
        )


def open_lock_file(path: Path) -> int:
    """Open (creating it 0600) a lock file and return its descriptor; never through a link.

    A symbolic link, a file that is not regular, or one another user owns or
    may open is refused: following a planted link would let another user
    block dashtam or have it create files where they choose.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafeFiles(
                f"the lock file {path} is a symbolic link; dashtam does not follow it",
                hint=f"remove the link (a lock file holds nothing): rm '{path}'",
            ) from None
        raise UnsafeFiles(
            f"cannot open the lock file {path}: {exc.strerror or exc}",
            hint=f"remove it if it is in the way (a lock file holds nothing): rm -r '{path}'",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFiles(  # noqa: TRY301 - closed below like every refusal
                f"the lock file {path} is not a regular file",
                hint=f"remove it (a lock file holds nothing): rm -r '{path}'",
            )
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise UnsafeFiles(  # noqa: TRY301
                f"the lock file {path} is owned by user id {info.st_uid}, not by you",
                hint=f"remove it (a lock file holds nothing): sudo rm '{path}'",
            )
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd
