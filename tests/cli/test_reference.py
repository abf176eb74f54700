"""docs/cli.md is generated from the commands and must not drift from them."""

from __future__ import annotations

from pathlib import Path

from dashtam_cli.cli.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    """The committed reference equals what the commands generate now."""
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: run `uv run nox -s docs` "
        "(or `uv run python -m dashtam_cli.cli.reference docs/cli.md`)"
    )


def test_reference_documents_every_command() -> None:
    """Every command of the root group has its section."""
    from dashtam_cli.cli.lazy import COMMANDS

    text = render()
    for name in COMMANDS:
        assert f"## `dashtam {name}`" in text, name
