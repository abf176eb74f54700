"""The beancount export: a reviewed snapshot, bean-check, exact totals, escaping, --incremental."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from pathlib import Path

import export_books
from beancount import loader
from beancount.core import data
from export_books import ACCOUNTS, CHECKING, HOSTILE, MILES_URL, book, run_tool, txn

from dashtam_cli.core.export import Book, ExportOptions, known_book, render
from dashtam_cli.core.export.plaintext import commodities, commodity_base, flat
from dashtam_cli.core.models import Kind

SLASHED = ("BRK/B", "BRK-B", "brk:b")
SNAPSHOT = Path(__file__).parent / "snapshots" / "book.beancount"


def _text(book_: Book) -> str:
    return "".join(render("beancount", book_))


def _checked(path: Path) -> list[data.Directive]:
    """bean-check passes on ``path``; its entries, as beancount reads them."""
    checked = run_tool("bean-check", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    return entries


def test_the_export_of_the_fixed_book_is_the_reviewed_snapshot() -> None:
    """Byte for byte: header, commodities, opens, openings, transactions, assertions."""
    assert _text(book(HOSTILE)) == SNAPSHOT.read_text(encoding="utf-8")


def test_bean_check_passes_and_each_account_ends_at_the_vault_balance(tmp_path: Path) -> None:
    """bean-check's assertions pass, and the postings of each account add up to its balance."""
    fixed = book(HOSTILE)
    path = tmp_path / "book.beancount"
    path.write_text(_text(fixed), encoding="utf-8")
    entries = _checked(path)
    sums: dict[str, Decimal] = {}
    for entry in entries:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                assert posting.units is not None
                assert isinstance(posting.units.number, Decimal)
                sums[posting.account] = sums.get(posting.account, Decimal(0)) + (
                    posting.units.number
                )
    for item in fixed.accounts:
        assert item.balance is not None
        assert sums[item.name] == item.balance, item.name
    balances = {e.account: e for e in entries if isinstance(e, data.Balance)}
    assert {a.name for a in fixed.accounts} == set(balances)
    # Checked at the start of the day after the latest balance.
    assert {b.date for b in balances.values()} == {dt.date(2026, 11, 29)}
    miles = next(a for a in fixed.accounts if a.account.id == export_books.MILES.id)
    assert balances[miles.name].amount.currency == "FLIGHT-MILES"


def test_descriptions_read_back_as_given_and_every_id_is_metadata(tmp_path: Path) -> None:
    """Quotes, backslashes, semicolons, non-ASCII survive; line breaks become spaces."""
    fixed = book(HOSTILE)
    path = tmp_path / "book.beancount"
    path.write_text(_text(fixed), encoding="utf-8")
    entries = _checked(path)
    read = {
        e.meta["dashtam-id"]: e.narration
        for e in entries
        if isinstance(e, data.Transaction) and "dashtam-id" in e.meta
    }
    assert read == {t.id: flat(t.description) for t in fixed.transactions}
    assert "Café Zürich — 東京 ✈" in read.values()
    assert "AMAZON; MKTP US*2K4 line two three four" in read.values()
    assert known_book(str(path)).ids == frozenset(read)


def test_commodities_are_declared_with_their_sources(tmp_path: Path) -> None:
    """Each position's symbol and the custom currency are commodities, the URL kept as metadata."""
    path = tmp_path / "book.beancount"
    path.write_text(_text(book()), encoding="utf-8")
    entries = _checked(path)
    declared = {e.currency: e.meta for e in entries if isinstance(e, data.Commodity)}
    assert set(declared) == {"USD", "FLIGHT-MILES", "AAPL", "BRK.B", "META270124C00550000"}
    assert declared["FLIGHT-MILES"]["url"] == MILES_URL
    assert declared["META270124C00550000"]["symbol"] == "META  270124C00550000"
    assert declared["AAPL"]["name"] == "Apple Inc"


def test_commodity_names_are_valid_and_told_apart() -> None:
    """Symbols and custom currency URLs become beancount commodity names, deterministically."""
    assert commodity_base(MILES_URL) == "FLIGHT-MILES"
    assert commodity_base("https://bank.example/miles") == "MILES"
    assert commodity_base("https://points.example/") == "POINTS"
    assert commodity_base("META  270124C00550000") == "META270124C00550000"
    assert commodity_base("912828ZT0") == "X912828ZT0"
    assert commodity_base("brk/b ") == "BRK-B"
    assert commodity_base("Ünïcode") == "X-N-CODE"
    assert len(commodity_base("A" * 40)) == 24
    fixed = book()
    clashing = [
        p.model_copy(update={"symbol": s}) for p, s in zip(fixed.positions, SLASHED, strict=True)
    ]
    found = commodities(dataclasses.replace(fixed, positions=clashing))
    names = [found[s].name for s in SLASHED]
    assert len(set(names)) == len(SLASHED)
    assert all(n.startswith("BRK-B-") and len(n) == len("BRK-B-0000") for n in names)
    assert found["USD"].name == "USD"  # no clash: the name as it is
    assert commodities(dataclasses.replace(fixed, positions=clashing)) == found


def test_incremental_adds_only_the_new_and_the_file_still_checks(tmp_path: Path) -> None:
    """The first export, then --incremental FILE: new transactions only, no repeated declaration."""
    first = book()
    path = tmp_path / "book.beancount"
    path.write_text(_text(first), encoding="utf-8")
    later = [
        txn(200, CHECKING, 29, "-20.00", Kind.PURCHASE, "After the snapshot"),
        txn(201, CHECKING, 30, "5.00", Kind.REFUND, "Refund"),
    ]
    known = known_book(str(path))
    assert len(known.ids) == len(first.transactions)
    assert {a.name for a in first.accounts} <= known.accounts
    assert "FLIGHT-MILES" in known.commodities
    options = ExportOptions(
        known_ids=known.ids,
        known_accounts=known.accounts,
        known_commodities=known.commodities,
        incremental=True,
    )
    increment = _text(book(options=options, only=later))
    assert " open " not in increment
    assert " commodity " not in increment
    assert "Opening balance" not in increment
    assert increment.count('  dashtam-id: "') == len(later)
    assert increment.count(" balance ") == len(ACCOUNTS)
    path.write_text(path.read_text(encoding="utf-8") + increment, encoding="utf-8")
    entries = _checked(path)
    ids = [
        e.meta["dashtam-id"]
        for e in entries
        if isinstance(e, data.Transaction) and "dashtam-id" in e.meta
    ]
    assert len(ids) == len(set(ids)) == len(first.transactions) + len(later)


def test_incremental_opens_an_account_the_file_does_not_open(tmp_path: Path) -> None:
    """An account new since the first export gets its open and its opening balance."""
    path = tmp_path / "book.beancount"
    path.write_text(_text(book()), encoding="utf-8")
    known = known_book(str(path))
    checking = next(a for a in book().accounts if a.account.id == CHECKING.id).name
    options = ExportOptions(
        known_ids=known.ids,
        known_accounts=known.accounts - {checking},
        known_commodities=known.commodities,
        incremental=True,
    )
    increment = _text(book(options=options, only=[]))
    assert f"open {checking} USD" in increment
    assert increment.count(" open ") == 1  # the opening counter is open already
    assert increment.count("Opening balance") == 1


def test_an_id_quoted_in_a_description_is_not_taken_for_one(tmp_path: Path) -> None:
    """A description holding ``dashtam-id: <id>`` cannot hide that transaction from --incremental."""
    later = txn(200, CHECKING, 29, "-20.00", Kind.PURCHASE, "Later")
    fixed = book([f'dashtam-id: "{later.id}"', f"x\n  ; dashtam-id: {later.id}"])
    path = tmp_path / "book.beancount"
    path.write_text(_text(fixed), encoding="utf-8")
    assert known_book(str(path)).ids == {t.id for t in fixed.transactions}
