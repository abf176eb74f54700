"""SimpleFIN's accounts, holdings and transactions as dashtam's neutral models.

SimpleFIN gives no account type and no transaction type. An account's type
is read from its holdings and its name (documented as a best guess in
docs/providers/simplefin.md); a transaction's type is what its sign says
(``CREDIT``: money in, ``DEBIT``: money out) and its kind a best guess from
its description and the account's type. Amounts keep SimpleFIN's sign, which
is dashtam's: positive is money into the account.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.models import Account, Kind, Position, Transaction
from dashtam_cli.core.providers.base import transaction_id

if TYPE_CHECKING:
    import datetime as dt

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.providers.simplefin.protocol import Entry, SetAccount

__all__ = [
    "TRANSACTION_TYPES",
    "account_model",
    "account_type",
    "kind_of",
    "masked",
    "positions",
    "transaction",
]

PROVIDER: Final = "simplefin"
TRANSACTION_TYPES: Final = ("CREDIT", "DEBIT")
PENDING: Final = "PENDING"
# An average price worked out from a cost basis keeps this many places, not 28.
AVERAGE_PLACES: Final = 6
POSTED: Final = "POSTED"

# Account types by words in the account's name, first match wins.
_ACCOUNT_WORDS: Final = (
    (re.compile(r"\b(credit|card|visa|mastercard|amex|discover)\b", re.IGNORECASE), "CREDIT_CARD"),
    (re.compile(r"\b(mortgage|loan|heloc|line of credit)\b", re.IGNORECASE), "LOAN"),
    (re.compile(r"\b(savings?|money market)\b", re.IGNORECASE), "SAVINGS"),
    (re.compile(r"\b(checking|chequing|debit)\b", re.IGNORECASE), "CHECKING"),
    (
        re.compile(r"\b(brokerage|ira|roth|401\(?k|403\(?b|hsa|invest\w*|trust)\b", re.IGNORECASE),
        "INVESTMENT",
    ),
)
# Transaction kinds by words in the description, first match wins.
_KIND_WORDS: Final = (
    (re.compile(r"\binterest\b", re.IGNORECASE), Kind.INTEREST),
    (re.compile(r"\b(dividend|div)\b", re.IGNORECASE), Kind.DIVIDEND),
    (re.compile(r"\b(fee|service charge|overdraft)\b", re.IGNORECASE), Kind.FEE),
    (re.compile(r"\b(tax|irs)\b", re.IGNORECASE), Kind.TAX),
    (re.compile(r"\b(refund|return|reversal)\b", re.IGNORECASE), Kind.REFUND),
    (re.compile(r"\b(transfer|xfer|zelle|venmo)\b", re.IGNORECASE), Kind.TRANSFER),
    (re.compile(r"\b(payment|autopay|pymt|bill pay)\b", re.IGNORECASE), Kind.PAYMENT),
    (re.compile(r"\b(payroll|direct dep|deposit)\b", re.IGNORECASE), Kind.DEPOSIT),
    (re.compile(r"\b(atm|withdrawal|check \d+)\b", re.IGNORECASE), Kind.WITHDRAWAL),
)


def masked(key: str) -> str:
    """``****abcd``: SimpleFIN gives no account number; the end of its account id stands in."""
    return "****" + key[-4:]


def account_type(item: SetAccount) -> str:
    """A guess: INVESTMENT with holdings, REWARDS in a custom currency, else by name, else BANK."""
    if item.holdings:
        return "INVESTMENT"
    if "/" in item.currency:  # miles or points: a custom currency's URL
        return "REWARDS"
    for pattern, kind in _ACCOUNT_WORDS:
        if pattern.search(item.name):
            return kind
    return "BANK"


def kind_of(provider_type: str) -> Kind:
    """The neutral kind of SimpleFIN's only types: the sign of the amount."""
    return {"CREDIT": Kind.DEPOSIT, "DEBIT": Kind.WITHDRAWAL}.get(provider_type, Kind.OTHER)


def _kind(entry: Entry, account: Account) -> Kind:
    text = " ".join(part for part in (entry.description, entry.payee, entry.memo) if part)
    for pattern, kind in _KIND_WORDS:
        if pattern.search(text):
            return kind
    incoming = entry.amount > 0
    if account.type in {"CREDIT_CARD", "LOAN"}:
        return Kind.PAYMENT if incoming else Kind.PURCHASE
    return Kind.DEPOSIT if incoming else Kind.WITHDRAWAL


def account_model(
    info: ConnectionInfo, account_id: str, item: SetAccount, now: dt.datetime
) -> Account:
    """The neutral account: balance as total, holdings' worth as market value, the rest as cash."""
    market = None
    if item.holdings:
        values = [h.market_value for h in item.holdings if h.market_value is not None]
        market = sum(values, Decimal(0))
    return Account(
        id=account_id,
        connection=info.name,
        provider=PROVIDER,
        name=item.name,
        type=account_type(item),
        number=masked(item.id),
        currency=item.currency,
        cash=item.balance - market if market is not None else item.balance,
        market_value=market,
        total_value=item.balance,
        buying_power=item.available,
        fetched_at=now,
        institution=item.institution,
    )


def positions(account: Account, item: SetAccount) -> list[Position]:
    """Holdings as positions; the average price is the cost basis over the shares."""
    result = []
    for holding in item.holdings:
        average = None
        if holding.cost_basis is not None and holding.shares:
            average = holding.cost_basis / holding.shares
            exponent = average.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -AVERAGE_PLACES:  # a long quotient
                average = average.quantize(Decimal(1).scaleb(-AVERAGE_PLACES))
        result.append(
            Position(
                account_id=account.id,
                account=account.number,
                symbol=holding.symbol or holding.description or holding.id,
                description=holding.description,
                asset_type="SECURITY",
                quantity=holding.shares,
                average_price=average,
                market_value=holding.market_value,
                day_profit_loss=None,
                cost_basis=holding.cost_basis,
                unrealized_gain=(
                    None
                    if holding.cost_basis is None or holding.market_value is None
                    else holding.market_value - holding.cost_basis
                ),
            )
        )
    return result


def transaction(account: Account, entry: Entry, now: dt.datetime) -> Transaction:
    """One transaction; a pending one is dated when it was made (or when it was first seen)."""
    when = (
        entry.posted
        or entry.transacted_at
        or now.replace(hour=0, minute=0, second=0, microsecond=0)
    )
    description = entry.description or entry.payee or ""
    return Transaction(
        id=transaction_id(account.id, entry.id),
        account_id=account.id,
        account=account.number,
        time=when,
        trade_date=entry.transacted_at.date() if entry.transacted_at else None,
        settlement_date=entry.posted.date() if entry.posted else None,
        type="CREDIT" if entry.amount > 0 else "DEBIT",
        kind=_kind(entry, account),
        description=description or None,
        amount=entry.amount,
        symbol=None,
        quantity=None,
        price=None,
        fees=Decimal(0),
        status=PENDING if entry.pending else POSTED,
    )
