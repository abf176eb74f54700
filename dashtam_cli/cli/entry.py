"""The console-script entry point; it answers `--version` before importing typer."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the `dashtam` command."""
    if sys.argv[1:] == ["--version"]:
        # Scripts and package managers call this often; it needs no CLI framework.
        from dashtam_cli import __version__

        sys.stdout.write(f"dashtam {__version__}\n")
        return
    from dashtam_cli.cli.app import app

    app(prog_name="dashtam")
