"""What the plain-text books (beancount, ledger/hledger) share: commodity names, dates, counters.

Both formats write the same book: the same commodity names (a position's
symbol or a SimpleFIN custom currency's URL made into a valid commodity), the
same first date for each account (its ``open``) and the same counter
accounts, so that a beancount and a ledger export of one vault agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import urllib.parse
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import datetime as dt

    from dashtam_cli.core.export import Book, BookAccount

__all__ = [
    "Commodity",
    "commodities",
    "commodity_base",
    "counters_used",
    "first_day",
    "flat",
    "header",
    "is_custom",
    "start_of",
]

# The longest commodity name beancount reads is 24 characters.
_LONGEST: Final = 24
_HASH: Final = 4
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


@dataclasses.dataclass(frozen=True, slots=True)
class Commodity:
    """A commodity of the book: its name there, and what it was named for."""

    name: str
    source: str  # a currency code, a custom currency's URL, or a position's symbol
    description: str | None = None


def is_custom(currency: str) -> bool:
    """Whether ``currency`` is a SimpleFIN custom currency (a URL) rather than a code."""
    return "://" in currency


def commodity_base(text: str) -> str:
    """A valid commodity name for ``text``, before collisions are told apart.

    Upper case; spaces dropped (an option's padded OCC symbol); any other
    character beancount refuses becomes ``-``; it starts with a letter
    (``X`` is put in front otherwise) and ends with a letter or digit. A
    custom currency's URL is named for its last path segment (less any
    extension), else its host: ``https://bank.example/flight-miles.json`` ->
    ``FLIGHT-MILES``.
    """
    if is_custom(text):
        parts = urllib.parse.urlsplit(text)
        segments = [s for s in parts.path.split("/") if s]
        text = segments[-1].rsplit(".", 1)[0] if segments else ""
        if not re.search(r"[A-Za-z0-9]", text):
            text = (parts.hostname or "").split(".")[0]
    name = re.sub(r"\s+", "", text.upper())
    name = re.sub(r"[^A-Z0-9'._-]+", "-", name)
    name = re.sub(r"[^A-Z0-9]+$", "", name)
    if not name:
        return "CUSTOM"
    if not name[0].isalpha() or not name.isascii():
        name = "X" + name
    name = name[:_LONGEST]
    return re.sub(r"[^A-Z0-9]+$", "", name)


def _told_apart(base: str, source: str) -> str:
    digest = hashlib.sha256(source.encode()).hexdigest()[:_HASH].upper()
    head = re.sub(r"[^A-Z0-9]+$", "", base[: _LONGEST - _HASH - 1])
    return f"{head}-{digest}"


def commodities(book: Book) -> dict[str, Commodity]:
    """Every commodity the book uses, by what it is named for: currencies, then symbols.

    Two sources whose names would be the same are told apart by four hex
    digits of a hash of the source (``MILES-1A2B``), so the name of one
    source is the same in every export that holds the same sources.
    """
    sources: dict[str, str | None] = {}
    for item in book.accounts:
        sources.setdefault(item.currency, None)
    for position in book.positions:
        if position.symbol not in sources or sources[position.symbol] is None:
            sources[position.symbol] = position.description
    bases = {source: commodity_base(source) for source in sources}
    users: dict[str, int] = {}
    for base in bases.values():
        users[base] = users.get(base, 0) + 1
    found: dict[str, Commodity] = {}
    for source, description in sources.items():
        base = bases[source]
        name = base if users[base] == 1 else _told_apart(base, source)
        found[source] = Commodity(name, source, description)
    return found


def flat(text: str | None) -> str:
    """``text`` on one line: control characters and line breaks become one space."""
    if not text:
        return ""
    return _CONTROL.sub(" ", text).strip()


def start_of(item: BookAccount) -> dt.date:
    """The account's first date in the books: its ``open`` and its opening balance.

    Never after the date of its balance, so that the opening counts in the
    balance assertion even when every exported transaction is later.
    """
    return min(item.opened, item.balance_at.date())


def first_day(book: Book) -> dt.date:
    """The earliest date the book writes: counters and commodities are opened then."""
    days = [start_of(item) for item in book.accounts]
    days.extend(t.time.date() for t in book.transactions)
    return min(days, default=book.generated_at.date())


def counters_used(book: Book, *, opening: bool) -> list[str]:
    """The counter accounts the book posts to, sorted (``opening``: the opening counter too)."""
    used = {book.counter(t) for t in book.transactions}
    if opening:
        used.add(book.names.counters["opening"])
    return sorted(used)


def header(book: Book, fmt: str) -> str:
    """The comment a beancount or ledger export starts with (both read ``;`` comments)."""
    text = (
        f"; dashtam export ({fmt}), generated {book.generated_at.isoformat()}\n"
        "; It holds financial data in the clear (no credentials, no full account numbers).\n"
        f"; Each transaction's dashtam-id lets `dashtam export {fmt} --incremental FILE`\n"
        "; print only what FILE does not hold yet.\n"
    )
    if book.options.incremental:
        text += "; Incremental: the transactions and declarations FILE did not hold.\n"
    return text
