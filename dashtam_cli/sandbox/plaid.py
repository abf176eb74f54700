"""The sandbox's Plaid server: Link tokens, a stand-in Link, items, and Plaid's data endpoints.

It answers Plaid's own paths and JSON shapes (API version 2020-09-14) under
``/plaid``, so ``DASHTAM_PLAID_BASE_URL=https://127.0.0.1:PORT/plaid`` points
dashtam at it. Every call is a ``POST`` of a JSON object with ``client_id``
and ``secret`` (or the ``PLAID-CLIENT-ID`` and ``PLAID-SECRET`` headers);
errors come in Plaid's error shape with a ``request_id``. Each item's data is
generated from the seed; its transaction feed is a log that grows as the
sandbox's clock passes the next morning (pending transactions post under new
ids with ``pending_transaction_id``, one amount is modified, one transaction
is removed), read with ``/transactions/sync`` cursors. The stand-in Link
script and its ``/link/stand-in/complete`` endpoint replace Plaid's widget.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import hmac
import json
import random
import re
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.sandbox.data import EQUITIES
from dashtam_cli.sandbox.http import Response

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from dashtam_cli.sandbox.app import SandboxConfig
    from dashtam_cli.sandbox.http import Request

__all__ = [
    "FAULTS",
    "INSTITUTIONS",
    "OAUTH_INSTITUTIONS",
    "PASSWORD",
    "PREFIX",
    "SANDBOX_PLAID_CLIENT_ID",
    "SANDBOX_PLAID_SECRET",
    "USERNAME",
    "Plaid",
    "allowed_origin",
    "complete_link",
    "dumps",
]

PREFIX: Final = "/plaid"
DAY: Final = 86_400
HISTORY_DAYS: Final = 730
VERSION: Final = "2020-09-14"
SANDBOX_PLAID_CLIENT_ID: Final = "dashtamsandboxplaid00000"  # 24 characters, like Plaid's
SANDBOX_PLAID_SECRET: Final = "sandboxplaidsecret000000000000"  # noqa: S105 - public throwaway value
USERNAME: Final = "user_good"
PASSWORD: Final = "pass_good"  # noqa: S105 - Plaid's documented sandbox password
LINK_TOKEN_TTL: Final = 4 * 3600
PUBLIC_TOKEN_TTL: Final = 30 * 60
SYNC_DEFAULT: Final = 100
SYNC_MAX: Final = 500
INVESTMENTS_DEFAULT: Final = 100
INVESTMENTS_MAX: Final = 500
# The faults `--plaid-fault` injects, each once per item (see docs/sandbox.md).
FAULTS: Final = ("rate-limit", "server-error", "mutation")
# Plaid's sandbox institutions (every one gives the same generated data here).
INSTITUTIONS: Final = {
    "ins_109508": "First Platypus Bank",
    "ins_109509": "First Gingham Credit Union",
    "ins_109510": "Tattersall Federal Credit Union",
    "ins_127287": "Platypus OAuth Bank",
}
# The institutions that log in on their own site (OAuth): the stand-in Link sends the window
# there (the sandbox's /link/stand-in/bank), which sends it back to the link token's redirect_uri.
OAUTH_INSTITUTIONS: Final = frozenset({"ins_127287"})
PRODUCTS: Final = frozenset({"transactions", "investments", "balance", "auth", "identity"})
COUNTRIES: Final = frozenset({"US", "GB", "ES", "NL", "FR", "IE", "CA", "DE", "IT"})
CENT: Final = decimal.Decimal("0.01")
# https://127.0.0.1:PORT or https://[::1]:PORT: the loopback listener's origins, nothing else.
_ORIGIN: Final = re.compile(r"^https://(?:127\.0\.0\.1|\[::1\]):([0-9]{1,5})$")
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STATUS: Final = {
    "INVALID_REQUEST": 400,
    "INVALID_INPUT": 400,
    "ITEM_ERROR": 400,
    "TRANSACTIONS_ERROR": 400,
    "RATE_LIMIT_EXCEEDED": 429,
    "API_ERROR": 500,
}
MERCHANTS: Final = (
    ("Corner Coffee", "FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE", "in store"),
    ("Green Grocer", "FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES", "in store"),
    ("City Transit", "TRANSPORTATION", "TRANSPORTATION_PUBLIC_TRANSIT", "in store"),
    ("Bookshop on Main", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_BOOKSTORES", "in store"),
    ("Streaming Co", "ENTERTAINMENT", "ENTERTAINMENT_TV_AND_MOVIES", "online"),
    ("Trattoria Roma", "FOOD_AND_DRINK", "FOOD_AND_DRINK_RESTAURANT", "in store"),
)


def allowed_origin(origin: str) -> bool:
    """Whether ``origin`` is dashtam's loopback listener (``https://127.0.0.1:P``, ``[::1]``)."""
    match = _ORIGIN.match(origin)
    return match is not None and 1 <= int(match[1]) <= 65535  # noqa: PLR2004


# -- JSON with exact decimals ---------------------------------------------------------------------


def dumps(value: object) -> str:
    """JSON text in which a :class:`~decimal.Decimal` is written as a number, digit for digit.

    ``json.dumps`` would need floats, which lose digits: the point of the
    many-decimal amounts is that a client reading them through float notices.
    """
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def _json(status: int, body: object, **headers: str) -> Response:
    return Response(status, dumps(body).encode(), headers=dict(headers))


def _request_id() -> str:
    return secrets.token_urlsafe(11).replace("-", "x").replace("_", "y")[:15]


def _error(code: str, error_type: str, message: str, display: str | None = None) -> Response:
    status = STATUS.get(error_type, 400)
    return _json(
        status,
        {
            "error_type": error_type,
            "error_code": code,
            "error_code_reason": None,
            "error_message": message,
            "display_message": display,
            "request_id": _request_id(),
            "causes": [],
            "status": status,
            "documentation_url": f"https://plaid.com/docs/errors/{error_type.lower()}/",
            "suggested_action": None,
        },
    )


def _oauth_error(code: str, message: str) -> dict[str, Any]:
    """Link's error for onExit after an OAuth institution (Plaid's error object's fields)."""
    return {
        "error": message,
        "error_type": "OAUTH_ERROR",
        "error_code": code,
        "error_message": message,
        "display_message": f"The login at the institution could not be finished ({code})",
    }


def _stable_id(*parts: object) -> str:
    """A Plaid-looking id (37 lower-case letters and digits), the same for the same parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()[:37]


def _cents(rng: random.Random, low: int, high: int) -> decimal.Decimal:
    return decimal.Decimal(rng.randint(low * 100, high * 100)) / 100


def _day(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).date().isoformat()


def _stamp(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- generated data -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Account:
    key: str
    id: str
    name: str
    official_name: str | None
    mask: str
    type: str
    subtype: str | None
    iso: str | None
    unofficial: str | None
    opening: decimal.Decimal  # in Plaid's sign: what the balance was before the transactions
    limit: decimal.Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Event:
    """One change to an item's transactions at ``time``: an add, a modify or a remove."""

    time: int
    seq: int
    kind: str  # "added" | "modified" | "removed"
    account_id: str
    transaction_id: str
    body: dict[str, Any] | None


def _transaction(  # noqa: PLR0913 - the fields of one transaction
    account: _Account,
    tid: str,
    *,
    amount: decimal.Decimal,
    posted: int,
    authorized: int,
    name: str,
    merchant: tuple[str, str, str, str] | None,
    pending: bool,
    pending_id: str | None = None,
) -> dict[str, Any]:
    """A Plaid Transaction body; ``amount`` in Plaid's sign (positive: money out)."""
    category = merchant or ("", "TRANSFER_IN" if amount < 0 else "GENERAL_SERVICES", "", "other")
    return {
        "account_id": account.id,
        "account_owner": None,
        "amount": amount,
        "iso_currency_code": account.iso,
        "unofficial_currency_code": account.unofficial,
        "category": None,
        "category_id": None,
        "check_number": None,
        "counterparties": [],
        "date": _day(authorized if pending else posted),
        "datetime": None if pending else _stamp(posted),
        "authorized_date": _day(authorized),
        "authorized_datetime": _stamp(authorized),
        "location": {
            "address": None,
            "city": None,
            "region": None,
            "postal_code": None,
            "country": None,
            "lat": None,
            "lon": None,
            "store_number": None,
        },
        "name": name,
        "merchant_name": merchant[0] if merchant else None,
        "merchant_entity_id": None,
        "logo_url": None,
        "website": None,
        "payment_meta": {
            "by_order_of": None,
            "payee": None,
            "payer": None,
            "payment_method": None,
            "payment_processor": None,
            "ppd_id": None,
            "reason": None,
            "reference_number": None,
        },
        "payment_channel": category[3],
        "pending": pending,
        "pending_transaction_id": pending_id,
        "personal_finance_category": {
            "primary": category[1] or "TRANSFER_IN",
            "detailed": category[2] or (category[1] or "TRANSFER_IN") + "_OTHER",
            "confidence_level": "VERY_HIGH",
        },
        "transaction_code": None,
        "transaction_id": tid,
        "transaction_type": "place" if merchant else "special",
    }


@dataclasses.dataclass
class _Data:
    """One item's accounts, transaction log, holdings and investment transactions."""

    accounts: list[_Account]
    events: list[_Event]
    securities: list[dict[str, Any]]
    holdings: list[dict[str, Any]]
    investment_transactions: list[dict[str, Any]]


def _checking(rng: random.Random) -> tuple[decimal.Decimal, str, tuple[str, str, str, str] | None]:
    roll = rng.random()
    if roll < 0.12:  # noqa: PLR2004
        return -_cents(rng, 1800, 2600), "ACME CORP PAYROLL", None
    if roll < 0.22:  # noqa: PLR2004
        return _cents(rng, 60, 240), "CITY POWER AUTOPAY", None
    merchant = rng.choice(MERCHANTS)
    return _cents(rng, 3, 180), f"{merchant[0].upper()} #{rng.randint(100, 999)}", merchant


def _card(rng: random.Random) -> tuple[decimal.Decimal, str, tuple[str, str, str, str] | None]:
    if rng.random() < 0.08:  # noqa: PLR2004
        return -_cents(rng, 200, 1500), "PAYMENT THANK YOU", None
    merchant = rng.choice(MERCHANTS)
    return _cents(rng, 3, 180), f"{merchant[0].upper()} #{rng.randint(100, 999)}", merchant


def _savings(rng: random.Random) -> tuple[decimal.Decimal, str, tuple[str, str, str, str] | None]:
    if rng.random() < 0.5:  # noqa: PLR2004
        return -_cents(rng, 1, 40), "INTEREST PAYMENT", None
    return -_cents(rng, 100, 500), "TRANSFER FROM CHECKING", None


def _crypto(rng: random.Random) -> tuple[decimal.Decimal, str, tuple[str, str, str, str] | None]:
    # 18 decimals: more significant digits than a float keeps.
    units = decimal.Decimal(rng.randint(10**15, 10**19)) / 10**18
    return (-units, "BTC RECEIVED", None) if rng.random() < 0.7 else (units, "BTC SENT", None)  # noqa: PLR2004


def _generate(seed: int, item: str, per_account: int, anchor: int) -> _Data:  # noqa: C901, PLR0915
    """The data of item ``item``, the same for the same seed, item and anchor."""
    rng = random.Random(f"plaid:{seed}:{item}")  # noqa: S311 - test data, not security

    def account(  # noqa: PLR0913, PLR0917 - the fields of an account
        key: str,
        name: str,
        official: str | None,
        kind: tuple[str, str],
        currency: tuple[str | None, str | None],
        opening: decimal.Decimal,
        limit: decimal.Decimal | None = None,
    ) -> _Account:
        mask = f"{rng.randint(0, 9999):04d}"
        return _Account(
            key, _stable_id(seed, item, key), name, official, mask, *kind, *currency, opening, limit
        )

    usd = ("USD", None)
    checking = account(
        "checking",
        "Everyday Checking",
        "Plaid Gold Standard 0% Interest Checking",
        ("depository", "checking"),
        usd,
        _cents(rng, 800, 9000),
    )
    savings = account(
        "savings",
        "High Yield Savings",
        "Plaid Silver Standard 0.1% Interest Saving",
        ("depository", "savings"),
        usd,
        _cents(rng, 5000, 40000),
    )
    card = account(
        "card",
        "Rewards Visa",
        "Plaid Diamond 12.5% APR Interest Credit Card",
        ("credit", "credit card"),
        usd,
        decimal.Decimal(0),
        decimal.Decimal(8000),
    )
    euro = account(
        "euro",
        "Euro Savings",
        None,
        ("depository", "savings"),
        ("EUR", None),
        _cents(rng, 1000, 9000),
    )
    crypto = account(
        "crypto",
        "Crypto Wallet",
        None,
        ("other", "non-custodial wallet"),
        (None, "BTC"),
        decimal.Decimal(5),
    )
    brokerage = account("brokerage", "Individual Brokerage", "Plaid Brokerage Account",
                        ("investment", "brokerage"), usd, _cents(rng, 500, 8000))  # fmt: skip
    events: list[_Event] = []
    seq = 0

    def add(time: int, kind: str, acct: _Account, tid: str, body: dict[str, Any] | None) -> None:
        nonlocal seq
        seq += 1
        events.append(_Event(time, seq, kind, acct.id, tid, body))

    small = max(per_account // 5, min(per_account, 5))
    history_start = anchor - HISTORY_DAYS * DAY
    plan = ((checking, per_account, _checking), (card, per_account, _card),
            (savings, small, _savings), (euro, small, _savings),
            (crypto, small, _crypto))  # fmt: skip
    for acct, count, draw in plan:
        items = []
        for index in range(count):
            posted = rng.randint(history_start, anchor - 3 * DAY)
            authorized = posted - rng.randint(0, 2 * DAY)
            amount, name, merchant = draw(rng)
            if acct.iso == "EUR":
                name = name.replace("CHECKING", "GIRO")
            tid = _stable_id(seed, item, acct.key, "txn", index)
            body = _transaction(acct, tid, amount=amount, posted=posted, authorized=authorized,
                                name=name, merchant=merchant, pending=False)  # fmt: skip
            items.append((posted, tid, body))
        items.sort(key=lambda t: (t[0], t[1]))
        for posted, tid, body in items:
            add(posted, "added", acct, tid, body)
    # Three pending transactions of the last two days on checking and the card: visible now,
    # they post at 06:00 UTC the next day under new ids (one for a little more: a tip).
    posting = (anchor // DAY + 1) * DAY + 6 * 3600
    for acct in (checking, card):
        for index in range(3):
            merchant = MERCHANTS[(index * 2 + len(acct.key)) % len(MERCHANTS)]
            amount = _cents(rng, 4, 90)
            authorized = anchor - (2 + 19 * index) * 3600
            pending_id = _stable_id(seed, item, acct.key, "pending", index)
            name = merchant[0].upper()
            add(anchor - DAY, "added", acct, pending_id,
                _transaction(acct, pending_id, amount=amount, posted=authorized,
                             authorized=authorized, name=name, merchant=merchant,
                             pending=True))  # fmt: skip
            final = amount + decimal.Decimal("3.50") if index == 1 else amount
            posted_id = _stable_id(seed, item, acct.key, "posted", index)
            add(posting, "removed", acct, pending_id, None)
            add(posting, "added", acct, posted_id,
                _transaction(acct, posted_id, amount=final, posted=posting + index * 60,
                             authorized=authorized, name=name, merchant=merchant, pending=False,
                             pending_id=pending_id))  # fmt: skip
    # The next morning the bank also corrects an amount and withdraws a duplicate.
    for acct, kind in ((checking, "modified"), (card, "removed")):
        newest = max(
            (
                e
                for e in events
                if e.account_id == acct.id
                and e.time < anchor
                and e.body is not None
                and not e.body["pending"]
            ),
            key=lambda e: (e.time, e.seq),
            default=None,
        )
        if newest is None or newest.body is None:
            continue
        if kind == "modified":
            changed = dict(newest.body, amount=newest.body["amount"] + decimal.Decimal("1.25"))
            add(posting + 600, "modified", acct, newest.transaction_id, changed)
        else:
            add(posting + 600, "removed", acct, newest.transaction_id, None)
    events.sort(key=lambda e: (e.time, e.seq))
    securities, holdings, trades = _investments(
        rng, seed=seed, item=item, account=brokerage, anchor=anchor, count=small
    )
    return _Data(
        [checking, savings, card, euro, crypto, brokerage], events, securities, holdings, trades
    )


def _security(
    seed: int, symbol: str, name: str, price: decimal.Decimal, anchor: int
) -> dict[str, Any]:
    return {
        "security_id": _stable_id(seed, "security", symbol),
        "isin": None,
        "cusip": None,
        "sedol": None,
        "institution_security_id": None,
        "institution_id": None,
        "proxy_security_id": None,
        "name": name,
        "ticker_symbol": symbol,
        "is_cash_equivalent": symbol == "USD",
        "type": "cash" if symbol == "USD" else "equity",
        "subtype": "cash" if symbol == "USD" else "common stock",
        "close_price": price,
        "close_price_as_of": _day(anchor - DAY),
        "update_datetime": None,
        "iso_currency_code": "USD",
        "unofficial_currency_code": None,
        "market_identifier_code": None if symbol == "USD" else "XNAS",
        "sector": None,
        "industry": None,
        "cfi_code": None,
        "option_contract": None,
        "fixed_income": None,
    }


def _investments(  # noqa: PLR0913
    rng: random.Random, *, seed: int, item: str, account: _Account, anchor: int, count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    securities, holdings = [], []
    chosen = rng.sample(EQUITIES, 4)
    for symbol, name, price_int in chosen:
        # Prices and quantities with many decimals, as Plaid sends them for funds.
        price = decimal.Decimal(price_int) + decimal.Decimal(rng.randint(0, 10**10)) / 10**10
        quantity = decimal.Decimal(rng.randint(10**8, 400 * 10**8)) / 10**8
        security = _security(seed, symbol, name, price, anchor)
        securities.append(security)
        cost = (quantity * price * decimal.Decimal(rng.randint(60, 110)) / 100).quantize(CENT)
        holdings.append(
            {
                "account_id": account.id,
                "security_id": security["security_id"],
                "cost_basis": cost,
                "institution_price": price,
                "institution_price_as_of": _day(anchor - DAY),
                "institution_price_datetime": None,
                "institution_value": (quantity * price).quantize(CENT),
                "iso_currency_code": "USD",
                "unofficial_currency_code": None,
                "quantity": quantity,
                "vested_quantity": None,
                "vested_value": None,
            }
        )
    cash = _security(seed, "USD", "U S Dollar", decimal.Decimal(1), anchor)
    securities.append(cash)
    trades = []
    for index in range(count):
        when = rng.randint(anchor - HISTORY_DAYS * DAY, anchor - DAY)
        security = rng.choice(securities[:-1])
        roll = rng.random()
        price = security["close_price"]
        quantity = decimal.Decimal(0)
        if roll < 0.3:  # noqa: PLR2004
            kind, subtype, sec = "cash", "dividend", security
            amount = -_cents(rng, 2, 150)
            unit = -amount
        elif roll < 0.45:  # noqa: PLR2004
            kind, subtype, sec = "cash", "contribution", cash
            amount = -_cents(rng, 500, 3000)
            unit, quantity = decimal.Decimal(1), -amount
        else:
            buy = roll < 0.85  # noqa: PLR2004
            kind = subtype = "buy" if buy else "sell"
            sec, unit = security, price
            shares = decimal.Decimal(rng.randint(1, 10))
            amount = (shares * price).quantize(CENT) * (1 if buy else -1)
            quantity = shares if buy else -shares
        trades.append(
            {
                "investment_transaction_id": _stable_id(seed, item, "inv", index),
                "cancel_transaction_id": None,
                "account_id": account.id,
                "security_id": sec["security_id"],
                "date": _day(when),
                "transaction_datetime": None,
                "name": f"{subtype.upper()} {sec['ticker_symbol']}",
                "quantity": quantity,
                "amount": amount,
                "price": unit,
                "fees": decimal.Decimal("0.00"),
                "type": kind,
                "subtype": subtype,
                "iso_currency_code": "USD",
                "unofficial_currency_code": None,
            }
        )
    trades.sort(key=lambda t: (t["date"], t["investment_transaction_id"]), reverse=True)
    return securities, holdings, trades


# -- the server -----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Item:
    """One linked item: its sealed secret, its state and its data."""

    item_id: str
    access_token: str
    institution_id: str
    products: tuple[str, ...]
    data: _Data
    login_required: bool = False
    removed: bool = False
    mutated: bool = False
    faults: list[str] = dataclasses.field(default_factory=list)
    paging: set[str] = dataclasses.field(default_factory=set)  # cursors handed out mid-paging
    extra: list[_Event] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class _LinkToken:
    expires: float
    products: tuple[str, ...]
    item_id: str | None  # update mode: the item whose login it repairs
    redirect_uri: str | None = None  # where an OAuth institution sends the window back


@dataclasses.dataclass
class _OAuthState:
    """One hand-off to an OAuth institution: the ``oauth_state_id`` the window comes back with."""

    link_token: str
    institution_id: str
    expires: float
    used: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _PublicToken:
    expires: float
    item_id: str


class _Refusal(Exception):
    """A request refused: carries the error answer out of the checks."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


class Plaid:
    """The Plaid server a :class:`~dashtam_cli.sandbox.app.Sandbox` holds.

    ``root`` gives the server's root URL (``https://127.0.0.1:PORT/plaid``)
    once the sandbox listens; ``clock`` is the sandbox's (epoch seconds);
    ``fault`` draws the status of a random injected fault, or None.
    """

    def __init__(
        self,
        config: SandboxConfig,
        *,
        anchor: dt.datetime,
        root: Callable[[], str],
        clock: Callable[[], float],
        fault: Callable[[], int | None],
    ) -> None:
        """Nothing is linked yet: items are made by Link or ``/sandbox/public_token/create``."""
        unknown = set(config.plaid_faults) - set(FAULTS)
        if unknown:
            msg = f"unknown plaid_faults: {', '.join(sorted(unknown))}"
            raise ValueError(msg)
        self.config = config
        self.anchor = int(anchor.timestamp())
        self._root = root
        self._clock = clock
        self._fault = fault
        self.items: dict[str, _Item] = {}
        self._by_token: dict[str, _Item] = {}
        self._link_tokens: dict[str, _LinkToken] = {}
        self._public_tokens: dict[str, _PublicToken] = {}
        self._oauth_states: dict[str, _OAuthState] = {}

    # -- items and tokens ------------------------------------------------------------------------

    def _new_item(self, institution_id: str, products: tuple[str, ...]) -> _Item:
        number = len(self.items) + 1
        item_id = _stable_id(self.config.seed, "item", number)
        data = _generate(
            self.config.seed, item_id, self.config.transactions_per_account, self.anchor
        )
        item = _Item(
            item_id,
            f"access-sandbox-{secrets.token_hex(16)}",
            institution_id,
            products,
            data,
            # rate-limit first, then server-error, whatever order they were given in
            faults=[f for f in FAULTS if f in self.config.plaid_faults and f != "mutation"],
        )
        self.items[item_id] = item
        self._by_token[item.access_token] = item
        return item

    def _public_token(self, item: _Item) -> str:
        token = f"public-sandbox-{secrets.token_hex(16)}"
        self._public_tokens[token] = _PublicToken(self._clock() + PUBLIC_TOKEN_TTL, item.item_id)
        return token

    def public_token(
        self, institution_id: str = "ins_109508", products: tuple[str, ...] = ("transactions",)
    ) -> str:
        """A public token for a new item, as ``/sandbox/public_token/create`` makes (for tests)."""
        return self._public_token(self._new_item(institution_id, products))

    def reset_login(self, access_token: str) -> None:
        """Put the item of ``access_token`` in ``ITEM_LOGIN_REQUIRED`` (for tests)."""
        self._by_token[access_token].login_required = True

    # -- routes ------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        """Answer a request whose path is under ``/plaid``."""
        path = request.path.removeprefix(PREFIX)
        if path == "/link/v2/stable/link-initialize.js" and request.method == "GET":
            return Response(
                200, self._script().encode(), content_type="application/javascript; charset=utf-8"
            )
        if path.startswith("/link/stand-in/"):
            return self._stand_in_route(path, request)
        handler = self._handlers().get(path)
        if handler is None:
            return _error("NOT_FOUND", "INVALID_REQUEST", f"unknown path {path[:100]!r}")
        if request.method != "POST":
            return _error("INVALID_HTTP_METHOD", "INVALID_REQUEST", "use POST")
        try:
            body = self._body(request)
            return handler(body)
        except _Refusal as refusal:
            return refusal.response

    def _stand_in_route(self, path: str, request: Request) -> Response:
        """The stand-in Link's own paths (and the OAuth institution's site)."""
        if path == "/link/stand-in/bank" and request.method == "GET":
            return self._bank(request)
        if path in {"/link/stand-in/complete", "/link/stand-in/oauth"}:
            return self._stand_in(request, oauth=path.endswith("/oauth"))
        return _error("NOT_FOUND", "INVALID_REQUEST", f"unknown path {path[:100]!r}")

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {
            "/link/token/create": self._link_token_create,
            "/item/public_token/exchange": self._exchange,
            "/sandbox/public_token/create": self._sandbox_public_token,
            "/sandbox/item/reset_login": self._reset_login,
            "/accounts/get": self._accounts_get,
            "/accounts/balance/get": self._accounts_get,
            "/transactions/sync": self._transactions_sync,
            "/investments/holdings/get": self._holdings,
            "/investments/transactions/get": self._investment_transactions,
            "/item/get": self._item_get,
            "/item/remove": self._item_remove,
        }

    def _body(self, request: Request) -> dict[str, Any]:
        """The JSON body, with the client's keys checked, or a refusal."""
        version = request.headers.get("plaid-version")
        if version is not None and version != VERSION:
            raise _Refusal(
                _error(
                    "INVALID_HEADERS",
                    "INVALID_REQUEST",
                    f"unsupported Plaid-Version {version[:40]!r}",
                )
            )
        try:
            body = json.loads(request.body or b"{}", parse_float=decimal.Decimal)
        except (ValueError, UnicodeDecodeError):
            raise _Refusal(
                _error("INVALID_BODY", "INVALID_REQUEST", "the body is not valid JSON")
            ) from None
        if not isinstance(body, dict):
            raise _Refusal(
                _error("INVALID_BODY", "INVALID_REQUEST", "the body is not a JSON object")
            )
        client_id = body.get("client_id", request.headers.get("plaid-client-id"))
        secret = body.get("secret", request.headers.get("plaid-secret"))
        if not isinstance(client_id, str) or not isinstance(secret, str):
            raise _Refusal(
                _error(
                    "MISSING_FIELDS",
                    "INVALID_REQUEST",
                    "the following required fields are missing: client_id, secret",
                )
            )
        good = hmac.compare_digest(client_id.encode(), self.config.plaid_client_id.encode())
        good &= hmac.compare_digest(secret.encode(), self.config.plaid_secret.encode())
        if not good:
            raise _Refusal(
                _error("INVALID_API_KEYS", "INVALID_INPUT", "invalid client_id or secret provided")
            )
        return body

    def _item(self, body: dict[str, Any], *, data_call: bool = True) -> _Item:
        """The item of the body's ``access_token``; data calls also meet faults and login state."""
        token = body.get("access_token")
        if not isinstance(token, str):
            raise _Refusal(
                _error(
                    "MISSING_FIELDS",
                    "INVALID_REQUEST",
                    "the following required fields are missing: access_token",
                )
            )
        item = self._by_token.get(token)
        if item is None or item.removed:
            raise _Refusal(
                _error(
                    "INVALID_ACCESS_TOKEN",
                    "INVALID_INPUT",
                    "provided access token is in an invalid format or was removed",
                )
            )
        if not data_call:
            return item
        if item.faults:
            fault = item.faults.pop(0)
            raise _Refusal(self._fault_error(429 if fault == "rate-limit" else 500))
        status = self._fault()
        if status is not None:
            raise _Refusal(self._fault_error(status))
        if item.login_required:
            raise _Refusal(self._login_required())
        return item

    @staticmethod
    def _login_required() -> Response:
        return _error(
            "ITEM_LOGIN_REQUIRED",
            "ITEM_ERROR",
            "the login details of this item have changed (credentials, MFA, or required user "
            "action) and a user login is required to update this information. use Link's update "
            "mode to restore the item to a good state",
            "To keep your account connected, please log in again.",
        )

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 429:  # noqa: PLR2004
            return _error(
                "RATE_LIMIT_EXCEEDED",
                "RATE_LIMIT_EXCEEDED",
                "rate limit exceeded (sandbox injected fault)",
            )
        return _error(
            "INTERNAL_SERVER_ERROR",
            "API_ERROR",
            "an unexpected error occurred (sandbox injected fault)",
        )

    @staticmethod
    def _products(value: object, field: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
            raise _Refusal(
                _error(
                    "INVALID_FIELD",
                    "INVALID_REQUEST",
                    f"{field} must be a non-empty list of products",
                )
            )
        unknown = [p for p in value if p not in PRODUCTS]
        if unknown:
            raise _Refusal(
                _error(
                    "INVALID_PRODUCT",
                    "INVALID_INPUT",
                    f"unknown products: {', '.join(unknown)[:200]}",
                )
            )
        return tuple(value)

    # -- Link --------------------------------------------------------------------------------------

    def _link_token_create(self, body: dict[str, Any]) -> Response:
        missing = [f for f in ("client_name", "language", "country_codes", "user") if f not in body]
        if missing:
            return _error(
                "MISSING_FIELDS", "INVALID_REQUEST",
                f"the following required fields are missing: {', '.join(missing)}",
            )  # fmt: skip
        user = body["user"]
        if (
            not isinstance(user, dict)
            or not isinstance(user.get("client_user_id"), str)
            or not user["client_user_id"]
        ):
            return _error(
                "INVALID_FIELD", "INVALID_REQUEST", "user.client_user_id must be a non-empty string"
            )
        countries = body["country_codes"]
        if not isinstance(countries, list) or not countries or not set(countries) <= COUNTRIES:
            return _error(
                "INVALID_FIELD",
                "INVALID_REQUEST",
                "country_codes must be a non-empty list of country codes",
            )
        redirect = body.get("redirect_uri")
        if redirect is not None and (
            not isinstance(redirect, str) or not redirect.startswith("https://")
        ):
            return _error("INVALID_FIELD", "INVALID_REQUEST", "redirect_uri must be an https URI")
        item_id = None
        if body.get("access_token") is not None:  # update mode
            item = self._item(body, data_call=False)
            item_id, products = item.item_id, item.products
        else:
            products = self._products(body.get("products"), "products")
        token = f"link-sandbox-{secrets.token_hex(16)}"
        expires = self._clock() + LINK_TOKEN_TTL
        self._link_tokens[token] = _LinkToken(expires, products, item_id, redirect)
        return _json(
            200,
            {"link_token": token, "expiration": _stamp(int(expires)), "request_id": _request_id()},
        )

    def _exchange(self, body: dict[str, Any]) -> Response:
        token = body.get("public_token")
        found = self._public_tokens.pop(token, None) if isinstance(token, str) else None
        if found is None or found.expires <= self._clock():
            return _error(
                "INVALID_PUBLIC_TOKEN",
                "INVALID_INPUT",
                "provided public token is expired or was already used",
            )
        item = self.items[found.item_id]
        return _json(
            200,
            {
                "access_token": item.access_token,
                "item_id": item.item_id,
                "request_id": _request_id(),
            },
        )

    def _sandbox_public_token(self, body: dict[str, Any]) -> Response:
        institution = body.get("institution_id")
        if not isinstance(institution, str) or institution not in INSTITUTIONS:
            return _error("INVALID_INSTITUTION", "INVALID_INPUT", "invalid institution_id provided")
        products = self._products(body.get("initial_products"), "initial_products")
        return _json(
            200,
            {"public_token": self.public_token(institution, products), "request_id": _request_id()},
        )

    def _reset_login(self, body: dict[str, Any]) -> Response:
        item = self._item(body, data_call=False)
        item.login_required = True
        return _json(200, {"reset_login": True, "request_id": _request_id()})

    def _stand_in(self, request: Request, *, oauth: bool = False) -> Response:  # noqa: C901, PLR0911 - one answer per check
        """The stand-in Link's login: CORS for dashtam's loopback listener only.

        With ``oauth`` (``/link/stand-in/oauth``) the hand-off to an OAuth
        institution; with a ``received_redirect_uri`` the login finished
        after the window came back from it.
        """
        origin = request.headers.get("origin")
        cors: dict[str, str] = {"Vary": "Origin"}
        if origin is not None:
            if not allowed_origin(origin):
                return _json(403, {"error": "origin not allowed"}, **cors)
            cors["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            cors |= {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
            return Response(200, b"", headers=cors, content_type="text/plain")
        if request.method != "POST":
            return _json(405, {"error": "use POST"}, **cors)
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return _json(400, {"error": "the body is not a JSON object"}, **cors)
        link = self._link_tokens.get(str(body.get("link_token", "")))
        if link is None or link.expires <= self._clock():
            return _json(400, {"error": "the link token is unknown or expired"}, **cors)
        if oauth or "received_redirect_uri" in body:
            step = self._hand_off if oauth else self._returned
            code, answer = step(str(body.get("link_token")), link, body)
            return _json(code, answer, **cors)
        if body.get("username") != USERNAME or body.get("password") != PASSWORD:
            return _json(
                400,
                {"error": f"the credentials were not correct: try {USERNAME} / {PASSWORD}"},
                **cors,
            )
        institution = str(body.get("institution_id") or "ins_109508")
        if institution not in INSTITUTIONS:
            return _json(400, {"error": "unknown institution"}, **cors)
        if institution in OAUTH_INSTITUTIONS and link.item_id is None:
            return _json(400, {"error": "this institution logs in on its own site"}, **cors)
        return _json(200, self._linked(link, institution), **cors)

    def _linked(self, link: _LinkToken, institution: str) -> dict[str, Any]:
        """What Link hands onSuccess: a public token for the new (or repaired) item."""
        if link.item_id is not None:  # update mode repairs the item's login
            item = self.items[link.item_id]
            item.login_required = False
            institution = item.institution_id
        else:
            item = self._new_item(institution, link.products)
        return {
            "public_token": self._public_token(item),
            "institution": {"name": INSTITUTIONS[institution], "institution_id": institution},
        }

    def _hand_off(
        self, token: str, link: _LinkToken, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Link sends the window to an OAuth institution: where to, with its ``oauth_state_id``."""
        institution = str(body.get("institution_id", ""))
        if institution not in OAUTH_INSTITUTIONS:
            return 400, {"error": "this institution does not use OAuth"}
        if link.redirect_uri is None:
            # Plaid's Link shows an error for an OAuth institution without a redirect_uri.
            return 400, {"error": "this institution uses OAuth: the link token has no redirect_uri"}
        state_id = secrets.token_hex(16)
        self._oauth_states[state_id] = _OAuthState(token, institution, link.expires)
        query = urllib.parse.urlencode({"oauth_state_id": state_id})
        return 200, {"oauth_url": f"{self._root()}/link/stand-in/bank?{query}"}

    def _bank(self, request: Request) -> Response:
        """The OAuth institution's site: the person consents, it sends the window back to Link."""
        found = self._oauth_states.get(request.arg("oauth_state_id") or "")
        link = self._link_tokens.get(found.link_token) if found is not None else None
        if found is None or found.used or link is None or link.redirect_uri is None:
            return Response(400, b"unknown oauth_state_id", content_type="text/plain")
        query = urllib.parse.urlencode({"oauth_state_id": request.arg("oauth_state_id")})
        return Response(302, b"", headers={"Location": f"{link.redirect_uri}?{query}"})

    def _returned(
        self, token: str, link: _LinkToken, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Link made again with ``receivedRedirectUri``: the login finishes, or an OAuth error."""
        received = body.get("received_redirect_uri")
        parts = urllib.parse.urlsplit(received if isinstance(received, str) else "")
        ids = urllib.parse.parse_qs(parts.query).get("oauth_state_id", [])
        found = self._oauth_states.get(ids[0]) if len(ids) == 1 else None
        if found is None or found.expires <= self._clock():
            return 400, _oauth_error("OAUTH_STATE_ID_NOT_FOUND", "the oauth_state_id is unknown")
        if found.link_token != token:
            return 400, _oauth_error("INCORRECT_LINK_TOKEN", "the link token is not the one used")
        if found.used:
            return 400, _oauth_error(
                "OAUTH_STATE_ID_ALREADY_PROCESSED", "the oauth_state_id was already used"
            )
        if f"{parts.scheme}://{parts.netloc}{parts.path}" != link.redirect_uri:
            return 400, _oauth_error(
                "INVALID_FIELD", "receivedRedirectUri is not the link token's redirect_uri"
            )
        found.used = True
        return 200, self._linked(link, found.institution_id)

    def _script(self) -> str:
        root = json.dumps(self._root())
        institutions = json.dumps([[k, v] for k, v in INSTITUTIONS.items()])
        oauth = json.dumps(sorted(OAUTH_INSTITUTIONS))
        return (
            STAND_IN_SCRIPT.replace("__ROOT__", root)
            .replace("__INSTITUTIONS__", institutions)
            .replace("__OAUTH__", oauth)
        )

    # -- data --------------------------------------------------------------------------------------

    def _visible(self, item: _Item) -> list[_Event]:
        now = int(self._clock())
        events = [e for e in item.data.events if e.time <= now] + item.extra
        events.sort(key=lambda e: (e.time, e.seq))
        return events

    def _state(self, item: _Item) -> dict[str, dict[str, Any]]:
        """Every transaction as of now (the log replayed), by id."""
        state: dict[str, dict[str, Any]] = {}
        for event in self._visible(item):
            if event.kind == "removed":
                state.pop(event.transaction_id, None)
            elif event.body is not None:
                state[event.transaction_id] = event.body
        return state

    def _account_bodies(self, item: _Item, *, investment: bool = False) -> list[dict[str, Any]]:
        state = self._state(item)
        bodies = []
        for account in item.data.accounts:
            if investment and account.type != "investment":
                continue
            posted = [
                t for t in state.values() if t["account_id"] == account.id and not t["pending"]
            ]
            pending = [t for t in state.values() if t["account_id"] == account.id and t["pending"]]
            flow = sum((t["amount"] for t in posted), decimal.Decimal(0))
            held = sum((t["amount"] for t in pending), decimal.Decimal(0))
            balances: dict[str, Any] = {
                "iso_currency_code": account.iso,
                "unofficial_currency_code": account.unofficial,
                "limit": account.limit,
                "last_updated_datetime": None,
            }
            if account.type == "credit":
                current = account.opening + flow
                assert account.limit is not None
                balances |= {"current": current, "available": account.limit - current - held}
            elif account.type == "investment":
                value = sum(
                    (h["institution_value"] for h in item.data.holdings), decimal.Decimal(0)
                )
                balances |= {"current": account.opening + value, "available": account.opening}
                if investment:
                    balances["margin_loan_amount"] = None
            else:
                current = account.opening - flow
                balances |= {"current": current, "available": current - held}
            bodies.append(
                {
                    "account_id": account.id,
                    "balances": balances,
                    "mask": account.mask,
                    "name": account.name,
                    "official_name": account.official_name,
                    "type": account.type,
                    "subtype": account.subtype,
                    "holder_category": "personal",
                }
            )
        return bodies

    def _item_body(self, item: _Item) -> dict[str, Any]:
        return {
            "item_id": item.item_id,
            "institution_id": item.institution_id,
            "institution_name": INSTITUTIONS[item.institution_id],
            "webhook": None,
            "auth_method": None,
            "error": None if not item.login_required else json.loads(self._login_required().body),
            "available_products": sorted(PRODUCTS - set(item.products)),
            "billed_products": sorted(item.products),
            "products": sorted(item.products),
            "consented_products": sorted(item.products),
            "consent_expiration_time": None,
            "update_type": "background",
        }

    def _need(self, item: _Item, product: str) -> None:
        if product not in item.products:
            raise _Refusal(
                _error(
                    "PRODUCTS_NOT_SUPPORTED",
                    "ITEM_ERROR",
                    f"this item was not linked for {product}; link it with that product",
                )
            )

    def _accounts_get(self, body: dict[str, Any]) -> Response:
        item = self._item(body)
        return _json(
            200,
            {
                "accounts": self._account_bodies(item),
                "item": self._item_body(item),
                "request_id": _request_id(),
            },
        )

    def _item_get(self, body: dict[str, Any]) -> Response:
        item = self._item(body, data_call=False)
        return _json(
            200, {"item": self._item_body(item), "status": None, "request_id": _request_id()}
        )

    def _item_remove(self, body: dict[str, Any]) -> Response:
        item = self._item(body, data_call=False)
        item.removed = True
        return _json(200, {"request_id": _request_id()})

    def _cursor(self, item: _Item, text: object) -> int:
        if text is None or text == "":
            return 0
        if isinstance(text, str):
            try:
                raw = base64.urlsafe_b64decode(text.encode() + b"==").decode()
                item_id, _, position = raw.partition(":")
                if item_id == item.item_id and position.isdigit():
                    return int(position)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                pass
        raise _Refusal(
            _error("INVALID_FIELD", "INVALID_REQUEST", "cursor is not a valid cursor of this item")
        )

    @staticmethod
    def _cursor_text(item: _Item, position: int) -> str:
        return base64.urlsafe_b64encode(f"{item.item_id}:{position}".encode()).decode().rstrip("=")

    def _transactions_sync(self, body: dict[str, Any]) -> Response:
        item = self._item(body)
        self._need(item, "transactions")
        count = body.get("count", SYNC_DEFAULT)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= SYNC_MAX:
            return _error("INVALID_FIELD", "INVALID_REQUEST", f"count must be from 1 to {SYNC_MAX}")
        cursor = body.get("cursor")
        start = self._cursor(item, cursor)
        if (
            "mutation" in self.config.plaid_faults
            and not item.mutated
            and isinstance(cursor, str)
            and cursor in item.paging
        ):
            item.mutated = True
            self._mutate(item)
            return _error(
                "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", "TRANSACTIONS_ERROR",
                "underlying transaction data changed since last page was fetched. "
                "please restart pagination from last update.",
            )  # fmt: skip
        events = self._visible(item)
        end = min(start + count, len(events))
        page: dict[str, tuple[str, dict[str, Any]]] = {}
        for event in events[start:end]:
            seen = page.get(event.transaction_id)
            if event.kind == "removed":
                if seen is not None and seen[0] == "added":
                    del page[event.transaction_id]  # never shown: nothing to remove
                else:
                    body_ = {"account_id": event.account_id, "transaction_id": event.transaction_id}
                    page[event.transaction_id] = ("removed", body_)
            elif event.body is not None:
                kind = (
                    "added"
                    if event.kind == "added" or (seen and seen[0] == "added")
                    else "modified"
                )
                page[event.transaction_id] = (kind, event.body)
        has_more = end < len(events)
        next_cursor = self._cursor_text(item, end)
        if has_more:
            item.paging.add(next_cursor)
        return _json(
            200,
            {
                "accounts": self._account_bodies(item),
                "added": [b for k, b in page.values() if k == "added"],
                "modified": [b for k, b in page.values() if k == "modified"],
                "removed": [b for k, b in page.values() if k == "removed"],
                "next_cursor": next_cursor,
                "has_more": has_more,
                "request_id": _request_id(),
                "transactions_update_status": "HISTORICAL_UPDATE_COMPLETE",
            },
        )

    def _mutate(self, item: _Item) -> None:
        """A new transaction arrives while a client pages: the change the fault reports."""
        checking = item.data.accounts[0]
        now = int(self._clock())
        tid = _stable_id(self.config.seed, item.item_id, "mutation")
        body = _transaction(
            checking, tid, amount=decimal.Decimal("12.34"), posted=now, authorized=now,
            name="CORNER COFFEE LATE ARRIVAL", merchant=MERCHANTS[0], pending=False,
        )  # fmt: skip
        item.extra.append(_Event(now, 10**9 + len(item.extra), "added", checking.id, tid, body))

    def _holdings(self, body: dict[str, Any]) -> Response:
        item = self._item(body)
        self._need(item, "investments")
        return _json(
            200,
            {
                "accounts": self._account_bodies(item, investment=True),
                "holdings": item.data.holdings,
                "securities": item.data.securities,
                "item": self._item_body(item),
                "request_id": _request_id(),
            },
        )

    def _investment_transactions(self, body: dict[str, Any]) -> Response:
        item = self._item(body)
        self._need(item, "investments")
        start, end = body.get("start_date"), body.get("end_date")
        if not all(isinstance(d, str) and _DATE.match(d) for d in (start, end)):
            return _error(
                "INVALID_FIELD",
                "INVALID_REQUEST",
                "start_date and end_date must be YYYY-MM-DD dates",
            )
        assert isinstance(start, str)
        assert isinstance(end, str)
        if start > end:
            return _error(
                "INVALID_FIELD", "INVALID_REQUEST", "start_date must not be after end_date"
            )
        options = body.get("options") or {}
        if not isinstance(options, dict):
            return _error("INVALID_FIELD", "INVALID_REQUEST", "options must be an object")
        count, offset = options.get("count", INVESTMENTS_DEFAULT), options.get("offset", 0)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= INVESTMENTS_MAX
        ):
            return _error(
                "INVALID_FIELD",
                "INVALID_REQUEST",
                f"options.count must be from 1 to {INVESTMENTS_MAX}",
            )
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return _error("INVALID_FIELD", "INVALID_REQUEST", "options.offset must be 0 or more")
        wanted = options.get("account_ids")
        matching = [
            t
            for t in item.data.investment_transactions
            if start <= t["date"] <= end and (wanted is None or t["account_id"] in wanted)
        ]
        return _json(
            200,
            {
                "item": self._item_body(item),
                "accounts": self._account_bodies(item, investment=True),
                "securities": item.data.securities,
                "investment_transactions": matching[offset : offset + count],
                "total_investment_transactions": len(matching),
                "request_id": _request_id(),
            },
        )


# -- the stand-in Link ----------------------------------------------------------------------------

# Plaid.create(config) -> {open, exit, destroy}: a small form (user_good / pass_good and an
# institution) that posts to the sandbox's /link/stand-in/complete and calls config.onSuccess,
# or config.onExit on Cancel. An OAuth institution sends the window to its "site"
# (/link/stand-in/bank), which sends it back to the link token's redirect_uri with an
# oauth_state_id; Link created again with receivedRedirectUri finishes there on open (or calls
# onExit with Plaid's error fields). Built with DOM calls only (no innerHTML, no inline style
# markup), loading nothing else, so the listener page's Content-Security-Policy holds.
STAND_IN_SCRIPT: Final = """\
(function () {
  "use strict";
  var ROOT = __ROOT__;
  var INSTITUTIONS = __INSTITUTIONS__;
  var OAUTH = __OAUTH__;
  function call(path, payload) {
    return fetch(ROOT + path, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      credentials: "omit",
      body: JSON.stringify(payload)
    }).then(function (answer) {
      return answer.json().then(function (body) { return [answer.ok, body]; });
    });
  }
  function el(tag, text) {
    var node = document.createElement(tag);
    if (text) { node.textContent = text; }
    return node;
  }
  function field(form, label, name, type, value) {
    var wrap = el("p");
    var caption = el("label", label + " ");
    var input = el("input");
    input.name = name; input.type = type; input.value = value || "";
    input.setAttribute("autocomplete", "off");
    caption.appendChild(input); wrap.appendChild(caption); form.appendChild(wrap);
    return input;
  }
  function create(config) {
    var box = null;
    var done = false;
    function finish() {
      if (box && box.parentNode) { box.parentNode.removeChild(box); }
      box = null;
    }
    function exit() {
      if (done) { return; }
      done = true; finish();
      if (config.onExit) { config.onExit(null, {}); }
    }
    function returned() {
      // Back from the OAuth institution: finish with the oauth_state_id it sent back.
      box = el("p", "Finishing the login...");
      box.id = "plaid-stand-in";
      document.body.appendChild(box);
      call("/link/stand-in/complete", {
        link_token: config.token, received_redirect_uri: String(config.receivedRedirectUri)
      }).then(function (result) {
        done = true; finish();
        if (result[0]) {
          config.onSuccess(result[1].public_token, {institution: result[1].institution});
        } else if (config.onExit) {
          config.onExit({
            error_type: result[1].error_type, error_code: result[1].error_code,
            error_message: result[1].error_message, display_message: result[1].display_message
          }, {});
        }
      }).catch(function () {
        done = true; finish();
        if (config.onExit) { config.onExit(null, {}); }
      });
    }
    function open() {
      if (box || done) { return; }
      if (config.receivedRedirectUri) { returned(); return; }
      box = el("form");
      box.id = "plaid-stand-in";
      box.style.border = "1px solid #888"; box.style.padding = "1em"; box.style.maxWidth = "28em";
      box.appendChild(el("h2", "Sandbox Link (stand-in for Plaid Link)"));
      box.appendChild(el("p", "Sandbox credentials: user_good / pass_good."));
      var pick = el("select"); pick.name = "institution_id";
      INSTITUTIONS.forEach(function (pair) {
        var option = el("option", pair[1]); option.value = pair[0]; pick.appendChild(option);
      });
      var choose = el("p");
      choose.appendChild(el("label", "Institution ")); choose.appendChild(pick);
      box.appendChild(choose);
      var user = field(box, "Username", "username", "text", "");
      var pass = field(box, "Password", "password", "password", "");
      var status = el("p");
      status.id = "plaid-stand-in-status"; status.setAttribute("role", "status");
      var submit = el("button", "Continue");
      submit.type = "submit"; submit.id = "plaid-stand-in-submit";
      var cancel = el("button", "Cancel");
      cancel.type = "button"; cancel.id = "plaid-stand-in-cancel";
      box.appendChild(status); box.appendChild(submit); box.appendChild(cancel);
      cancel.addEventListener("click", exit);
      box.addEventListener("submit", function (event) {
        event.preventDefault();
        submit.disabled = true; status.textContent = "Connecting...";
        if (OAUTH.indexOf(pick.value) >= 0) {
          // An OAuth institution: its own site takes the login, in this window.
          call("/link/stand-in/oauth", {link_token: config.token, institution_id: pick.value})
            .then(function (result) {
              if (!result[0]) {
                submit.disabled = false;
                status.textContent = String(result[1].error || "The login failed.");
                return;
              }
              status.textContent = "Continuing at the institution's site...";
              window.location.assign(result[1].oauth_url);
            }).catch(function () {
              submit.disabled = false; status.textContent = "The sandbox could not be reached.";
            });
          return;
        }
        call("/link/stand-in/complete", {
          link_token: config.token, username: user.value, password: pass.value,
          institution_id: pick.value
        }).then(function (result) {
          if (!result[0]) {
            submit.disabled = false;
            status.textContent = String(result[1].error || "The login failed.");
            return;
          }
          done = true; finish();
          config.onSuccess(result[1].public_token, {institution: result[1].institution});
        }).catch(function () {
          submit.disabled = false; status.textContent = "The sandbox could not be reached.";
        });
      });
      document.body.appendChild(box);
      user.focus();
    }
    return {open: open, exit: exit, destroy: function () { done = true; finish(); }};
  }
  window.Plaid = {create: create};
})();
"""


def complete_link(  # noqa: PLR0913 - what a browser would know
    listener_url: str,
    *,
    plaid_url: str,
    client_id: str,
    secret: str,
    sandbox_verify: ssl.SSLContext,
    listener_verify: ssl.SSLContext,
    institution_id: str = "ins_109508",
    products: tuple[str, ...] = ("transactions",),
    update: bool = False,
) -> dict[str, Any]:
    """Do what a person in Plaid Link does, without a browser; the listener's answer.

    ``listener_url`` is the hosted page ``https://HOST:PORT/link?state=S`` on
    dashtam's loopback listener. The page is fetched (as a browser would), a
    public token is made with ``/sandbox/public_token/create`` at
    ``plaid_url`` (or, with ``update``, through the stand-in Link with the link
    token the page holds, which repairs the item's login), and
    ``{"state": S, "fields": {"public_token", "institution"}}`` is posted to
    ``/link/done``. ``*_verify`` are the SSL contexts that trust the sandbox and the listener.
    """
    import httpx

    parts = urllib.parse.urlsplit(listener_url)
    state = urllib.parse.parse_qs(parts.query).get("state", [""])[0]
    origin = f"{parts.scheme}://{parts.netloc}"
    with httpx.Client(verify=listener_verify, timeout=10) as listener:
        page = listener.get(listener_url)
        page.raise_for_status()
        with httpx.Client(verify=sandbox_verify, timeout=10) as sandbox:
            if update:
                found = re.search(r"link-sandbox-[0-9a-f]+", page.text)
                if found is None:
                    msg = "the page holds no sandbox link token"
                    raise ValueError(msg)
                answer = sandbox.post(
                    plaid_url + "/link/stand-in/complete",
                    json={
                        "link_token": found[0],
                        "username": USERNAME,
                        "password": PASSWORD,
                        "institution_id": institution_id,
                    },
                    headers={"Origin": origin},
                )
                answer.raise_for_status()
                public_token = answer.json()["public_token"]
                institution = answer.json()["institution"]["name"]
            else:
                answer = sandbox.post(
                    plaid_url + "/sandbox/public_token/create",
                    json={
                        "client_id": client_id,
                        "secret": secret,
                        "institution_id": institution_id,
                        "initial_products": list(products),
                    },
                    headers={"Plaid-Version": VERSION},
                )
                answer.raise_for_status()
                public_token = answer.json()["public_token"]
                institution = INSTITUTIONS[institution_id]
        done = listener.post(
            f"{origin}/link/done",
            json={
                "state": state,
                "fields": {"public_token": public_token, "institution": institution},
            },
            headers={"Origin": origin},
        )
    body: dict[str, Any] = {"status": done.status_code}
    try:
        body |= done.json()
    except ValueError:
        body["text"] = done.text[:200]
    return body
