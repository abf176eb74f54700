"""Schwab's JSON to dashtam's neutral models: accounts, positions, transactions, kinds."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pydantic

from dashtam_cli.core.models import Account, ConnectionInfo, Kind, Position, Transaction
from dashtam_cli.core.providers.base import transaction_id
from dashtam_cli.core.providers.schwab.client import (
    EARLIEST,
    LATEST,
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    ApiError,
    Fields,
    bad_field,
    encodable,
    parse_schwab_time,
)
from dashtam_cli.core.providers.schwab.wire import (
    RawTransaction,
    WireInstrument,
    WireItem,
    WireTransaction,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["KINDS", "account_model", "kind_of", "mask_number", "positions", "transaction"]

T = TypeVar("T")
_QUANTITY_TYPES: Final = frozenset({"TRADE", "RECEIVE_AND_DELIVER"})

# Schwab's transaction types, each to a neutral kind. Types that cover several
# kinds (DIVIDEND_OR_INTEREST, JOURNAL) are told apart by their description.
KINDS: Final[dict[str, Kind]] = {
    "TRADE": Kind.TRADE,
    "RECEIVE_AND_DELIVER": Kind.TRANSFER,
    "DIVIDEND_OR_INTEREST": Kind.DIVIDEND,
    "ACH_RECEIPT": Kind.DEPOSIT,
    "ACH_DISBURSEMENT": Kind.WITHDRAWAL,
    "CASH_RECEIPT": Kind.DEPOSIT,
    "CASH_DISBURSEMENT": Kind.WITHDRAWAL,
    "ELECTRONIC_FUND": Kind.TRANSFER,
    "WIRE_OUT": Kind.WITHDRAWAL,
    "WIRE_IN": Kind.DEPOSIT,
    "JOURNAL": Kind.TRANSFER,
    "MEMORANDUM": Kind.OTHER,
    "MARGIN_CALL": Kind.ADJUSTMENT,
    "MONEY_MARKET": Kind.ADJUSTMENT,
    "SMA_ADJUSTMENT": Kind.ADJUSTMENT,
}


def kind_of(schwab_type: str, description: str | None = None) -> Kind:
    """The neutral kind of a Schwab type; its description tells interest, fees and tax apart."""
    words = (description or "").upper()
    if schwab_type in {"DIVIDEND_OR_INTEREST", "JOURNAL", "MEMORANDUM"} and words:
        if "INTEREST" in words:
            return Kind.INTEREST
        if "TAX" in words or "WITHHOLDING" in words:
            return Kind.TAX
        if "FEE" in words:
            return Kind.FEE
    return KINDS.get(schwab_type, Kind.OTHER)


def mask_number(number: str) -> str:
    """``****5678``: the last four digits only."""
    return "****" + number[-4:]


def validated(what: str, build: Callable[[], T]) -> T:
    """Build a record; a value pydantic refuses becomes one ApiError naming the field.

    The readers of :class:`Fields` check every field first; this is the net
    under them, so that no provider value ever surfaces as a traceback.
    """
    try:
        return build()
    except pydantic.ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "item"
        raise ApiError(
            f"Schwab {what}: field {field} is unusable ({first['msg']})",
            hint="Schwab sent data dashtam cannot use; retry later, and report it if it persists",
        ) from None


def account_model(
    info: ConnectionInfo,
    account_id: str,
    raw: Fields,
    now: dt.datetime,
    nickname: str | None = None,
) -> Account:
    """The account record; named by its nickname, else by its type and masked number."""
    sec = raw.obj("securitiesAccount")
    number = sec.identifier("accountNumber") or ""
    current = sec.obj("currentBalances")
    aggregated = raw.obj("aggregatedBalance")
    positions = sec.objects("positions")
    market = sum(
        (p.money("marketValue") or decimal.Decimal(0) for p in positions), decimal.Decimal(0)
    )
    account_type = sec.text("type") or "UNKNOWN"
    total = current.money("liquidationValue")
    if total is None:
        total = aggregated.money("currentLiquidationValue")
    cash = current.money("cashBalance")
    if cash is None:
        cash = current.money("totalCash")  # the spec's CashBalance has no cashBalance
    buying_power = current.money("buyingPower")
    if account_type == "CASH" or buying_power is None:
        # A cash account (most IRAs) has no buying power, only cash available for trading.
        available = current.money("cashAvailableForTrading")
        buying_power = available if available is not None else buying_power
    return validated(
        "accounts",
        lambda: Account(
            id=account_id,
            connection=info.name,
            provider=info.provider,
            name=nickname or f"{account_type.title()} {mask_number(number)}",
            type=account_type,
            number=mask_number(number),
            currency="USD",
            cash=cash,
            market_value=market if positions else decimal.Decimal(0),
            total_value=total,
            buying_power=buying_power,
            fetched_at=now,
            institution="Charles Schwab",
        ),
    )


def positions(account: Account, raw: Fields) -> list[Position]:
    """The account's holdings; ``quantity`` is long minus short."""
    result = []
    for item in raw.obj("securitiesAccount").objects("positions"):
        instrument = item.obj("instrument")
        long_q = item.money("longQuantity") or decimal.Decimal(0)
        short_q = item.money("shortQuantity") or decimal.Decimal(0)
        market = item.money("marketValue")
        open_long, open_short = item.money("longOpenProfitLoss"), item.money("shortOpenProfitLoss")
        gain = None
        if open_long is not None or open_short is not None:
            gain = (open_long or decimal.Decimal(0)) + (open_short or decimal.Decimal(0))
        fields: dict[str, Any] = {
            "account_id": account.id,
            "account": account.number,
            "symbol": instrument.text("symbol") or "",
            "description": instrument.text("description"),
            "asset_type": instrument.text("assetType") or "UNKNOWN",
            "quantity": long_q - short_q,
            "average_price": item.money("averagePrice"),
            "market_value": market,
            "day_profit_loss": item.money("currentDayProfitLoss"),
            # Schwab gives the open profit or loss; the cost follows from it without
            # needing the contract's multiplier (an option's price is per share).
            "cost_basis": None if gain is None or market is None else market - gain,
            "unrealized_gain": gain,
        }
        result.append(validated("accounts", functools.partial(Position.model_validate, fields)))
    return result


def _fees(items: Sequence[Fields], main: Fields | None, *, trade: bool) -> decimal.Decimal:
    """What a transaction's fee lines cost, positive when money left for them.

    A fee line is an item with a ``feeType`` and, in a trade, also any
    currency line beside the instrument traded: Schwab sends some fees (a
    futures option's exchange and NFA fees) as ``CURRENCY_USD`` lines without
    a ``feeType``. Each line's ``cost`` counts with its sign (money out is
    negative, a rebate positive), so a trade's ``netAmount`` is the traded
    item's cost minus these fees; a line without ``cost`` counts its
    ``amount`` as money out.
    """
    total = decimal.Decimal(0)
    for line in items:
        if line is main:
            continue
        currency = line.obj("instrument").text("assetType") == "CURRENCY"
        if not (line.get("feeType") or (trade and main is not None and currency)):
            continue
        cost = line.money("cost")
        if cost is None:
            cost = -abs(line.money("amount") or decimal.Decimal(0))
        total -= cost
    return total


def transaction(account_id: str, masked: str, raw: RawTransaction) -> Transaction:
    """One transaction; any field of the wrong type (or an unreadable time) is an ApiError.

    A transaction decoded by :mod:`wire` with its fields in the forms Schwab
    sends (exact amounts, ids and times as text or numbers) is read
    directly; anything else, including every transaction with a field in
    another form and every one ``json.loads`` parsed (its answer was of
    another shape), is read by the :class:`Fields` readers, which name the
    field. Both give the same record.
    """
    if not isinstance(raw, WireTransaction):
        return checked_transaction(account_id, masked, raw)
    try:
        fields = _plain_fields(account_id, masked, raw)
    except _NotPlain:
        return checked_transaction(account_id, masked, raw.as_dict())
    try:
        return Transaction.model_validate(fields)
    except pydantic.ValidationError:  # the same error as the readers' path gives
        return validated(f"transactions of {masked}", lambda: Transaction.model_validate(fields))


def checked_transaction(account_id: str, masked: str, raw: dict[str, Any]) -> Transaction:
    """One transaction read field by field with :class:`Fields`: the reference of the fast read."""
    what = f"transactions of {masked}"
    item = Fields(raw, what=what)
    activity = item.identifier("activityId")
    if activity is None:
        raise bad_field(what, "activityId", "a number or short text", None)
    item = item.labelled(f"activity {activity}")
    trade_date = item.date("tradeDate")
    moment = item.time("time")
    if moment is None:
        if trade_date is None:
            raise bad_field(what, f"time of activity {activity}", "a readable date-time", None)
        moment = dt.datetime.combine(trade_date, dt.time(), tzinfo=dt.UTC)
    items = item.objects("transferItems")
    main = next((i for i in items if i.obj("instrument").text("assetType") != "CURRENCY"), None)
    kind = item.text("type")
    fees = _fees(items, main, trade=kind == "TRADE")
    instrument = main.obj("instrument") if main is not None else Fields(None, what=what)
    fields: dict[str, Any] = {
        "id": transaction_id(account_id, activity),
        "account_id": account_id,
        "account": masked,
        "time": moment,
        "trade_date": trade_date,
        "settlement_date": item.date("settlementDate"),
        "type": kind or "UNKNOWN",
        "kind": kind_of(kind or "UNKNOWN", item.text("description")),
        "description": item.text("description") or instrument.text("description"),
        "amount": item.money("netAmount") or decimal.Decimal(0),
        "symbol": instrument.text("symbol"),
        # Only trades move a quantity of an instrument; other items carry cash amounts.
        "quantity": main.money("amount") if main is not None and kind in _QUANTITY_TYPES else None,
        "price": main.money("price") if main is not None else None,
        "fees": fees,
        "status": item.text("status"),
    }
    return validated(what, lambda: Transaction.model_validate(fields))


class _NotPlain(Exception):
    """A field in a form only the :class:`Fields` readers handle (or refuse): they take over."""


_EARLIEST_DAY: Final = EARLIEST.date()
_LATEST_DAY: Final = LATEST.date()
_NO_INSTRUMENT: Final = WireInstrument()
_ZERO: Final = decimal.Decimal(0)


def _text(value: object) -> str | None:
    if value is None or (type(value) is str and (value.isascii() or encodable(value))):
        return value
    raise _NotPlain


def _money(value: object) -> decimal.Decimal | None:
    """An exact amount as JSON gives it (Decimal or int); text amounts go to the readers."""
    if value is None:
        return None
    if type(value) is decimal.Decimal:
        if value.is_finite() and abs(value) < MAX_AMOUNT:
            return value
    elif type(value) is int:
        amount = decimal.Decimal(value)
        if abs(amount) < MAX_AMOUNT:
            return amount
    raise _NotPlain


def _day(value: object) -> dt.date | None:
    if value is None or value == "":
        return None
    if type(value) is str:
        try:
            day = dt.date.fromisoformat(value[:10])
        except ValueError:
            raise _NotPlain from None
        if _EARLIEST_DAY <= day < _LATEST_DAY:
            return day
    raise _NotPlain


def _moment(value: object) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if type(value) is str:
        try:
            moment = parse_schwab_time(value)
        except ValueError:
            raise _NotPlain from None
        if EARLIEST <= moment < LATEST:
            return moment
    raise _NotPlain


def _activity(value: object) -> str:
    if type(value) is int and value >= 0:
        return str(value)
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value
    raise _NotPlain


def _plain_fields(account_id: str, masked: str, raw: WireTransaction) -> dict[str, Any]:
    """The fields of :func:`checked_transaction`, read straight from the decoded transaction.

    Accepts only what the readers accept, and computes each value with the
    same expressions; anything else raises :class:`_NotPlain`.
    """
    activity = _activity(raw.activity_id)
    trade_date = _day(raw.trade_date)
    moment = _moment(raw.time)
    if moment is None:
        if trade_date is None:
            raise _NotPlain
        moment = dt.datetime.combine(trade_date, dt.time(), tzinfo=dt.UTC)
    lines: list[tuple[WireItem, WireInstrument, str | None]] = []
    main = None
    for line in raw.transfer_items or ():
        instrument = line.instrument or _NO_INSTRUMENT
        asset = _text(instrument.asset_type)
        entry = (line, instrument, asset)
        if main is None and asset != "CURRENCY":
            main = entry
        lines.append(entry)
    kind = _text(raw.type)
    trade = kind == "TRADE"
    fees = _ZERO
    for entry in lines:
        if entry is main:
            continue
        line, _, asset = entry
        if not (line.fee_type or (trade and main is not None and asset == "CURRENCY")):
            continue
        cost = _money(line.cost)
        if cost is None:
            cost = -abs(_money(line.amount) or _ZERO)
        fees -= cost
    instrument = main[1] if main is not None else _NO_INSTRUMENT
    description = _text(raw.description)
    return {
        "id": transaction_id(account_id, activity),
        "account_id": account_id,
        "account": masked,
        "time": moment,
        "trade_date": trade_date,
        "settlement_date": _day(raw.settlement_date),
        "type": kind or "UNKNOWN",
        "kind": kind_of(kind or "UNKNOWN", description),
        "description": description or _text(instrument.description),
        "amount": _money(raw.net_amount) or _ZERO,
        "symbol": _text(instrument.symbol),
        "quantity": (
            _money(main[0].amount) if main is not None and kind in _QUANTITY_TYPES else None
        ),
        "price": _money(main[0].price) if main is not None else None,
        "fees": fees,
        "status": _text(raw.status),
    }
