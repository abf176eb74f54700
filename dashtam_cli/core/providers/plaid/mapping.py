"""Plaid's accounts, transactions, holdings and investment transactions as dashtam's models.

Plaid's ``amount`` is positive when money leaves the account (for investment
transactions too): dashtam's is the opposite, so every amount is negated
here, and nowhere else. A credit card's or a loan's ``current`` balance is
what is owed, positive at Plaid: its total value here is negative. Money is
Decimal from the JSON text; a currency is ``iso_currency_code``, else
``unofficial_currency_code`` (kept as given, never added to a real one).
A transaction's provider type is Plaid's ``personal_finance_category``
(``detailed``, else ``primary``); an investment transaction's is
``TYPE/SUBTYPE`` (``CASH/DIVIDEND``, ``BUY/BUY``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.core.errors import ProviderError
from dashtam_cli.core.models import Account, Kind, Position, Transaction
from dashtam_cli.core.providers.base import transaction_id
from dashtam_cli.core.providers.plaid import TRANSACTION_TYPES
from dashtam_cli.core.redact import plain

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dashtam_cli.core.models import ConnectionInfo

__all__ = [
    "TRANSACTION_TYPES",
    "PlaidAccount",
    "account_model",
    "investment_transaction",
    "kind_of",
    "positions",
    "read_account",
    "transaction",
]

PROVIDER: Final = "plaid"
PENDING: Final = "PENDING"
POSTED: Final = "POSTED"
NAME_LIMIT: Final = 200
MAX_ID_LENGTH: Final = 256
MAX_AMOUNT: Final = Decimal("1e15")
AVERAGE_PLACES: Final = 6
# Detailed categories (or their prefixes) first, then primaries; first match wins.
_CATEGORY_KINDS: Final = (
    ("INCOME_DIVIDENDS", Kind.DIVIDEND),
    ("INCOME_INTEREST", Kind.INTEREST),
    ("INCOME_TAX_REFUND", Kind.REFUND),
    ("GOVERNMENT_AND_NON_PROFIT_TAX", Kind.TAX),
    ("LOAN_PAYMENTS_CREDIT_CARD_PAYMENT", Kind.PAYMENT),
    ("BANK_FEES", Kind.FEE),
    ("LOAN_PAYMENTS", Kind.PAYMENT),
    ("TRANSFER_IN", Kind.TRANSFER),
    ("TRANSFER_OUT", Kind.TRANSFER),
    ("INCOME", Kind.DEPOSIT),
)
# Investment transactions: by subtype first, then by type.
_INVESTMENT_SUBTYPE_KINDS: Final = (
    ("DIVIDEND_REINVESTMENT", Kind.TRADE),
    ("INTEREST_REINVESTMENT", Kind.TRADE),
    ("CAPITAL_GAIN_REINVESTMENT", Kind.TRADE),
    ("DIVIDEND", Kind.DIVIDEND),
    ("INTEREST", Kind.INTEREST),
    ("CAPITAL_GAIN", Kind.DIVIDEND),
    ("TAX", Kind.TAX),
    ("FEE", Kind.FEE),
    ("MARGIN_EXPENSE", Kind.FEE),
    ("CONTRIBUTION", Kind.DEPOSIT),
    ("DEPOSIT", Kind.DEPOSIT),
    ("WITHDRAWAL", Kind.WITHDRAWAL),
    ("DISTRIBUTION", Kind.WITHDRAWAL),
    ("LOAN_PAYMENT", Kind.PAYMENT),
    ("TRANSFER", Kind.TRANSFER),
    ("SEND", Kind.TRANSFER),
    ("SPLIT", Kind.ADJUSTMENT),
    ("MERGER", Kind.ADJUSTMENT),
    ("SPIN_OFF", Kind.ADJUSTMENT),
    ("ADJUSTMENT", Kind.ADJUSTMENT),
)
_INVESTMENT_TYPE_KINDS: Final = {
    "BUY": Kind.TRADE,
    "SELL": Kind.TRADE,
    "FEE": Kind.FEE,
    "TRANSFER": Kind.TRANSFER,
    "CANCEL": Kind.ADJUSTMENT,
    "CASH": Kind.OTHER,
}
_ACCOUNT_TYPES: Final = {
    "credit": "CREDIT_CARD",
    "loan": "LOAN",
    "investment": "INVESTMENT",
    "brokerage": "INVESTMENT",
}
_SAVINGS: Final = frozenset({"savings", "money market", "cd", "hsa", "cash management"})


class Unreadable(ValueError):
    """A field of Plaid's answer is not what the spec says it is."""


def bad_answer(what: str, why: str) -> ProviderError:
    """The error for an answer dashtam cannot read: nothing of it is stored."""
    return ProviderError(
        f"Plaid answered {what} that dashtam cannot read: {why}",
        hint="nothing of it was stored and the sync point did not move; retry later",
    )


def _text(raw: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise Unreadable(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{key} is not text")
    return plain(value, limit=NAME_LIMIT)


def ident(raw: Mapping[str, Any], key: str) -> str:
    """An id Plaid gives (``account_id``, ``transaction_id``): printable text of bounded length."""
    value = raw.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise Unreadable(f"{key} is not an id")
    return value


def money(raw: Mapping[str, Any], key: str, *, required: bool = False) -> Decimal | None:
    """An amount as Decimal (the JSON text's digits, never a float's)."""
    value = raw.get(key)
    if value is None:
        if required:
            raise Unreadable(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise Unreadable(f"{key} is not an amount")
    try:
        amount = Decimal(value)
    except decimal.InvalidOperation:
        raise Unreadable(f"{key} is not an amount") from None
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        raise Unreadable(f"{key} is out of range")
    return amount


def _day(raw: Mapping[str, Any], key: str) -> dt.date | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{key} is not a date")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Unreadable(f"{key} is not a date") from None


def _moment(raw: Mapping[str, Any], key: str) -> dt.datetime | None:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None  # an optional detail: the date stands
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def currency(raw: Mapping[str, Any]) -> str:
    """``iso_currency_code``, else ``unofficial_currency_code`` as given, else USD."""
    iso = raw.get("iso_currency_code")
    if isinstance(iso, str) and len(iso) == 3 and iso.isascii() and iso.isalpha():  # noqa: PLR2004
        return iso.upper()
    other = raw.get("unofficial_currency_code")
    if isinstance(other, str) and other.strip():
        return plain(other, limit=40)
    if iso is not None:
        raise Unreadable("iso_currency_code is not a currency code")
    return "USD"


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class PlaidAccount:
    """An account as ``/accounts/get`` gives it, checked."""

    id: str
    name: str
    mask: str | None
    type: str
    subtype: str | None
    currency: str
    current: Decimal | None
    available: Decimal | None
    updated_at: dt.datetime | None

    @property
    def investment(self) -> bool:
        """An account that holds securities (``/investments/*`` apply)."""
        return self.type in {"investment", "brokerage"}


def read_account(raw: object) -> PlaidAccount:
    """One account of Plaid's ``accounts`` list; :class:`Unreadable` when it breaks the spec."""
    if not isinstance(raw, dict):
        raise Unreadable("an account is not an object")
    balances = raw.get("balances")
    if not isinstance(balances, dict):
        raise Unreadable("balances is missing")
    mask = _text(raw, "mask")
    return PlaidAccount(
        id=ident(raw, "account_id"),
        name=_text(raw, "name") or _text(raw, "official_name") or "Plaid account",
        mask=mask[-4:] if mask else None,
        type=(_text(raw, "type") or "other").lower(),
        subtype=(_text(raw, "subtype") or "").lower() or None,
        currency=currency(balances),
        current=money(balances, "current"),
        available=money(balances, "available"),
        updated_at=_moment(balances, "last_updated_datetime"),
    )


def account_type(item: PlaidAccount) -> str:
    """Dashtam's account type for Plaid's type and subtype."""
    if item.type == "depository":
        if item.subtype == "checking":
            return "CHECKING"
        return "SAVINGS" if item.subtype in _SAVINGS else "BANK"
    return _ACCOUNT_TYPES.get(item.type, "OTHER")


def account_model(  # noqa: PLR0913 - one account's parts
    info: ConnectionInfo,
    account_id: str,
    item: PlaidAccount,
    now: dt.datetime,
    *,
    institution: str | None,
    holdings_value: Decimal | None = None,
) -> Account:
    """The neutral account: what a card or a loan owes is negative; holdings are market value."""
    kind = account_type(item)
    total = item.current
    if total is not None and kind in {"CREDIT_CARD", "LOAN"}:
        total = -total
    cash = total
    if holdings_value is not None and total is not None:
        cash = total - holdings_value
    return Account(
        id=account_id,
        connection=info.name,
        provider=PROVIDER,
        name=item.name,
        type=kind,
        number=f"****{item.mask or item.id[-4:]}",
        currency=item.currency,
        cash=cash,
        market_value=holdings_value,
        total_value=total,
        buying_power=None if kind in {"CREDIT_CARD", "LOAN"} else item.available,
        fetched_at=now,
        institution=institution,
    )


def kind_of(provider_type: str) -> Kind:
    """The neutral kind of a Plaid category or an investment ``TYPE/SUBTYPE``."""
    if "/" in provider_type:
        main, _, sub = provider_type.partition("/")
        for word, kind in _INVESTMENT_SUBTYPE_KINDS:
            if word in sub:
                return kind
        return _INVESTMENT_TYPE_KINDS.get(main, Kind.OTHER)
    for prefix, kind in _CATEGORY_KINDS:
        if provider_type.startswith(prefix):
            return kind
    if provider_type.startswith(TRANSACTION_TYPES):
        return Kind.PURCHASE  # a spending category (the others matched above)
    return Kind.OTHER


def _category(raw: Mapping[str, Any]) -> str:
    pfc = raw.get("personal_finance_category")
    if isinstance(pfc, dict):
        for key in ("detailed", "primary"):
            value = pfc.get(key)
            if isinstance(value, str) and value.strip():
                return plain(value, limit=80).upper()
    return "UNCATEGORIZED"


def plaid_transaction_id(raw: object) -> tuple[str, str]:
    """``(account_id, transaction_id)`` of a transaction or a removed one."""
    if not isinstance(raw, dict):
        raise Unreadable("a transaction is not an object")
    return ident(raw, "account_id"), ident(raw, "transaction_id")


def transaction(account: Account, raw: Mapping[str, Any]) -> Transaction:
    """One transaction of ``/transactions/sync``; its amount negated to dashtam's sign."""
    plaid_id = ident(raw, "transaction_id")
    amount = money(raw, "amount", required=True)
    assert amount is not None
    pending = raw.get("pending") is True
    day = _day(raw, "date")
    if day is None:
        raise Unreadable("date is missing")
    authorized = _day(raw, "authorized_date")
    when = _moment(raw, "datetime") or _moment(raw, "authorized_datetime") or _midnight(day)
    provider_type = _category(raw)
    kind = kind_of(provider_type)
    if kind is Kind.OTHER:
        incoming = amount < 0
        if account.type in {"CREDIT_CARD", "LOAN"}:
            kind = Kind.PAYMENT if incoming else Kind.PURCHASE
        else:
            kind = Kind.DEPOSIT if incoming else Kind.WITHDRAWAL
    return Transaction(
        id=transaction_id(account.id, plaid_id),
        account_id=account.id,
        account=account.number,
        time=when,
        trade_date=authorized,
        settlement_date=None if pending else day,
        type=provider_type,
        kind=kind,
        description=_text(raw, "merchant_name") or _text(raw, "name"),
        amount=-amount,
        symbol=None,
        quantity=None,
        price=None,
        fees=Decimal(0),
        status=PENDING if pending else POSTED,
    )


def _security_label(security: Mapping[str, Any] | None, fallback: str) -> tuple[str, str | None]:
    if security is None:
        return fallback, None
    name = _text(security, "name")
    return _text(security, "ticker_symbol") or name or fallback, name


def investment_transaction(
    account: Account, raw: Mapping[str, Any], securities: Mapping[str, Mapping[str, Any]]
) -> Transaction:
    """One investment transaction; its amount negated to dashtam's sign, its security joined."""
    plaid_id = ident(raw, "investment_transaction_id")
    amount = money(raw, "amount", required=True)
    assert amount is not None
    day = _day(raw, "date")
    if day is None:
        raise Unreadable("date is missing")
    main = (_text(raw, "type") or "other").upper().replace(" ", "_")
    sub = (_text(raw, "subtype") or main).upper().replace(" ", "_")
    provider_type = f"{main}/{sub}"
    security_id = raw.get("security_id")
    security = securities.get(security_id) if isinstance(security_id, str) else None
    symbol = _security_label(security, "")[0] or None
    return Transaction(
        id=transaction_id(account.id, f"investment:{plaid_id}"),
        account_id=account.id,
        account=account.number,
        time=_moment(raw, "transaction_datetime") or _midnight(day),
        trade_date=day,
        settlement_date=day,
        type=provider_type,
        kind=kind_of(provider_type),
        description=_text(raw, "name"),
        amount=-amount,
        symbol=symbol,
        quantity=money(raw, "quantity"),
        price=money(raw, "price"),
        fees=money(raw, "fees") or Decimal(0),
        status=POSTED,
    )


def positions(
    account: Account,
    holdings: list[Mapping[str, Any]],
    securities: Mapping[str, Mapping[str, Any]],
) -> list[Position]:
    """Holdings as positions, each joined to its security; average price = cost basis / quantity."""
    result = []
    for raw in holdings:
        security_id = ident(raw, "security_id")
        quantity = money(raw, "quantity", required=True)
        assert quantity is not None
        value = money(raw, "institution_value")
        cost = money(raw, "cost_basis")
        security = securities.get(security_id)
        symbol, name = _security_label(security, security_id)
        kind = (_text(security, "type") if security else None) or "security"
        average = None
        if cost is not None and quantity:
            average = cost / quantity
            exponent = average.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -AVERAGE_PLACES:
                average = average.quantize(Decimal(1).scaleb(-AVERAGE_PLACES))
        result.append(
            Position(
                account_id=account.id,
                account=account.number,
                symbol=symbol,
                description=name,
                asset_type=kind.upper().replace(" ", "_"),
                quantity=quantity,
                average_price=average,
                market_value=value,
                day_profit_loss=None,
                cost_basis=cost,
                unrealized_gain=None if cost is None or value is None else value - cost,
            )
        )
    return result
