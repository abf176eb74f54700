"""A fake provider that serves a bank from memory: it proves the provider interface end to end.

It logs in with a pasted token (claimed once), keeps an opaque credential
record that does not expire, pages each account's transactions by a cursor
(a position in the account's change log), removes transactions, and can be
told to fail one account. Nothing generic knows it: it is registered with
:func:`dashtam_cli.core.providers.register` like a plugin would be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from typing import TYPE_CHECKING

from dashtam_cli.core.errors import ProviderError, ReauthRequired
from dashtam_cli.core.models import Account, Kind, Position, Transaction
from dashtam_cli.core.providers.base import (
    CallRecord,
    Changes,
    FetchedAccount,
    LoginKind,
    Provider,
    ProviderSession,
    transaction_id,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    import httpx

    from dashtam_cli.core.providers.base import SessionContext, SyncTarget

NAME = "fake"
# The fake's own transaction types and the neutral kind of each.
TYPES = {
    "BUY": Kind.TRADE,
    "DIV": Kind.DIVIDEND,
    "ACH_IN": Kind.DEPOSIT,
    "CARD": Kind.PURCHASE,
}


@dataclasses.dataclass
class FakeAccount:
    """One account at the fake bank."""

    number: str
    name: str
    cash: Decimal
    positions: list[tuple[str, Decimal, Decimal]] = dataclasses.field(default_factory=list)
    # The change log: ("add", id, type, amount, when, symbol) or ("remove", id).
    log: list[tuple[object, ...]] = dataclasses.field(default_factory=list)

    def add(
        self,
        provider_id: str,
        kind: str,
        amount: str,
        when: dt.datetime,
        symbol: str | None = None,
    ) -> None:
        """Post a transaction (a later add of the same id changes it)."""
        self.log.append(("add", provider_id, kind, Decimal(amount), when, symbol))

    def remove(self, provider_id: str) -> None:
        """Take a transaction back."""
        self.log.append(("remove", provider_id))


@dataclasses.dataclass
class FakeBank:
    """The institution behind the fake provider, all in memory."""

    accounts: list[FakeAccount] = dataclasses.field(default_factory=list)
    # Setup tokens not yet claimed, and the credential each claim gives.
    setup_tokens: dict[str, str] = dataclasses.field(default_factory=dict)
    credentials: set[str] = dataclasses.field(default_factory=set)
    # The number of the account whose transactions fail, if any.
    failing: str | None = None
    page_size: int = 2
    # Whether a revoke (on disconnect) fails, and the credentials revoked so far.
    revoke_fails: bool = False
    revoked: list[str] = dataclasses.field(default_factory=list)
    # What the provider saw: the cursors it was given, per account number.
    cursors_seen: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    requests: int = 0

    def claim(self, token: str) -> str:
        """Exchange a setup token for a credential, once."""
        credential = self.setup_tokens.pop(token, None)
        if credential is None:
            raise ProviderError(
                "the fake bank refused the token: already claimed or never issued",
                hint="make a new token at the fake bank",
            )
        self.credentials.add(credential)
        return credential


class FakeSession(ProviderSession):
    """One connection's session with the fake bank."""

    def __init__(self, provider: FakeProvider, context: SessionContext) -> None:
        """Keep the seams; the credential is read when first needed."""
        self.provider = provider
        self.bank = provider.bank
        self.context = context
        self.requests = 0

    async def _login(self, operation: str) -> None:
        """Check the sealed credential record the vault hands back, and audit the call."""
        record = json.loads(await self.context.secret())
        self.requests += 1
        self.bank.requests += 1
        allowed = record.get("credential") in self.bank.credentials
        await self.context.record(
            CallRecord(operation, "ok" if allowed else "reauth_required", 200, 1, None)
        )
        if not allowed:
            raise ReauthRequired(
                "the fake bank no longer accepts this connection's credential",
                hint=f"run: {self.provider.relogin_command(self.context.info.name)}",
            )

    async def accounts(self, account_id: Callable[[str], str]) -> list[FetchedAccount]:
        """Every account, with its cash as balances and its holdings as positions."""
        await self._login("accounts")
        now = self.context.clock()
        fetched = []
        for item in self.bank.accounts:
            masked = f"****{item.number[-4:]}"
            market = sum((q * p for _, q, p in item.positions), Decimal(0))
            account = Account(
                id=account_id(item.number),
                connection=self.context.info.name,
                provider=NAME,
                name=item.name,
                type="BANK",
                number=masked,
                currency="USD",
                cash=item.cash,
                market_value=market,
                total_value=item.cash + market,
                buying_power=None,
                fetched_at=now,
            )
            positions = [
                Position(
                    account_id=account.id,
                    account=masked,
                    symbol=symbol,
                    description=None,
                    asset_type="EQUITY",
                    quantity=quantity,
                    average_price=None,
                    market_value=quantity * price,
                    day_profit_loss=None,
                )
                for symbol, quantity, price in item.positions
            ]
            fetched.append(FetchedAccount(item.number, None, account, positions, now))
        return fetched

    async def changes(self, targets: Sequence[SyncTarget]) -> AsyncIterator[Changes]:
        """Each account's change log from its cursor, ``page_size`` entries a batch."""
        await self._login("transactions")
        by_number = {a.number: a for a in self.bank.accounts}
        for target in targets:
            account = target.account
            self.bank.cursors_seen.append((target.key, target.cursor))
            if target.key == self.bank.failing:
                error = ProviderError("the fake bank could not read this account")
                yield Changes(failed={account.id: error})
                continue
            log = by_number[target.key].log
            start = int(target.cursor) if target.cursor is not None else 0
            position = start
            while True:
                page = log[position : position + self.bank.page_size]
                position += len(page)
                done = position >= len(log)
                yield Changes(
                    transactions=[self._transaction(account, e) for e in page if e[0] == "add"],
                    removed=[transaction_id(account.id, e[1]) for e in page if e[0] == "remove"],
                    completed={account.id: str(position)} if done else {},
                )
                if done:
                    break

    async def revoke(self) -> bool:
        """Forget the credential at the bank (as Plaid's /item/remove does)."""
        credential = json.loads(await self.context.secret())["credential"]
        if self.bank.revoke_fails:
            raise ProviderError("the fake bank is down")
        self.bank.credentials.discard(credential)
        self.bank.revoked.append(credential)
        await self.context.record(CallRecord("revoke", "ok", 200, 1, None))
        return True

    @staticmethod
    def _transaction(account: Account, entry: tuple[object, ...]) -> Transaction:
        _, provider_id, kind, amount, when, symbol = entry
        assert isinstance(amount, Decimal)
        assert isinstance(when, dt.datetime)
        assert symbol is None or isinstance(symbol, str)
        return Transaction(
            id=transaction_id(account.id, provider_id),
            account_id=account.id,
            account=account.number,
            time=when,
            trade_date=None,
            settlement_date=None,
            type=str(kind),
            kind=TYPES[str(kind)],
            description=f"fake {kind}",
            amount=amount,
            symbol=symbol,
            quantity=None,
            price=None,
            fees=Decimal(0),
            status="POSTED",
        )


class FakeProvider(Provider):
    """A provider with a pasted-token login and a credential that never expires."""

    name = NAME
    display_name = "Fake Bank"
    login = LoginKind.TOKEN
    refreshes = False
    transaction_types = tuple(TYPES)

    def __init__(self, bank: FakeBank) -> None:
        """Serve ``bank``."""
        self.bank = bank

    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of one of the fake's types."""
        return TYPES.get(provider_type, Kind.OTHER)

    def session(self, context: SessionContext) -> ProviderSession:
        """A session for one connection."""
        return FakeSession(self, context)

    async def claim(self, client: httpx.AsyncClient, token: str) -> str:
        """The credential record for a setup token: opaque JSON the vault seals."""
        del client  # the fake bank is in memory
        return json.dumps({"credential": self.bank.claim(token), "version": 1})
