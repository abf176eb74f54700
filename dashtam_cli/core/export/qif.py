"""QIF for the tools that still only read it: bank and credit-card accounts, one block each.

Each account is an ``!Account`` block (its name in the books, ``Bank`` or
``CCard``) followed by its transactions under ``!Type:Bank`` or
``!Type:CCard``: ``D`` the date (MM/DD/YYYY), ``T`` the exact amount with
dashtam's sign (positive is money in: a card charge is negative), ``P`` the
payee, ``M`` the memo when the text is longer than a payee, ``N`` dashtam's
transaction id (QIF has no FITID; the number field is the one importers
keep). QIF is line based, so text is flattened to one line. Investment
accounts and accounts in a custom currency (QIF has no currency) are left
out; :func:`left_out` says which.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.export import money_text
from dashtam_cli.core.export.ofx import CARD_TYPES, INVESTMENT_TYPES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from dashtam_cli.core.export import Book, BookAccount

__all__ = ["PAYEE_MAX", "left_out", "qif_type", "render"]

# Quicken cuts a payee at 64 characters; the whole text then goes in the memo too.
PAYEE_MAX: Final = 64
_ISO_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_LINE: Final = re.compile(r"\s+")
# Control characters other than whitespace: no importer reads them in a text field.
_CONTROL: Final = re.compile("[\x00-\x08\x0e-\x1f\x7f]")


def qif_type(item: BookAccount) -> str | None:
    """``Bank`` or ``CCard``, or None when QIF leaves it out (investment, custom currency)."""
    if not _ISO_CURRENCY.fullmatch(item.currency):
        return None
    kind = item.account.type.upper()
    if kind in INVESTMENT_TYPES:
        return None
    return "CCard" if kind in CARD_TYPES else "Bank"


def left_out(book: Book) -> list[str]:
    """Why each account the QIF export leaves out is left out."""
    notes = []
    for item in book.accounts:
        if qif_type(item) is not None:
            continue
        if not _ISO_CURRENCY.fullmatch(item.currency):
            notes.append(f"{item.name}: QIF has no currency for {item.currency}")
        else:
            notes.append(f"{item.name}: an investment account (QIF holds bank and card accounts)")
    return notes


def _line(text: str | None) -> str:
    """Text on one line: every run of whitespace (newlines included) is one space, no controls."""
    return _LINE.sub(" ", _CONTROL.sub("", text or "")).strip()


def render(book: Book) -> Iterator[str]:
    """Each bank and card account's block and its transactions, oldest first."""
    kept = {item.account.id: item for item in book.accounts if qif_type(item) is not None}
    by_account: dict[str, list[str]] = {key: [] for key in kept}
    for txn in book.transactions:
        lines = by_account.get(txn.account_id)
        if lines is None:
            continue
        text = _line(txn.description)
        entry = [
            f"D{txn.time.date().strftime('%m/%d/%Y')}",
            f"T{money_text(txn.amount)}",
            f"N{txn.id}",
        ]
        if text:
            entry.append(f"P{text[:PAYEE_MAX]}")
            if len(text) > PAYEE_MAX:
                entry.append(f"M{text}")
        entry.append("^")
        lines.append("\n".join(entry) + "\n")
    for key, item in kept.items():
        kind = qif_type(item)
        yield f"!Account\nN{item.name}\nT{kind}\n^\n!Type:{kind}\n"
        yield from by_account[key]
