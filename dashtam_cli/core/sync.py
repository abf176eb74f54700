"""`dashtam sync`: every connection fetched at once, incrementally, into the vault.

The model: a sync fetches; every query reads the vault. A connection's
first sync fetches a default history; each later one fetches from where the
last reached, less an overlap, so late-posted and corrected transactions are
caught. Each account's balances, positions and transactions are written in
one transaction each; an account whose fetch fails keeps what it had, and
its sync point stays where it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Final

from dashtam_cli.core import audit, store
from dashtam_cli.core.connections import ConnectionNotFound, list_connections, set_status
from dashtam_cli.core.errors import DashtamError, InputError, ReauthRequired
from dashtam_cli.core.models import ConnectionState, SyncReport
from dashtam_cli.core.providers import provider as provider_named
from dashtam_cli.core.providers.base import SessionContext, SyncTarget
from dashtam_cli.core.results import Failure, FetchResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    import httpx

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.providers.base import AppKeys, CallRecord, FetchedAccount
    from dashtam_cli.core.resilience import Backoff
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.tokens import TokenManager
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "Progress",
    "SyncOptions",
    "SyncResult",
    "connected_elsewhere",
    "session_context",
    "sync",
]

log = logging.getLogger(__name__)

# Connections synced at once; each bounds its own requests in flight.
CONNECTIONS_IN_FLIGHT: Final = 4
# How long a sync waits for another process's sync of the same connection.
SYNC_WAIT_S: Final = 600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(slots=True)
class Progress:
    """Counters a progress display reads while a sync runs (updated in place)."""

    connections: int = 0
    connections_done: int = 0
    accounts: int = 0
    accounts_done: int = 0
    transactions: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SyncOptions:
    """What to sync: which connections (all by default), from when, and the seams."""

    connections: Sequence[str] = ()
    since: dt.datetime | None = None
    full: bool = False
    transport: httpx.AsyncBaseTransport | None = None
    backoff: Backoff | None = None
    max_in_flight: int = 16
    clock: Callable[[], dt.datetime] = _utcnow
    progress: Progress | None = None
    # Only connections that were never synced (the queries' first use).
    only_new: bool = False


def _no_connections(options: SyncOptions) -> DashtamError:
    if options.connections:
        return ConnectionNotFound.named(options.connections[0])
    return DashtamError(
        "there are no connections yet", hint="log in first: dashtam connect PROVIDER"
    )


def _report(  # noqa: PLR0913 - the parts of one line of the summary
    info: ConnectionInfo,
    result: str,
    *,
    accounts: int = 0,
    counts: store.Counts | None = None,
    failed: Sequence[str] = (),
    requests: int = 0,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    message: str | None = None,
    requests_left: int | None = None,
) -> SyncReport:
    counts = counts or store.Counts()
    return SyncReport(
        connection=info.name,
        provider=info.provider,
        result=result,
        accounts=accounts,
        new=counts.new,
        changed=counts.changed,
        unchanged=counts.unchanged,
        removed=counts.removed,
        failed_accounts=list(failed),
        requests=requests,
        since=window[0] if window else None,
        until=window[1] if window else None,
        message=message,
        requests_left=requests_left,
    )


def session_context(  # noqa: PLR0913 - the seams a session gets
    manager: TokenManager,
    info: ConnectionInfo,
    *,
    record: Callable[[CallRecord], Awaitable[None]],
    clock: Callable[[], dt.datetime] = _utcnow,
    backoff: Backoff | None = None,
    max_in_flight: int = 16,
    options: Mapping[str, tuple[object, str]] | None = None,
) -> SessionContext:
    """A session's context for a stored connection: its tokens or its credential, from the vault.

    Its request budget (for providers that keep one) is counted in the vault.
    """

    async def access_token() -> str:
        return await manager.access_token(info.name)

    async def replace_rejected(rejected: str) -> str:
        return await manager.replace_rejected(info.name, rejected)

    async def secret() -> str:
        return await store.load_secret(manager.vault, info)

    async def spend(scope: str, limit: int) -> int:
        left, _ = await store.spend_request(manager.vault, scope, limit, clock())
        return left

    async def app_keys() -> AppKeys:
        from dashtam_cli.core.credentials import resolve_app_keys

        return await resolve_app_keys(manager.vault, info.provider)

    return SessionContext(
        info=info,
        client=manager.client,
        access_token=access_token,
        replace_rejected=replace_rejected,
        secret=secret,
        record=record,
        clock=clock,
        backoff=backoff,
        max_in_flight=max_in_flight,
        spend=spend,
        options=options or {},
        app_keys=app_keys,
    )


class _ConnectionSync:
    """One connection's sync: accounts first, then transactions batch by batch."""

    def __init__(
        self,
        settings: Settings,
        manager: TokenManager,
        info: ConnectionInfo,
        options: SyncOptions,
        audit_log: audit.AuditWriter,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.vault = manager.vault
        self.info = info
        self.options = options
        self.audit_log = audit_log
        self.provider = provider_named(info.provider)
        self.failures: list[Failure] = []
        self.session = self.provider.session(self._context())

    def _context(self) -> SessionContext:
        async def record(call: CallRecord) -> None:
            # Queued, not awaited on the disk: the response goes on at once.
            self.audit_log.add(**audit.call_fields(self.info, call))

        return session_context(
            self.manager,
            self.info,
            record=record,
            clock=self.options.clock,
            backoff=self.options.backoff,
            max_in_flight=self.options.max_in_flight,
            options=self.settings.options_of(self.info.provider),
        )

    def _since(self, point: store.SyncPoint | None, now: dt.datetime) -> dt.datetime:
        """Where an account's window starts: as asked, all history, or its point less overlap."""
        if self.options.since is not None:
            return self.options.since
        history = now - dt.timedelta(days=self.settings.sync_history_days)
        if self.options.full or point is None:
            return history
        overlap = dt.timedelta(days=self.settings.sync_overlap_days)
        return max(min(point.through - overlap, now), history)

    async def run(self) -> SyncReport:
        """Sync the connection; failures of single accounts go in ``failures``."""
        info, vault, options = self.info, self.vault, self.options
        progress = options.progress
        now = options.clock()
        known = {k.key: k for k in await store.known_accounts(vault, info.id)}

        def account_id(key: str) -> str:
            found = known.get(key)
            return found.id if found is not None else str(uuid.uuid4())

        fetched: list[FetchedAccount] = await self.session.accounts(account_id)
        fetched = await store.write_accounts(vault, info, fetched, now)
        for key, error in self.session.account_failures.items():
            self.failures.append(Failure(info.name, error, store.mask_key(key)))
        if progress is not None:
            progress.accounts += len(fetched)
        points = await store.sync_points(vault, info.id)
        cursors = {} if options.full else {k: p.cursor for k, p in points.items()}
        targets = [
            SyncTarget(
                account=item.account,
                key=item.key,
                reference=item.reference,
                since=self._since(points.get(item.account.id), now),
                until=now,
                cursor=cursors.get(item.account.id),
            )
            for item in fetched
        ]
        # A point moves only over a window that reaches back to it (or to the start of
        # the history, for an account never synced or not for longer): a --since later
        # than that leaves a stretch unfetched, which the next sync must still cover.
        history = now - dt.timedelta(days=self.settings.sync_history_days)
        through = {
            t.account.id: t.until
            for t in targets
            if t.since <= max(history, getattr(points.get(t.account.id), "through", history))
        }
        masked = {t.account.id: t.account.number for t in targets}
        counts = store.Counts()
        failed: list[str] = []
        async for batch in self.session.changes(targets):
            written = await store.write_changes(vault, info, batch, through=through, now=now)
            counts.add(written)
            for account_id_, error in batch.failed.items():
                failed.append(masked.get(account_id_, account_id_))
                self.failures.append(Failure(info.name, error, masked.get(account_id_)))
            if progress is not None:
                progress.accounts_done += len(batch.completed) + len(batch.failed)
                progress.transactions += len(batch.transactions)
        window = (min(t.since for t in targets), now) if targets else None
        failed.extend(store.mask_key(k) for k in self.session.account_failures)
        self.failures.extend(Failure(info.name, e) for e in self.session.connection_failures)
        result = "partial" if self.failures else "ok"
        message = "; ".join(f.described().message for f in self.failures) or None
        return _report(
            info,
            result,
            accounts=len(fetched),
            counts=counts,
            failed=failed,
            requests=self.session.requests,
            window=window,
            message=message,
            requests_left=self.session.requests_left,
        )


async def _locked(settings: Settings, job: _ConnectionSync, gate: asyncio.Semaphore) -> SyncReport:
    """Run one connection's sync holding its sync lock, so two syncs never fetch it at once.

    On a shared vault the lock is the database's, so two machines never fetch it at once either.

    A second sync of the connection waits for the first; when the first
    completed meanwhile, the second does not fetch it again.
    """
    info = job.info
    before = await store.sync_points(job.vault, info.id)
    async with (
        gate,
        job.vault.lock(
            f"sync-{info.id}",
            settings.paths.data_dir / "locks",
            timeout=SYNC_WAIT_S,
            waiting=f"another dashtam process is syncing {info.name!r}; waiting for it",
            failure=f"another dashtam process has been syncing {info.name!r} for too long",
            hint="wait for it to finish, then run dashtam sync again",
        ),
    ):
        after = await store.sync_points(job.vault, info.id)
        if after and after != before and not job.options.full and job.options.since is None:
            return _report(info, "skipped", message="synced by another dashtam process just now")
        try:
            return await job.run()
        except ReauthRequired:  # recorded, so `tokens status` says so whatever the login kind
            await set_status(job.vault, info.id, ConnectionState.REAUTH_REQUIRED)
            raise


@dataclasses.dataclass(frozen=True, slots=True)
class SyncResult:
    """Every connection's report, and what failed (for the exit code)."""

    reports: list[SyncReport]
    outcome: FetchResult[SyncReport]


async def sync(settings: Settings, options: SyncOptions, open_options: OpenOptions) -> SyncResult:
    """Sync every connection (or those named) concurrently; never raises for one connection."""
    from dashtam_cli.core.tokens import token_manager
    from dashtam_cli.core.vault.vault import vault_absent

    if options.since is not None and options.since >= options.clock():
        raise InputError(
            "--since: must be before now",
            hint="give a past date, e.g. --since 2025-01-01, or --full for the whole history",
        )
    if await vault_absent(settings):
        raise _no_connections(options)
    async with token_manager(
        settings, open_options, transport=options.transport, clock=options.clock
    ) as manager:
        infos = await list_connections(manager.vault)
        if options.connections:
            names = {i.name: i for i in infos}
            for name in options.connections:
                if name not in names:
                    raise ConnectionNotFound.named(name)
            infos = [names[n] for n in dict.fromkeys(options.connections)]
        if options.only_new:
            infos = [i for i in infos if not await store.has_synced(manager.vault, i.id)]
        if not infos and not options.only_new:
            raise _no_connections(options)
        if options.progress is not None:
            options.progress.connections = len(infos)
        gate = asyncio.Semaphore(CONNECTIONS_IN_FLIGHT)
        async with audit.AuditWriter(manager.vault) as audit_log:
            jobs = [_ConnectionSync(settings, manager, i, options, audit_log) for i in infos]
            outcomes = await asyncio.gather(
                *(_locked(settings, job, gate) for job in jobs), return_exceptions=True
            )
    return _result(jobs, outcomes, options)


def _result(
    jobs: Sequence[_ConnectionSync], outcomes: Sequence[object], options: SyncOptions
) -> SyncResult:
    """Each connection's report, a failed one as a line of its own, and the exit they mean."""
    reports: list[SyncReport] = []
    failures: list[Failure] = []
    succeeded = 0
    for job, outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, DashtamError):
            result = "reauth_required" if isinstance(outcome, ReauthRequired) else "failed"
            reports.append(
                _report(
                    job.info,
                    result,
                    message=outcome.message,
                    requests=job.session.requests,
                    requests_left=job.session.requests_left,
                )
            )
            failures.append(Failure(job.info.name, outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            assert isinstance(outcome, SyncReport)
            reports.append(outcome)
            failures.extend(job.failures)
            succeeded += 1
        if options.progress is not None:
            options.progress.connections_done += 1
    return SyncResult(reports, FetchResult(reports, failures, succeeded, 0, [], len(jobs)))


async def connected_elsewhere(
    vault: Vault,
    client: httpx.AsyncClient,
    info: ConnectionInfo,
    access_token: str,
    *,
    options: Mapping[str, tuple[object, str]] | None = None,
) -> list[tuple[str, list[str]]]:
    """The other connections that hold accounts of this new login: (name, masked keys) each.

    The login's account keys (asked once, with its new access token) are
    compared with those stored for the provider's other connections, those
    synced at least once; without any, no request is made. Only masked keys
    come back.
    """
    from dashtam_cli.core.resilience import Backoff

    cached: dict[str, set[str]] = {}
    for other in await list_connections(vault):
        if other.provider == info.provider and other.id != info.id:
            keys = {k.key for k in await store.known_accounts(vault, other.id)}
            if keys:
                cached[other.name] = keys
    if not cached:
        return []

    async def token() -> str:
        return access_token

    async def refuse(_rejected: str) -> str:
        raise ReauthRequired("the new login's access token was refused")

    async def new_secret() -> str:  # a pasted-token login's new credential record
        return access_token

    async def record(call: CallRecord) -> None:
        await audit.record(vault, **audit.call_fields(info, call))

    async def spend(scope: str, limit: int) -> int:
        left, _ = await store.spend_request(vault, scope, limit, _utcnow())
        return left

    context = SessionContext(
        info=info,
        client=client,
        access_token=token,
        replace_rejected=refuse,
        secret=new_secret,
        record=record,
        clock=_utcnow,
        backoff=Backoff(attempts=1),  # a check after the login: never worth a wait
        spend=spend,
        options=options or {},
    )
    mine = set(await provider_named(info.provider).session(context).account_keys())
    return [
        (name, sorted(store.mask_key(k) for k in keys & mine))
        for name, keys in sorted(cached.items())
        if keys & mine
    ]
