"""beancount: commodities, an ``open`` per account, opening balances, transactions, assertions.

Each transaction carries dashtam's id as ``dashtam-id`` metadata, which
``--incremental`` reads back. A balance assertion is dated the day after the
account's latest balance: beancount checks it at the start of its day.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from dashtam_cli.core.export import money_text
from dashtam_cli.core.export.plaintext import (
    commodities,
    counters_used,
    first_day,
    flat,
    header,
    is_custom,
    start_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from dashtam_cli.core.export import Book
    from dashtam_cli.core.export.plaintext import Commodity

__all__ = ["quoted", "render"]


def quoted(text: str | None) -> str:
    """A beancount string: on one line, backslashes and double quotes escaped, non-ASCII kept."""
    return '"' + flat(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _declarations(book: Book, names: Mapping[str, Commodity]) -> Iterator[str]:
    """Commodities, then the accounts and counters the file does not open yet."""
    options = book.options
    day = first_day(book)
    declared = [c for c in names.values() if c.name not in options.known_commodities]
    if declared:
        yield "\n"
    for commodity in sorted(declared, key=lambda c: c.name):
        lines = [f"{day.isoformat()} commodity {commodity.name}\n"]
        if is_custom(commodity.source):
            lines.append(f"  url: {quoted(commodity.source)}\n")
        elif commodity.name != commodity.source:
            lines.append(f"  symbol: {quoted(commodity.source)}\n")
        if commodity.description:
            lines.append(f"  name: {quoted(commodity.description)}\n")
        yield "".join(lines)
    new_accounts = [a for a in book.accounts if a.name not in options.known_accounts]
    counters = [
        c
        for c in counters_used(book, opening=any(a.opening for a in new_accounts))
        if c not in options.known_accounts
    ]
    if new_accounts or counters:
        yield "\n"
    for item in new_accounts:
        yield f"{start_of(item).isoformat()} open {item.name} {names[item.currency].name}\n"
    for counter in counters:
        yield f"{day.isoformat()} open {counter}\n"


def render(book: Book) -> Iterator[str]:
    """The book as a beancount file (in ``--incremental`` mode: only what the file lacks).

    In ``--incremental`` mode an account the file opens already gets no
    ``open`` and no opening balance; an account it does not (new since)
    gets both.
    """
    names = commodities(book)
    yield header(book, "beancount")
    yield from _declarations(book, names)

    opening_counter = book.names.counters["opening"]
    for item in book.accounts:
        if item.name in book.options.known_accounts or not item.opening:
            continue
        unit = names[item.currency].name
        yield (
            f"\n{start_of(item).isoformat()} * {quoted('Opening balance')}\n"
            f"  {item.name}  {money_text(item.opening)} {unit}\n"
            f"  {opening_counter}  {money_text(-item.opening)} {unit}\n"
        )

    for txn in book.transactions:
        item = book.account_of(txn)
        unit = names[item.currency].name
        yield (
            f"\n{txn.time.date().isoformat()} * {quoted(txn.description)}\n"
            f'  dashtam-id: "{txn.id}"\n'
            f"  {item.name}  {money_text(txn.amount)} {unit}\n"
            f"  {book.counter(txn)}  {money_text(-txn.amount)} {unit}\n"
        )

    asserted = [(a, a.balance) for a in book.accounts if a.balance is not None]
    if asserted:
        yield "\n"
    for item, balance in asserted:
        when = item.balance_at.date() + dt.timedelta(days=1)
        yield (
            f"{when.isoformat()} balance {item.name}  "
            f"{money_text(balance)} {names[item.currency].name}\n"
        )
