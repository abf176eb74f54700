"""OFX 2.2: bank, card and investment statements in one XML document, for GnuCash and Quicken.

One document holds a statement per account, each in the message set of its
type (``BANKMSGSRSV1``, ``CREDITCARDMSGSRSV1``, ``INVSTMTMSGSRSV1`` with the
securities in ``SECLISTMSGSRSV1``): GnuCash and the Quicken family import
every statement of a file, matching each to a book account by its
``ACCTID``. ``FITID`` is dashtam's transaction id, so importing the same
transactions again adds nothing. Amounts keep dashtam's sign, which is OFX's:
positive is money into the account (a card purchase is negative, a card
balance owed is negative). OFX knows only ISO 4217 currencies: an account in
a custom currency (airline miles) is left out, and :func:`left_out` says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.export import money_text
from dashtam_cli.core.models import Kind, option_label

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from dashtam_cli.core.export import Book, BookAccount
    from dashtam_cli.core.models import Position, Transaction

__all__ = [
    "BANKID",
    "BROKERID",
    "STATEMENT_TYPES",
    "acctid",
    "left_out",
    "only",
    "render",
    "statement_type",
    "trntype",
]

# OFX needs a bank's routing number (BANKID) and a broker's domain (BROKERID);
# dashtam has neither, so these fixed values stand in (never a real one).
BANKID: Final = "000000000"
BROKERID: Final = "dashtam.invalid"
# Account types whose statements are investment statements (Schwab's MARGIN and CASH: brokerage).
INVESTMENT_TYPES: Final = frozenset(
    {"INVESTMENT", "BROKERAGE", "MARGIN", "CASH", "IRA", "RETIREMENT"}
)
CARD_TYPES: Final = frozenset({"CREDIT_CARD"})
# Bank ACCTTYPE by dashtam type; anything else is CHECKING.
_BANK_ACCTTYPES: Final = {
    "CHECKING": "CHECKING",
    "SAVINGS": "SAVINGS",
    "MONEY_MARKET": "MONEYMRKT",
    "LOAN": "CREDITLINE",
    "MORTGAGE": "CREDITLINE",
    "LINE_OF_CREDIT": "CREDITLINE",
}
# The statement types, in the order of their message sets (``--ofx-type``).
STATEMENT_TYPES: Final = ("bank", "creditcard", "investment")
_ISO_CURRENCY: Final = re.compile(r"[A-Z]{3}")
# OFX's limits: NAME is 32 characters, MEMO 255, ACCTID 22, a security's name 120.
NAME_MAX: Final = 32
MEMO_MAX: Final = 255
ACCTID_MAX: Final = 22
_SECNAME_MAX: Final = 120
_TICKER_MAX: Final = 32
# What XML 1.0 cannot carry at all (control characters other than tab, newline, return).
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SPACES: Final = re.compile(r"\s+")
_ATM: Final = re.compile(r"\bATM\b", re.IGNORECASE)
_CHECK: Final = re.compile(r"^CHE(?:CK|QUE)\b", re.IGNORECASE)
_OCC: Final = re.compile(r"([A-Z0-9./]{1,6}) *(\d{2})(\d{2})(\d{2})([CP])(\d{8})")
_UNIT_PRICE_PLACES: Final = Decimal("0.000001")


def statement_type(account: BookAccount) -> str:
    """``bank``, ``creditcard`` or ``investment``: the message set of the account's statement."""
    kind = account.account.type.upper()
    if kind in CARD_TYPES:
        return "creditcard"
    if kind in INVESTMENT_TYPES:
        return "investment"
    return "bank"


def acctid(account_id: str) -> str:
    """The ACCTID of an account: dashtam's account id without dashes, cut to OFX's 22 characters.

    A UUID keeps 88 of its 128 bits, still unique among one person's
    accounts, and is recognisable as the start of the id.
    """
    return re.sub(r"[^0-9A-Za-z]", "", account_id)[:ACCTID_MAX]


def only(book: Book, kind: str) -> Book:
    """``book`` with only the accounts whose statements are of ``kind`` (``--ofx-type``).

    Several importers read the first statement of a file and no other, so
    each type can be written in a document of its own.
    """
    accounts = [item for item in book.accounts if statement_type(item) == kind]
    ids = {item.account.id for item in accounts}
    return dataclasses.replace(
        book,
        accounts=accounts,
        transactions=[t for t in book.transactions if t.account_id in ids],
        positions=[p for p in book.positions if p.account_id in ids],
        by_id={key: item for key, item in book.by_id.items() if key in ids},
    )


def left_out(book: Book) -> list[str]:
    """Why each account the OFX export leaves out is left out (an ISO currency and a balance)."""
    notes = []
    for item in book.accounts:
        if not _ISO_CURRENCY.fullmatch(item.currency):
            code = item.currency
            notes.append(
                f"{item.name}: its currency {code} is not an ISO 4217 code, which OFX needs"
            )
        elif item.balance is None:
            notes.append(f"{item.name}: no balance known, which an OFX statement needs")
    return notes


def _exported(item: BookAccount) -> bool:
    return bool(_ISO_CURRENCY.fullmatch(item.currency)) and item.balance is not None


def _balance_of(item: BookAccount) -> Decimal:
    assert item.balance is not None  # _exported leaves out an account without one
    return item.balance


def trntype(txn: Transaction, statement: str) -> str:
    """The OFX TRNTYPE of a transaction, from its kind (its type or words for ATM and checks)."""
    words = f"{txn.type} {txn.description or ''}"
    incoming = txn.amount > 0
    by_kind = {
        Kind.INTEREST: "INT",
        Kind.DIVIDEND: "DIV",
        Kind.FEE: "FEE" if not incoming else "CREDIT",
        Kind.TRANSFER: "XFER",
        Kind.PAYMENT: "PAYMENT",
        Kind.DEPOSIT: "DEP",
        Kind.REFUND: "CREDIT",
        Kind.OTHER: "OTHER",
    }
    found = by_kind.get(txn.kind)
    if found is not None:
        return found
    if txn.kind is Kind.PURCHASE and statement == "bank" and not incoming:
        return "POS"
    if txn.kind is Kind.WITHDRAWAL and not incoming:
        if _ATM.search(words):
            return "ATM"
        if _CHECK.search(txn.type) or _CHECK.search(txn.description or ""):
            return "CHECK"
    return "CREDIT" if incoming else "DEBIT"


def _flat(text: str | None) -> str:
    """One line of text XML can carry: control characters dropped, whitespace runs one space."""
    if not text:
        return ""
    return _SPACES.sub(" ", _NOT_XML.sub("", text)).strip()


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def _el(tag: str, value: str) -> str:
    return f"<{tag}>{_escape(value)}</{tag}>"


def _when(moment: dt.datetime) -> str:
    """``YYYYMMDDHHMMSS[+0:UTC]``: OFX's date and time, in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S") + "[+0:UTC]"


def _status() -> str:
    return "<STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>"


def _stmttrn(txn: Transaction, statement: str) -> str:
    """A STMTTRN: type, date, exact amount, FITID, NAME (32) and the whole text in MEMO."""
    text = _flat(txn.description)
    parts = [
        "<STMTTRN>",
        _el("TRNTYPE", trntype(txn, statement)),
        _el("DTPOSTED", _when(txn.time)),
        _el("TRNAMT", money_text(txn.amount)),
        _el("FITID", txn.id),
    ]
    if text:
        parts.append(_el("NAME", text[:NAME_MAX].rstrip()))
        if len(text) > NAME_MAX:
            parts.append(_el("MEMO", text[:MEMO_MAX]))
    parts.append("</STMTTRN>")
    return "".join(parts)


def _window(item: BookAccount, txns: Sequence[Transaction], book: Book) -> tuple[str, str]:
    """DTSTART and DTEND of a transaction list: the export's window, else what the list spans."""
    options = book.options
    if options.since is not None:
        start = dt.datetime.combine(options.since, dt.time(), dt.UTC)
    elif txns:
        start = txns[0].time
    else:
        start = item.balance_at
    if options.until is not None:
        end = dt.datetime.combine(options.until + dt.timedelta(days=1), dt.time(), dt.UTC)
    else:
        end = max([book.generated_at, item.balance_at, *(t.time for t in txns)])
    return _when(start), _when(end)


def _balance(tag: str, amount: Decimal, at: dt.datetime) -> str:
    return f"<{tag}>{_el('BALAMT', money_text(amount))}{_el('DTASOF', _when(at))}</{tag}>"


def _bank_statement(item: BookAccount, txns: Sequence[Transaction], book: Book, kind: str) -> str:
    """A STMTTRNRS (bank) or CCSTMTTRNRS (card): the account, its transactions, its balances."""
    account = item.account
    start, end = _window(item, txns, book)
    if kind == "creditcard":
        wrapper, body = "CCSTMTTRNRS", "CCSTMTRS"
        source = f"<CCACCTFROM>{_el('ACCTID', acctid(account.id))}</CCACCTFROM>"
    else:
        wrapper, body = "STMTTRNRS", "STMTRS"
        accttype = _BANK_ACCTTYPES.get(account.type.upper(), "CHECKING")
        source = (
            f"<BANKACCTFROM>{_el('BANKID', BANKID)}{_el('ACCTID', acctid(account.id))}"
            f"{_el('ACCTTYPE', accttype)}</BANKACCTFROM>"
        )
    parts = [
        f"<{wrapper}>",
        _el("TRNUID", "0"),
        _status(),
        f"<{body}>",
        _el("CURDEF", item.currency),
        source,
        "<BANKTRANLIST>",
        _el("DTSTART", start),
        _el("DTEND", end),
        *(_stmttrn(t, kind) for t in txns),
        "</BANKTRANLIST>",
        _balance("LEDGERBAL", _balance_of(item), item.balance_at),
    ]
    if account.buying_power is not None:
        parts.append(_balance("AVAILBAL", account.buying_power, item.balance_at))
    parts.append(f"</{body}></{wrapper}>")
    return "\n".join(parts) + "\n"


def _secid(symbol: str) -> str:
    # dashtam has no CUSIP: the ticker (or OCC option symbol) is the security's id.
    return f"<SECID>{_el('UNIQUEID', symbol[:_TICKER_MAX])}{_el('UNIQUEIDTYPE', 'TICKER')}</SECID>"


def _security_kind(position: Position) -> str:
    """STOCK, MF, OPT or OTHER: the OFX aggregates a position and its security are written as."""
    asset = position.asset_type.upper()
    if asset == "OPTION" and _OCC.fullmatch(position.symbol.strip()):
        return "OPT"
    if asset == "MUTUAL_FUND":
        return "MF"
    if asset in {"EQUITY", "COLLECTIVE_INVESTMENT", "ETF", "SECURITY"}:
        return "STOCK"
    return "OTHER"


def _multiplier(kind: str) -> Decimal:
    return Decimal(100) if kind == "OPT" else Decimal(1)


def _position(position: Position, at: dt.datetime) -> str:
    """A POSSTOCK, POSMF, POSOPT or POSOTHER: units, the price worked out from the market value."""
    kind = _security_kind(position)
    units = position.quantity
    value = position.market_value
    if value is not None and units:
        price = (value / units / _multiplier(kind)).quantize(_UNIT_PRICE_PLACES).normalize()
    else:
        price = position.average_price or Decimal(0)
    if value is None:
        value = units * price * _multiplier(kind)
    parts = [
        f"<POS{kind}><INVPOS>",
        _secid(position.symbol),
        _el("HELDINACCT", "CASH"),
        _el("POSTYPE", "SHORT" if units < 0 else "LONG"),
        _el("UNITS", format(units, "f")),
        _el("UNITPRICE", format(price, "f")),
        _el("MKTVAL", money_text(value)),
        _el("DTPRICEASOF", _when(at)),
        f"</INVPOS></POS{kind}>",
    ]
    return "".join(parts)


def _investment_statement(
    item: BookAccount, txns: Sequence[Transaction], positions: Sequence[Position], book: Book
) -> str:
    """An INVSTMTTRNRS: cash movements as INVBANKTRAN, the positions, the cash as INVBAL."""
    start, end = _window(item, txns, book)
    parts = [
        "<INVSTMTTRNRS>",
        _el("TRNUID", "0"),
        _status(),
        "<INVSTMTRS>",
        _el("DTASOF", _when(item.balance_at)),
        _el("CURDEF", item.currency),
        (
            f"<INVACCTFROM>{_el('BROKERID', BROKERID)}"
            f"{_el('ACCTID', acctid(item.account.id))}</INVACCTFROM>"
        ),
        "<INVTRANLIST>",
        _el("DTSTART", start),
        _el("DTEND", end),
        *(
            f"<INVBANKTRAN>{_stmttrn(t, 'investment')}{_el('SUBACCTFUND', 'CASH')}</INVBANKTRAN>"
            for t in txns
        ),
        "</INVTRANLIST>",
    ]
    if positions:
        parts.extend(
            ["<INVPOSLIST>", *(_position(p, item.balance_at) for p in positions), "</INVPOSLIST>"]
        )
    parts.extend(
        [
            "<INVBAL>",
            _el("AVAILCASH", money_text(_balance_of(item))),
            _el("MARGINBALANCE", "0.00"),
            _el("SHORTBALANCE", "0.00"),
            "</INVBAL>",
            "</INVSTMTRS></INVSTMTTRNRS>",
        ]
    )
    return "\n".join(parts) + "\n"


def _security(position: Position) -> str:
    """The SECLIST entry of a position's security: STOCKINFO, MFINFO, OPTINFO or OTHERINFO."""
    kind = _security_kind(position)
    name = _flat(position.description) or _flat(option_label(position.symbol)) or position.symbol
    info = (
        f"<SECINFO>{_secid(position.symbol)}{_el('SECNAME', name[:_SECNAME_MAX])}"
        f"{_el('TICKER', position.symbol.strip()[:_TICKER_MAX])}</SECINFO>"
    )
    if kind == "OPT":
        match = _OCC.fullmatch(position.symbol.strip())
        assert match is not None  # _security_kind checked it
        _, year, month, day, call_put, strike = match.groups()
        expiry = dt.datetime(2000 + int(year), int(month), int(day), tzinfo=dt.UTC)
        return (
            f"<OPTINFO>{info}{_el('OPTTYPE', 'CALL' if call_put == 'C' else 'PUT')}"
            f"{_el('STRIKEPRICE', format(Decimal(strike).scaleb(-3).normalize(), 'f'))}"
            f"{_el('DTEXPIRE', _when(expiry))}{_el('SHPERCTRCT', '100')}</OPTINFO>"
        )
    return f"<{kind}INFO>{info}</{kind}INFO>"


def _statements(
    book: Book,
    exported: Sequence[BookAccount],
    txns: dict[str, list[Transaction]],
    held: dict[str, list[Position]],
) -> Iterator[str]:
    """Each message set that has accounts, then the securities of the investment accounts."""
    for kind, wrapper in (("bank", "BANKMSGSRSV1"), ("creditcard", "CREDITCARDMSGSRSV1")):
        same = [item for item in exported if statement_type(item) == kind]
        if same:
            yield f"<{wrapper}>\n"
            for item in same:
                yield _bank_statement(item, txns[item.account.id], book, kind)
            yield f"</{wrapper}>\n"
    investments = [item for item in exported if statement_type(item) == "investment"]
    if not investments:
        return
    yield "<INVSTMTMSGSRSV1>\n"
    for item in investments:
        key = item.account.id
        yield _investment_statement(item, txns[key], held[key], book)
    yield "</INVSTMTMSGSRSV1>\n"
    securities: dict[str, Position] = {}
    for item in investments:
        for position in held[item.account.id]:
            securities.setdefault(position.symbol[:_TICKER_MAX], position)
    if securities:
        yield "<SECLISTMSGSRSV1><SECLIST>\n"
        for symbol in sorted(securities):
            yield _security(securities[symbol]) + "\n"
        yield "</SECLIST></SECLISTMSGSRSV1>\n"


def render(book: Book) -> Iterator[str]:
    """The headers, the sign-on, then each message set with a statement per account of its type."""
    yield '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
    yield (
        '<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" '
        'NEWFILEUID="NONE"?>\n'
    )
    yield "<OFX>\n"
    yield (
        f"<SIGNONMSGSRSV1><SONRS>{_status()}{_el('DTSERVER', _when(book.generated_at))}"
        f"{_el('LANGUAGE', 'ENG')}</SONRS></SIGNONMSGSRSV1>\n"
    )
    exported = [item for item in book.accounts if _exported(item)]
    txns: dict[str, list[Transaction]] = {item.account.id: [] for item in exported}
    for txn in book.transactions:
        if txn.account_id in txns:
            txns[txn.account_id].append(txn)
    held: dict[str, list[Position]] = {item.account.id: [] for item in exported}
    for position in book.positions:
        if position.account_id in held:
            held[position.account_id].append(position)
    yield from _statements(book, exported, txns, held)
    yield "</OFX>\n"
