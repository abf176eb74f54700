"""`dashtam tokens status|refresh`: see and renew every connection's tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime
from dashtam_cli.cli.completion import connection_names
from dashtam_cli.core.errors import ExitCode

tokens_app = typer.Typer(
    name="tokens",
    help="See token lifetimes and refresh access tokens (cron-friendly).",
    no_args_is_help=True,
)

NAME = typer.Argument(
    help="Only this connection (default: all).",
    show_default=False,
    autocompletion=connection_names,
)


@tokens_app.command("status")
def status(
    ctx: typer.Context,
    name: Annotated[str | None, NAME] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Show access- and refresh-token expiry per connection, and what to do.

    Exits 4 when a connection shown needs a new login, 0 otherwise.
    """
    from dashtam_cli.core.models import TokenState, TokenStatus
    from dashtam_cli.core.tokens import status_report

    opts = prompts.open_options()
    report = runtime.run(ctx, lambda conf: status_report(conf, name, opts))
    runtime.renderer(ctx, fmt).rows(TokenStatus, report)
    if any(row.state == TokenState.REAUTH_REQUIRED for row in report):
        err = runtime.stderr(ctx)
        for row in report:
            if row.state == TokenState.REAUTH_REQUIRED:
                err.print(f"{row.connection}: {row.action}", markup=False, highlight=False)
        raise typer.Exit(int(ExitCode.REAUTH))


@tokens_app.command("refresh")
def refresh(
    ctx: typer.Context,
    name: Annotated[str | None, NAME] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every connection (the default without NAME).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Refresh even access tokens that are still fresh.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print nothing on success (for cron); problems still go to stderr.",
        ),
    ] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Refresh access tokens that expire within 5 minutes (all of them with --force).

    Exit codes: 0 when every connection ends with a valid access token, 4 when
    one needs a new login (the command is printed), 3 when only some succeeded.
    Warns when a refresh token expires within 24 hours. Connections whose
    provider's credential does not expire are skipped ("does not expire").
    """
    from dashtam_cli.core.models import RefreshResult, RefreshState
    from dashtam_cli.core.providers import relogin_command
    from dashtam_cli.core.tokens import REFRESH_WARNING, refresh_connections

    if all_ and name is not None:
        raise typer.BadParameter("give a connection name or --all, not both", param_hint="--all")
    opts = prompts.open_options()
    results = runtime.run(ctx, lambda conf: refresh_connections(conf, name, opts, force=force))
    err = runtime.stderr(ctx)
    now = dt.datetime.now(dt.UTC)
    for row in results:
        if row.result == RefreshState.SKIPPED:  # nothing to refresh is no news: the table says why
            continue
        if row.message:
            err.print(f"{row.connection}: {row.message}", markup=False, highlight=False)
        elif row.refresh_expires_at is not None and row.refresh_expires_at - now <= REFRESH_WARNING:
            err.print(
                f"warning: the refresh token of {row.connection!r} expires at "
                f"{row.refresh_expires_at.isoformat(timespec='minutes')}; log in again before: "
                f"{relogin_command(row.provider, row.connection)}",
                markup=False,
                highlight=False,
            )
    if not quiet:
        runtime.renderer(ctx, fmt).rows(RefreshResult, results)
    outcomes = {row.result for row in results}
    if RefreshState.REAUTH_REQUIRED in outcomes:
        raise typer.Exit(int(ExitCode.REAUTH))
    if RefreshState.FAILED in outcomes:
        some_ok = bool(
            outcomes & {RefreshState.REFRESHED, RefreshState.FRESH, RefreshState.SKIPPED}
        )
        raise typer.Exit(int(ExitCode.PARTIAL if some_ok else ExitCode.ERROR))
