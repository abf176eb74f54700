"""Output into a pipe that closes early (`| head -1`): quiet, whatever dashtam was writing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sandbox_support import login

if TYPE_CHECKING:
    from sandbox_support import RunningSandbox

DASHTAM = Path(sys.executable).parent / "dashtam"


@pytest.fixture
def logged_in(
    dashtam_at_sandbox: RunningSandbox, isolated_env: Path, master_key: bytes
) -> RunningSandbox:
    """Dashtam logged in to the sandbox as 'schwab', its key in DASHTAM_MASTER_KEY for any process."""
    del master_key
    login(dashtam_at_sandbox, isolated_env)
    return dashtam_at_sandbox


@pytest.mark.usefixtures("logged_in")
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_closed_pipe_prints_nothing_on_stderr(fmt: str) -> None:
    """`dashtam transactions list -f jsonl | head -1`: one line out, nothing on stderr, exit 1.

    The output (hundreds of kilobytes) is far larger than a pipe's buffer, so
    dashtam is still writing when ``head`` exits.
    """
    shell = shutil.which("bash")
    assert shell is not None
    command = f"'{DASHTAM}' transactions list --since 2000-01-01 -f {fmt} | head -1"
    result = subprocess.run(
        [shell, "-c", f'{command}; echo "${{PIPESTATUS[0]}}" >&2'],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
    if fmt == "jsonl":
        assert "amount" in json.loads(result.stdout)
    # Nothing from dashtam on stderr; its exit status is 1, as documented: the
    # output was not all delivered (a script with `set -o pipefail` sees it).
    assert result.stderr == "1\n"
