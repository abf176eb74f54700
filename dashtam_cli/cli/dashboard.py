"""`dashtam dashboard`: the vault's figures in a read-only page on 127.0.0.1, or in one file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dashtam_cli.cli import prompts, runtime

if TYPE_CHECKING:
    from collections.abc import Callable


def _asked_once(prompt: Callable[[bool], str] | None) -> Callable[[bool], str] | None:
    """The passphrase prompt, asked once: each page opens the vault again, asking no more."""
    if prompt is None:
        return None
    answers: list[str] = []

    def ask(confirm: bool) -> str:
        if not answers:
            answers.append(prompt(confirm))
        return answers[0]

    return ask


def dashboard(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Listen on this port of 127.0.0.1 (0: a free one).",
            show_default=False,
        ),
    ] = 0,
    no_browser: Annotated[
        bool,
        typer.Option("--no-browser", help="Print the address (with its one-time token) on stderr."),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="Write the pages to one self-contained HTML file (mode 0600) instead.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Net worth, cash flow, accounts, positions and transactions in your browser, read-only.

    It serves on 127.0.0.1 only and opens your browser at an address holding a
    one-time token, exchanged for a session cookie; any other request is
    refused. It never syncs and never writes the vault. Ctrl-C stops it.
    """
    import dataclasses

    from dashtam_cli.core.dashboard import server

    plain = prompts.open_options()
    opts = dataclasses.replace(plain, prompt=_asked_once(plain.prompt))
    err = runtime.stderr(ctx)
    if export is not None:
        runtime.run(ctx, lambda conf: server.export(conf, opts, export))
        err.print(
            f"note: {export} holds your financial data in the clear (mode 0600); keep it private",
            markup=False,
            highlight=False,
        )
        return

    async def ready(url: str) -> None:
        if no_browser:
            err.print(f"dashboard: {url}", markup=False, highlight=False, soft_wrap=True)
        else:
            import asyncio
            import webbrowser

            await asyncio.to_thread(webbrowser.open, url)
            err.print(
                "dashboard opened in your browser (--no-browser prints its address instead)",
                markup=False,
                highlight=False,
            )
        err.print("Ctrl-C stops it", markup=False, highlight=False)

    runtime.run(ctx, lambda conf: server.serve(conf, opts, port=port, on_ready=ready))
