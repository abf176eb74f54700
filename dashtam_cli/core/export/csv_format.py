"""CSV for spreadsheets: one stable header, one row per transaction, exact money, ISO dates."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.export import money_text

if TYPE_CHECKING:
    from collections.abc import Iterator

    from dashtam_cli.core.export import Book

__all__ = ["HEADER", "render"]

# The columns, in order: an interface spreadsheets and scripts depend on.
HEADER: Final = (
    "date",
    "time",
    "book_account",
    "connection",
    "institution",
    "account",
    "description",
    "amount",
    "currency",
    "kind",
    "type",
    "symbol",
    "quantity",
    "price",
    "fees",
    "id",
)
# A cell a spreadsheet would run as a formula is prefixed with a quote (OWASP's advice).
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def render(book: Book) -> Iterator[str]:
    """The header, then each posted transaction, oldest first (money never through float)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(HEADER)
    yield flush()
    for txn in book.transactions:
        account = book.account_of(txn)
        writer.writerow(
            (
                txn.time.date().isoformat(),
                txn.time.isoformat(),
                account.name,
                _cell(account.account.connection),
                _cell(account.institution),
                account.account.number,
                _cell(txn.description),
                money_text(txn.amount),
                account.currency,
                txn.kind.value,
                _cell(txn.type),
                _cell(txn.symbol),
                "" if txn.quantity is None else format(txn.quantity, "f"),
                "" if txn.price is None else format(txn.price, "f"),
                money_text(txn.fees),
                txn.id,
            )
        )
        yield flush()
