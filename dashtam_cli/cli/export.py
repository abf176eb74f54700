"""`dashtam export FORMAT`: the vault's data in the formats of people's books."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime

if TYPE_CHECKING:
    from collections.abc import Iterable

    from dashtam_cli.core.export import Book


def _write(ctx: typer.Context, pieces: Iterable[str], output: Path | None) -> None:
    """To standard output, or to ``output`` (0600, replaced whole, with a note that it is clear)."""
    import sys

    if output is None:
        for piece in pieces:
            sys.stdout.write(piece)
        sys.stdout.flush()
        return
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.export.files import write_export

    try:
        write_export(output, pieces)
    except OSError as exc:
        runtime.fail(
            ctx,
            InputError(
                f"cannot write {output}: {exc.strerror or exc.__class__.__name__}",
                hint="choose a file in a directory you can write to",
            ),
        )
    runtime.stderr(ctx).print(
        f"note: {output} holds your financial data in the clear (mode 0600); keep it private",
        markup=False,
        highlight=False,
    )


def _same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file (the same path, a link to it, or the same inode)."""
    try:
        return one.resolve() == other.resolve() or one.samefile(other)
    except OSError:
        return False


def export(
    ctx: typer.Context,
    fmt: Annotated[
        str | None,
        typer.Argument(
            metavar="FORMAT",
            help="beancount, ledger (also read by hledger), ofx, qif or csv.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DATE", help="Transactions from this date (YYYY-MM-DD)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", metavar="DATE", help="Transactions up to this date, included (YYYY-MM-DD)."
        ),
    ] = None,
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account",
            "-a",
            help="Only this account: its id, masked number, last digits or name (repeatable).",
            show_default=False,
        ),
    ] = None,
    connection: Annotated[list[str] | None, options.CONNECTIONS] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (mode 0600) instead of standard output.",
            dir_okay=False,
        ),
    ] = None,
    incremental: Annotated[
        Path | None,
        typer.Option(
            "--incremental",
            metavar="FILE",
            help="Only transactions this beancount or ledger file does not hold yet.",
            dir_okay=False,
        ),
    ] = None,
    ofx_type: Annotated[
        str | None,
        typer.Option(
            "--ofx-type",
            metavar="TYPE",
            help="OFX: only the bank, creditcard or investment statements (default: all three).",
            show_default=False,
        ),
    ] = None,
    show_accounts: Annotated[
        bool,
        typer.Option("--show-accounts", help="Print each account's name in the books, and stop."),
    ] = False,
    table_fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Write the vault's data in the format of your books; it reads the vault only.

    Pending transactions are left out (books keep what posted). Each
    transaction carries dashtam's stable id, so a later export can be merged
    without duplicates (see --incremental). Account names in the books come
    from the institution and the account, or from [export.accounts] in
    config.toml (see docs/export.md).
    """
    import dataclasses

    from dashtam_cli.core.export import FORMATS, ExportOptions, known_book, load_book, render

    if fmt is not None and fmt not in FORMATS:
        msg = f"{fmt!r} is not a format; choose one of: {', '.join(FORMATS)}"
        raise typer.BadParameter(msg, param_hint="FORMAT")
    if fmt is None and not show_accounts:
        msg = f"give the format: {', '.join(FORMATS)} (or --show-accounts)"
        raise typer.BadParameter(msg, param_hint="FORMAT")
    if incremental is not None and fmt not in {"beancount", "ledger"}:
        msg = "--incremental reads a beancount or ledger file: use it with those formats"
        raise typer.BadParameter(msg, param_hint="--incremental")
    if incremental is not None and output is not None and _same_file(incremental, output):
        msg = (
            "--output would replace the file --incremental reads with only what is new: "
            "append instead (>> FILE), or write to another file"
        )
        raise typer.BadParameter(msg, param_hint="--output")
    if ofx_type is not None and (
        fmt != "ofx" or ofx_type not in {"bank", "creditcard", "investment"}
    ):
        msg = "--ofx-type is bank, creditcard or investment, with the format ofx"
        raise typer.BadParameter(msg, param_hint="--ofx-type")
    first = options.parse_when(since, option="--since")
    last = options.parse_when(until, option="--until")
    job = ExportOptions(
        since=first.date() if first else None,
        until=last.date() if last else None,
        accounts=tuple(account or ()),
        connections=tuple(connection or ()),
    )
    opts = prompts.open_options()

    async def load(conf: object) -> Book:
        from dashtam_cli.core.settings import Settings

        assert isinstance(conf, Settings)
        settings_job = job
        if incremental is not None:
            known = known_book(str(incremental))
            settings_job = dataclasses.replace(
                job,
                known_ids=known.ids,
                known_accounts=known.accounts,
                known_commodities=known.commodities,
                incremental=True,
            )
        return await load_book(conf, settings_job, opts)

    book = runtime.run(ctx, load)
    if show_accounts:
        from dashtam_cli.core.models import BookAccountName

        rows = [
            BookAccountName(
                account_id=item.account.id,
                connection=item.account.connection,
                number=item.account.number,
                name=item.account.name,
                institution=item.institution,
                book_account=item.name,
                source="config" if item.account.id in book.names.overridden else "default",
            )
            for item in book.accounts
        ]
        runtime.renderer(ctx, table_fmt).rows(BookAccountName, rows)
        return
    assert fmt is not None
    if fmt in {"ofx", "qif"}:
        book = _narrowed(ctx, fmt, book, ofx_type)
    _write(ctx, render(fmt, book), output)


def _narrowed(ctx: typer.Context, fmt: str, book: Book, ofx_type: str | None) -> Book:
    """Keep one OFX type if asked; say on stderr which accounts OFX or QIF cannot hold."""
    err = runtime.stderr(ctx)
    if ofx_type is not None:
        from dashtam_cli.core.export.ofx import only

        book = only(book, ofx_type)
        if not book.accounts:
            err.print(f"note: no {ofx_type} account to export", markup=False, highlight=False)
    if fmt == "ofx":
        from dashtam_cli.core.export.ofx import left_out
    else:
        from dashtam_cli.core.export.qif import left_out
    for reason in left_out(book):
        err.print(
            f"note: left out of the {fmt.upper()} export: {reason}", markup=False, highlight=False
        )
    return book
