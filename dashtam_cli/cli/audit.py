"""`dashtam audit list`: what dashtam did with your providers, and how it went."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dashtam_cli.cli import options, prompts, runtime
from dashtam_cli.cli.completion import connection_names

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from dashtam_cli.core.settings import Settings

# SQLite takes a 64-bit LIMIT; a larger --limit is a usage error, not an overflow.
MAX_LIMIT = 1_000_000_000

audit_app = typer.Typer(
    name="audit", help="Read the audit log of provider operations.", no_args_is_help=True
)


@audit_app.command("list")
def list_(
    ctx: typer.Context,
    connection: Annotated[
        str | None,
        typer.Option(
            "--connection",
            "-c",
            help="Only this connection (by name).",
            autocompletion=connection_names,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only entries at or after this date or time (local time unless it has an offset).",
            metavar="DATE",
        ),
    ] = None,
    limit: Annotated[
        str | None,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            help="At most this many entries (1 to 1,000,000,000).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List audit entries, newest first: time, connection, operation, outcome, HTTP status."""
    from dashtam_cli.core.audit import audit_listing
    from dashtam_cli.core.models import AuditEntry

    start = options.parse_when(since, option="--since")
    most = options.bounded(limit, option="--limit", low=1, high=MAX_LIMIT)
    count = None if most is None else int(most)
    opts = prompts.open_options()

    def job(conf: Settings) -> Coroutine[Any, Any, list[AuditEntry]]:
        return audit_listing(conf, opts, connection=connection, since=start, limit=count)

    entries = runtime.run(ctx, job)
    runtime.renderer(ctx, fmt).rows(AuditEntry, entries)
