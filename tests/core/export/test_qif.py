"""The QIF export: a reviewed snapshot, each account's sum, one line per field."""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from export_sample_book import BROKER, CARD, CHECKING, HOSTILE, MILES, parse_qif, sample_book

from dashtam_cli.core.export import render
from dashtam_cli.core.export.qif import PAYEE_MAX, left_out

if TYPE_CHECKING:
    from dashtam_cli.core.export import Book

SNAPSHOT = Path(__file__).parent / "snapshots" / "sample.qif"


def _qif(book: Book) -> str:
    return "".join(render("qif", book))


def test_the_sample_book_matches_its_reviewed_snapshot_byte_for_byte() -> None:
    """Same book: the same bytes as the snapshot reviewed by hand."""
    assert _qif(sample_book()).encode() == SNAPSHOT.read_bytes()


def test_each_account_sums_to_its_transactions_with_their_ids_in_the_number_field() -> None:
    """Bank and card blocks hold their transactions, exact, dated MM/DD/YYYY, ids in N; card charges negative."""
    book = sample_book()
    accounts = parse_qif(_qif(book))
    names = {item.account.id: item.name for item in book.accounts}
    assert set(accounts) == {names[CHECKING], names[CARD]}
    assert accounts[names[CHECKING]][0] == "Bank"
    assert accounts[names[CARD]][0] == "CCard"
    for account_id in (CHECKING, CARD):
        mine = [t for t in book.transactions if t.account_id == account_id]
        entries = accounts[names[account_id]][1]
        assert [e["N"] for e in entries] == [t.id for t in mine]
        assert [e["D"] for e in entries] == [t.time.strftime("%m/%d/%Y") for t in mine]
        total = sum((Decimal(e["T"]) for e in entries), Decimal(0))
        assert total == sum((t.amount for t in mine), Decimal(0))
    card = accounts[names[CARD]][1]
    assert [e["T"] for e in card] == ["-310.10", "310.10", "-310.10"]


def test_a_hostile_description_stays_on_its_lines_payee_cut_memo_whole() -> None:
    """Newlines are flattened, so no text starts a field of its own; the whole text is in M."""
    book = sample_book()
    accounts = parse_qif(_qif(book))
    checking = accounts[book.accounts[0].name][1]
    flat = re.sub(r"\s+", " ", HOSTILE).strip()
    (entry,) = [e for e in checking if e["N"].endswith("000000000002")]
    assert entry["P"] == flat[:PAYEE_MAX]
    assert entry["M"] == flat
    assert "<b>&amp;" in entry["P"]


def test_investment_and_custom_currency_accounts_are_left_out_and_said_so() -> None:
    """The brokerage account and the miles account have no block; left_out names both."""
    book = sample_book()
    text = _qif(book)
    names = {item.account.id: item.name for item in book.accounts}
    assert names[BROKER] not in text
    assert names[MILES] not in text
    assert "VTI dividend" not in text
    assert left_out(book) == [
        f"{names[BROKER]}: an investment account (QIF holds bank and card accounts)",
        f"{names[MILES]}: QIF has no currency for https://bridge.simplefin.test/currency/miles",
    ]


def test_control_characters_are_dropped_from_descriptions() -> None:
    """A NUL, a bell or a DEL in a description does not reach the file."""
    book = sample_book()
    first = book.transactions[0].model_copy(update={"description": "PAY\x00ROLL\x07 AC\x7fME"})
    book = dataclasses.replace(book, transactions=[first, *book.transactions[1:]])
    text = _qif(book)
    assert "PPAYROLL ACME\n" in text
    assert not re.search("[\x00-\x08\x0e-\x1f\x7f]", text)
