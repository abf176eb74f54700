"""Helpers for the token tests: a fake clock, connections with chosen lifetimes, the vault's view."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import load_tokens, save_login
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from oauth_server import OAuthServer, TokenRequest

    from dashtam_cli.core.models import AuditEntry, ConnectionInfo

# How Schwab refuses a dead refresh token (see shared/reference/schwab/README.md).
SCHWAB_REFUSALS: Final = {
    "400-invalid_grant": (
        400,
        b'{"error":"invalid_grant","error_description":"Refresh token is invalid or expired"}',
    ),
    "400-refresh_token_authentication_error": (
        400,
        (
            b'{"error":"unsupported_token_type",'
            b'"error_description":"400 Bad Request: refresh_token_authentication_error"}'
        ),
    ),
    "401-invalid_grant": (
        401,
        b'{"error":"invalid_grant","error_description":"Refresh token is invalid or expired"}',
    ),
}
# How Schwab refuses the app's key or secret: the app, not the login, is refused.
CLIENT_REFUSAL: Final = (
    401,
    b'{"error":"invalid_client","error_description":"Client authentication failed"}',
)
SERVER_ERROR: Final = (500, b'{"message":"Internal Server Error"}')


class FakeClock:
    """A clock that stands still until the test moves it (an aware UTC datetime)."""

    def __init__(self, start: dt.datetime) -> None:
        """Start at ``start``."""
        self.current = start

    def __call__(self) -> dt.datetime:
        """The current fake time."""
        return self.current

    def advance(self, delta: dt.timedelta) -> None:
        """Move time forward by ``delta``."""
        self.current += delta


def token_set(
    now: dt.datetime,
    *,
    access_in: dt.timedelta,
    refresh_in: dt.timedelta | None = dt.timedelta(days=6),
    access: str = "A0.stored-access@",
    refresh: str | None = "R0.stored-refresh@",
) -> TokenSet:
    """Tokens whose access token expires ``access_in`` after ``now``, the refresh token ``refresh_in``."""
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        token_type="Bearer",
        issued_at=now + access_in - dt.timedelta(minutes=30),
        access_expires_at=now + access_in,
        refresh_expires_at=None if refresh_in is None else now + refresh_in,
    )


def add_connection(name: str, tokens: TokenSet, *, provider: str = "schwab") -> ConnectionInfo:
    """Store a connection with ``tokens`` as a login would (creating the vault if needed)."""

    async def save() -> ConnectionInfo:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await save_login(vault, provider=provider, name=name, tokens=tokens)

    return asyncio.run(save())


def stored(name: str) -> tuple[ConnectionInfo, TokenSet]:
    """The connection and its tokens as the vault has them now, read through a new engine."""

    async def read() -> tuple[ConnectionInfo, TokenSet]:
        async with open_vault(load_settings()) as vault:
            return await load_tokens(vault, name)

    return asyncio.run(read())


def audit_of(name: str) -> list[AuditEntry]:
    """The audit entries of one connection, newest first."""

    async def read() -> list[AuditEntry]:
        async with open_vault(load_settings()) as vault:
            return await list_audit(vault, connection=name)

    return asyncio.run(read())


def refresh_requests(server: OAuthServer) -> list[TokenRequest]:
    """The refresh-grant requests the token endpoint received."""
    return [r for r in server.token_requests if r.form.get("grant_type") == "refresh_token"]
