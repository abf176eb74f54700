"""One SimpleFIN connection's session: the last 90 days in one request, older in 90-day windows.

Every request spends one of the day's budget (about 24 at the Bridge), so a
sync asks as little as it can: one ``/accounts`` request for the last 90
days gives the accounts, balances, holdings and recent transactions
(pending ones included) of every institution of the access at once; only
history older than that (a first sync, or a long pause) costs one more
request per 90 days, for just the accounts that need it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import DashtamError, ProviderError, ReauthRequired, RequestBudgetSpent
from dashtam_cli.core.providers.base import Changes, FetchedAccount, ProviderSession
from dashtam_cli.core.providers.simplefin import mapping
from dashtam_cli.core.providers.simplefin.protocol import (
    MAX_WINDOW,
    Access,
    AccountSet,
    Problem,
    SimpleFINCaller,
    daily_limit,
    parse_account_set,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from dashtam_cli.core.models import Account, Transaction
    from dashtam_cli.core.providers.base import SessionContext, SyncTarget
    from dashtam_cli.core.providers.simplefin import SimpleFINProvider

__all__ = ["SimpleFINSession", "budget_scope"]

log = logging.getLogger(__name__)

_BRIDGE_HINT: Final = "https://beta-bridge.simplefin.org"
# The newest window has no end (the server's now): a day short of the cap, so a
# server clock ahead of this one never cuts its start off.
LATEST_SPAN: Final = MAX_WINDOW - dt.timedelta(days=1)


def budget_scope(access: Access) -> str:
    """What a budget belongs to: one access, named by a digest (never the credential itself)."""
    digest = hashlib.sha256(
        b"dashtam simplefin budget v1\0" + f"{access.url}\0{access.username}".encode()
    ).hexdigest()
    return f"simplefin:{digest[:32]}"


@dataclasses.dataclass(slots=True)
class _Latest:
    """The newest window's answer: asked for by ``accounts``, used again by ``changes``."""

    start: dt.datetime
    end: dt.datetime
    answer: AccountSet


class SimpleFINSession(ProviderSession):
    """A SimpleFIN access for one connection, through the context's budget, audit and HTTP seams."""

    def __init__(self, provider: SimpleFINProvider, context: SessionContext) -> None:
        """Keep the seams; the access URL is read from the vault when first needed."""
        self._provider = provider
        self._context = context
        self._caller: SimpleFINCaller | None = None
        self._access: Access | None = None
        self._latest: _Latest | None = None
        self._failures: dict[str, DashtamError] = {}
        self._connection_failures: list[DashtamError] = []
        self._warned: set[Problem] = set()
        self._relogin = f"run: {provider.relogin_command(context.info.name)}"
        # The windows count back from this reading, taken before the sync reads the clock
        # for where its history starts: from a later one, the last window would miss that
        # start by the time in between, and cost one more request to cover a second.
        self._anchor = context.clock()

    @property
    def requests(self) -> int:  # type: ignore[override] # the caller counts them
        """Requests sent so far."""
        return 0 if self._caller is None else self._caller.requests

    @property
    def requests_left(self) -> int | None:
        """Requests left in today's budget, as of the last one spent."""
        return None if self._caller is None else self._caller.left

    @property
    def account_failures(self) -> Mapping[str, DashtamError]:
        """Accounts (by SimpleFIN id) the server could not give, or gave unusable."""
        return self._failures

    @property
    def connection_failures(self) -> Sequence[DashtamError]:
        """Institutions of the access whose login must be renewed at the Bridge."""
        return self._connection_failures

    async def _open(self) -> tuple[SimpleFINCaller, Access]:
        if self._caller is None or self._access is None:
            context = self._context
            access = Access.from_record(await context.secret())
            self._access = access
            self._caller = SimpleFINCaller(
                context.client,
                record=context.record,
                spend=context.spend,
                scope=budget_scope(access),
                limit=daily_limit(context.options),
                reauth_hint=self._relogin,
                backoff=context.backoff,
            )
        return self._caller, self._access

    async def _fetch(
        self,
        start: dt.datetime | None,
        end: dt.datetime | None,
        accounts: Sequence[str] = (),
        *,
        balances_only: bool = False,
    ) -> AccountSet:
        caller, access = await self._open()
        data = await caller.account_set(
            access, start=start, end=end, accounts=accounts, balances_only=balances_only
        )
        answer = parse_account_set(data)
        self._read_problems(answer)
        return answer

    def _read_problems(self, answer: AccountSet) -> None:
        """Raise for a dead access; keep institutions' failures; log the rest, once each."""
        name = self._context.info.name
        names = {item.id: item.name for item in answer.accounts}
        for problem in answer.problems:
            if problem.code == "gen.auth":
                raise ReauthRequired(
                    f"SimpleFIN says this connection's access no longer works: {problem.message}",
                    hint=self._relogin,
                )
            if problem in self._warned:
                continue
            self._warned.add(problem)
            if problem.code == "con.auth":
                institution = answer.institutions.get(problem.conn_id or "", "an institution")
                self._connection_failures.append(
                    ReauthRequired(
                        f"{institution} needs you to log in to it again at the SimpleFIN "
                        f"Bridge: {problem.message}",
                        hint=f"log in to {institution} again at {_BRIDGE_HINT}, then run: "
                        f"dashtam sync --connection {name}",
                    )
                )
            elif problem.account_failed:
                continue  # the account's failure, reported with it
            else:
                about = names.get(problem.account_id or "") or answer.institutions.get(
                    problem.conn_id or ""
                )
                where = f"{name} ({about})" if about else name
                log.warning("SimpleFIN %s: %s", where, problem.message)

    @staticmethod
    def _account_problems(answer: AccountSet) -> dict[str, DashtamError]:
        """The accounts the server says it could not read, or that broke the protocol, and why."""
        failed: dict[str, DashtamError] = {}
        for problem in answer.problems:
            if problem.account_failed and problem.account_id is not None:
                failed[problem.account_id] = ProviderError(
                    f"SimpleFIN could not read this account ({problem.code}): {problem.message}",
                    hint="what was stored before is kept; it is fetched again on the next sync",
                )
        for key, why in answer.unreadable.items():
            failed.setdefault(
                key,
                ProviderError(
                    f"SimpleFIN gave an account dashtam cannot read: {why}",
                    hint="what was stored before is kept; retry later",
                ),
            )
        return failed

    async def account_keys(self) -> list[str]:
        """The access's account ids: one request without transactions."""
        answer = await self._fetch(None, None, balances_only=True)
        return [item.id for item in answer.accounts]

    async def accounts(self, account_id: Callable[[str], str]) -> list[FetchedAccount]:
        """Every account with balances and holdings, from one request for the last 90 days."""
        now = self._context.clock()
        start = self._anchor - LATEST_SPAN
        answer = await self._fetch(start, None)
        self._latest = _Latest(start, now, answer)
        failed = self._account_problems(answer)
        self._failures.update(failed)
        fetched = []
        for item in answer.accounts:
            if item.id in failed:
                continue  # what was stored before stands
            account = mapping.account_model(self._context.info, account_id(item.id), item, now)
            positions = mapping.positions(account, item)
            fetched.append(
                FetchedAccount(item.id, item.conn_id, account, positions, item.balance_date)
            )
        return fetched

    async def changes(self, targets: Sequence[SyncTarget]) -> AsyncIterator[Changes]:
        """The latest window's transactions at once, then older windows of 90 days, newest first.

        An account completes when its window reaches back to its ``since``.
        A request that fails (the budget spent, the server down) fails the
        accounts still waiting for older history; what came before is stored.
        """
        now = self._context.clock()
        latest = self._latest
        if latest is None:
            start = self._anchor - LATEST_SPAN
            latest = _Latest(start, now, await self._fetch(start, None))
        by_key = {t.key: t for t in targets}
        yield self._batch(latest.answer, by_key, latest.start, newest=True)
        waiting = {
            k: t for k, t in by_key.items() if t.since < latest.start and k not in self._failures
        }
        end = latest.start
        while waiting:
            start = max(end - MAX_WINDOW, min(t.since for t in waiting.values()))
            try:
                answer = await self._fetch(start, end, sorted(waiting))
            except (RequestBudgetSpent, ProviderError) as exc:
                yield Changes(failed={t.account.id: exc for t in waiting.values()})
                return
            batch = self._batch(answer, waiting, start, newest=False)
            yield batch
            failed_ids = set(batch.failed)
            waiting = {
                k: t
                for k, t in waiting.items()
                if t.since < start and t.account.id not in failed_ids
            }
            end = start

    def _batch(
        self,
        answer: AccountSet,
        targets: Mapping[str, SyncTarget],
        start: dt.datetime,
        *,
        newest: bool,
    ) -> Changes:
        """One window's transactions for ``targets``; those whose ``since`` it reaches complete."""
        now = self._context.clock()
        problems = self._account_problems(answer)
        present = {item.id: item for item in answer.accounts}
        transactions: list[Transaction] = []
        completed: dict[str, str | None] = {}
        failed: dict[str, DashtamError] = {}
        pending_from: dict[str, dt.datetime] = {}
        for key, target in targets.items():
            account: Account = target.account
            if key in problems:
                failed[account.id] = problems[key]
                continue
            item = present.get(key)
            if item is None:
                if newest:  # listed a moment ago, gone now: nothing to say it is empty
                    continue
                failed[account.id] = ProviderError(
                    "SimpleFIN left this account out of an older window",
                    hint="its history is fetched again on the next sync",
                )
                continue
            transactions.extend(mapping.transaction(account, e, now) for e in item.transactions)
            if newest:
                pending_from[account.id] = start
            if target.since >= start:
                completed[account.id] = None
        return Changes(
            transactions=transactions,
            completed=completed,
            failed=failed,
            pending_from=pending_from,
        )
