"""Writing an export to a file: 0600 from the first byte, replacing the old file only when whole."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["write_export"]


def write_export(path: Path, pieces: Iterable[str]) -> None:
    """Write ``pieces`` to ``path`` through a private temporary file renamed over it.

    The file is created 0600 (never readable by others, not even for a
    moment) and replaces ``path`` only once complete: an export that fails
    half-way leaves the old file as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
