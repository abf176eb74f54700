"""One Plaid item's session: balances, the item's transaction cursor, holdings, investments.

Plaid's ``/transactions/sync`` cursor belongs to the item, dashtam's sync
points to accounts. A sync therefore reads every page of the item (from the
cursor its accounts share) before it yields anything, and yields the whole
of it (added, modified, removed, the investment transactions of the window)
as ONE batch completing every account with the new cursor: the vault stores
it in one transaction, so a crash, an error or a Ctrl-C between pages stores
nothing and leaves the cursor where it was, and the next sync gets each
change once. A change during paging
(``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``) restarts from the cursor
the loop began with, a few times at most.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.core.errors import ConfigError, DashtamError, ProviderError, ReauthRequired
from dashtam_cli.core.providers.base import (
    Changes,
    FetchedAccount,
    ProviderSession,
    transaction_id,
)
from dashtam_cli.core.providers.plaid import mapping
from dashtam_cli.core.providers.plaid.protocol import (
    KEYS,
    PlaidCaller,
    PlaidFailure,
    base_url,
)
from dashtam_cli.core.redact import register_secret

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from dashtam_cli.core.models import Account, Transaction
    from dashtam_cli.core.providers.base import SessionContext, SyncTarget
    from dashtam_cli.core.providers.plaid import PlaidProvider

__all__ = [
    "MAX_RESTARTS",
    "PAGE_SIZE",
    "Item",
    "PlaidSession",
    "country_codes",
    "realtime_balances",
]

log = logging.getLogger(__name__)

# /transactions/sync's and /investments/transactions/get's largest page.
PAGE_SIZE: Final = 500
# Restarts of the paging loop after a change during paging, before giving up for now.
MAX_RESTARTS: Final = 3
# A bound on pages of one loop: far past any household's history.
MAX_PAGES: Final = 10_000
MUTATION: Final = "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"
# An item without the product, or without accounts it applies to: nothing to fetch, no failure.
NOT_ENABLED: Final = frozenset(
    {
        "PRODUCTS_NOT_SUPPORTED",
        "PRODUCT_NOT_ENABLED",
        "INVALID_PRODUCT",
        "NO_INVESTMENT_ACCOUNTS",
        "NO_INVESTMENT_AUTH_ACCOUNTS",
        "NO_ACCOUNTS",
        "ADDITIONAL_CONSENT_REQUIRED",
    }
)
# Plaid is still fetching the item's history: the accounts keep their points.
NOT_READY: Final = "PRODUCT_NOT_READY"
SETTINGS: Final = ("realtime_balances", "country_codes")


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """A connection's sealed credential record: the item's access token and what it is."""

    access_token: str = dataclasses.field(repr=False)
    item_id: str
    environment: str
    products: tuple[str, ...]
    institution: str | None = None
    user_id: str | None = None

    @classmethod
    def read(cls, record: str) -> Item:
        """The item of a stored record; a ReauthRequired (never repeating it) when unreadable."""
        try:
            data = json.loads(record)
            token = data["access_token"]
            item_id = data["item_id"]
        except (ValueError, TypeError, KeyError):
            token = item_id = None
        if not isinstance(token, str) or not token or not isinstance(item_id, str):
            raise ReauthRequired(
                "this connection's stored Plaid item is not readable",
                hint="connect again: dashtam connect plaid --name NAME",
            )
        register_secret(token)
        products = data.get("products")
        institution = data.get("institution")
        return cls(
            access_token=token,
            item_id=item_id,
            environment=str(data.get("environment") or "sandbox"),
            products=tuple(p for p in products if isinstance(p, str))
            if isinstance(products, list)
            else (),
            institution=institution if isinstance(institution, str) and institution else None,
            user_id=data.get("user_id") if isinstance(data.get("user_id"), str) else None,
        )

    def record(self) -> str:
        """The record to seal (JSON)."""
        return json.dumps(
            {
                "version": 1,
                "access_token": self.access_token,
                "item_id": self.item_id,
                "environment": self.environment,
                "products": list(self.products),
                "institution": self.institution,
                "user_id": self.user_id,
            }
        )


def _flag(raw: object) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text)


def _warn_unknown(options: Mapping[str, tuple[object, str]]) -> None:
    for key, (_, where) in sorted(options.items()):
        if key not in SETTINGS:
            log.warning(
                "ignoring unknown Plaid setting %r (%s); the settings are: %s",
                key,
                where,
                ", ".join(SETTINGS),
            )


def country_codes(options: Mapping[str, tuple[object, str]]) -> tuple[str, ...]:
    """The ``country_codes`` setting for Link (a list, or text split at commas): else US."""
    given = options.get("country_codes")
    if given is None:
        return ("US",)
    raw, where = given
    items = raw if isinstance(raw, list) else str(raw).split(",")
    codes = tuple(str(item).strip().upper() for item in items if str(item).strip())
    if not codes or not all(len(c) == 2 and c.isascii() and c.isalpha() for c in codes):  # noqa: PLR2004
        raise ConfigError(
            f"invalid value for 'country_codes' in {where}: two-letter country codes expected",
            hint='for example: country_codes = ["US", "CA"]',
        )
    return codes


def realtime_balances(options: Mapping[str, tuple[object, str]]) -> bool:
    """The ``realtime_balances`` setting (billed per call in production): False unless set."""
    _warn_unknown(options)
    given = options.get("realtime_balances")
    if given is None:
        return False
    raw, where = given
    value = _flag(raw)
    if value is None:
        raise ConfigError(
            f"invalid value for 'realtime_balances' in {where}: true or false expected",
            hint="see docs/providers/plaid.md (real-time balances are billed per call)",
        )
    return value


async def open_caller(context: SessionContext, item: Item, relogin: str) -> PlaidCaller:
    """A caller with the app keys, to the item's environment; a ConfigError when they differ."""
    if context.app_keys is None:
        raise ConfigError(
            "this command has no Plaid app keys to send",
            hint=f"set {KEYS.client_id_env} and {KEYS.secret_env}, or run: dashtam providers "
            "configure plaid --client-id ID --environment ENV",
        )
    keys = await context.app_keys()
    if keys.environment != item.environment:
        raise ConfigError(
            f"this connection is a Plaid {item.environment} item, but the app keys are for "
            f"{keys.environment}",
            hint=f"set {KEYS.environment_env}={item.environment} with that environment's secret",
        )
    return PlaidCaller(
        context.client,
        keys,
        origin=base_url(item.environment),
        record=context.record,
        relogin=relogin,
        backoff=context.backoff,
    )


@dataclasses.dataclass(slots=True)
class _Loop:
    """What one paging loop gathered, by dashtam id: the last word on each transaction wins."""

    transactions: dict[str, Transaction] = dataclasses.field(default_factory=dict)
    removed: set[str] = dataclasses.field(default_factory=set)
    strangers: int = 0  # transactions of accounts this sync does not know

    def put(self, txn: Transaction) -> None:
        self.transactions[txn.id] = txn
        self.removed.discard(txn.id)

    def drop(self, tid: str) -> None:
        self.transactions.pop(tid, None)
        self.removed.add(tid)


class PlaidSession(ProviderSession):
    """One Plaid item, through the context's keys, audit and HTTP seams."""

    def __init__(self, provider: PlaidProvider, context: SessionContext) -> None:
        """Keep the seams; the item and the keys are read when first needed."""
        self._provider = provider
        self._context = context
        self._caller: PlaidCaller | None = None
        self._item: Item | None = None
        self._relogin = provider.relogin_command(context.info.name)
        self._failures: dict[str, DashtamError] = {}

    @property
    def requests(self) -> int:  # type: ignore[override] # the caller counts them
        """Requests sent so far."""
        return 0 if self._caller is None else self._caller.requests

    @property
    def account_failures(self) -> Mapping[str, DashtamError]:
        """Accounts (by Plaid id) that Plaid gave unusable."""
        return self._failures

    async def _open(self) -> tuple[PlaidCaller, Item]:
        if self._caller is None or self._item is None:
            item = Item.read(await self._context.secret())
            self._caller = await open_caller(self._context, item, self._relogin)
            self._item = item
        return self._caller, self._item

    async def _optional(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """A product's call; None when the item does not have the product (not a failure)."""
        caller, _ = await self._open()
        try:
            return await caller.post(path, body)
        except PlaidFailure as exc:
            if exc.code in NOT_ENABLED:
                log.info("Plaid %s: not enabled for this item (%s)", path, exc.code)
                return None
            raise

    async def accounts(self, account_id: Callable[[str], str]) -> list[FetchedAccount]:
        """Every account of the item, with balances (cached: ``/accounts/get``) and holdings."""
        caller, item = await self._open()
        now = self._context.clock()
        realtime = realtime_balances(self._context.options)
        path = "/accounts/balance/get" if realtime else "/accounts/get"
        answer = await caller.post(path, {"access_token": item.access_token})
        raw_accounts = answer.get("accounts")
        if not isinstance(raw_accounts, list):
            raise mapping.bad_answer("accounts", "accounts is not a list")
        read: list[mapping.PlaidAccount] = []
        for index, raw in enumerate(raw_accounts):
            try:
                read.append(mapping.read_account(raw))
            except mapping.Unreadable as exc:
                key = raw.get("account_id") if isinstance(raw, dict) else None
                self._failures[key if isinstance(key, str) else f"#{index}"] = ProviderError(
                    f"Plaid gave an account dashtam cannot read: {exc}",
                    hint="what was stored before is kept; retry later",
                )
        holdings = await self._holdings(item, read)
        fetched = []
        for plaid_account in read:
            mine = holdings.get(plaid_account.id)
            value: Decimal | None = None
            if mine is not None:
                values = (mapping.money(h, "institution_value") for h in mine[0])
                value = sum((v for v in values if v is not None), start=Decimal(0))
            account = mapping.account_model(
                self._context.info,
                account_id(plaid_account.id),
                plaid_account,
                now,
                institution=item.institution,
                holdings_value=value,
            )
            try:
                positions = [] if mine is None else mapping.positions(account, *mine)
            except mapping.Unreadable as exc:
                raise mapping.bad_answer("holdings", str(exc)) from None
            fetched.append(
                FetchedAccount(plaid_account.id, None, account, positions, plaid_account.updated_at)
            )
        return fetched

    async def _holdings(
        self, item: Item, accounts: Sequence[mapping.PlaidAccount]
    ) -> dict[str, tuple[list[Mapping[str, Any]], dict[str, Mapping[str, Any]]]]:
        """Each investment account's holdings and the securities they name."""
        if not any(a.investment for a in accounts):
            return {}
        answer = await self._optional(
            "/investments/holdings/get", {"access_token": item.access_token}
        )
        if answer is None:
            return {}
        securities = _securities(answer)
        result: dict[str, tuple[list[Mapping[str, Any]], dict[str, Mapping[str, Any]]]] = {
            a.id: ([], securities) for a in accounts if a.investment
        }
        raw_holdings = answer.get("holdings")
        for raw in raw_holdings if isinstance(raw_holdings, list) else []:
            if isinstance(raw, dict) and raw.get("account_id") in result:
                result[raw["account_id"]][0].append(raw)
        return result

    async def changes(self, targets: Sequence[SyncTarget]) -> AsyncIterator[Changes]:
        """The item's changes since its cursor and the investment window, as ONE batch."""
        if not targets:
            return
        _, item = await self._open()
        by_plaid = {t.key: t for t in targets}
        cursors = {t.cursor for t in targets if t.cursor is not None}
        # Every account shares the item's cursor; accounts that disagree (one kept its
        # point after a failure) start over: ids are stable, so nothing is stored twice.
        start = cursors.pop() if len(cursors) == 1 else None
        loop, cursor = await self._transactions(item, by_plaid, start)
        failed: dict[str, DashtamError] = {}
        investments = [t for t in targets if t.account.type == "INVESTMENT"]
        if investments:
            try:
                for txn in await self._investment_transactions(item, investments):
                    loop.put(txn)
            except PlaidFailure as exc:
                if exc.code != NOT_READY:
                    raise
                failed = {t.account.id: exc for t in investments}
        keep = None if loop.strangers else cursor
        if loop.strangers:
            log.info(
                "Plaid gave %d transactions of accounts not synced now; the next sync starts "
                "the item over to get them",
                loop.strangers,
            )
        yield Changes(
            transactions=list(loop.transactions.values()),
            removed=sorted(loop.removed),
            completed={t.account.id: keep for t in targets if t.account.id not in failed},
            failed=failed,
        )

    async def _transactions(
        self, item: Item, targets: Mapping[str, SyncTarget], start: str | None
    ) -> tuple[_Loop, str | None]:
        """Every page from ``start``; a change during paging starts over from ``start``."""
        restarts = 0
        while True:
            try:
                return await self._pages(item, targets, start)
            except PlaidFailure as exc:
                if exc.code != MUTATION:
                    raise
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise ProviderError(
                        f"Plaid's transactions kept changing while dashtam read them "
                        f"({MAX_RESTARTS} restarts)",
                        hint="nothing was stored and the sync point did not move; sync again "
                        "in a few minutes",
                    ) from None
                log.info("Plaid's transactions changed during paging; starting over")

    async def _pages(
        self, item: Item, targets: Mapping[str, SyncTarget], start: str | None
    ) -> tuple[_Loop, str | None]:
        loop = _Loop()
        cursor = start
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {"access_token": item.access_token, "count": PAGE_SIZE}
            if cursor is not None:
                body["cursor"] = cursor
            answer = await self._optional("/transactions/sync", body)
            if answer is None:
                return loop, start
            try:
                self._page(answer, targets, loop)
            except mapping.Unreadable as exc:
                raise mapping.bad_answer("transactions", str(exc)) from None
            next_cursor = answer.get("next_cursor")
            if not isinstance(next_cursor, str):
                raise mapping.bad_answer("transactions", "next_cursor is missing")
            cursor = next_cursor
            if answer.get("has_more") is not True:
                return loop, cursor or start
        raise mapping.bad_answer("transactions", f"more than {MAX_PAGES} pages")

    @staticmethod
    def _page(answer: Mapping[str, Any], targets: Mapping[str, SyncTarget], loop: _Loop) -> None:
        """Apply one page: added, then modified, then removed (Plaid's order)."""
        for key in ("added", "modified"):
            entries = answer.get(key) or []
            if not isinstance(entries, list):
                raise mapping.Unreadable(f"{key} is not a list")
            for raw in entries:
                plaid_account, _ = mapping.plaid_transaction_id(raw)
                target = targets.get(plaid_account)
                if target is None:
                    loop.strangers += 1
                    continue
                txn = mapping.transaction(target.account, raw)
                pending_id = raw.get("pending_transaction_id")
                if (
                    isinstance(pending_id, str)
                    and pending_id
                    and pending_id != raw.get("transaction_id")
                ):
                    # The pending transaction this one posts: replaced, not kept beside it.
                    loop.drop(transaction_id(target.account.id, pending_id))
                loop.put(txn)
        removed = answer.get("removed") or []
        if not isinstance(removed, list):
            raise mapping.Unreadable("removed is not a list")
        for raw in removed:
            if not isinstance(raw, dict):
                raise mapping.Unreadable("a removed transaction is not an object")
            plaid_id = mapping.ident(raw, "transaction_id")
            owner = raw.get("account_id")
            accounts: list[Account] = (
                [targets[owner].account]
                if isinstance(owner, str) and owner in targets
                else [t.account for t in targets.values()]
            )
            for account in accounts:
                loop.drop(transaction_id(account.id, plaid_id))

    async def _investment_transactions(
        self, item: Item, targets: Sequence[SyncTarget]
    ) -> list[Transaction]:
        """The window's investment transactions of ``targets``, page by page (offset, count)."""
        by_plaid = {t.key: t for t in targets}
        since = min(t.since for t in targets).date()
        until = max(t.until for t in targets).date()
        result: list[Transaction] = []
        offset = 0
        for _ in range(MAX_PAGES):
            answer = await self._optional(
                "/investments/transactions/get",
                {
                    "access_token": item.access_token,
                    "start_date": since.isoformat(),
                    "end_date": until.isoformat(),
                    "options": {
                        "account_ids": sorted(by_plaid),
                        "count": PAGE_SIZE,
                        "offset": offset,
                    },
                },
            )
            if answer is None:
                return result
            entries = answer.get("investment_transactions")
            total = answer.get("total_investment_transactions")
            if not isinstance(entries, list) or not isinstance(total, int):
                raise mapping.bad_answer(
                    "investment transactions", "investment_transactions is missing"
                )
            securities = _securities(answer)
            try:
                result.extend(_investment_page(entries, by_plaid, securities))
            except mapping.Unreadable as exc:
                raise mapping.bad_answer("investment transactions", str(exc)) from None
            offset += len(entries)
            if not entries or offset >= total:
                return result
        raise mapping.bad_answer("investment transactions", f"more than {MAX_PAGES} pages")

    async def revoke(self) -> bool:
        """``/item/remove``: Plaid forgets the item and its access token stops working."""
        caller, item = await self._open()
        await caller.post("/item/remove", {"access_token": item.access_token})
        return True


def _investment_page(
    entries: list[Any],
    targets: Mapping[str, SyncTarget],
    securities: Mapping[str, Mapping[str, Any]],
) -> list[Transaction]:
    """One page of investment transactions, of ``targets``' accounts only."""
    result = []
    for raw in entries:
        if not isinstance(raw, dict):
            raise mapping.Unreadable("an investment transaction is not an object")
        target = targets.get(mapping.ident(raw, "account_id"))
        if target is not None:
            result.append(mapping.investment_transaction(target.account, raw, securities))
    return result


def _securities(answer: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    raw = answer.get("securities")
    found: dict[str, Mapping[str, Any]] = {}
    for security in raw if isinstance(raw, list) else []:
        if isinstance(security, dict) and isinstance(security.get("security_id"), str):
            found[security["security_id"]] = security
    return found
