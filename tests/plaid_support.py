"""A Plaid in memory, answering through respx with the shapes of Plaid's OpenAPI spec (2020-09-14).

It checks the app keys in the ``PLAID-CLIENT-ID``/``PLAID-SECRET`` headers and
the ``Plaid-Version`` header on every call, and answers Plaid's error JSON
(``error_type``, ``error_code``, ``error_message``, ``display_message``,
``request_id``) otherwise. An item's transactions are a change log:
``/transactions/sync``'s cursor is a position in it, each page ``page_size``
changes with ``has_more``. Faults are queued per path. Every request is kept.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import respx

HOST = "plaid.test"
ORIGIN = f"https://{HOST}"
CLIENT_ID = "client-0123456789abcdef"
SECRET = "sandbox-secret-fedcba9876543210"
VERSION = "2020-09-14"
PATHS = (
    "/accounts/get",
    "/accounts/balance/get",
    "/transactions/sync",
    "/investments/holdings/get",
    "/investments/transactions/get",
    "/item/get",
    "/item/remove",
    "/link/token/create",
    "/item/public_token/exchange",
)


def error(
    status: int, code: str, error_type: str = "ITEM_ERROR", message: str = "failed"
) -> dict[str, Any]:
    """A fault to queue: Plaid's error object and its status."""
    return {
        "status": status,
        "body": {
            "error_type": error_type,
            "error_code": code,
            "error_message": message,
            "display_message": None,
            "request_id": f"req-{secrets.token_hex(4)}",
        },
    }


def txn(  # noqa: PLR0913 - a transaction's fields
    tid: str,
    amount: str,
    name: str,
    *,
    account: str = "acc-checking",
    day: str = "2026-11-20",
    pending: bool = False,
    pending_id: str | None = None,
    category: tuple[str, str] | None = None,
    currency: str | None = "USD",
    unofficial: str | None = None,
) -> dict[str, Any]:
    """A Transaction of the spec; ``amount`` kept as JSON number text (positive: money out)."""
    body: dict[str, Any] = {
        "transaction_id": tid,
        "account_id": account,
        "amount": f"@@{amount}@@",
        "iso_currency_code": currency,
        "unofficial_currency_code": unofficial,
        "date": day,
        "authorized_date": day,
        "datetime": None,
        "authorized_datetime": None,
        "name": name,
        "merchant_name": None,
        "pending": pending,
        "pending_transaction_id": pending_id,
        "payment_channel": "online",
        "transaction_type": "special",
    }
    if category is not None:
        body["personal_finance_category"] = {
            "primary": category[0],
            "detailed": category[1],
            "confidence_level": "HIGH",
        }
    return body


def dumps(body: object) -> str:
    """JSON with ``"@@1.10@@"`` strings written as the bare number ``1.10`` (as Plaid sends)."""
    return json.dumps(body).replace('"@@', "").replace('@@"', "")


@dataclasses.dataclass
class PlaidItem:
    """An item at Plaid: its accounts, its change log, its holdings and investments."""

    item_id: str
    accounts: list[dict[str, Any]]
    log: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    holdings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    securities: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    investment_transactions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    products: tuple[str, ...] = ("transactions",)
    login_required: bool = False
    removed: bool = False

    def add(self, *transactions: dict[str, Any]) -> None:
        """Log ``added`` changes."""
        self.log.extend(("added", t) for t in transactions)

    def modify(self, *transactions: dict[str, Any]) -> None:
        """Log ``modified`` changes."""
        self.log.extend(("modified", t) for t in transactions)

    def remove(self, tid: str, account: str = "acc-checking") -> None:
        """Log a removal."""
        self.log.append(("removed", {"transaction_id": tid, "account_id": account}))


def account(  # noqa: PLR0913 - an account's fields
    account_id: str,
    name: str,
    current: str,
    *,
    kind: str = "depository",
    subtype: str = "checking",
    mask: str = "0000",
    available: str | None = None,
    currency: str = "USD",
) -> dict[str, Any]:
    """An AccountBase of the spec."""
    return {
        "account_id": account_id,
        "balances": {
            "available": None if available is None else f"@@{available}@@",
            "current": f"@@{current}@@",
            "limit": None,
            "iso_currency_code": currency,
            "unofficial_currency_code": None,
        },
        "mask": mask,
        "name": name,
        "official_name": None,
        "type": kind,
        "subtype": subtype,
    }


@dataclasses.dataclass
class Plaid:
    """Plaid's state, and what it was asked."""

    items: dict[str, PlaidItem] = dataclasses.field(default_factory=dict)  # access token -> item
    page_size: int = 2
    requests: list[httpx.Request] = dataclasses.field(default_factory=list)
    # path -> faults to answer its next requests with, one each.
    faults: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # Raise this from the n-th /transactions/sync request (1-based) after it is set.
    crash_at: int | None = None
    link_tokens: list[str] = dataclasses.field(default_factory=list)
    public_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # public -> access
    link_bodies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    _sync_calls: int = 0

    def new_item(self, item: PlaidItem) -> str:
        """Hold ``item``; its access token."""
        token = f"access-sandbox-{secrets.token_hex(12)}"
        self.items[token] = item
        return token

    def public_token_for(self, access_token: str) -> str:
        """A public token that exchanges for ``access_token`` (what Link hands back)."""
        public = f"public-sandbox-{secrets.token_hex(12)}"
        self.public_tokens[public] = access_token
        return public

    def calls(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies sent to ``path``."""
        return [json.loads(r.content) for r in self.requests if r.url.path == path]

    def install(self, router: respx.MockRouter) -> None:
        """Answer Plaid's paths on ``router``."""
        for path in PATHS:
            router.post(f"{ORIGIN}{path}").mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:  # noqa: PLR0911 - one per path
        self.requests.append(request)
        path = request.url.path
        body = json.loads(request.content)
        denied = self._check(request)
        if denied is not None:
            return denied
        queued = self.faults.get(path)
        if queued and queued[0].get("after", 0) > 0:
            queued[0]["after"] -= 1  # this one answered normally, the fault later
        elif queued:
            fault = queued.pop(0)
            headers = fault.get("headers", {})
            return httpx.Response(fault["status"], text=json.dumps(fault["body"]), headers=headers)
        if path == "/link/token/create":
            return self._link_token(body)
        if path == "/item/public_token/exchange":
            access = self.public_tokens.pop(body.get("public_token", ""), None)
            if access is None:
                return self._error(400, "INVALID_PUBLIC_TOKEN", "INVALID_INPUT")
            return self._ok({"access_token": access, "item_id": self.items[access].item_id})
        item = self.items.get(body.get("access_token", ""))
        if item is None or item.removed:
            return self._error(400, "INVALID_ACCESS_TOKEN", "INVALID_INPUT")
        if item.login_required and path != "/item/remove":
            return self._error(400, "ITEM_LOGIN_REQUIRED", "ITEM_ERROR")
        handler = {
            "/accounts/get": self._accounts,
            "/accounts/balance/get": self._accounts,
            "/transactions/sync": self._sync,
            "/investments/holdings/get": self._holdings,
            "/investments/transactions/get": self._investments,
            "/item/remove": self._remove,
        }[path]
        return handler(item, body)

    def _check(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("Plaid-Version") != VERSION:
            return self._error(400, "INVALID_FIELD", "INVALID_REQUEST")
        if (
            request.headers.get("PLAID-CLIENT-ID") != CLIENT_ID
            or request.headers.get("PLAID-SECRET") != SECRET
        ):
            return self._error(400, "INVALID_API_KEYS", "INVALID_INPUT")
        return None

    @staticmethod
    def _ok(body: dict[str, Any]) -> httpx.Response:
        body.setdefault("request_id", f"req-{secrets.token_hex(4)}")
        return httpx.Response(200, text=dumps(body))

    @staticmethod
    def _error(status: int, code: str, error_type: str) -> httpx.Response:
        return httpx.Response(status, text=json.dumps(error(status, code, error_type)["body"]))

    def _link_token(self, body: dict[str, Any]) -> httpx.Response:
        self.link_bodies.append(body)
        token = f"link-sandbox-{secrets.token_hex(12)}"
        self.link_tokens.append(token)
        return self._ok({"link_token": token, "expiration": "2026-12-02T04:00:00Z"})

    def _accounts(self, item: PlaidItem, body: dict[str, Any]) -> httpx.Response:
        del body
        return self._ok(
            {
                "accounts": item.accounts,
                "item": {"item_id": item.item_id, "institution_id": "ins_109508"},
            }
        )

    def _sync(self, item: PlaidItem, body: dict[str, Any]) -> httpx.Response:
        self._sync_calls += 1
        if self.crash_at is not None and self._sync_calls >= self.crash_at:
            self.crash_at = None
            msg = "the process died between two pages"
            raise RuntimeError(msg)
        cursor = body.get("cursor")
        start = int(cursor.removeprefix("c-")) if cursor else 0
        count = min(int(body.get("count", 100)), self.page_size)
        page = item.log[start : start + count]
        end = start + len(page)
        return self._ok(
            {
                "added": [t for kind, t in page if kind == "added"],
                "modified": [t for kind, t in page if kind == "modified"],
                "removed": [t for kind, t in page if kind == "removed"],
                "next_cursor": f"c-{end}",
                "has_more": end < len(item.log),
                "transactions_update_status": "HISTORICAL_UPDATE_COMPLETE",
                "accounts": item.accounts,
            }
        )

    def _holdings(self, item: PlaidItem, body: dict[str, Any]) -> httpx.Response:
        del body
        if "investments" not in item.products:
            return self._error(400, "PRODUCTS_NOT_SUPPORTED", "ITEM_ERROR")
        return self._ok(
            {
                "accounts": item.accounts,
                "holdings": item.holdings,
                "securities": item.securities,
                "item": {"item_id": item.item_id},
            }
        )

    def _investments(self, item: PlaidItem, body: dict[str, Any]) -> httpx.Response:
        if "investments" not in item.products:
            return self._error(400, "PRODUCTS_NOT_SUPPORTED", "ITEM_ERROR")
        options = body.get("options") or {}
        wanted = set(options.get("account_ids") or [t["account_id"] for t in item.accounts])
        chosen = [
            t
            for t in item.investment_transactions
            if t["account_id"] in wanted and body["start_date"] <= t["date"] <= body["end_date"]
        ]
        offset = int(options.get("offset", 0))
        count = min(int(options.get("count", 100)), self.page_size)
        return self._ok(
            {
                "accounts": item.accounts,
                "securities": item.securities,
                "investment_transactions": chosen[offset : offset + count],
                "total_investment_transactions": len(chosen),
                "item": {"item_id": item.item_id},
            }
        )

    def _remove(self, item: PlaidItem, body: dict[str, Any]) -> httpx.Response:
        del body
        item.removed = True
        return self._ok({})
