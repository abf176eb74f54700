"""Deterministic, Schwab-shaped accounts, positions and transactions generated from a seed."""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import decimal
import hashlib
import random
from typing import Any, Final

__all__ = ["SandboxAccount", "generate_accounts"]

CENT: Final = decimal.Decimal("0.01")
EQUITIES: Final = (
    ("AAPL", "APPLE INC", "190"),
    ("MSFT", "MICROSOFT CORP", "410"),
    ("NVDA", "NVIDIA CORP", "120"),
    ("VTI", "VANGUARD TOTAL STOCK MARKET ETF", "265"),
    ("JNJ", "JOHNSON & JOHNSON", "155"),
    ("KO", "COCA-COLA CO", "62"),
    ("TSLA", "TESLA INC", "240"),
    ("META", "META PLATFORMS INC", "500"),
)
ACCOUNT_TYPES: Final = ("MARGIN", "CASH", "MARGIN", "CASH")
# The nickname each account has at the sandbox bank, by the same position as its type.
NICKNAMES: Final = ("Individual Brokerage", "Roth IRA", "Joint Brokerage", "Rollover IRA")


def _money(value: decimal.Decimal) -> decimal.Decimal:
    return value.quantize(CENT, rounding=decimal.ROUND_HALF_EVEN)


def _num(value: decimal.Decimal) -> float | int:
    """A JSON number whose text shows exactly ``value``'s digits (floats print shortest)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _time(moment: dt.datetime) -> str:
    # Schwab's live format: +0000 without a colon.
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")


def _option_symbol(root: str, expiry: dt.date, put_call: str, strike: int) -> str:
    # OCC style, padded with spaces to six characters: "META  250131P00510000".
    return f"{root:<6}{expiry:%y%m%d}{put_call[0]}{strike * 1000:08d}"


def _derived_id(text: str, digits: int) -> int:
    """A stable number for ``text`` (no draw from the generator, so other values stay put)."""
    modulus: int = 10**digits
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) % modulus


def _usd() -> dict[str, Any]:
    # Live CURRENCY instruments, fee lines and cash movements alike.
    return {
        "assetType": "CURRENCY",
        "status": "ACTIVE",
        "symbol": "CURRENCY_USD",
        "description": "USD currency",
        "instrumentId": 1,
        "closingPrice": 0,
    }


def _add_live_position_fields(position: dict[str, Any]) -> None:
    """Add what live positions also carry (fixtures/account.json), derived from the rest."""
    long_q = decimal.Decimal(str(position["longQuantity"]))
    short_q = decimal.Decimal(str(position["shortQuantity"]))
    average = decimal.Decimal(str(position["averagePrice"]))
    value = decimal.Decimal(str(position["marketValue"]))
    day = decimal.Decimal(str(position["currentDayProfitLoss"]))
    instrument = position["instrument"]
    units = (long_q or short_q) * (100 if instrument["assetType"] == "OPTION" else 1)
    opening = value - day
    percent = _money(day * 100 / abs(opening)) if opening else decimal.Decimal(0)
    position["currentDayProfitLossPercentage"] = _num(percent)
    position["currentDayCost"] = 0
    if long_q:
        position["averageLongPrice"] = _num(_money(average))
        position["taxLotAverageLongPrice"] = _num(average)
        position.setdefault("longOpenProfitLoss", _num(_money(value - average * units)))
        position["previousSessionLongQuantity"] = _num(long_q)
    else:
        position["averageShortPrice"] = _num(_money(average))
        position["taxLotAverageShortPrice"] = _num(average)
        position["shortOpenProfitLoss"] = _num(_money(average * units + value))
        position["previousSessionShortQuantity"] = _num(short_q)
    # A short holder gains when the price falls.
    instrument["netChange"] = _num(_money((day if long_q else -day) / units))
    if instrument["assetType"] == "OPTION":
        root = instrument["underlyingSymbol"]
        instrument["cusip"] = f"0{root}.{_derived_id(instrument['symbol'], 9):09d}"


def _margin_balances(
    positions: list[dict[str, Any]], cash: decimal.Decimal, buying_power: decimal.Decimal
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The other fields of a live margin account's balances (fixtures/account.json)."""

    def total(asset: str, sign: int) -> decimal.Decimal:
        return sum(
            (
                decimal.Decimal(str(p["marketValue"]))
                for p in positions
                if p["instrument"]["assetType"] == asset and p["marketValue"] * sign > 0
            ),
            decimal.Decimal(0),
        )

    stock, long_opt, short_opt = total("EQUITY", 1), total("OPTION", 1), total("OPTION", -1)
    equity = cash + stock + long_opt + short_opt
    maintenance = sum(
        (decimal.Decimal(str(p["maintenanceRequirement"])) for p in positions), decimal.Decimal(0)
    )
    zero = [
        "accruedInterest",
        "bondValue",
        "cashReceipts",
        "dayTradingBuyingPower",
        "maintenanceCall",
        "marginBalance",
        "moneyMarketFund",
        "mutualFundValue",
        "pendingDeposits",
        "regTCall",
        "shortBalance",
        "shortMarginValue",
    ]
    common = {
        **dict.fromkeys(zero, 0),
        "availableFundsNonMarginableTrade": _num(cash),
        "equity": _num(equity),
        "equityPercentage": 100,
        "longMarginValue": _num(stock),
        "longOptionMarketValue": _num(long_opt),
        "maintenanceRequirement": _num(maintenance),
        "shortOptionMarketValue": _num(short_opt),
    }
    initial = {
        **common,
        "accountValue": _num(equity),
        "buyingPower": _num(buying_power),
        "cashAvailableForTrading": 0,
        "dayTradingBuyingPowerCall": 0,
        "dayTradingEquityCall": 0,
        "longStockValue": _num(stock),
        "margin": _num(cash),
        "marginEquity": _num(equity),
        "shortStockValue": 0,
        "totalCash": 0,
    }
    current = {
        **common,
        "buyingPowerNonMarginableTrade": _num(cash),
        "savings": 0,
        "shortMarketValue": _num(short_opt),
        "sma": _num(cash),
    }
    projected = {
        "availableFunds": _num(cash),
        "availableFundsNonMarginableTrade": _num(cash),
        "dayTradingBuyingPower": 0,
        "dayTradingBuyingPowerCall": 0,
        "maintenanceCall": 0,
        "regTCall": 0,
        "stockBuyingPower": _num(buying_power),
    }
    return initial, current, projected


def _cash_balances(
    positions: list[dict[str, Any]], cash: decimal.Decimal
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A cash account's balances (an IRA): the spec's CashAccount fields, and no buyingPower.

    Live cash accounts also carry ``cashBalance`` and ``liquidationValue`` in
    their current and projected balances, which the spec's CashBalance leaves out.
    """
    values = [decimal.Decimal(str(p["marketValue"])) for p in positions]
    longs = sum((v for v in values if v > 0), decimal.Decimal(0))
    shorts = sum((v for v in values if v < 0), decimal.Decimal(0))
    options = [
        decimal.Decimal(str(p["marketValue"]))
        for p in positions
        if p["instrument"]["assetType"] == "OPTION"
    ]
    long_options = sum((v for v in options if v > 0), decimal.Decimal(0))
    short_options = sum((v for v in options if v < 0), decimal.Decimal(0))
    total = cash + longs + shorts
    zero = dict.fromkeys(
        ("accruedInterest", "bondValue", "cashReceipts", "moneyMarketFund", "mutualFundValue"), 0
    )
    cash_fields = {
        "cashAvailableForTrading": _num(cash),
        "cashAvailableForWithdrawal": _num(cash),
        "cashDebitCallValue": 0,
        "unsettledCash": 0,
    }
    initial = {
        **zero,
        **cash_fields,
        "cashBalance": _num(cash),
        "liquidationValue": _num(total),
        "longOptionMarketValue": _num(long_options),
        "longStockValue": _num(longs - long_options),
        "shortOptionMarketValue": _num(short_options),
        "shortStockValue": 0,
        "isInCall": False,
        "pendingDeposits": 0,
        "accountValue": _num(total),
    }
    current = {
        **zero,
        **cash_fields,
        "cashBalance": _num(cash),
        "liquidationValue": _num(total),
        "longMarketValue": _num(longs),
        "longOptionMarketValue": _num(long_options),
        "shortOptionMarketValue": _num(short_options),
        "shortMarketValue": _num(shorts),
        "savings": 0,
        "pendingDeposits": 0,
        "cashCall": 0,
        "longNonMarginableMarketValue": _num(longs),
        "totalCash": _num(cash),
    }
    return initial, current, dict(current)


@dataclasses.dataclass
class SandboxAccount:
    """One generated account: its number, hash, Schwab body, sorted transactions and nickname."""

    number: str
    hash_value: str
    body: dict[str, Any]
    transactions: list[dict[str, Any]]
    times: list[dt.datetime]
    nickname: str = ""

    def between(self, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
        """Transactions with ``start <= time < end``, oldest first."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_left(self.times, end)
        return self.transactions[lo:hi]


def _positions(rng: random.Random, today: dt.date) -> list[dict[str, Any]]:
    positions = []
    for symbol, name, price in rng.sample(EQUITIES, 4):
        quantity = decimal.Decimal(rng.randint(1, 200))
        average = _money(decimal.Decimal(price) * decimal.Decimal(rng.uniform(0.7, 1.1)))
        last = decimal.Decimal(price)
        positions.append(
            {
                "shortQuantity": 0,
                "averagePrice": _num(average),
                "currentDayProfitLoss": _num(_money(quantity * last * decimal.Decimal("0.004"))),
                "longQuantity": _num(quantity),
                "settledLongQuantity": _num(quantity),
                "settledShortQuantity": 0,
                "instrument": {
                    "assetType": "EQUITY",
                    "cusip": f"{rng.randrange(10**8):09d}",
                    "symbol": symbol,
                    "description": name,
                },
                "marketValue": _num(_money(quantity * last)),
                "maintenanceRequirement": 0,
                "longOpenProfitLoss": _num(_money(quantity * (last - average))),
            }
        )
    # An option held long and one written (short), with spaces in their symbols.
    root, name, price = rng.choice(EQUITIES)
    expiry = today + dt.timedelta(days=rng.randint(20, 120))
    for side, put_call in (("long", "CALL"), ("short", "PUT")):
        strike = int(
            decimal.Decimal(price) * decimal.Decimal("1.1" if put_call == "CALL" else "0.9")
        )
        premium = _money(decimal.Decimal(rng.uniform(0.5, 6)))
        value = _money(premium * 100)
        short = side == "short"
        positions.append(
            {
                "shortQuantity": 1 if short else 0,
                "averagePrice": _num(premium),
                "currentDayProfitLoss": _num(_money(decimal.Decimal(rng.uniform(-40, 40)))),
                "longQuantity": 0 if short else 1,
                "settledLongQuantity": 0 if short else 1,
                "settledShortQuantity": -1 if short else 0,
                "instrument": {
                    "assetType": "OPTION",
                    "symbol": _option_symbol(root, expiry, put_call, strike),
                    "description": f"{name} {expiry:%m/%d/%Y} ${strike} {put_call.title()}",
                    "type": "VANILLA",
                    "putCall": put_call,
                    "underlyingSymbol": root,
                },
                "marketValue": _num(-value if short else value),
                "maintenanceRequirement": 1500 if short else 0,
            }
        )
    for position in positions:
        _add_live_position_fields(position)
    return positions


def _transactions(
    rng: random.Random, count: int, now: dt.datetime, first_id: int
) -> tuple[list[dict[str, Any]], list[dt.datetime]]:
    span = dt.timedelta(days=730)
    moments = sorted(now - span * rng.random() for _ in range(count))
    items = []
    for index, moment in enumerate(moments):
        moment = moment.replace(microsecond=0)  # noqa: PLW2901 - Schwab times have whole seconds
        kind = rng.choices(
            (
                "TRADE",
                "OPTION",
                "DIVIDEND_OR_INTEREST",
                "ACH_RECEIPT",
                "ACH_DISBURSEMENT",
                "JOURNAL",
            ),
            weights=(40, 10, 20, 12, 8, 10),
        )[0]
        base: dict[str, Any] = {
            "activityId": first_id + index,
            "time": _time(moment),
            "status": "VALID",
            "subAccount": "CASH",
            "tradeDate": moment.date().isoformat(),
            "settlementDate": (moment.date() + dt.timedelta(days=1)).isoformat(),
        }
        if kind in {"TRADE", "OPTION"}:
            symbol, name, price = rng.choice(EQUITIES)
            buy = rng.random() < 0.6  # noqa: PLR2004
            fee = _money(decimal.Decimal(rng.choice(("0", "0.65", "0.95", "1.30"))))
            if kind == "OPTION":
                expiry = moment.date() + dt.timedelta(days=rng.randint(7, 90))
                put_call = rng.choice(("CALL", "PUT"))
                strike = int(decimal.Decimal(price))
                unit = _money(decimal.Decimal(rng.uniform(0.2, 8)))
                quantity = decimal.Decimal(rng.randint(1, 5))
                cost = _money(unit * quantity * 100)
                instrument = {
                    "assetType": "OPTION",
                    "status": "ACTIVE",
                    "symbol": _option_symbol(symbol, expiry, put_call, strike),
                    "description": f"{name} {expiry:%m/%d/%Y} ${strike} {put_call.title()}",
                    "putCall": put_call,
                    "strikePrice": strike,
                    "underlyingSymbol": symbol,
                    "underlyingCusip": f"{_derived_id(symbol, 9):09d}",
                }
            else:
                unit = _money(decimal.Decimal(price) * decimal.Decimal(rng.uniform(0.8, 1.2)))
                quantity = decimal.Decimal(rng.randint(1, 50))
                cost = _money(unit * quantity)
                instrument = {
                    "assetType": "EQUITY",
                    "status": "ACTIVE",
                    "symbol": symbol,
                    "description": name,
                }
            instrument["instrumentId"] = _derived_id(str(instrument["symbol"]), 9)
            fee_lines = [
                {
                    "instrument": _usd(),
                    "amount": _num(fee),
                    "cost": _num(-fee),
                    "feeType": "COMMISSION",
                }
            ]
            if kind == "OPTION":
                # Live Schwab sends some fees as currency lines without a feeType.
                other = _money(quantity * decimal.Decimal("0.02"))
                fee_lines.append(
                    {"instrument": _usd(), "amount": _num(other), "cost": _num(-other)}
                )
                fee += other
            net = -(cost + fee) if buy else cost - fee
            items.append(
                {
                    **base,
                    "type": "TRADE",
                    "orderId": 1_000_000_000_000 + base["activityId"] % 10**11,
                    "positionId": _derived_id(str(instrument["symbol"]), 8),
                    "description": f"{'Bought' if buy else 'Sold'} {quantity} "
                    f"{instrument['symbol']}",
                    "netAmount": _num(net),
                    "transferItems": [
                        {
                            "instrument": instrument,
                            "amount": _num(quantity if buy else -quantity),
                            "cost": _num(-cost if buy else cost),
                            "price": _num(unit),
                            "positionEffect": "OPENING" if buy else "CLOSING",
                        },
                        *fee_lines,
                    ],
                }
            )
            continue
        amount = _money(decimal.Decimal(rng.uniform(5, 5000)))
        if kind == "DIVIDEND_OR_INTEREST":
            symbol, name, _ = rng.choice(EQUITIES)
            description, sign = f"ORDINARY DIVIDEND~{symbol}", 1
            instrument = {
                "assetType": "EQUITY",
                "symbol": symbol,
                "description": name,
                "instrumentId": _derived_id(symbol, 9),
            }
        elif kind == "ACH_RECEIPT":
            description, sign = "CLIENT REQUESTED ELECTRONIC FUNDING RECEIPT", 1
            instrument = _usd()
        elif kind == "ACH_DISBURSEMENT":
            description, sign = "CLIENT REQUESTED ELECTRONIC FUNDING DISBURSEMENT", -1
            instrument = _usd()
        else:
            description, sign = "MONTHLY SERVICE FEE", -1
            amount = _money(decimal.Decimal(rng.uniform(1, 25)))
            instrument = _usd()
        net = amount * sign
        items.append(
            {
                **base,
                "type": kind,
                "description": description,
                "netAmount": _num(net),
                "transferItems": [
                    {"instrument": instrument, "amount": _num(net), "cost": _num(net)}
                ],
            }
        )
    return items, [parse_time(item["time"]) for item in items]


def parse_time(text: str) -> dt.datetime:
    """Read a generated time back."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def generate_accounts(
    *, seed: int, accounts: int, transactions_per_account: int, now: dt.datetime
) -> list[SandboxAccount]:
    """Make ``accounts`` accounts with positions, balances and transactions over two years.

    The same seed gives the same accounts, numbers, positions and amounts;
    transaction times are spread over the two years before ``now``.
    """
    rng = random.Random(seed)  # noqa: S311 - test data, not security
    result = []
    used: set[str] = set()
    for index in range(accounts):
        number = f"{rng.randrange(10**7, 10**8)}"
        while number in used:
            number = f"{rng.randrange(10**7, 10**8)}"
        used.add(number)
        hash_value = hashlib.sha256(f"{seed}:{number}".encode()).hexdigest().upper()
        positions = _positions(rng, now.date())
        cash = _money(decimal.Decimal(rng.uniform(500, 50_000)))
        market = sum(
            (decimal.Decimal(str(p["marketValue"])) for p in positions), decimal.Decimal(0)
        )
        account_type = ACCOUNT_TYPES[index % len(ACCOUNT_TYPES)]
        buying_power = cash * 2 if account_type == "MARGIN" else cash
        body: dict[str, Any] = {
            "securitiesAccount": {
                "type": account_type,
                "accountNumber": number,
                "roundTrips": 0,
                "isDayTrader": False,
                "isClosingOnlyRestricted": False,
                "pfcbFlag": False,
                "positions": positions,
                "initialBalances": {
                    "cashBalance": _num(cash),
                    "liquidationValue": _num(cash + market),
                    "isInCall": False,
                },
                "currentBalances": {
                    "cashBalance": _num(cash),
                    "liquidationValue": _num(cash + market),
                    "buyingPower": _num(buying_power),
                    "availableFunds": _num(cash),
                    "longMarketValue": _num(
                        sum(
                            (
                                decimal.Decimal(str(p["marketValue"]))
                                for p in positions
                                if p["marketValue"] > 0
                            ),
                            decimal.Decimal(0),
                        )
                    ),
                },
                "projectedBalances": {"buyingPower": _num(buying_power), "isInCall": False},
            },
            "aggregatedBalance": {
                "currentLiquidationValue": _num(cash + market),
                "liquidationValue": _num(cash + market),
            },
        }
        if account_type == "CASH":
            sec = body["securitiesAccount"]
            sec["initialBalances"], sec["currentBalances"], sec["projectedBalances"] = (
                _cash_balances(positions, cash)
            )
        if account_type == "MARGIN":
            sec = body["securitiesAccount"]
            extra = _margin_balances(positions, cash, buying_power)
            for key, fields in zip(
                ("initialBalances", "currentBalances", "projectedBalances"), extra, strict=True
            ):
                sec[key] = {**fields, **sec[key]}
        first_id = 90_000_000_000 + index * 10_000_000
        transactions, times = _transactions(rng, transactions_per_account, now, first_id)
        nickname = NICKNAMES[index % len(NICKNAMES)]
        if index >= len(NICKNAMES):
            nickname += f" {index // len(NICKNAMES) + 1}"
        result.append(SandboxAccount(number, hash_value, body, transactions, times, nickname))
    return result
