"""`dashtam accounts|positions|transactions ...`: answers from the vault."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dashtam_cli.cli import options, prompts, runtime
from dashtam_cli.cli.completion import connection_names, transaction_types

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dashtam_cli.cli.output import Renderer
    from dashtam_cli.core.models import Account, Position
    from dashtam_cli.core.queries import QueryResult
    from dashtam_cli.core.results import FetchResult

accounts_app = typer.Typer(name="accounts", help="Accounts and balances.", no_args_is_help=True)
positions_app = typer.Typer(name="positions", help="Holdings.", no_args_is_help=True)
transactions_app = typer.Typer(name="transactions", help="Transactions.", no_args_is_help=True)

CONNECTION = typer.Option(
    "--connection",
    "-c",
    help="Only this connection (default: all).",
    show_default=False,
    autocompletion=connection_names,
)
ACCOUNT = typer.Option(
    "--account",
    "-a",
    help="Only this account: its id, or the last digits of its number.",
    show_default=False,
)
OFFLINE = typer.Option(
    "--offline", help="Never touch the network, not even for a connection never synced."
)
SYNC = typer.Option("--sync", help="Sync the connections first (dashtam sync).")


def _check(offline: bool, sync_first: bool) -> None:
    if offline and sync_first:
        msg = "--offline and --sync cannot be given together"
        raise typer.BadParameter(msg, param_hint="--sync")


def _nothing_synced(outcome: FetchResult[Any]) -> bool:
    """Whether the sync got nothing: every connection, or every account of each, failed."""
    if outcome.succeeded == 0:
        return True
    return all(
        report.result not in {"ok", "skipped"} and len(report.failed_accounts) >= report.accounts
        for report in outcome.items
    )


def _relevant(result: QueryResult, account: str | None) -> FetchResult[Any] | None:
    """The sync's failures that bear on the answer; those of connections not needed are ignored.

    With ``--account``, a failing connection that holds none of the accounts
    answered (the account was found in another) is a warning, not a failure.
    """
    outcome = result.sync
    if outcome is None or account is None or result.oldest is None:
        return outcome
    unneeded = set(result.never)
    ignored = [f for f in outcome.failures if f.connection in unneeded]
    if not ignored:
        return outcome
    kept = [f for f in outcome.failures if f.connection not in unneeded]
    return dataclasses.replace(outcome, failures=kept, ignored=[*outcome.ignored, *ignored])


def _before(ctx: typer.Context, result: QueryResult, account: str | None = None) -> None:
    """Nothing to answer because the sync it needed failed: exit with that error, printing nothing.

    Said as the error itself (or one line naming every failure), with its exit code.
    """
    outcome = _relevant(result, account)
    if outcome is None or result.count or not outcome.failures:
        return
    if _nothing_synced(outcome):
        error = dataclasses.replace(outcome, succeeded=0).outcome()
        if error is not None:
            runtime.fail(ctx, error)


def _totals(
    ctx: typer.Context,
    renderer: Renderer,
    *,
    accounts: Sequence[Account] = (),
    positions: Sequence[Position] = (),
) -> None:
    """On a terminal, a table's last rows: the sum per currency, each account counted once."""
    import sys

    if renderer.fmt != "table" or not sys.stdout.isatty() or not (accounts or positions):
        return
    from dashtam_cli.core.insights import totals
    from dashtam_cli.core.models import Total

    opts = prompts.open_options()
    insight = runtime.run(
        ctx, lambda conf: totals(conf, opts, accounts=accounts, positions=positions)
    )
    rows = [t for t in insight.rows if isinstance(t, Total)]
    renderer.rows(Total, rows)
    err = runtime.stderr(ctx)
    for note in insight.notes:
        err.print(note, markup=False, highlight=False)


def _after(
    ctx: typer.Context, result: QueryResult, account: str | None = None, *, offline: bool = False
) -> None:
    """After the answer: what --offline left out, how old the data is, then a sync failure's exit.

    The age is said on a terminal only, when older than ``stale_after_hours``.
    """
    import datetime as dt

    from dashtam_cli.cli.sync import on_terminal, report_failures

    if offline and result.never and account is None:
        runtime.stderr(ctx).print(
            f"note: never synced, so left out (--offline): {', '.join(result.never)};"
            " sync with: dashtam sync",
            markup=False,
            highlight=False,
        )
    if on_terminal() and result.oldest is not None:
        conf = runtime.settings(ctx)
        age = dt.datetime.now(dt.UTC) - result.oldest
        if age > dt.timedelta(hours=conf.stale_after_hours):
            from dashtam_cli.core.tokens import describe_remaining

            runtime.stderr(ctx).print(
                f"note: this data was synced {describe_remaining(-age)}; refresh it with:"
                " dashtam sync",
                markup=False,
                highlight=False,
            )
    outcome = _relevant(result, account)
    if outcome is not None:
        report_failures(ctx, outcome)


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context,
    connection: Annotated[str | None, CONNECTION] = None,
    offline: Annotated[bool, OFFLINE] = False,
    sync_first: Annotated[bool, SYNC] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List accounts with balances, from the vault."""
    from dashtam_cli.core.models import Account
    from dashtam_cli.core.queries import QueryOptions, query_accounts

    _check(offline, sync_first)
    opts = prompts.open_options()
    query = QueryOptions(connection=connection, offline=offline, sync_first=sync_first)
    items, result = runtime.run(ctx, lambda conf: query_accounts(conf, query, opts))
    _before(ctx, result)
    renderer = runtime.renderer(ctx, fmt)
    renderer.rows(Account, items)
    _totals(ctx, renderer, accounts=items)
    _after(ctx, result, offline=offline)


@accounts_app.command("show")
def accounts_show(
    ctx: typer.Context,
    account: Annotated[
        str,
        typer.Argument(
            help="The account id, or the last digits of its number.", show_default=False
        ),
    ],
    connection: Annotated[str | None, CONNECTION] = None,
    offline: Annotated[bool, OFFLINE] = False,
    sync_first: Annotated[bool, SYNC] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Show one account and its balances."""
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.queries import QueryOptions, query_accounts

    _check(offline, sync_first)
    opts = prompts.open_options()
    query = QueryOptions(
        connection=connection, account=account, offline=offline, sync_first=sync_first
    )
    items, result = runtime.run(ctx, lambda conf: query_accounts(conf, query, opts))
    _before(ctx, result, account)
    if items:
        runtime.renderer(ctx, fmt).one(items[0])
    _after(ctx, result, account, offline=offline)
    if not items:
        runtime.fail(
            ctx, InputError(f"no account matches {account!r}", hint="see: dashtam accounts list")
        )


@positions_app.command("list")
def positions_list(
    ctx: typer.Context,
    account: Annotated[str | None, ACCOUNT] = None,
    connection: Annotated[str | None, CONNECTION] = None,
    offline: Annotated[bool, OFFLINE] = False,
    sync_first: Annotated[bool, SYNC] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List positions as of the last sync: signed quantity, average price, value, day P/L."""
    from dashtam_cli.core.models import Position
    from dashtam_cli.core.queries import QueryOptions, query_positions

    _check(offline, sync_first)
    opts = prompts.open_options()
    query = QueryOptions(
        connection=connection, account=account, offline=offline, sync_first=sync_first
    )
    items, result = runtime.run(ctx, lambda conf: query_positions(conf, query, opts))
    _before(ctx, result, account)
    renderer = runtime.renderer(ctx, fmt)
    renderer.rows(Position, items)
    _totals(ctx, renderer, positions=items)
    _after(ctx, result, account, offline=offline)


@transactions_app.command("list")
def transactions_list(
    ctx: typer.Context,
    account: Annotated[str | None, ACCOUNT] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this date or time (default: all).", metavar="DATE"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Up to the end of this date, or this time (default: now).",
            metavar="DATE",
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            help="Only this kind (trade, dividend, interest, deposit, withdrawal, transfer, "
            "purchase, payment, refund, fee, tax, adjustment, other) or provider type such "
            "as TRADE (repeatable).",
            autocompletion=transaction_types,
        ),
    ] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="At most this many (the newest).", metavar="N"),
    ] = None,
    connection: Annotated[str | None, CONNECTION] = None,
    offline: Annotated[bool, OFFLINE] = False,
    sync_first: Annotated[bool, SYNC] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List transactions from the vault, newest first; amount is positive when money comes in."""
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.models import Transaction
    from dashtam_cli.core.queries import QueryOptions, query_transactions, type_filter

    _check(offline, sync_first)
    try:
        type_filter(types or [])
    except InputError as exc:
        hint = f"; {exc.hint}" if exc.hint else ""
        raise typer.BadParameter(exc.message + hint, param_hint="--type") from None
    query = QueryOptions(
        connection=connection,
        account=account,
        since=options.parse_when(since, option="--since"),
        until=options.parse_when(until, option="--until", end_of_day=True),
        types=tuple(types or ()),
        symbol=symbol,
        limit=limit,
        offline=offline,
        sync_first=sync_first,
    )
    opts = prompts.open_options()
    renderer = runtime.renderer(ctx, fmt)
    with renderer.streaming(Transaction) as emit:
        # The stored records, printed without validating each (core/lines.py).
        result = runtime.run(
            ctx, lambda conf: query_transactions(conf, query, opts, emit, records=True)
        )
        # Inside the stream: a failure with nothing to show leaves stdout empty (no "[]").
        _before(ctx, result, account)
    _after(ctx, result, account, offline=offline)
