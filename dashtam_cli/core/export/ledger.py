"""ledger and hledger: declarations, opening balances, transactions, balance assertions.

Each transaction carries dashtam's id as a ``; dashtam-id: <id>`` tag
comment, which ``--incremental`` reads back. A balance assertion is a
zero-amount posting with ``= BALANCE``, dated the day of the account's latest
balance and written after that day's transactions (ledger checks assertions
in the file's order, hledger in date order: both see the same total).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.export import money_text
from dashtam_cli.core.export.plaintext import (
    commodities,
    counters_used,
    flat,
    header,
    is_custom,
    start_of,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator, Mapping
    from decimal import Decimal

    from dashtam_cli.core.export import Book, BookAccount
    from dashtam_cli.core.export.plaintext import Commodity

__all__ = ["description", "render", "symbol"]

_BARE: Final = re.compile(r"[A-Za-z]+")


def symbol(name: str) -> str:
    """A commodity as ledger reads it: letters bare, anything else in double quotes."""
    return name if _BARE.fullmatch(name) else f'"{name}"'


def description(text: str | None) -> str:
    """A description safe on a transaction's first line.

    On one line; ``;`` (where hledger starts a comment) becomes ``,``; a
    leading ``(`` gets an empty code ``() `` in front, or it would be read
    as the transaction's code. Anything else (quotes, ``*``, non-ASCII) is
    kept as it is.
    """
    text = flat(text).replace(";", ",")
    if text.startswith("("):
        return "() " + text
    return text


def _header(day: dt.date, text: str) -> str:
    line = f"{day.isoformat()} *"
    return f"{line} {text}\n" if text else f"{line}\n"


def _declarations(book: Book, names: Mapping[str, Commodity]) -> Iterator[str]:
    """Commodities, then the accounts and counters the file does not declare yet."""
    options = book.options
    declared = [c for c in names.values() if c.name not in options.known_commodities]
    if declared:
        yield "\n"
    for commodity in sorted(declared, key=lambda c: c.name):
        note = commodity.source if is_custom(commodity.source) else commodity.description
        if commodity.name != commodity.source and not is_custom(commodity.source):
            note = f"{commodity.source} {note or ''}".strip()
        comment = f"  ; {flat(note)}" if note else ""
        yield f"commodity {symbol(commodity.name)}{comment}\n"
    new_accounts = [a for a in book.accounts if a.name not in options.known_accounts]
    counters = [
        c
        for c in counters_used(book, opening=any(a.opening for a in new_accounts))
        if c not in options.known_accounts
    ]
    # The id's tag declared, for ledger --pedantic (a repeat is harmless in both tools).
    yield "\ntag dashtam-id\n"
    for name in [a.name for a in new_accounts] + counters:
        yield f"account {name}\n"


def render(book: Book) -> Iterator[str]:
    """The book as a ledger journal (in ``--incremental`` mode: only what the file lacks).

    In ``--incremental`` mode an account the file declares already gets no
    declaration and no opening balance; an account it does not (new since)
    gets both.
    """
    names = commodities(book)
    yield header(book, "ledger")
    yield from _declarations(book, names)

    opening_counter = book.names.counters["opening"]
    for item in book.accounts:
        if item.name in book.options.known_accounts or not item.opening:
            continue
        unit = symbol(names[item.currency].name)
        yield (
            "\n"
            + _header(start_of(item), "Opening balance")
            + f"    {item.name}  {money_text(item.opening)} {unit}\n"
            + f"    {opening_counter}  {money_text(-item.opening)} {unit}\n"
        )

    # Each assertion after the last transaction of its day, so ledger (file order) agrees.
    asserted = sorted(
        ((a, a.balance) for a in book.accounts if a.balance is not None),
        key=lambda pair: pair[0].balance_at.date(),
    )
    for txn in book.transactions:
        day = txn.time.date()
        while asserted and asserted[0][0].balance_at.date() < day:
            yield _assertion(*asserted.pop(0), names)
        item = book.account_of(txn)
        unit = symbol(names[item.currency].name)
        yield (
            "\n"
            + _header(day, description(txn.description))
            + f"    ; dashtam-id: {txn.id}\n"
            + f"    {item.name}  {money_text(txn.amount)} {unit}\n"
            + f"    {book.counter(txn)}  {money_text(-txn.amount)} {unit}\n"
        )
    for item, balance in asserted:
        yield _assertion(item, balance, names)


def _assertion(item: BookAccount, balance: Decimal, names: Mapping[str, Commodity]) -> str:
    unit = symbol(names[item.currency].name)
    return (
        "\n"
        + _header(item.balance_at.date(), "Balance as synced by dashtam")
        + f"    {item.name}  0 {unit} = {money_text(balance)} {unit}\n"
    )
