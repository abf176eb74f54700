"""The ledger export: a reviewed snapshot, hledger check, exact totals, escaping, --incremental."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import export_books
from export_books import ACCOUNTS, CHECKING, HOSTILE, book, run_tool, txn

from dashtam_cli.core.export import Book, ExportOptions, known_book, render
from dashtam_cli.core.export.ledger import description
from dashtam_cli.core.export.plaintext import flat
from dashtam_cli.core.models import Kind

SNAPSHOT = Path(__file__).parent / "snapshots" / "book.journal"


def _text(book_: Book) -> str:
    return "".join(render("ledger", book_))


def _checked(path: Path) -> list[dict[str, Any]]:
    """``hledger check --strict`` and ``ledger --pedantic`` pass on ``path``; hledger's reading.

    Strict and pedantic: every account, commodity and tag declared, besides
    the balance assertions.
    """
    checked = run_tool("hledger", "-f", str(path), "check", "--strict")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ledger = run_tool("ledger", "-f", str(path), "--pedantic", "balance")
    assert ledger.returncode == 0, ledger.stderr
    assert ledger.stderr == ""
    printed = run_tool("hledger", "-f", str(path), "print", "-O", "json")
    assert printed.returncode == 0, printed.stderr
    read: list[dict[str, Any]] = json.loads(printed.stdout)
    return read


def _quantity(amount: dict[str, Any]) -> Decimal:
    quantity = amount["aquantity"]
    return Decimal(quantity["decimalMantissa"]).scaleb(-quantity["decimalPlaces"])


def _ids(read: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in read:
        for key, value in entry["ttags"]:
            if key == "dashtam-id":
                assert value not in found
                found[value] = entry
    return found


def test_the_export_of_the_fixed_book_is_the_reviewed_snapshot() -> None:
    """Byte for byte: header, declarations, openings, transactions, assertions."""
    assert _text(book(HOSTILE)) == SNAPSHOT.read_text(encoding="utf-8")


def test_hledger_check_passes_and_each_account_ends_at_the_vault_balance(tmp_path: Path) -> None:
    """Hledger's assertions pass, and the postings of each account add up to its balance."""
    fixed = book(HOSTILE)
    path = tmp_path / "book.journal"
    path.write_text(_text(fixed), encoding="utf-8")
    read = _checked(path)
    sums: dict[str, Decimal] = {}
    asserted: dict[str, Decimal] = {}
    for entry in read:
        for posting in entry["tpostings"]:
            for amount in posting["pamount"]:
                sums[posting["paccount"]] = sums.get(posting["paccount"], Decimal(0)) + (
                    _quantity(amount)
                )
            if posting["pbalanceassertion"]:
                asserted[posting["paccount"]] = _quantity(posting["pbalanceassertion"]["baamount"])
    for item in fixed.accounts:
        assert item.balance is not None
        assert sums[item.name] == item.balance, item.name
        assert asserted[item.name] == item.balance, item.name


def test_descriptions_read_back_and_every_id_is_a_tag(tmp_path: Path) -> None:
    """Quotes, backslashes, ``*``, ``(``, non-ASCII survive; ``;`` is a comma; one line each."""
    fixed = book(HOSTILE)
    path = tmp_path / "book.journal"
    path.write_text(_text(fixed), encoding="utf-8")
    by_id = _ids(_checked(path))
    assert set(by_id) == {t.id for t in fixed.transactions}
    for item in fixed.transactions:
        entry = by_id[item.id]
        assert entry["tdescription"] == flat(item.description).replace(";", ","), item.description
        assert entry["tcode"] == ""
        assert entry["tstatus"] == "Cleared"
    assert known_book(str(path)).ids == frozenset(by_id)


def test_a_description_is_one_safe_line() -> None:
    """No line break, no ``;``, and a leading ``(`` not taken for a code."""
    assert description("a;b\nc") == "a,b c"
    assert description("(x) y") == "() (x) y"
    assert description(None) == ""
    assert description('"q" \\ é') == '"q" \\ é'


def test_commodities_are_declared_and_quoted_when_not_letters(tmp_path: Path) -> None:
    """USD and AAPL bare; FLIGHT-MILES, BRK.B and the option in quotes, all declared."""
    text = _text(book())
    for line in (
        "commodity USD\n",
        "commodity AAPL  ; Apple Inc\n",
        'commodity "BRK.B"\n',
        f'commodity "FLIGHT-MILES"  ; {export_books.MILES_URL}\n',
    ):
        assert line in text
    path = tmp_path / "book.journal"
    path.write_text(text, encoding="utf-8")
    _checked(path)
    assert known_book(str(path)).commodities == {
        "USD",
        "AAPL",
        "BRK.B",
        "FLIGHT-MILES",
        "META270124C00550000",
    }


def test_incremental_adds_only_the_new_and_the_file_still_checks(tmp_path: Path) -> None:
    """The first export, then --incremental FILE: new transactions only, no repeated declaration."""
    first = book()
    path = tmp_path / "book.journal"
    path.write_text(_text(first), encoding="utf-8")
    later = [
        txn(200, CHECKING, 29, "-20.00", Kind.PURCHASE, "After the snapshot"),
        txn(201, CHECKING, 30, "5.00", Kind.REFUND, "Refund"),
    ]
    known = known_book(str(path))
    assert len(known.ids) == len(first.transactions)
    assert {a.name for a in first.accounts} <= known.accounts
    options = ExportOptions(
        known_ids=known.ids,
        known_accounts=known.accounts,
        known_commodities=known.commodities,
        incremental=True,
    )
    increment = _text(book(options=options, only=later))
    assert "\naccount " not in increment
    assert "\ncommodity " not in increment
    assert "Opening balance" not in increment
    assert increment.count("; dashtam-id: ") == len(later)
    assert increment.count(" = ") == len(ACCOUNTS)
    path.write_text(path.read_text(encoding="utf-8") + increment, encoding="utf-8")
    by_id = _ids(_checked(path))
    assert len(by_id) == len(first.transactions) + len(later)


def test_an_id_quoted_in_a_description_is_not_taken_for_one(tmp_path: Path) -> None:
    """A description holding ``dashtam-id: <id>`` cannot hide that transaction from --incremental."""
    later = txn(200, CHECKING, 29, "-20.00", Kind.PURCHASE, "Later")
    fixed = book([f'dashtam-id: "{later.id}"', f"x\n  ; dashtam-id: {later.id}"])
    path = tmp_path / "book.journal"
    path.write_text(_text(fixed), encoding="utf-8")
    assert known_book(str(path)).ids == {t.id for t in fixed.transactions}
