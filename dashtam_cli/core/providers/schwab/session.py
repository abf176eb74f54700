"""One Schwab connection's session: accounts with balances and positions, then transactions."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.providers.base import Changes, FetchedAccount, ProviderSession
from dashtam_cli.core.providers.schwab import mapping
from dashtam_cli.core.providers.schwab.client import ApiError, Fields, SchwabClient
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.resilience import gather_all

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from dashtam_cli.core.providers.base import SessionContext, SyncTarget
    from dashtam_cli.core.providers.schwab import SchwabProvider

__all__ = ["SchwabSession"]

log = logging.getLogger(__name__)

# Accounts whose transactions are asked for at once (each may be two or more windows).
ACCOUNTS_IN_FLIGHT: Final = 8


class SchwabSession(ProviderSession):
    """The Trader API for one connection, through the context's token, audit and HTTP seams."""

    def __init__(self, provider: SchwabProvider, context: SessionContext) -> None:
        """Build the client on the context's seams."""
        from dashtam_cli.core.providers.base import CallRecord

        self._context = context
        self._failures: dict[str, DashtamError] = {}
        info = context.info
        assert provider.spec is not None

        async def record(call: CallRecord) -> None:
            await context.record(call)

        self.client = SchwabClient(
            context.client,
            base_url=provider.spec.base_url(),
            token=context.access_token,
            refresh=context.replace_rejected,
            record=record,
            reauth_hint=f"run: {provider.relogin_command(info.name)}",
            max_in_flight=context.max_in_flight,
            backoff=context.backoff,
        )

    @property
    def requests(self) -> int:  # type: ignore[override] # the client counts them
        """Requests sent so far."""
        return self.client.requests

    @property
    def account_failures(self) -> Mapping[str, DashtamError]:
        """Accounts (by number) whose record dashtam could not use."""
        return self._failures

    async def _nicknames(self) -> tuple[dict[str, str], DashtamError | None]:
        """The accounts' nicknames by number; or none, and why Schwab did not give them.

        Only names depend on them: without them the accounts are named by their
        type and masked number. (The error is returned in a tuple, not raised:
        gather_all would raise it.)
        """
        try:
            return await self.client.nicknames(), None
        except DashtamError as exc:
            return {}, exc

    async def account_keys(self) -> list[str]:
        """The login's account numbers: one cheap call."""
        numbers = [number for number, _ in await self.client.account_numbers()]
        for number in numbers:
            register_secret(number)
        return numbers

    async def accounts(self, account_id: Callable[[str], str]) -> list[FetchedAccount]:
        """Numbers with their hashes, accounts with positions, and nicknames, asked for at once."""
        info = self._context.info
        numbers_task = asyncio.ensure_future(self.client.account_numbers())
        raws_task = asyncio.ensure_future(self.client.accounts())
        names_task = asyncio.ensure_future(self._nicknames())
        await gather_all(numbers_task, raws_task, names_task)
        hashes = dict(numbers_task.result())
        for number in hashes:
            register_secret(number)
        names, unnamed = names_task.result()
        if unnamed is not None:
            log.warning(
                "%s: the accounts' nicknames are unavailable, so they are named by type and"
                " number (%s)",
                info.name,
                unnamed.message,
            )
        now = self._context.clock()
        fetched = []
        for index, raw in enumerate(raws_task.result()):
            item = Fields(raw, what="accounts", path=f"[{index}]")
            number = item.obj("securitiesAccount").identifier("accountNumber") or ""
            if number not in hashes:
                continue  # not an account of this login's list (Schwab lists both together)
            try:
                account = mapping.account_model(
                    info, account_id(number), item, now, names.get(number)
                )
                positions = mapping.positions(account, item)
            except ApiError as exc:  # this account's record is unusable: it fails alone
                self._failures[number] = exc
                continue
            fetched.append(FetchedAccount(number, hashes[number], account, positions))
        return fetched

    async def changes(self, targets: Sequence[SyncTarget]) -> AsyncIterator[Changes]:
        """Each account's transactions over its window, a batch per account as it arrives.

        An account whose request or answer fails fails alone (in the batch's
        ``failed``); anything else (a login to renew, the token endpoint, a
        certificate) fails the connection and is raised.
        """
        gate = asyncio.Semaphore(ACCOUNTS_IN_FLIGHT)

        async def one(target: SyncTarget) -> Changes:
            account = target.account
            try:
                async with gate:
                    raws = await self.client.transactions(
                        target.reference or "", target.since, target.until
                    )
                page = [mapping.transaction(account.id, account.number, raw) for raw in raws]
            except ApiError as exc:
                return Changes(failed={account.id: exc})
            return Changes(transactions=page, completed={account.id: None})

        tasks = [asyncio.ensure_future(one(target)) for target in targets]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
