"""The sandbox's SimpleFIN server: setup tokens, claims, and the Bridge's ``/accounts`` rules.

It follows the SimpleFIN protocol (versions 1 and 2) and the SimpleFIN
Bridge's practice where dashtam depends on it: a setup token is claimed once;
``/accounts`` wants HTTP Basic credentials from the access URL; a range longer
than 90 days is cut to its last 90 days with a warning; a day's requests past
a threshold get a warning, past another a ``429``. Its data (a bank, a card
issuer with an airline-miles account, a brokerage) is generated from the seed,
and pending card and checking transactions post when the clock passes their
posting day: most under the same id, one under a new id.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import hashlib
import hmac
import html
import json
import random
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.sandbox.data import EQUITIES
from dashtam_cli.sandbox.http import Response

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

    from dashtam_cli.sandbox.app import SandboxConfig
    from dashtam_cli.sandbox.http import Request

__all__ = [
    "ACCOUNT_KEYS",
    "CAP_WARNING",
    "CONNECTION_KEYS",
    "HOSTILE_MESSAGE",
    "PREFIX",
    "SimpleFin",
]

PREFIX: Final = "/simplefin"
DAY: Final = 86_400
CAP_DAYS: Final = 90
CAP: Final = CAP_DAYS * DAY
# With no start-date the Bridge answers a recent range; the sandbox takes 30 days.
DEFAULT_RANGE: Final = 30 * DAY
HISTORY: Final = 730 * DAY
CAP_WARNING: Final = f"Requested date range exceeds limit of {CAP_DAYS} days and was capped"
CENT: Final = decimal.Decimal("0.01")
# The keys the error-injection settings name, and the account each connection holds.
CONNECTION_KEYS: Final = ("bank", "card", "brokerage")
ACCOUNT_KEYS: Final = ("checking", "savings", "card", "miles", "brokerage")
# A message that would hurt a client printing it raw: SGR colour, an OSC title change,
# a bell, a carriage return that hides text, a right-to-left override, and length.
HOSTILE_MESSAGE: Final = (
    "\x1b[31;1mSANDBOX\x1b[0m \x1b]0;owned terminal\x07 connection note\r"
    "\x1b[2Koverwritten \u202eesrever\u202c \x08\x08\x08 " + "very long text " * 700
)
MERCHANTS: Final = (
    ("Corner Coffee", "Food and drink"),
    ("Green Grocer", "Groceries"),
    ("City Transit", "Transport"),
    ("Bookshop on Main", "Shopping"),
    ("Fuel Stop 24", "Gas"),
    ("Streaming Co", "Subscriptions"),
    ("Hardware Depot", "Home"),
    ("Trattoria Roma", "Restaurants"),
)


def _money(value: decimal.Decimal) -> str:
    return str(value.quantize(CENT, rounding=decimal.ROUND_HALF_EVEN))


def _cents(rng: random.Random, low: int, high: int) -> decimal.Decimal:
    """A random amount from ``low`` to ``high`` units, in cents."""
    return decimal.Decimal(rng.randint(low * 100, high * 100)) / 100


def _stable_id(prefix: str, *parts: object) -> str:
    text = ":".join(str(p) for p in parts)
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclasses.dataclass(frozen=True, slots=True)
class _Transaction:
    """One transaction with its whole life: pending until ``posted_at``, then posted.

    ``pending_id`` and ``pending_amount`` are what it shows while pending;
    ``id`` and ``amount`` once posted (the same id for most; a new one for some).
    """

    id: str
    posted_at: int
    transacted_at: int
    amount: decimal.Decimal
    description: str
    payee: str
    memo: str
    pending_id: str
    pending_amount: decimal.Decimal

    def body(self, now: int, *, whole: bool) -> dict[str, Any]:
        """The SimpleFIN transaction as of ``now``."""
        pending = self.posted_at > now
        amount = self.pending_amount if pending else self.amount
        body: dict[str, Any] = {
            "id": self.pending_id if pending else self.id,
            "posted": 0 if pending else self.posted_at,
            "amount": str(int(amount)) if whole else _money(amount),
            "description": self.description,
            "transacted_at": self.transacted_at,
        }
        if self.payee:
            body["payee"] = self.payee
        if self.memo:
            body["memo"] = self.memo
        if pending:
            body["pending"] = True
        return body


@dataclasses.dataclass(frozen=True, slots=True)
class _Connection:
    key: str
    conn_id: str
    name: str
    org_id: str
    domain: str


@dataclasses.dataclass(slots=True)
class _Account:
    key: str
    id: str
    name: str
    connection: _Connection
    currency: str  # an ISO 4217 code, or a custom currency's name under /currency/
    opening: decimal.Decimal
    transactions: list[_Transaction]
    holdings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    credit_limit: decimal.Decimal | None = None
    market_value: decimal.Decimal = decimal.Decimal(0)

    @property
    def whole(self) -> bool:
        """Miles count in whole units."""
        return self.currency == "miles"


@dataclasses.dataclass
class _Access:
    password: str
    revoked: bool = False
    day: int = -1
    requests: int = 0


class _Generator:
    """Makes the accounts of one seed, relative to ``anchor`` (epoch seconds)."""

    def __init__(self, seed: int, anchor: int) -> None:
        self.seed = seed
        self.anchor = anchor
        self.rng = random.Random(f"simplefin:{seed}")  # noqa: S311 - test data, not security

    def history(
        self,
        account_id: str,
        count: int,
        draw: Callable[[random.Random], tuple[decimal.Decimal, str, str]],
    ) -> list[_Transaction]:
        """``count`` posted transactions over the two years before the last three days."""
        items = []
        for index in range(count):
            posted = self.anchor - 3 * DAY - self.rng.randint(0, HISTORY - 3 * DAY)
            transacted = posted - self.rng.randint(0, 2 * DAY)
            amount, description, payee = draw(self.rng)
            tid = _stable_id("TRN", self.seed, account_id, index)
            items.append(
                _Transaction(tid, posted, transacted, amount, description, payee, "", tid, amount)
            )
        return items

    def pending(self, account_id: str, amounts: tuple[decimal.Decimal, ...]) -> list[_Transaction]:
        """Three transactions of the last two days that post tomorrow morning (UTC).

        The first posts as it was; the second under the same id for a little
        more (a tip); the third under a new id, as some institutions do.
        """
        posting = (self.anchor // DAY + 1) * DAY + 6 * 3600
        items = []
        for index, amount in enumerate(amounts):
            name, category = MERCHANTS[(index * 3 + len(account_id)) % len(MERCHANTS)]
            transacted = self.anchor - (2 + 19 * index) * 3600
            pending_id = _stable_id("TRN", self.seed, account_id, f"pending-{index}")
            posted_id = (
                _stable_id("TRN", self.seed, account_id, f"posted-{index}")
                if index == 2  # noqa: PLR2004 - the third one changes id
                else pending_id
            )
            final = amount - decimal.Decimal("3.50") if index == 1 else amount
            items.append(
                _Transaction(
                    posted_id,
                    posting + index * 60,
                    transacted,
                    final,
                    name.upper(),
                    name,
                    category,
                    pending_id,
                    amount,
                )
            )
        return items


def _purchase(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    name, _category = rng.choice(MERCHANTS)
    return -_cents(rng, 3, 180), f"{name.upper()} #{rng.randint(100, 999)}", name


def _checking(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    roll = rng.random()
    if roll < 0.12:  # noqa: PLR2004
        return _cents(rng, 1800, 2600), "PAYROLL ACME CORP DIR DEP", "Acme Corp"
    if roll < 0.22:  # noqa: PLR2004
        return -_cents(rng, 60, 240), "ELECTRIC UTILITY AUTOPAY", "City Power"
    if roll < 0.30:  # noqa: PLR2004
        return -_cents(rng, 100, 500), "TRANSFER TO SAVINGS", "Sandbox Savings"
    return _purchase(rng)


def _savings(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    roll = rng.random()
    if roll < 0.5:  # noqa: PLR2004
        return _cents(rng, 1, 40), "INTEREST PAYMENT", "Sandbox Savings"
    if roll < 0.9:  # noqa: PLR2004
        return _cents(rng, 100, 500), "TRANSFER FROM CHECKING", "Sandbox Checking"
    return -_cents(rng, 200, 2000), "TRANSFER TO CHECKING", "Sandbox Checking"


def _card(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    roll = rng.random()
    if roll < 0.08:  # noqa: PLR2004
        return _cents(rng, 200, 1500), "PAYMENT THANK YOU", "Sandbox Card Co"
    if roll < 0.11:  # noqa: PLR2004
        name, _category = rng.choice(MERCHANTS)
        return _cents(rng, 5, 80), f"REFUND {name.upper()}", name
    return _purchase(rng)


def _miles(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    if rng.random() < 0.85:  # noqa: PLR2004
        return decimal.Decimal(rng.randint(20, 3000)), "MILES EARNED ON CARD PURCHASES", ""
    return -decimal.Decimal(rng.randint(5000, 25000)), "AWARD FLIGHT REDEMPTION", "Example Air"


def _brokerage(rng: random.Random) -> tuple[decimal.Decimal, str, str]:
    symbol, name, price = rng.choice(EQUITIES)
    roll = rng.random()
    if roll < 0.3:  # noqa: PLR2004
        return _cents(rng, 2, 150), f"DIVIDEND {symbol}", name
    if roll < 0.5:  # noqa: PLR2004
        return _cents(rng, 500, 3000), "CONTRIBUTION", "Sandbox Checking"
    shares = rng.randint(1, 10)
    cost = decimal.Decimal(price) * shares
    if roll < 0.85:  # noqa: PLR2004
        return -cost, f"BOUGHT {shares} {symbol}", name
    return cost, f"SOLD {shares} {symbol}", name


def generate(seed: int, per_account: int, anchor: int) -> list[_Account]:
    """The sandbox's SimpleFIN accounts, the same for the same seed and anchor."""
    gen = _Generator(seed, anchor)
    connections = {
        "bank": _Connection(
            "bank",
            _stable_id("CON", seed, "bank"),
            "Sandbox Bank",
            _stable_id("ORG", "bank"),
            "bank.sandbox.example",
        ),
        "card": _Connection(
            "card",
            _stable_id("CON", seed, "card"),
            "Sandbox Card Co",
            _stable_id("ORG", "card"),
            "card.sandbox.example",
        ),
        "brokerage": _Connection(
            "brokerage",
            _stable_id("CON", seed, "brokerage"),
            "Sandbox Brokerage",
            _stable_id("ORG", "brokerage"),
            "brokerage.sandbox.example",
        ),
    }
    small = max(per_account // 5, min(per_account, 5))
    plan: list[tuple[str, str, str, str, int, Any, decimal.Decimal]] = [
        ("checking", "bank", "Everyday Checking", "USD", per_account, _checking,
         _cents(gen.rng, 800, 9000)),
        ("savings", "bank", "High Yield Savings", "USD", small, _savings,
         _cents(gen.rng, 5000, 40000)),
        ("card", "card", "Sandbox Rewards Visa", "USD", per_account, _card,
         -_cents(gen.rng, 200, 3000)),
        ("miles", "card", "Example Air Miles", "miles", small, _miles,
         decimal.Decimal(gen.rng.randint(20000, 90000))),
        ("brokerage", "brokerage", "Individual Brokerage", "USD", small, _brokerage,
         _cents(gen.rng, 500, 8000)),
    ]  # fmt: skip
    accounts = []
    for key, conn, name, currency, count, draw, target in plan:
        account_id = _stable_id("ACT", seed, key)
        items = gen.history(account_id, count, draw)
        if key in {"checking", "card"}:
            amounts = tuple(-_cents(gen.rng, 4, 90) for _ in range(3))
            items += gen.pending(account_id, amounts)
        items.sort(key=lambda t: (t.posted_at, t.id))
        settled = sum((t.amount for t in items if t.posted_at <= anchor), decimal.Decimal(0))
        account = _Account(
            key, account_id, name, connections[conn], currency, target - settled, items
        )
        if key == "card":
            account.credit_limit = decimal.Decimal(8000)
            account.extra = {"credit-limit": "8000.00", "apr": "24.99"}
        if key == "brokerage":
            account.holdings = _holdings(gen.rng, seed, account_id, anchor)
            account.market_value = sum(
                (decimal.Decimal(h["market_value"]) for h in account.holdings), decimal.Decimal(0)
            )
            account.extra = {"account-type": "brokerage"}
        accounts.append(account)
    return accounts


def _holdings(rng: random.Random, seed: int, account_id: str, anchor: int) -> list[dict[str, Any]]:
    holdings = []
    for symbol, name, price in rng.sample(EQUITIES, 4):
        shares = decimal.Decimal(rng.randint(5, 400)) / 4
        bought = decimal.Decimal(price) * decimal.Decimal(rng.randint(60, 110)) / 100
        holdings.append(
            {
                "id": _stable_id("HOL", seed, account_id, symbol),
                "created": anchor - rng.randint(30, 700) * DAY,
                "currency": "USD",
                "cost_basis": _money(shares * bought),
                "description": name,
                "market_value": _money(shares * decimal.Decimal(price)),
                "purchase_price": _money(bought),
                "shares": str(shares),
                "symbol": symbol,
            }
        )
    return holdings


def _text(status: int, text: str, **headers: str) -> Response:
    return Response(
        status, text.encode(), headers=dict(headers), content_type="text/plain; charset=utf-8"
    )


def _json(body: object) -> Response:
    return Response(200, json.dumps(body, separators=(",", ":")).encode())


class _Query:
    """The parameters of one ``/accounts`` request, checked."""

    def __init__(self, request: Request, now: int) -> None:
        self.error = ""
        self.warnings: list[str] = []
        end = self._epoch(request, "end-date")
        start = self._epoch(request, "start-date")
        self.end = now if end is None else end
        self.start = self.end - DEFAULT_RANGE if start is None else start
        if not self.error and self.start > self.end:
            self.error = "start-date is after end-date"
        if self.end - self.start > CAP:
            self.start = self.end - CAP
            self.warnings.append(CAP_WARNING)
        self.pending = request.arg("pending") in {"1", "true"}
        self.balances_only = request.arg("balances-only") in {"1", "true"}
        wanted = request.query.get("account")
        self.accounts = set(wanted) if wanted else None

    def _epoch(self, request: Request, name: str) -> int | None:
        text = request.arg(name)
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError:
            self.error = f"{name} must be a Unix time in whole seconds"
            return None


class SimpleFin:
    """The SimpleFIN server a :class:`~dashtam_cli.sandbox.app.Sandbox` holds.

    ``root`` gives the server's root URL (``https://127.0.0.1:PORT/simplefin``)
    once the sandbox listens; ``clock`` is the sandbox's (epoch seconds);
    ``fault`` draws the status of an injected fault, or None.
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
        """Generate the data; tokens and accesses start empty."""
        if config.simplefin_version not in {1, 2}:
            msg = f"simplefin_version must be 1 or 2, not {config.simplefin_version!r}"
            raise ValueError(msg)
        self.config = config
        self.version = config.simplefin_version
        self._root = root
        self._clock = clock
        self._fault = fault
        self.accounts = generate(
            config.seed, config.transactions_per_account, int(anchor.timestamp())
        )
        self._claims: set[str] = set()
        self._accesses: dict[str, _Access] = {}

    # -- tokens and accesses -------------------------------------------------------------------

    def setup_token(self) -> str:
        """A fresh setup token: base64 of a claim URL that works once."""
        claim = secrets.token_urlsafe(32)
        self._claims.add(claim)
        return base64.b64encode(f"{self._root()}/claim/{claim}".encode()).decode()

    def revoke(self, access_url: str) -> None:
        """Revoke the access of ``access_url``: its ``/accounts`` calls answer 403 from now on."""
        user = urllib.parse.urlsplit(access_url).username or ""
        access = self._accesses.get(urllib.parse.unquote(user))
        if access is not None:
            access.revoked = True

    def _claim(self, claim: str) -> Response:
        if claim not in self._claims:
            return _text(403, "Forbidden: unknown or already claimed setup token")
        self._claims.discard(claim)
        user, password = secrets.token_hex(16), secrets.token_hex(32)
        self._accesses[user] = _Access(password)
        root = urllib.parse.urlsplit(self._root())
        return _text(200, f"{root.scheme}://{user}:{password}@{root.netloc}{root.path}")

    def _access(self, request: Request) -> _Access | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        access = self._accesses.get(user)
        if access is None or access.revoked:
            return None
        return access if hmac.compare_digest(password.encode(), access.password.encode()) else None

    # -- routes ----------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:  # noqa: PLR0911 - one line per route
        """Answer a request whose path is under ``/simplefin``."""
        path = request.path.removeprefix(PREFIX)
        if path == "/info" and request.method == "GET":
            return _json({"versions": [f"{self.version}.0"]})
        if path == "/create" and request.method == "GET":
            return self._create_page()
        if path.startswith("/claim/") and request.method == "POST":
            return self._claim(path.removeprefix("/claim/"))
        if path == "/accounts" and request.method == "GET":
            fault = self._fault()
            if fault is not None:
                return self._fault_response(fault)
            return self._accounts(request)
        if path == "/currency/miles" and request.method == "GET":
            return _json({"name": "Example Airline Miles", "abbr": "miles"})
        known = {"/info", "/create", "/accounts", "/currency/miles"}
        if path in known or path.startswith("/claim/"):
            return _text(405, "Method not allowed")
        return _text(404, "Not found")

    def _create_page(self) -> Response:
        token = self.setup_token()
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Sandbox SimpleFIN Bridge: setup token</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1>Sandbox SimpleFIN Bridge</h1>
<p>Your setup token (it works once; reload this page for another):</p>
<p><code id="setup-token" style="word-break: break-all">{html.escape(token)}</code></p>
<p>Paste it into <code>dashtam connect simplefin</code>.</p>
</body></html>"""
        return Response(200, page.encode(), content_type="text/html; charset=utf-8")

    @staticmethod
    def _fault_response(status: int) -> Response:
        if status == 429:  # noqa: PLR2004
            return _text(429, "Too many requests (sandbox injected fault)", **{"Retry-After": "1"})
        if status == 500:  # noqa: PLR2004
            return _text(500, "Internal server error (sandbox injected fault)")
        return _text(503, "Service unavailable (sandbox injected fault)")

    def _budget(self, access: _Access, now: int) -> tuple[bool, str]:
        """Count one request; (blocked, warning or "")."""
        day = now // DAY
        if access.day != day:
            access.day, access.requests = day, 0
        access.requests += 1
        if access.requests > self.config.simplefin_budget_block:
            return True, ""
        if access.requests > self.config.simplefin_budget_warn:
            return False, (
                f"You have made {access.requests} requests today; about 24 a day are expected. "
                f"Past {self.config.simplefin_budget_block} requests will be refused."
            )
        return False, ""

    def _accounts(self, request: Request) -> Response:
        access = self._access(request)
        if access is None:
            return _text(403, "Forbidden: the access credentials are unknown or revoked")
        now = int(self._clock())
        blocked, budget_warning = self._budget(access, now)
        if blocked:
            return _text(429, "Too many requests today for this access; try again tomorrow (UTC)")
        query = _Query(request, now)
        if query.error:
            return _text(400, query.error)
        problems: list[dict[str, str]] = [{"code": "gen.warn", "msg": w} for w in query.warnings]
        if budget_warning:
            problems.append({"code": "gen.warn", "msg": budget_warning})
        accounts: list[dict[str, Any]] = []
        if self.config.simplefin_access_failed:
            problems.append(
                {
                    "code": "gen.auth",
                    "msg": "This access is no longer valid; make a new setup token at the Bridge",
                }
            )
        else:
            accounts = self._account_bodies(query, now, problems)
        if self.config.simplefin_hostile:
            problems.append({"code": "gen.warn", "msg": HOSTILE_MESSAGE})
        return _json(self._account_set(accounts, problems))

    def _account_bodies(
        self, query: _Query, now: int, problems: list[dict[str, str]]
    ) -> list[dict[str, Any]]:
        config = self.config
        reported: set[str] = set()
        bodies = []
        for account in self.accounts:
            if query.accounts is not None and account.id not in query.accounts:
                continue
            conn = account.connection
            if conn.key in config.simplefin_reauth_connections:
                if conn.key not in reported:
                    reported.add(conn.key)
                    problems.append(
                        {
                            "code": "con.auth",
                            "msg": f"{conn.name} needs you to sign in again at the Bridge",
                            "conn_id": conn.conn_id,
                        }
                    )
                continue
            if account.key in config.simplefin_failed_accounts:
                problems.append(
                    {
                        "code": "act.failed",
                        "msg": f"{account.name} at {conn.name} could not be fetched",
                        "conn_id": conn.conn_id,
                        "account_id": account.id,
                    }
                )
                continue
            body = self._account_body(account, query, now)
            if account.key in config.simplefin_missing_accounts:
                body["transactions"] = []
                problems.append(
                    {
                        "code": "act.missingdata",
                        "msg": f"Transactions of {account.name} at {conn.name} are missing",
                        "conn_id": conn.conn_id,
                        "account_id": account.id,
                    }
                )
            bodies.append(body)
        return bodies

    def _account_body(self, account: _Account, query: _Query, now: int) -> dict[str, Any]:
        root = self._root()
        posted = sum(
            (t.amount for t in account.transactions if t.posted_at <= now), decimal.Decimal(0)
        )
        held = sum(
            (t.pending_amount for t in account.transactions if t.posted_at > now),
            decimal.Decimal(0),
        )
        balance = account.opening + posted + account.market_value
        available = balance + held - account.market_value
        if account.credit_limit is not None:
            available += account.credit_limit

        def amount(value: decimal.Decimal) -> str:
            return str(int(value)) if account.whole else _money(value)

        body: dict[str, Any] = {
            "id": account.id,
            "name": account.name,
            "currency": f"{root}/currency/miles" if account.whole else account.currency,
            "balance": amount(balance),
            "available-balance": amount(available),
            "balance-date": now,
            "transactions": [],
        }
        if not query.balances_only:
            body["transactions"] = [
                t.body(now, whole=account.whole)
                for t in account.transactions
                if self._wanted(t, query, now)
            ]
        if account.holdings:
            body["holdings"] = [dict(h) for h in account.holdings]
        if account.extra:
            body["extra"] = dict(account.extra)
        if self.version == 1:
            conn = account.connection
            body["org"] = {
                "domain": conn.domain,
                "name": conn.name,
                "sfin-url": root,
                "url": f"https://{conn.domain}",
                "id": conn.org_id,
            }
        else:
            body["conn_id"] = account.connection.conn_id
        return body

    @staticmethod
    def _wanted(item: _Transaction, query: _Query, now: int) -> bool:
        if item.posted_at <= now:
            return query.start <= item.posted_at < query.end
        # A pending transaction has no posting time yet: its range is its transaction time.
        return query.pending and query.start <= item.transacted_at < query.end

    def _account_set(
        self, accounts: list[dict[str, Any]], problems: list[dict[str, str]]
    ) -> dict[str, Any]:
        if self.version == 1:
            return {"errors": [p["msg"] for p in problems], "accounts": accounts}
        seen: dict[str, _Connection] = {}
        if not self.config.simplefin_access_failed:
            for account in self.accounts:
                seen.setdefault(account.connection.conn_id, account.connection)
        root = self._root()
        return {
            "errlist": problems,
            "connections": [
                {
                    "conn_id": c.conn_id,
                    "name": c.name,
                    "org_id": c.org_id,
                    "org_url": f"https://{c.domain}",
                    "sfin_url": root,
                }
                for c in seen.values()
            ],
            "accounts": accounts,
        }
