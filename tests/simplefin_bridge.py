"""A SimpleFIN Bridge in memory, answering through respx exactly as the protocol shapes its answers.

It holds setup tokens (claimed once), accesses (Basic credentials), and the
accounts behind them with their transactions; ``/accounts`` honours
``start-date``/``end-date`` (epoch seconds, end exclusive, capped at the last
90 days with the Bridge's warning), ``pending``, ``balances-only`` and
``account``, in protocol version 1 or 2. Every request is kept for the test
to look at.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import respx

HOST = "bridge.simplefin.test"
ROOT = f"https://{HOST}/simplefin"
CAP = dt.timedelta(days=90)
CAP_WARNING = "Requested date range exceeds limit of 90 days and was capped"


def epoch(moment: dt.datetime) -> int:
    """Unix seconds of ``moment``."""
    return int(moment.timestamp())


@dataclasses.dataclass
class BridgeTxn:
    """A transaction at the Bridge; ``posted`` None while pending."""

    id: str
    amount: str
    description: str
    posted: dt.datetime | None
    transacted_at: dt.datetime | None = None

    def body(self) -> dict[str, Any]:
        """The protocol's shape."""
        body: dict[str, Any] = {
            "id": self.id,
            "posted": 0 if self.posted is None else epoch(self.posted),
            "amount": self.amount,
            "description": self.description,
        }
        if self.transacted_at is not None:
            body["transacted_at"] = epoch(self.transacted_at)
        if self.posted is None:
            body["pending"] = True
        return body


@dataclasses.dataclass
class BridgeAccount:
    """An account at the Bridge."""

    id: str
    name: str
    balance: str
    conn_id: str = "CON-1"
    currency: str = "USD"
    available: str | None = None
    transactions: list[BridgeTxn] = dataclasses.field(default_factory=list)
    holdings: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Bridge:
    """The Bridge's state, and what it was asked."""

    now: dt.datetime
    accounts: list[BridgeAccount] = dataclasses.field(default_factory=list)
    connections: dict[str, str] = dataclasses.field(default_factory=lambda: {"CON-1": "Chase"})
    version: int = 2
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # claim path -> access user
    users: dict[str, str] = dataclasses.field(default_factory=dict)  # user -> password
    revoked: set[str] = dataclasses.field(default_factory=set)
    # Extra errlist entries (version 2) or strings (version 1) to add to every answer.
    errlist: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[httpx.Request] = dataclasses.field(default_factory=list)
    # Status codes to answer the next /accounts requests with, one each, before the real answer.
    faults: list[int] = dataclasses.field(default_factory=list)

    def setup_token(self) -> str:
        """A new setup token: base64 of a one-time claim URL."""
        path = secrets.token_hex(8)
        user = secrets.token_hex(12)
        self.tokens[path] = user
        return base64.b64encode(f"{ROOT}/claim/{path}".encode()).decode()

    def access_url(self, user: str) -> str:
        """The access URL of ``user``."""
        return f"https://{user}:{self.users[user]}@{HOST}/simplefin"

    @property
    def data_requests(self) -> list[httpx.Request]:
        """The ``/accounts`` requests made so far."""
        return [r for r in self.requests if r.url.path.endswith("/accounts")]

    def install(self, router: respx.MockRouter) -> None:
        """Answer the Bridge's routes on ``router``."""
        router.post(url__regex=rf"^https://{HOST}/simplefin/claim/.*").mock(side_effect=self._claim)
        router.get(url__regex=rf"^https://{HOST}/simplefin/accounts.*").mock(
            side_effect=self._accounts
        )

    def _claim(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.rsplit("/", 1)[-1]
        user = self.tokens.pop(path, None)
        if user is None:
            return httpx.Response(403, text="Forbidden")
        self.users[user] = secrets.token_hex(16)
        return httpx.Response(200, text=self.access_url(user))

    def _user(self, request: httpx.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if self.users.get(user) != password or user in self.revoked:
            return None
        return user

    def _accounts(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._user(request) is None:
            return httpx.Response(403, text="Forbidden")
        if self.faults:
            return httpx.Response(self.faults.pop(0), text="try later")
        params = urllib.parse.parse_qs(request.url.query.decode())
        end = (
            dt.datetime.fromtimestamp(int(params["end-date"][0]), dt.UTC)
            if "end-date" in params
            else self.now + dt.timedelta(seconds=1)
        )
        start = (
            dt.datetime.fromtimestamp(int(params["start-date"][0]), dt.UTC)
            if "start-date" in params
            else end - dt.timedelta(days=30)
        )
        warnings = []
        if end - start > CAP:
            start = end - CAP
            warnings.append(CAP_WARNING)
        pending = params.get("pending") == ["1"]
        balances_only = params.get("balances-only") == ["1"]
        wanted = set(params.get("account", []))
        accounts = []
        for account in self.accounts:
            if wanted and account.id not in wanted:
                continue
            body: dict[str, Any] = {
                "id": account.id,
                "name": account.name,
                "currency": account.currency,
                "balance": account.balance,
                "available-balance": account.available or account.balance,
                "balance-date": epoch(self.now),
                "transactions": [],
            }
            if self.version == 2:
                body["conn_id"] = account.conn_id
            else:
                body["org"] = {
                    "domain": "example.com",
                    "name": self.connections.get(account.conn_id, "Bank"),
                    "sfin-url": ROOT,
                }
            if account.holdings:
                body["holdings"] = account.holdings
            if not balances_only:
                body["transactions"] = [
                    t.body()
                    for t in account.transactions
                    if (t.posted is None and pending)
                    or (t.posted is not None and start <= t.posted < end)
                ]
            accounts.append(body)
        answer: dict[str, Any] = {"accounts": accounts}
        if self.version == 2:
            answer["errlist"] = [{"code": "gen.warn", "msg": w} for w in warnings] + self.errlist
            answer["connections"] = [
                {"conn_id": c, "name": n, "org_id": c, "org_url": "https://example.com"}
                for c, n in self.connections.items()
            ]
        else:
            answer["errors"] = warnings + self.errors
        return httpx.Response(200, text=json.dumps(answer))
