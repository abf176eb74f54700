"""The OFX export: a reviewed snapshot, and what ofxtools reads back from it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from export_sample_book import BROKER, CARD, CHECKING, HOSTILE, MILES, SHORT_HOSTILE, sample_book
from ofxtools.Parser import OFXTree

from dashtam_cli.core.export import render
from dashtam_cli.core.export.ofx import BANKID, acctid, left_out, trntype
from dashtam_cli.core.models import Kind

if TYPE_CHECKING:
    from dashtam_cli.core.export import Book

SNAPSHOT = Path(__file__).parent / "snapshots" / "sample.ofx"


def _ofx(book: Book) -> str:
    return "".join(render("ofx", book))


def _parsed(text: str) -> Any:
    tree = OFXTree()
    tree.parse(io.BytesIO(text.encode()))
    return tree.convert()


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_the_sample_book_matches_its_reviewed_snapshot_byte_for_byte() -> None:
    """Same book, same clock: the same bytes as the snapshot reviewed by hand."""
    assert _ofx(sample_book()).encode() == SNAPSHOT.read_bytes()


def test_ofxtools_reads_each_statement_with_its_transactions_amounts_and_balances() -> None:
    """Each account's statement holds its transactions (FITID = dashtam id, exact amounts) and balance.

    The checking account is a bank statement, the card a card statement, the
    brokerage account an investment statement; their ACCTIDs are the accounts'
    ids, the card's balance owed and its purchases negative.
    """
    book = sample_book()
    ofx = _parsed(_ofx(book))
    assert ofx.signonmsgsrsv1.sonrs.status.code == 0
    assert ofx.signonmsgsrsv1.sonrs.dtserver == book.generated_at
    statements = {s.account.acctid: s for s in ofx.statements}
    assert set(statements) == {acctid(CHECKING), acctid(CARD), acctid(BROKER)}
    for item in book.accounts:
        if item.account.id == MILES:
            continue
        statement = statements[acctid(item.account.id)]
        assert statement.curdef == "USD"
        mine = [t for t in book.transactions if t.account_id == item.account.id]
        got = [(t.fitid, t.trnamt, t.dtposted) for t in statement.transactions]
        assert got == [(t.id, t.amount, t.time) for t in mine]
        assert all(isinstance(t.trnamt, Decimal) for t in statement.transactions)
    checking = statements[acctid(CHECKING)]
    assert checking.account.bankid == BANKID
    assert checking.account.accttype == "CHECKING"
    assert (checking.balance.balamt, checking.balance.dtasof) == (
        Decimal("1520.33"),
        book.accounts[0].balance_at,
    )
    assert checking.availbal.balamt == Decimal("1500.00")
    assert [t.trntype for t in checking.transactions] == ["DEP", "POS", "ATM", "XFER", "INT"]
    card = statements[acctid(CARD)]
    assert type(card).__name__ == "CCSTMTRS"
    assert card.balance.balamt == Decimal("-310.10")
    assert [t.trnamt for t in card.transactions] == [
        Decimal("-310.10"),
        Decimal("310.10"),
        Decimal("-310.10"),
    ]
    assert [t.trntype for t in card.transactions] == ["DEBIT", "PAYMENT", "DEBIT"]
    broker = statements[acctid(BROKER)]
    assert type(broker).__name__ == "INVSTMTRS"
    assert broker.invbal.availcash == Decimal("10500.00")
    assert [t.stmttrn.trntype for t in broker.transactions] == ["DIV", "DEBIT", "FEE"]


def test_positions_and_securities_are_read_back_with_their_kinds_and_values() -> None:
    """A fund, a mutual fund, a short option and a bond: POSSTOCK/POSMF/POSOPT/POSOTHER with values."""
    ofx = _parsed(_ofx(sample_book()))
    (broker,) = [s for s in ofx.statements if type(s).__name__ == "INVSTMTRS"]
    got = {
        p.invpos.secid.uniqueid: (
            type(p).__name__,
            p.invpos.units,
            p.invpos.mktval,
            p.invpos.postype,
        )
        for p in broker.positions
    }
    assert got == {
        "VTI": ("POSSTOCK", Decimal(3), Decimal("900.00"), "LONG"),
        "VFIAX": ("POSMF", Decimal("1.234"), Decimal("500.00"), "LONG"),
        "META  270124C00550000": ("POSOPT", Decimal(-1), Decimal("-300.00"), "SHORT"),
        "912828XX1": ("POSOTHER", Decimal(1000), Decimal("400.00"), "LONG"),
    }
    securities = {s.secinfo.secid.uniqueid: s for s in ofx.securities}
    assert set(securities) == set(got)
    option = securities["META  270124C00550000"]
    assert (option.opttype, option.strikeprice, option.shperctrct) == ("CALL", Decimal(550), 100)
    assert securities["VTI"].secinfo.secname == "VANGUARD TOTAL STOCK <ETF> & co"


def test_hostile_descriptions_come_back_as_they_were_flattened_name_cut_memo_whole() -> None:
    """``<``, ``&``, quotes, newlines and non-ASCII survive XML: NAME is the first 32, MEMO all."""
    ofx = _parsed(_ofx(sample_book()))
    by_fitid = {t.fitid: t for s in ofx.statements for t in s.transactions if hasattr(t, "fitid")}
    long = by_fitid["00000000-0000-4000-8000-000000000002"]
    assert len(HOSTILE) >= 100
    assert long.name == _flat(HOSTILE)[:32].rstrip()
    assert long.memo == _flat(HOSTILE)
    short = by_fitid["00000000-0000-4000-8000-000000000006"]
    assert (short.name, short.memo) == (SHORT_HOSTILE, None)
    assert by_fitid["00000000-0000-4000-8000-000000000008"].name is None


def test_control_characters_xml_cannot_carry_are_dropped() -> None:
    """A NUL or a bell in a description would make the file unreadable XML: they are dropped."""
    book = sample_book()
    first = book.transactions[0].model_copy(update={"description": "PAY\x00ROLL\x07 ACME"})
    book = dataclasses.replace(book, transactions=[first, *book.transactions[1:]])
    ofx = _parsed(_ofx(book))
    names = [t.name for s in ofx.statements[:1] for t in s.transactions]
    assert names[0] == "PAYROLL ACME"


def test_an_account_in_a_custom_currency_is_left_out_and_said_so() -> None:
    """Miles have no ISO code: their account has no statement, and left_out names it."""
    book = sample_book()
    text = _ofx(book)
    assert acctid(MILES) not in text
    assert "Miles earned" not in text
    (note,) = left_out(book)
    assert note.startswith("Assets:SandboxBank:SkyMiles-2c1b: its currency https://")


def test_an_export_without_accounts_is_a_sign_on_only_document() -> None:
    """No account selected: the sign-on alone, no empty message set; ofxtools reads it."""
    book = dataclasses.replace(sample_book(), accounts=[], transactions=[], positions=[])
    text = _ofx(book)
    assert re.findall(r"<(\w+MSGSRSV1)>", text) == ["SIGNONMSGSRSV1"]
    ofx = _parsed(text)
    assert ofx.statements == []


@pytest.mark.parametrize(
    ("kind", "amount", "provider_type", "description", "statement", "expected"),
    [
        (Kind.WITHDRAWAL, "-20", "DEBIT", "CHECK 1042", "bank", "CHECK"),
        (Kind.WITHDRAWAL, "-20", "CHECK", "Rent", "bank", "CHECK"),
        (Kind.WITHDRAWAL, "-20", "DEBIT", "atm 5th ave", "bank", "ATM"),
        (Kind.WITHDRAWAL, "-20", "DEBIT", "Checkout Co", "bank", "DEBIT"),
        (Kind.PURCHASE, "-20", "DEBIT", "Shop", "creditcard", "DEBIT"),
        (Kind.PURCHASE, "5", "CREDIT", "Shop", "bank", "CREDIT"),
        (Kind.FEE, "3", "CREDIT", "Fee refunded", "bank", "CREDIT"),
        (Kind.TAX, "-3", "DEBIT", "Withholding", "investment", "DEBIT"),
        (Kind.ADJUSTMENT, "1", "JOURNAL", "Sweep", "investment", "CREDIT"),
        (Kind.OTHER, "1", "X", "?", "bank", "OTHER"),
    ],
)
def test_trntype_follows_the_kind_then_the_words_then_the_sign(  # noqa: PLR0913, PLR0917 - the table's columns
    kind: Kind, amount: str, provider_type: str, description: str, statement: str, expected: str
) -> None:
    """Checks and ATM withdrawals by their type or words; what has no OFX type goes by its sign."""
    txn = (
        sample_book()
        .transactions[0]
        .model_copy(
            update={
                "kind": kind,
                "amount": Decimal(amount),
                "type": provider_type,
                "description": description,
            }
        )
    )
    assert trntype(txn, statement) == expected


def test_an_export_window_is_each_statements_dtstart_and_dtend() -> None:
    """With --since and --until the transaction lists span the window, the day after --until excluded."""
    book = sample_book()
    options = dataclasses.replace(
        book.options, since=dt.date(2026, 11, 1), until=dt.date(2026, 11, 9)
    )
    ofx = _parsed(_ofx(dataclasses.replace(book, options=options)))
    for statement in ofx.statements:
        invest = type(statement).__name__ == "INVSTMTRS"
        listed = statement.invtranlist if invest else statement.banktranlist
        assert listed.dtstart == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        assert listed.dtend == dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


def test_a_position_without_a_market_value_is_priced_at_its_average() -> None:
    """No market value: UNITPRICE is the average price and MKTVAL units times it."""
    book = sample_book()
    fund = book.positions[0].model_copy(update={"market_value": None})
    ofx = _parsed(_ofx(dataclasses.replace(book, positions=[fund])))
    (broker,) = [s for s in ofx.statements if type(s).__name__ == "INVSTMTRS"]
    (position,) = broker.positions
    assert (position.invpos.unitprice, position.invpos.mktval) == (
        Decimal("333.33"),
        Decimal("999.99"),
    )


def test_an_account_without_a_known_balance_is_left_out_not_written_as_zero() -> None:
    """No balance synced: no statement with a made-up 0.00 balance; left_out says why."""
    book = sample_book()
    checking = dataclasses.replace(book.accounts[0], balance=None)
    book = dataclasses.replace(book, accounts=[checking, *book.accounts[1:]])
    text = _ofx(book)
    assert acctid(CHECKING) not in text
    assert "PAYROLL ACME" not in text
    assert left_out(book)[0] == f"{checking.name}: no balance known, which an OFX statement needs"
