"""Global options (-v, --no-color, --format) work before or after the command."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import CliCall

# A setting that does not parse: every command fails with a one-line error (exit 1).
BROKEN = {"DASHTAM_FORMAT": "xml"}


@pytest.mark.parametrize(
    "args",
    [
        ["-vv", "paths"],
        ["paths", "-vv"],
        ["-v", "paths", "-v"],
        ["audit", "list", "-vv"],
        ["vault", "-vv", "status"],
    ],
)
def test_verbose_before_or_after_the_command(cli: CliCall, args: list[str]) -> None:
    """-vv (counted wherever it is given) adds the traceback to the one-line error."""
    plain = cli(*[a for a in args if not a.startswith("-v")], env=BROKEN)
    assert plain.exit_code == 1
    assert "error:" in plain.stderr
    assert "Traceback" not in plain.stderr
    loud = cli(*args, env=BROKEN)
    assert loud.exit_code == 1
    assert "Traceback" in loud.stderr


@pytest.mark.parametrize("args", [["--no-color", "paths"], ["paths", "--no-color"]])
def test_no_color_before_or_after_the_command(cli: CliCall, args: list[str]) -> None:
    """--no-color, here or there, removes the colour a forced-colour terminal would get."""
    coloured = cli("paths", env={**BROKEN, "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert "31m" in coloured.stderr  # red
    plain = cli(*args, env={**BROKEN, "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert plain.exit_code == 1
    assert "error:" in plain.stderr
    assert "31m" not in plain.stderr


@pytest.mark.parametrize("args", [["-f", "csv", "paths"], ["paths", "-f", "csv"]])
def test_format_before_or_after_the_command(cli: CliCall, args: list[str]) -> None:
    """--format given before the command is the same as after it."""
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "name,path,exists"
    as_json = cli("paths", "--format", "json")
    assert len(json.loads(as_json.stdout)) == len(result.stdout.splitlines()) - 1
