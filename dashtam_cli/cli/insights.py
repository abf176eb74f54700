"""`dashtam networth [history]` and `dashtam cashflow`: answers worked out from the vault."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from dashtam_cli.core.insights import Insight
    from dashtam_cli.core.models import NetWorthPoint

networth_app = typer.Typer(
    name="networth",
    help="Net worth now (or --at a date), by group, per currency; it reads the vault only.",
    invoke_without_command=True,
)

BY_HELP = "Group by connection, institution, account, kind, asset-type or currency."
SINCE = typer.Option("--since", metavar="DATE", help="From this date (YYYY-MM-DD).")
INTERVAL = typer.Option("--interval", metavar="STEP", help="day, week or month.")
BARS = "▁▂▃▄▅▆▇█"


def _notes(ctx: typer.Context, insight: Insight) -> None:
    err = runtime.stderr(ctx)
    for note in insight.notes:
        err.print(note, markup=False, highlight=False)


def _day(value: str | None, option: str) -> dt.date | None:
    moment = options.parse_when(value, option=option)
    return None if moment is None else moment.date()


@networth_app.callback()
def networth(
    ctx: typer.Context,
    by: Annotated[str | None, typer.Option("--by", metavar="KEY", help=BY_HELP)] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", metavar="DATE", help="As of this date, from balance snapshots (YYYY-MM-DD)."
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Net worth now (or --at a date), by group, per currency; it reads the vault only.

    Amounts in different currencies are never added together. An account
    reached through two connections is counted once (said on stderr).
    """
    if ctx.invoked_subcommand is not None:
        return
    from dashtam_cli.core.insights import networth as work
    from dashtam_cli.core.models import NetWorth

    when = options.parse_when(at, option="--at", end_of_day=True)
    opts = prompts.open_options()
    insight = runtime.run(ctx, lambda conf: work(conf, opts, by=by, at=when))
    _notes(ctx, insight)
    runtime.renderer(ctx, fmt).rows(NetWorth, insight.rows)


def _chart(points: Sequence[NetWorthPoint]) -> list[str]:
    """One sparkline per group and currency: a bar per interval, a gap as a space."""
    from dashtam_cli.core.models import currency_label

    series: dict[tuple[str, str], list[NetWorthPoint]] = {}
    for point in points:
        series.setdefault((point.group, point.currency), []).append(point)
    lines = []
    for (group, currency), items in series.items():
        values = [p.total for p in items if p.total is not None]
        if not values:
            continue
        low, high = min(values), max(values)
        span = high - low
        bars = "".join(
            " "
            if p.total is None
            else BARS[int((p.total - low) / span * (len(BARS) - 1)) if span else len(BARS) // 2]
            for p in items
        )
        lines.append(f"{group} ({currency_label(currency)}) {bars} {low:f} to {high:f}")
    return lines


@networth_app.command("history")
def history(
    ctx: typer.Context,
    since: Annotated[str | None, SINCE] = None,
    interval: Annotated[str, INTERVAL] = "month",
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="KEY",
            help="Group by connection, institution, account, kind or currency.",
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Net worth at the end of each interval, from balance snapshots (each sync keeps one).

    Each account's last snapshot in an interval counts; an interval with no
    snapshot is a gap (empty), never a zero. On a terminal a chart comes first.
    """
    import sys

    from dashtam_cli.core.insights import networth_history
    from dashtam_cli.core.models import NetWorthPoint

    first = _day(since, "--since")
    opts = prompts.open_options()
    insight = runtime.run(
        ctx,
        lambda conf: networth_history(conf, opts, since=first, interval=interval, by=by),
    )
    _notes(ctx, insight)
    points = [p for p in insight.rows if isinstance(p, NetWorthPoint)]
    renderer = runtime.renderer(ctx, fmt)
    if renderer.fmt == "table" and sys.stdout.isatty():
        for line in _chart(points):
            renderer.console.print(line, markup=False, highlight=False)
    renderer.rows(NetWorthPoint, points)


def cashflow(
    ctx: typer.Context,
    since: Annotated[str | None, SINCE] = None,
    interval: Annotated[str, INTERVAL] = "month",
    by: Annotated[
        str | None, typer.Option("--by", metavar="KEY", help="Group by kind or account.")
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Money in and out per interval, from posted transactions; it reads the vault only.

    Transfers between two of your accounts (both sides found) and trades are
    shown apart, never as income or spending.
    """
    from dashtam_cli.core.insights import cashflow as work
    from dashtam_cli.core.models import CashFlow

    first = _day(since, "--since")
    opts = prompts.open_options()
    insight = runtime.run(ctx, lambda conf: work(conf, opts, since=first, interval=interval, by=by))
    _notes(ctx, insight)
    runtime.renderer(ctx, fmt).rows(CashFlow, insight.rows)
