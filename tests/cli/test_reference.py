"""docs/cli.md is generated from the commands and must not drift from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dashtam_cli.cli.reference import main, render

if TYPE_CHECKING:
    import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    """The committed reference equals what the commands generate now."""
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: run `uv run nox -s docs` "
        "(or `uv run python -m dashtam_cli.cli.reference docs/cli.md`)"
    )


def test_reference_documents_every_command() -> None:
    """Every command of the root group has its section, and the global options are listed."""
    from dashtam_cli.cli.lazy import COMMANDS

    text = render()
    for name in COMMANDS:
        assert f"## `dashtam {name}`" in text, name
    for option in ("--format", "--verbose", "--no-color", "--version"):
        assert option in text, option


def test_generator_writes_the_file_or_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m dashtam_cli.cli.reference PATH` writes the reference; without PATH it prints it."""
    target = tmp_path / "cli.md"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render()
    assert main([]) == 0
    assert capsys.readouterr().out == render()
