"""The one interface every provider implements: its login, what it stores, and how it fetches.

Generic code (sync, queries, the CLI, hints, audit names) talks to a provider
only through :class:`Provider` and the :class:`ProviderSession` it opens for
one connection. A provider returns dashtam's neutral models
(:mod:`dashtam_cli.core.models`) and keeps its own JSON, identifiers and
types inside its package. See docs/providers/adding.md.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt  # noqa: TC003 - dataclass fields are resolved at run time
import enum
import hashlib
import uuid
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    import httpx

    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.models import Account, ConnectionInfo, Kind, Position, Transaction
    from dashtam_cli.core.oauth.hosted import HostedPage
    from dashtam_cli.core.resilience import Backoff

__all__ = [
    "AppKeys",
    "CallRecord",
    "Changes",
    "FetchedAccount",
    "KeySpec",
    "LinkRequest",
    "LoginKind",
    "Provider",
    "ProviderSession",
    "ProviderSpec",
    "SessionContext",
    "SyncTarget",
    "transaction_id",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider's OAuth endpoints, token lifetimes and settings names."""

    name: str
    display_name: str
    default_base_url: str
    base_url_env: str
    authorize_path: str
    token_path: str
    client_id_env: str
    client_secret_env: str
    redirect_uri_env: str
    default_redirect_uri: str
    access_ttl: dt.timedelta
    refresh_ttl: dt.timedelta
    supports_pkce: bool = False
    correlation_header: str | None = None

    def base_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The provider's origin: the environment's override or the default, no trailing slash.

        An override must be an https URL with a host (http only to this machine's
        loopback, for a local test server), with no user or password, query or
        fragment; anything else is a ConfigError that does not repeat the value.
        """
        return overridden_url(self.base_url_env, self.default_base_url, environ)


def overridden_url(setting: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """``setting``'s URL from the environment (checked), else ``default``; no trailing slash.

    The checks are :meth:`ProviderSpec.base_url`'s.
    """
    import os

    env = os.environ if environ is None else environ
    raw = env.get(setting, "").strip()
    if not raw:
        return default
    problem = _url_problem(raw)
    if problem is not None:
        raise ConfigError(
            f"{setting} is not a usable provider URL: {problem}",
            hint=f"give an origin like {default}, or unset {setting}",
        )
    return raw.rstrip("/")


@dataclasses.dataclass(frozen=True, slots=True)
class KeySpec:
    """The names of a provider's app keys when it does not log in with OAuth (Plaid's).

    A client id and a secret, and the provider's environment they belong to
    (``environments``, the first the default); each from its variable in
    the environment, else stored sealed by ``dashtam providers configure``.
    ``redirect_uri_env`` names the listener's address for a hosted login.
    """

    client_id_env: str
    secret_env: str
    environment_env: str
    environments: tuple[str, ...]
    redirect_uri_env: str
    default_redirect_uri: str
    portal: str


@dataclasses.dataclass(frozen=True, slots=True)
class AppKeys:
    """A provider's app keys as resolved: where they came from, never shown.

    ``redirect_uri`` is None unless one was configured (environment or vault).
    """

    client_id: str = dataclasses.field(repr=False)
    secret: str = dataclasses.field(repr=False)
    environment: str
    redirect_uri: str | None
    source: str  # "environment" or "vault"


@dataclasses.dataclass(frozen=True, slots=True)
class LinkRequest:
    """What a hosted-page login asks the provider for.

    ``user_id`` is a random id stable for the connection (never anything
    about the person); ``products`` what the login grants (empty: the
    provider's default); ``update`` the stored credential record of the
    connection to log in to again (update mode), None for a new login;
    ``redirect_uri`` the configured listener address, when one is;
    ``options`` the provider's own settings (:meth:`Settings.options_of`).
    """

    user_id: str
    products: tuple[str, ...] = ()
    update: str | None = dataclasses.field(default=None, repr=False)
    redirect_uri: str | None = None
    options: Mapping[str, tuple[object, str]] = dataclasses.field(default_factory=dict)


_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def _url_problem(raw: str) -> str | None:
    """Why ``raw`` cannot be a provider's base URL, or None when it can."""
    import urllib.parse

    if not raw.isascii() or not raw.isprintable() or any(ch.isspace() for ch in raw):
        return "it holds spaces, control or non-ASCII characters"
    try:
        url = urllib.parse.urlsplit(raw)
        host, _ = url.hostname, url.port  # .port checks the port is a number up to 65535
    except ValueError:
        return "its host or port is malformed"
    scheme = url.scheme.lower()
    problem = None
    if scheme not in {"https", "http"}:
        problem = "it is not an https:// URL"
    elif not host:
        problem = "it has no host"
    elif url.username is not None or url.password is not None:
        problem = "it holds a user name or password (credentials never go in the URL)"
    elif url.query or url.fragment or raw.endswith(("?", "#")):
        problem = "it has a query or a fragment"
    elif scheme == "http" and host not in _LOOPBACK_NAMES and not host.startswith("127."):
        problem = "plain http is allowed only to this machine (127.0.0.1, ::1, localhost)"
    return problem


class LoginKind(enum.StrEnum):
    """How a user logs in to a provider."""

    # A browser redirect to the loopback HTTPS listener; tokens that refresh.
    OAUTH = "oauth"
    # A token the user pastes (read from a prompt, stdin or a file), claimed once.
    TOKEN = "token"  # noqa: S105 - a kind of login, not a secret
    # A hosted widget the listener serves to the browser.
    LINK = "link"


@dataclasses.dataclass(slots=True)
class CallRecord:
    """What one provider request did, for the audit log (never with a secret)."""

    operation: str
    outcome: str
    http_status: int | None
    duration_ms: int
    correlation_id: str | None
    detail: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionContext:
    """What a provider's session gets for one connection: every seam injected.

    ``access_token`` and ``replace_rejected`` are the token lifecycle's (for
    providers that refresh: single-flight across processes, crash safe);
    ``secret`` returns the connection's sealed credential record for those
    that do not. ``record`` queues one audit record per request.

    ``spend(scope, limit)`` counts one request against ``scope``'s budget for
    the day (UTC), kept in the vault across processes, and returns how many
    are left; past ``limit`` it raises
    :class:`~dashtam_cli.core.errors.RequestBudgetSpent` and counts nothing.
    None: this context keeps no budget. ``options`` are the provider's own
    settings as given (:meth:`Settings.options_of`), for it to parse.
    ``app_keys`` resolves the provider's app keys (for providers with a
    :class:`KeySpec`): the environment first, then the vault.
    """

    info: ConnectionInfo
    client: httpx.AsyncClient
    access_token: Callable[[], Awaitable[str]]
    replace_rejected: Callable[[str], Awaitable[str]]
    secret: Callable[[], Awaitable[str]]
    record: Callable[[CallRecord], Awaitable[None]]
    clock: Callable[[], dt.datetime]
    backoff: Backoff | None = None
    max_in_flight: int = 16
    spend: Callable[[str, int], Awaitable[int]] | None = None
    options: Mapping[str, tuple[object, str]] = dataclasses.field(default_factory=dict)
    app_keys: Callable[[], Awaitable[AppKeys]] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FetchedAccount:
    """One account as the provider lists it now, with its balances and positions.

    ``key`` is what identifies the account at the provider across logins (an
    account number for Schwab); ``reference`` is a provider value to keep for
    later calls (Schwab's account hash). Both are sealed in the vault and
    never shown. ``account`` and ``positions`` carry the id the sync gave
    (:meth:`ProviderSession.accounts` receives the function that gives it).
    ``balance_at`` is when the provider says the balances were true, when it says.
    """

    key: str
    reference: str | None
    account: Account
    positions: Sequence[Position]
    balance_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SyncTarget:
    """One account to fetch transactions for, and from where.

    ``since`` and ``until`` bound the window the sync wants (the provider may
    split it to its own limits); ``cursor`` is what the provider returned as
    this account's point last time, for providers that page by cursor.
    """

    account: Account
    key: str
    reference: str | None
    since: dt.datetime
    until: dt.datetime
    cursor: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Changes:
    """One batch of transaction changes, written in one vault transaction.

    ``completed`` maps each account id whose fetch this batch completes to the
    cursor to keep for it (None for providers that page by time): its sync
    point moves only when the batch is stored. ``failed`` are accounts that
    failed alone, with why; their sync points do not move.

    ``pending_from`` is for providers that list what is pending but never
    say what stopped being pending (a pending transaction that posts under a
    new id): for each account it names, this batch holds every transaction
    the provider still has from that time on, so a stored transaction of the
    account from then on whose status is ``PENDING`` and that the batch does
    not hold is removed.
    """

    transactions: Sequence[Transaction] = ()
    removed: Sequence[str] = ()
    completed: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    failed: Mapping[str, DashtamError] = dataclasses.field(default_factory=dict)
    pending_from: Mapping[str, dt.datetime] = dataclasses.field(default_factory=dict)


class ProviderSession(abc.ABC):
    """One connection's conversation with its provider, for one command."""

    requests: int = 0

    @abc.abstractmethod
    async def accounts(self, account_id: Callable[[str], str]) -> list[FetchedAccount]:
        """Every account of the login with balances and positions.

        ``account_id(key)`` gives the dashtam id for a provider key (the
        stored one, or a new one). An account whose record is unusable is
        left out and reported through :attr:`account_failures`.
        """

    @abc.abstractmethod
    def changes(self, targets: Sequence[SyncTarget]) -> AsyncIterator[Changes]:
        """The transactions of ``targets``, as batches to store one by one.

        Raises a DashtamError when the whole connection fails (a login to
        renew, the provider down); a single account's failure goes in a
        batch's ``failed``.
        """

    async def account_keys(self) -> list[str]:
        """The keys of the login's accounts (for the duplicate-login check); all of ``accounts``."""
        return [item.key for item in await self.accounts(lambda key: key)]

    @property
    def account_failures(self) -> Mapping[str, DashtamError]:
        """Accounts (by key) that :meth:`accounts` left out, and why."""
        return {}

    @property
    def connection_failures(self) -> Sequence[DashtamError]:
        """Failures of part of the login that are no single account's, the rest synced all the same.

        An aggregator's institution whose login must be renewed at the
        aggregator, its accounts absent: the sync reports each (a
        ReauthRequired exits 4) and stores everything else.
        """
        return ()

    @property
    def requests_left(self) -> int | None:
        """Requests left in the provider's budget for today, for providers that keep one."""
        return None

    async def revoke(self) -> bool:
        """Ask the provider to forget this login, before `dashtam disconnect` deletes it.

        Best effort: returns whether anything was revoked (the default has
        nothing to revoke and sends nothing); a DashtamError is reported and
        the connection is removed all the same.
        """
        return False


class Provider(abc.ABC):
    """A provider dashtam supports: its login, its lifetimes, its types, its sessions."""

    name: str
    display_name: str
    login: LoginKind
    # Whether its credentials expire and are refreshed (the token lifecycle applies).
    refreshes: bool
    # The OAuth settings, for providers that log in with OAuth.
    spec: ProviderSpec | None = None
    # The app keys' settings, for providers with app keys but no OAuth login.
    keys: KeySpec | None = None
    # The provider's own transaction types, which `--type` accepts beside kinds.
    transaction_types: tuple[str, ...] = ()
    # What to tell a user who disconnects when the login cannot be revoked from
    # here (the credential still works at the provider until they disable it).
    unrevoked_advice: str | None = None

    @abc.abstractmethod
    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of one of the provider's transaction types."""

    @abc.abstractmethod
    def session(self, context: SessionContext) -> ProviderSession:
        """A session for one connection."""

    def base_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """Where the provider's calls go, as its settings say (None: it does not say)."""
        return None if self.spec is None else self.spec.base_url(environ)

    def relogin_command(self, connection: str) -> str:
        """The command that logs in again to ``connection``."""
        return f"dashtam connect {self.name} --name {connection}"

    async def claim(self, client: httpx.AsyncClient, token: str) -> str:
        """Turn a pasted token into the credential record to seal (``TOKEN`` logins)."""
        msg = f"{self.display_name} does not log in with a pasted token"
        raise NotImplementedError(msg)

    async def hosted_page(
        self,
        client: httpx.AsyncClient,
        keys: AppKeys,
        request: LinkRequest,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        environ: Mapping[str, str] | None = None,
    ) -> HostedPage:
        """The page a hosted-page login serves (``LINK`` logins), its secrets registered."""
        msg = f"{self.display_name} does not log in with a hosted page"
        raise NotImplementedError(msg)

    async def complete_hosted(  # noqa: PLR0913 - one login's parts
        self,
        client: httpx.AsyncClient,
        keys: AppKeys,
        fields: Mapping[str, str],
        request: LinkRequest,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        environ: Mapping[str, str] | None = None,
    ) -> str:
        """Turn what the hosted page handed back into the credential record to seal."""
        msg = f"{self.display_name} does not log in with a hosted page"
        raise NotImplementedError(msg)


_TXN_NAMESPACE: Final = uuid.UUID("6f1c1d2e-8a3b-4c5d-9e7f-0a1b2c3d4e5f")


def transaction_id(account_id: str, provider_id: object) -> str:
    """``str(uuid.uuid5(NAMESPACE, f"{account_id}:{provider_id}"))``, without the UUID object.

    Stable: the same provider transaction of the same account always has the
    same id, so a sync updates it rather than adding it twice. The same text
    as uuid5 gives (a test holds it to that), at a third of the cost.
    """
    name = f"{account_id}:{provider_id}".encode()
    digest = bytearray(hashlib.sha1(_TXN_NAMESPACE.bytes + name).digest()[:16])  # noqa: S324 - uuid5's own hash
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
