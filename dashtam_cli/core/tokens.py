"""Token lifecycle: a valid access token for any connection, refreshed once across processes.

Every provider client gets its bearer token from :meth:`TokenManager.access_token`;
no provider writes its own refresh logic. A refresh:

1. takes an exclusive per-connection file lock (``flock``: released by the
   kernel if the process dies), so several dashtam processes send one
   request, not one each;
2. re-reads the tokens after acquiring it, and refreshes only if they still
   need it (another process may have just done it);
3. holds off SIGINT and SIGTERM from sending the request until its answer is
   committed to the vault, so a Ctrl-C cannot lose a rotated refresh token
   that the provider already considers used (RFC 9700, section 4.14.2);
4. commits the new tokens before anything uses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import signal
import threading
from typing import TYPE_CHECKING, Final

from dashtam_cli.core import audit
from dashtam_cli.core.connections import (
    ConnectionNotFound,
    list_connections,
    load_tokens,
    set_status,
    store_tokens,
)
from dashtam_cli.core.credentials import resolve_credentials
from dashtam_cli.core.errors import DashtamError, ReauthRequired
from dashtam_cli.core.models import (
    ConnectionInfo,
    ConnectionState,
    RefreshResult,
    RefreshState,
    TokenState,
    TokenStatus,
)
from dashtam_cli.core.oauth.errors import TokenExchangeFailed
from dashtam_cli.core.oauth.tokens import TokenSet, UnusableTokens, post_token_request
from dashtam_cli.core.providers import get_provider, provider, relogin_command

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "NO_EXPIRY",
    "REFRESH_MARGIN",
    "ClientRefused",
    "RefreshFailed",
    "RefreshOutcome",
    "TokenManager",
    "describe_remaining",
    "hold_signals",
    "refresh_connections",
    "refreshes",
    "status_report",
    "token_manager",
]

log = logging.getLogger(__name__)

REFRESH_MARGIN: Final = dt.timedelta(minutes=5)
REFRESH_WARNING: Final = dt.timedelta(hours=24)
LOCK_TIMEOUT: Final = 120.0


class RefreshFailed(DashtamError):
    """A refresh failed for a reason that does not need a new login (network, provider error)."""


class ClientRefused(RefreshFailed):
    """The token endpoint refused the app's key or secret; the login itself is still good."""


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What a refresh did for one connection."""

    connection: str
    refreshed: bool
    tokens: TokenSet


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def describe_remaining(delta: dt.timedelta) -> str:
    """'in 3 h 10 min' or '2 d 4 h ago': coarse enough to read at a glance."""
    seconds = int(delta.total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    elif minutes:
        text = f"{minutes} min"
    else:
        text = f"{seconds} s"
    return f"in {text}" if future else f"{text} ago"


@contextlib.contextmanager
def hold_signals() -> Iterator[None]:
    """Defer SIGINT and SIGTERM until the block ends, then deliver them.

    Only the main thread can install handlers; elsewhere this does nothing
    (a refresh from a worker thread is then as interruptible as any code).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def defer(signum: int, _frame: object) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, defer) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


@contextlib.asynccontextmanager
async def _connection_lock(
    directory: Path, connection_id: str, engine: AsyncEngine | None = None
) -> AsyncIterator[None]:
    """An exclusive lock per connection, for every dashtam process using the vault.

    A local vault's is a file lock in ``directory`` (every process on this
    machine); a shared vault's (``engine`` on PostgreSQL) is an advisory lock
    in its database (every process on every machine).
    """
    from dashtam_cli.core.vault.vault import exclusive_lock

    async with exclusive_lock(
        engine,
        directory,
        connection_id,
        timeout=LOCK_TIMEOUT,
        waiting=None,  # a refresh takes a moment: waiting for another is not news
        failure="another dashtam process has been refreshing this connection for too long",
        hint="wait for it to finish, then try again",
        error=RefreshFailed,
    ):
        yield


class TokenManager:
    """Valid access tokens for the connections of one vault."""

    def __init__(
        self,
        vault: Vault,
        *,
        client: httpx.AsyncClient,
        lock_dir: Path,
        clock: Callable[[], dt.datetime] = _utcnow,
        margin: dt.timedelta = REFRESH_MARGIN,
    ) -> None:
        """Refresh through ``client``; ``clock`` is injectable so tests control time."""
        self.vault = vault
        self.client = client
        self.lock_dir = lock_dir
        self.clock = clock
        self.margin = margin
        # Tokens this process has read or refreshed: a client making hundreds of
        # calls reads the vault once, not once per call.
        self._known: dict[str, TokenSet] = {}

    def _needs_refresh(self, tokens: TokenSet) -> bool:
        return tokens.access_expires_at - self.clock() <= self.margin

    async def access_token(self, name: str) -> str:
        """A valid access token for the connection ``name``, refreshing it first if needed."""
        tokens = self._known.get(name)
        if tokens is None:
            _, tokens = await load_tokens(self.vault, name)
            self._known[name] = tokens
        if not self._needs_refresh(tokens):
            return tokens.access_token
        outcome = await self.refresh(name)
        return outcome.tokens.access_token

    async def refresh(self, name: str, *, force: bool = False) -> RefreshOutcome:
        """Refresh the access token if it expires within the margin (or always, with force).

        Raises ``ReauthRequired`` when the refresh token is missing, expired
        or refused: only a new login helps then.
        """
        info, _ = await load_tokens(self.vault, name)
        async with _connection_lock(self.lock_dir, info.id, self.vault.engine):
            # Another process may have refreshed while we waited: read again.
            info, tokens = await load_tokens(self.vault, name)
            self._stop_if_refused(info)
            if not force and not self._needs_refresh(tokens):
                self._known[name] = tokens
                return RefreshOutcome(name, refreshed=False, tokens=tokens)
            fresh = await self._refresh_locked(info, tokens)
            self._known[name] = fresh
            return RefreshOutcome(name, refreshed=True, tokens=fresh)

    async def replace_rejected(self, name: str, rejected: str) -> str:
        """A new access token after the API refused ``rejected`` with 401.

        Several requests refused at once ask together; only the first
        refreshes: the others find a token different from the one refused.
        """
        info, _ = await load_tokens(self.vault, name)
        async with _connection_lock(self.lock_dir, info.id, self.vault.engine):
            info, tokens = await load_tokens(self.vault, name)
            self._stop_if_refused(info)
            if tokens.access_token != rejected:
                self._known[name] = tokens
                return tokens.access_token
            fresh = await self._refresh_locked(info, tokens)
            self._known[name] = fresh
            return fresh.access_token

    @staticmethod
    def _stop_if_refused(info: ConnectionInfo) -> None:
        """Another caller just had this login refused: do not send the dead token again."""
        if info.status == ConnectionState.REAUTH_REQUIRED:
            raise ReauthRequired(
                f"the connection {info.name!r} needs a new login",
                hint=f"run: {relogin_command(info.provider, info.name)}",
            )

    async def _reauth(
        self,
        info: ConnectionInfo,
        why: str,
        *,
        http_status: int | None = None,
        correlation_id: str | None = None,
    ) -> ReauthRequired:
        await set_status(self.vault, info.id, ConnectionState.REAUTH_REQUIRED)
        await audit.record(
            self.vault,
            operation="oauth.refresh",
            outcome="reauth_required",
            provider=info.provider,
            connection_id=info.id,
            connection_name=info.name,
            detail=why,
            http_status=http_status,
            correlation_id=correlation_id,
        )
        return ReauthRequired(
            f"the connection {info.name!r} needs a new login: {why}",
            hint=f"run: {relogin_command(info.provider, info.name)}",
        )

    async def _refresh_failed(
        self, info: ConnectionInfo, provider: str, exc: TokenExchangeFailed
    ) -> DashtamError:
        """The error for a failed refresh; only a refused refresh token marks the login dead."""
        if isinstance(exc, UnusableTokens) and exc.salvage is not None:
            # The provider rotated the refresh token but sent no usable access token:
            # the old refresh token is retired, so the new one must be kept.
            await store_tokens(self.vault, info.id, exc.salvage)
        if exc.kind == "grant_refused":
            # A refused refresh token (expired, revoked, or already used by a
            # request that may have reached the provider before a crash): only
            # a new login helps.
            return await self._reauth(
                info,
                f"{provider} refused the refresh token (HTTP {exc.http_status})",
                http_status=exc.http_status,
                correlation_id=exc.correlation_id,
            )
        await audit.record(
            self.vault,
            operation="oauth.refresh",
            outcome="failed",
            provider=info.provider,
            connection_id=info.id,
            connection_name=info.name,
            http_status=exc.http_status,
            correlation_id=exc.correlation_id,
            detail=exc.message,
        )
        if exc.kind == "client_refused":
            return ClientRefused(exc.message, hint=exc.hint)
        return RefreshFailed(exc.message, hint=exc.hint)

    async def _refresh_locked(self, info: ConnectionInfo, tokens: TokenSet) -> TokenSet:
        spec = get_provider(info.provider)
        now = self.clock()
        if tokens.refresh_token is None:
            raise await self._reauth(info, "it has no refresh token")
        if tokens.refresh_expires_at is not None and tokens.refresh_expires_at <= now:
            raise await self._reauth(
                info,
                f"its refresh token expired {describe_remaining(tokens.refresh_expires_at - now)}",
            )
        credentials = await resolve_credentials(self.vault, spec)
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        with hold_signals():
            try:
                response = await post_token_request(
                    self.client, spec, credentials, form, previous=tokens, now=now
                )
            except TokenExchangeFailed as exc:
                raise await self._refresh_failed(info, spec.display_name, exc) from None
            await store_tokens(self.vault, info.id, response.tokens)
            # Still inside: a signal held off until now must not cost the audit entry.
            await audit.record(
                self.vault,
                operation="oauth.refresh",
                outcome="ok",
                provider=info.provider,
                connection_id=info.id,
                connection_name=info.name,
                http_status=response.http_status,
                duration_ms=response.duration_ms,
                correlation_id=response.correlation_id,
                detail="; ".join(
                    (
                        "refresh token rotated"
                        if response.tokens.refresh_token != tokens.refresh_token
                        else "refresh token kept",
                        *response.notes,
                    )
                ),
            )
        log.info("refreshed the access token of %r", info.name)
        return response.tokens

    async def status(self, name: str | None = None) -> list[TokenStatus]:
        """Token lifetimes and state for every connection (or the one named)."""
        infos = await list_connections(self.vault, name=name)
        now = self.clock()
        return [token_status(info, now) for info in infos]


def refreshes(info: ConnectionInfo) -> bool:
    """Whether the connection's provider refreshes its credentials (unknown ones are assumed to)."""
    from dashtam_cli.core.errors import InputError

    try:
        return provider(info.provider).refreshes
    except InputError:
        return True


NO_EXPIRY: Final = "does not expire"


def token_status(info: ConnectionInfo, now: dt.datetime) -> TokenStatus:
    """The state of one connection's tokens at ``now``.

    A provider that does not refresh has a credential that does not expire:
    ``ok`` with nothing to do, unless its login was refused.
    """
    if not refreshes(info):
        state = (
            TokenState.REAUTH_REQUIRED
            if info.status == ConnectionState.REAUTH_REQUIRED
            else TokenState.OK
        )
        return TokenStatus(
            connection=info.name,
            provider=info.provider,
            state=state,
            access_expires_at=None,
            access_expires_in_seconds=None,
            access_expires=NO_EXPIRY,
            refresh_expires_at=None,
            refresh_expires_in_seconds=None,
            refresh_expires=NO_EXPIRY,
            action=_action(info, state),
        )
    access = info.access_expires_at
    refresh = info.refresh_expires_at
    if (
        info.status == ConnectionState.REAUTH_REQUIRED
        or access is None
        or (refresh is not None and refresh <= now)
    ) or (refresh is None and access <= now):
        state = TokenState.REAUTH_REQUIRED
    elif refresh is not None and refresh - now <= REFRESH_WARNING:
        state = TokenState.REFRESH_EXPIRING
    elif access <= now:
        state = TokenState.ACCESS_EXPIRED
    else:
        state = TokenState.OK

    def seconds(moment: dt.datetime | None) -> int | None:
        return None if moment is None else int((moment - now).total_seconds())

    def words(moment: dt.datetime | None) -> str | None:
        return None if moment is None else describe_remaining(moment - now)

    return TokenStatus(
        connection=info.name,
        provider=info.provider,
        state=state,
        access_expires_at=access,
        access_expires_in_seconds=seconds(access),
        access_expires=words(access),
        refresh_expires_at=refresh,
        refresh_expires_in_seconds=seconds(refresh),
        refresh_expires=words(refresh),
        action=_action(info, state),
    )


_ACTIONS: Final = {
    TokenState.OK: "none",
    TokenState.ACCESS_EXPIRED: "refreshed automatically on next use (or: dashtam tokens refresh)",
    TokenState.REFRESH_EXPIRING: "log in again soon: {command}",
    TokenState.REAUTH_REQUIRED: "log in again: {command}",
}


def _action(info: ConnectionInfo, state: TokenState) -> str:
    """What to do about ``state``, with the provider's own command to log in again."""
    return _ACTIONS[state].format(command=relogin_command(info.provider, info.name))


@contextlib.asynccontextmanager
async def token_manager(
    settings: Settings,
    options: OpenOptions,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> AsyncIterator[TokenManager]:
    """Open the vault and an HTTP client, and yield a token manager over them."""
    from dashtam_cli.core.http import make_client
    from dashtam_cli.core.vault.vault import open_vault

    async with (
        open_vault(settings, options) as vault,
        make_client(settings, transport=transport) as client,
    ):
        yield TokenManager(
            vault, client=client, lock_dir=settings.paths.data_dir / "locks", clock=clock
        )


async def status_report(
    settings: Settings,
    name: str | None,
    options: OpenOptions,
    *,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> list[TokenStatus]:
    """`dashtam tokens status`: every connection's token state (none without a vault)."""
    from dashtam_cli.core.vault.vault import vault_absent

    if await vault_absent(settings):
        if name is not None:
            raise ConnectionNotFound.named(name)
        return []
    async with token_manager(settings, options, clock=clock) as manager:
        return await manager.status(name)


async def refresh_connections(  # noqa: PLR0913 - the command's options
    settings: Settings,
    name: str | None,
    options: OpenOptions,
    *,
    force: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> list[RefreshResult]:
    """`dashtam tokens refresh`: refresh what needs it; one result per connection, never raising."""
    from dashtam_cli.core.vault.vault import vault_absent

    if await vault_absent(settings):
        if name is not None:
            raise ConnectionNotFound.named(name)
        return []
    results: list[RefreshResult] = []
    async with token_manager(settings, options, transport=transport, clock=clock) as manager:
        infos = await list_connections(manager.vault, name=name)
        for info in infos:
            if not refreshes(info):
                results.append(_result(info, RefreshState.SKIPPED, None, NO_EXPIRY))
                continue
            try:
                outcome = await manager.refresh(info.name, force=force)
            except ReauthRequired as exc:
                results.append(
                    _result(info, RefreshState.REAUTH_REQUIRED, None, f"{exc.message}; {exc.hint}")
                )
            except DashtamError as exc:
                message = f"{exc.message}; {exc.hint}" if exc.hint else exc.message
                results.append(_result(info, RefreshState.FAILED, None, message))
            else:
                result = RefreshState.REFRESHED if outcome.refreshed else RefreshState.FRESH
                results.append(_result(info, result, outcome.tokens, None))
    return results


def _result(
    info: ConnectionInfo, result: RefreshState, tokens: TokenSet | None, message: str | None
) -> RefreshResult:
    return RefreshResult(
        connection=info.name,
        provider=info.provider,
        result=result,
        access_expires_at=tokens.access_expires_at if tokens else info.access_expires_at,
        refresh_expires_at=tokens.refresh_expires_at if tokens else info.refresh_expires_at,
        message=message,
    )
