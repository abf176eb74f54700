"""`dashtam accounts|positions|transactions ...`: your data from every connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dashtam_cli.cli import options, prompts, runtime
from dashtam_cli.cli.completion import connection_names, transaction_types

if TYPE_CHECKING:
    from dashtam_cli.core.portfolio import FetchResult

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


def _nothing_fetched(ctx: typer.Context, result: FetchResult[Any]) -> None:
    """Every connection failed: exit with that error, before an empty table or ``[]``."""
    error = result.outcome()
    if error is not None and not result.succeeded:
        runtime.fail(ctx, error)


def _finish(ctx: typer.Context, result: FetchResult[Any]) -> None:
    """After the data (``_nothing_fetched`` came first): each failure on its line, then the exit.

    Exit 3 when something failed and the rest was printed; 4 when all that
    failed is logins to renew. A connection the command did not need (the
    account asked for was in another) is a warning, not a failure.
    """
    err = runtime.stderr(ctx)
    for failure in result.ignored:
        err.print(
            f"warning: {failure.label}: {failure.error.message} (not needed: the account "
            "was found in another connection)",
            markup=False,
            highlight=False,
        )
    error = result.outcome(detail=False)
    if error is None:
        return
    for failure in result.failures:
        hint = f" ({failure.error.hint})" if failure.error.hint else ""
        err.print(f"{failure.label}: {failure.error.message}{hint}", markup=False, highlight=False)
    runtime.fail(ctx, error)


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context,
    connection: Annotated[str | None, CONNECTION] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List accounts with balances, from every connection."""
    from dashtam_cli.core.models import Account
    from dashtam_cli.core.portfolio import FetchOptions, fetch_accounts

    opts, fetch = prompts.open_options(), FetchOptions(connection=connection)
    result = runtime.run(ctx, lambda conf: fetch_accounts(conf, fetch, opts))
    _nothing_fetched(ctx, result)
    runtime.renderer(ctx, fmt).rows(Account, result.items)
    _finish(ctx, result)


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
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Show one account and its balances."""
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.portfolio import FetchOptions, fetch_accounts

    opts, fetch = prompts.open_options(), FetchOptions(connection=connection, account=account)
    result = runtime.run(ctx, lambda conf: fetch_accounts(conf, fetch, opts))
    _nothing_fetched(ctx, result)
    if len(result.items) > 1:
        runtime.fail(
            ctx,
            InputError(
                f"{account!r} matches {len(result.items)} accounts",
                hint="give the account id from: dashtam accounts list",
            ),
        )
    if result.items:
        runtime.renderer(ctx, fmt).one(result.items[0])
    _finish(ctx, result)
    if not result.items:
        runtime.fail(
            ctx, InputError(f"no account matches {account!r}", hint="see: dashtam accounts list")
        )


@positions_app.command("list")
def positions_list(
    ctx: typer.Context,
    account: Annotated[str | None, ACCOUNT] = None,
    connection: Annotated[str | None, CONNECTION] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List positions: signed quantity (long minus short), average price, value, day P/L."""
    from dashtam_cli.core.models import Position
    from dashtam_cli.core.portfolio import FetchOptions, fetch_positions

    opts, fetch = prompts.open_options(), FetchOptions(connection=connection, account=account)
    result = runtime.run(ctx, lambda conf: fetch_positions(conf, fetch, opts))
    _nothing_fetched(ctx, result)
    runtime.renderer(ctx, fmt).rows(Position, result.items)
    _finish(ctx, result)


@transactions_app.command("list")
def transactions_list(
    ctx: typer.Context,
    account: Annotated[str | None, ACCOUNT] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="From this date or time (default: 90 days ago).", metavar="DATE"
        ),
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
            help="Only this type (repeatable), e.g. TRADE, DIVIDEND_OR_INTEREST.",
            autocompletion=transaction_types,
        ),
    ] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    connection: Annotated[str | None, CONNECTION] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """List transactions, newest first; amount is positive when money comes in."""
    from dashtam_cli.core.models import Transaction
    from dashtam_cli.core.portfolio import FetchOptions, fetch_transactions
    from dashtam_cli.core.providers.schwab_api import TRANSACTION_TYPES

    wanted = [t.upper() for t in types or []]
    unknown = sorted(set(wanted) - set(TRANSACTION_TYPES))
    if unknown:
        msg = f"unknown type {', '.join(unknown)}; choose from {', '.join(TRANSACTION_TYPES)}"
        raise typer.BadParameter(msg, param_hint="--type")
    fetch = FetchOptions(
        connection=connection,
        account=account,
        since=options.parse_when(since, option="--since"),
        until=options.parse_when(until, option="--until", end_of_day=True),
        types=tuple(wanted),
        symbol=symbol,
    )
    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: fetch_transactions(conf, fetch, opts))
    _nothing_fetched(ctx, result)
    runtime.renderer(ctx, fmt).rows(Transaction, result.items)
    _finish(ctx, result)
