"""`dashtam doctor`: check the whole setup and print one verdict and its fix per check."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime


def doctor(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """Check versions, key source, vault, config, credentials, TLS and logins.

    Exits 0 when healthy, 1 when something is broken, 4 when a login must be
    renewed (and nothing is broken). A table on a terminal, JSON otherwise.
    """
    import asyncio

    from rich.console import Console

    from dashtam_cli.cli.output import Renderer
    from dashtam_cli.core.doctor import Check, doctor_exit_code, run_checks
    from dashtam_cli.core.errors import ExitCode

    state = ctx.obj
    opts = prompts.open_options()
    # Not runtime.run: that resolves the settings first and stops on a bad
    # config file, which is one of the things this command reports.
    try:
        checks = asyncio.run(run_checks(opts))
    except KeyboardInterrupt:
        runtime.stderr(ctx).print("interrupted", highlight=False)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    chosen = fmt or getattr(state, "format", None) or ("table" if sys.stdout.isatty() else "json")
    no_color = bool(getattr(state, "no_color", False)) or os.environ.get("NO_COLOR", "") != ""
    Renderer(fmt=chosen, console=Console(no_color=no_color, highlight=False)).rows(Check, checks)
    code = doctor_exit_code(checks)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))
