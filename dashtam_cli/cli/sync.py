"""`dashtam sync`: fetch every connection into the vault, with progress and a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dashtam_cli.cli import options, prompts, runtime

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from dashtam_cli.core.results import FetchResult
    from dashtam_cli.core.sync import Progress


def on_terminal() -> bool:
    """Whether stderr is a terminal: progress and staleness notes are for people only."""
    import sys

    return sys.stderr.isatty()


def report_failures(ctx: typer.Context, outcome: FetchResult[Any]) -> None:
    """Each failure on its line (with its hint), then the exit code they mean: 3, 4 or 1.

    A failure the command did not need (``ignored``) is a warning and changes no exit code.
    """
    error = outcome.outcome(detail=False)
    if error is None and not outcome.ignored:
        return  # nothing to say: stderr's console (and rich) is not even built
    err = runtime.stderr(ctx)
    for failure in outcome.ignored:
        err.print(
            f"warning: {failure.label}: {failure.error.message} (not needed: the account "
            "was found in another connection)",
            markup=False,
            highlight=False,
        )
    if error is None:
        return
    for failure in outcome.failures:
        hint = f" ({failure.error.hint})" if failure.error.hint else ""
        err.print(f"{failure.label}: {failure.error.message}{hint}", markup=False, highlight=False)
    runtime.fail(ctx, error)


def _live(ctx: typer.Context, progress: Progress) -> AbstractContextManager[object]:
    """A progress line on stderr, redrawn while the sync runs."""
    from rich.live import Live
    from rich.text import Text

    class _Line:
        def __rich__(self) -> Text:
            return Text(
                f"syncing: {progress.connections_done}/{progress.connections} connections,"
                f" {progress.accounts_done}/{progress.accounts} accounts,"
                f" {progress.transactions} transactions fetched"
            )

    return Live(_Line(), console=runtime.stderr(ctx), refresh_per_second=8, transient=True)


def sync(
    ctx: typer.Context,
    connection: Annotated[list[str] | None, options.CONNECTIONS] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Fetch transactions from this date (default: where the last sync reached, "
            "less the overlap; the default history on a first sync).",
            metavar="DATE",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Fetch the whole default history again.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress and no summary table (for cron).")
    ] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Fetch every connection into the vault: accounts, balances, positions, transactions.

    Incremental: each sync fetches from where the last one reached, less an
    overlap (7 days by default) for late-posted and corrected transactions.
    Exit 3 when some connections or accounts failed (the rest is stored), 4
    when a login must be renewed (the command is printed).
    """
    import contextlib

    from dashtam_cli.core.models import SyncReport
    from dashtam_cli.core.sync import Progress, SyncOptions
    from dashtam_cli.core.sync import sync as run_sync

    progress = Progress()
    job = SyncOptions(
        connections=tuple(connection or ()),
        since=options.parse_when(since, option="--since"),
        full=full,
        progress=progress,
    )
    opts = prompts.open_options()
    show = not quiet and on_terminal()
    live: AbstractContextManager[object] = (
        _live(ctx, progress) if show else contextlib.nullcontext()
    )
    with live:
        result = runtime.run(ctx, lambda conf: run_sync(conf, job, opts))
    # --quiet prints the summary only when a format is asked for (cron mails stdout).
    if not quiet or fmt is not None:
        runtime.renderer(ctx, fmt).rows(SyncReport, result.reports)
    report_failures(ctx, result.outcome)
