"""Run the console script's entry point in a fresh interpreter, with code before and after it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def probe_main(
    args: Sequence[str], *, before: str = "", after: str = ""
) -> subprocess.CompletedProcess[str]:
    """``dashtam ARGS`` through ``entry.main`` in a new ``python -c``: ``before``, main, ``after``.

    main's SystemExit is caught, so ``after`` runs; its output is the process's.
    """
    script = "\n".join(
        [
            "import sys",
            textwrap.dedent(before),
            "from dashtam_cli.cli.entry import main",
            f"sys.argv = ['dashtam', *{list(args)!r}]",
            "try:\n    main()\nexcept SystemExit:\n    pass",
            textwrap.dedent(after),
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
