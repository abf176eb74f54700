"""`dashtam export`: the vault's accounts, balances and transactions in the formats of books.

It reads the vault only. :func:`load_book` gathers what an export needs (the
accounts selected with their book names and latest balances, their
positions, their posted transactions oldest first); each format's module
turns a :class:`Book` into text (``render(book) -> Iterator[str]``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from dashtam_cli.core.export.names import BookNames
    from dashtam_cli.core.models import Account, Position, Transaction
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

__all__ = [
    "FORMATS",
    "MAX_BOOK_BYTES",
    "Book",
    "BookAccount",
    "ExportOptions",
    "KnownBook",
    "known_book",
    "known_ids",
    "load_book",
    "money_text",
    "render",
]

# Each format and the module that writes it.
_MODULES: Final = {
    "beancount": "dashtam_cli.core.export.beancount",
    "ledger": "dashtam_cli.core.export.ledger",
    "ofx": "dashtam_cli.core.export.ofx",
    "qif": "dashtam_cli.core.export.qif",
    "csv": "dashtam_cli.core.export.csv_format",
}
FORMATS: Final = tuple(_MODULES)


@dataclasses.dataclass(frozen=True, slots=True)
class ExportOptions:
    """What to export: a window of dates, some accounts or connections (all by default)."""

    since: dt.date | None = None
    until: dt.date | None = None  # inclusive
    accounts: Sequence[str] = ()
    connections: Sequence[str] = ()
    # Only transactions whose ids this set does not hold (``--incremental``).
    known_ids: frozenset[str] = frozenset()
    incremental: bool = False
    # What that file already declares: its accounts (opened) and commodities.
    known_accounts: frozenset[str] = frozenset()
    known_commodities: frozenset[str] = frozenset()
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class BookAccount:
    """An account as the books see it: its name there, whether a debt, its latest balance.

    ``balance`` is the account's cash (for an investment account, the cash
    beside its securities; for a card, what is owed, negative) as of
    ``balance_at``, its latest snapshot; ``opening`` is what it held before
    its first exported transaction, worked out so that the exported
    transactions up to ``balance_at`` lead to ``balance``.
    """

    account: Account
    name: str
    liability: bool
    institution: str
    balance: Decimal | None
    balance_at: dt.datetime
    opening: Decimal | None
    opened: dt.date

    @property
    def currency(self) -> str:
        """The account's currency: a code, or a custom currency's URL."""
        return self.account.currency


@dataclasses.dataclass(frozen=True, slots=True)
class Book:
    """Everything one export writes."""

    accounts: list[BookAccount]
    positions: list[Position]
    # Posted transactions of those accounts, oldest first (ties by id); pending ones are not books'.
    transactions: list[Transaction]
    names: BookNames
    generated_at: dt.datetime
    options: ExportOptions
    by_id: Mapping[str, BookAccount] = dataclasses.field(default_factory=dict)

    def account_of(self, transaction: Transaction) -> BookAccount:
        """The book account of ``transaction``."""
        return self.by_id[transaction.account_id]

    def counter(self, transaction: Transaction) -> str:
        """The account on the other side of ``transaction``."""
        return self.names.counter(transaction.kind.value, transaction.amount > 0)


def money_text(amount: Decimal) -> str:
    """An exact amount as text, with two decimal places at least: ``5`` -> ``5.00``."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:  # noqa: PLR2004 - cents
        amount = amount.quantize(Decimal("0.01"))
    return format(amount, "f")


def _selected(accounts: Sequence[Account], options: ExportOptions) -> list[Account]:
    """The accounts ``--account`` and ``--connection`` select (all without either)."""
    chosen = list(accounts)
    if options.connections:
        known = {a.connection for a in accounts}
        for name in options.connections:
            if name not in known:
                raise InputError(
                    f"no synced connection named {name!r}",
                    hint="see dashtam connections list; run dashtam sync first",
                )
        chosen = [a for a in chosen if a.connection in options.connections]
    if options.accounts:
        picked: list[Account] = []
        for selector in options.accounts:
            wanted = selector.strip()
            tail = wanted.lstrip("*")
            found = [
                a
                for a in chosen
                if wanted in {a.id, a.number}
                or (tail.isalnum() and len(tail) >= 4 and a.number.endswith(tail))  # noqa: PLR2004
                or a.name.casefold() == wanted.casefold()
            ]
            if not found:
                raise InputError(
                    f"no account matches --account {selector!r}",
                    hint="give its id, its masked number (****1234 or 1234) or its name; "
                    "see dashtam accounts list",
                )
            picked.extend(a for a in found if a not in picked)
        chosen = picked
    return chosen


def _opening(
    balance: Decimal | None, balance_at: dt.datetime, transactions: Sequence[Transaction]
) -> Decimal | None:
    if balance is None:
        return None
    through = balance_at.date()
    moved = sum((t.amount for t in transactions if t.time.date() <= through), Decimal(0))
    return balance - moved


async def load_book(settings: Settings, options: ExportOptions, open_options: OpenOptions) -> Book:
    """Read what the export needs from the vault (offline: it never syncs)."""
    from dashtam_cli.core.export.names import LIABILITY_TYPES, book_names
    from dashtam_cli.core.providers import institution_of
    from dashtam_cli.core.queries import (
        QueryOptions,
        query_accounts,
        query_positions,
        query_transactions,
    )

    if options.since and options.until and options.since > options.until:
        raise InputError("--since: must not be after --until")
    offline = QueryOptions(offline=True)
    accounts, _ = await query_accounts(settings, offline, open_options)
    accounts = _selected(accounts, options)
    ids = {a.id for a in accounts}
    positions, _ = await query_positions(settings, offline, open_options)
    positions = [p for p in positions if p.account_id in ids]
    since = dt.datetime.combine(options.since, dt.time(), dt.UTC) if options.since else None
    until = (
        dt.datetime.combine(options.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        if options.until
        else None
    )
    found: list[Transaction] = []

    def keep(batch: list[Transaction]) -> None:
        found.extend(t for t in batch if t.account_id in ids and t.status != "PENDING")

    if accounts:
        await query_transactions(
            settings, dataclasses.replace(offline, since=since, until=until), open_options, keep
        )
    found.sort(key=lambda t: (t.time, t.id))
    where = f"config file {settings.paths.config_file}"

    institutions = {a.id: institution_of(a) for a in accounts}
    names = book_names(accounts, settings.export, where=where, institutions=institutions)
    by_account: dict[str, list[Transaction]] = {a.id: [] for a in accounts}
    for txn in found:
        by_account[txn.account_id].append(txn)
    now = options.clock()
    book_accounts = []
    for account in accounts:
        mine = by_account[account.id]
        balance = account.cash if account.cash is not None else account.total_value
        first = mine[0].time.date() if mine else account.fetched_at.date()
        opened = min(first, options.since or first)
        book_accounts.append(
            BookAccount(
                account=account,
                name=names.accounts[account.id],
                liability=account.type.upper() in LIABILITY_TYPES,
                institution=institutions[account.id],
                balance=balance,
                balance_at=account.fetched_at,
                opening=_opening(balance, account.fetched_at, mine),
                opened=opened,
            )
        )
    if options.known_ids:
        found = [t for t in found if t.id not in options.known_ids]
    return Book(
        accounts=book_accounts,
        positions=positions,
        transactions=found,
        names=names,
        generated_at=now,
        options=options,
        by_id={item.account.id: item for item in book_accounts},
    )


# A book of many years is a few MiB; a file far larger is not one.
MAX_BOOK_BYTES: Final = 256 * 1024 * 1024
# At the start of an indented line (beancount metadata, a ledger tag comment): an id
# quoted inside a description, which is never at the start of a line, is not one.
_ID: Final = (
    r"(?m)^[ \t]+(?:;[ \t]*)?dashtam-id:[ \t]*\"?"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


_OPENED: Final = r"(?m)^(?:\d{4}-\d{2}-\d{2}[ \t]+open|account)[ \t]+([A-Z][^\s;]*)"
_COMMODITY: Final = r'(?m)^(?:\d{4}-\d{2}-\d{2}[ \t]+)?commodity[ \t]+(?:"([^"\n]+)"|([^\s;"]+))'


@dataclasses.dataclass(frozen=True, slots=True)
class KnownBook:
    """What an earlier beancount or ledger export holds: transaction ids, accounts, commodities."""

    ids: frozenset[str]
    accounts: frozenset[str]
    commodities: frozenset[str]


def _read_book(path: str) -> str:
    try:
        with open(path, "rb") as handle:  # noqa: PTH123 - a bounded read of a user's file
            data = handle.read(MAX_BOOK_BYTES + 1)
    except OSError as exc:
        raise InputError(
            f"cannot read --incremental file {path}: {exc.strerror or exc.__class__.__name__}",
            hint="give the beancount or ledger file an earlier export went into",
        ) from None
    if len(data) > MAX_BOOK_BYTES:
        raise InputError(
            f"--incremental file {path} is over {MAX_BOOK_BYTES // (1024 * 1024)} MiB",
            hint="give the beancount or ledger file an earlier export went into",
        )
    return data.decode("utf-8", "replace")


def known_ids(path: str) -> frozenset[str]:
    """The dashtam transaction ids a beancount or ledger file already holds (``dashtam-id``)."""
    return known_book(path).ids


def known_book(path: str) -> KnownBook:
    """The ids (``dashtam-id``), opened accounts and commodities a beancount or ledger file holds.

    Accounts are those of beancount ``open`` directives and ledger
    ``account`` declarations; commodities those of ``commodity`` directives
    (a ledger name in quotes without them).
    """
    import re

    text = _read_book(path)
    return KnownBook(
        ids=frozenset(re.findall(_ID, text)),
        accounts=frozenset(re.findall(_OPENED, text)),
        commodities=frozenset(a or b for a, b in re.findall(_COMMODITY, text)),
    )


def render(fmt: str, book: Book) -> Iterator[str]:
    """The export of ``book`` in ``fmt``, as pieces of text to write in order."""
    module_name = _MODULES.get(fmt)
    if module_name is None:
        raise InputError(
            f"unknown export format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}"
        )
    writer: Callable[[Book], Iterator[str]] = importlib.import_module(module_name).render
    return writer(book)
