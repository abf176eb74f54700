"""The `dashtam` command: global options; the commands themselves load lazily (cli/lazy.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from dashtam_cli import __version__
from dashtam_cli.cli import options, runtime
from dashtam_cli.cli.lazy import LazyGroup

__all__ = ["app"]

app = typer.Typer(
    name="dashtam",
    help=(
        "Aggregate your brokerage and bank data into one local encrypted vault, "
        "and script it. Data goes to stdout, everything else to stderr."
    ),
    cls=LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # `dashtam completion SHELL` prints the script: no --install-completion, which
    # would edit the user's shell files, nor --show-completion.
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dashtam {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    fmt: Annotated[str | None, options.FORMAT] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Log to stderr: -v for progress, -vv for debug detail and tracebacks.",
        ),
    ] = 0,
    no_color: Annotated[
        bool,
        typer.Option("--no-color", help="No colour on stderr or in tables (NO_COLOR is honoured)."),
    ] = False,
    version: Annotated[  # noqa: ARG001 - handled eagerly by its callback
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Aggregate your financial data into one local encrypted vault, and script it."""
    ctx.obj = runtime.State(verbose=verbose, format=fmt, no_color=no_color)
