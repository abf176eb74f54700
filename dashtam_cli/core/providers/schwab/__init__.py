"""Charles Schwab's Trader API: OAuth endpoints, lifetimes and settings, and its provider."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from dashtam_cli.core.providers.base import LoginKind, Provider, ProviderSpec

if TYPE_CHECKING:
    from dashtam_cli.core.models import Kind
    from dashtam_cli.core.providers.base import ProviderSession, SessionContext

__all__ = ["PROVIDER", "SPEC", "SchwabProvider"]

SPEC = ProviderSpec(
    name="schwab",
    display_name="Charles Schwab",
    default_base_url="https://api.schwabapi.com",
    base_url_env="DASHTAM_SCHWAB_BASE_URL",
    authorize_path="/v1/oauth/authorize",
    token_path="/v1/oauth/token",  # noqa: S106 - a URL path
    client_id_env="SCHWAB_API_KEY",
    client_secret_env="SCHWAB_API_SECRET",  # noqa: S106 - the variable's name
    redirect_uri_env="SCHWAB_REDIRECT_URI",
    default_redirect_uri="https://127.0.0.1:8182",
    # Schwab: access tokens last 30 minutes; refresh tokens 7 days from the
    # login, a hard limit that refreshing does not extend.
    access_ttl=dt.timedelta(minutes=30),
    refresh_ttl=dt.timedelta(days=7),
    supports_pkce=False,
    correlation_header="Schwab-Client-CorrelId",
)


class SchwabProvider(Provider):
    """Schwab: an OAuth login whose tokens refresh; accounts by number, calls by hash."""

    name = "schwab"
    display_name = "Charles Schwab"
    login = LoginKind.OAUTH
    refreshes = True
    spec = SPEC

    @property
    def transaction_types(self) -> tuple[str, ...]:  # type: ignore[override] # read lazily
        """Schwab's own transaction types."""
        from dashtam_cli.core.providers.schwab.client import TRANSACTION_TYPES

        return TRANSACTION_TYPES

    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of one of Schwab's types."""
        from dashtam_cli.core.providers.schwab.mapping import kind_of

        return kind_of(provider_type)

    def session(self, context: SessionContext) -> ProviderSession:
        """A session of the Trader API for one connection."""
        from dashtam_cli.core.providers.schwab.session import SchwabSession

        return SchwabSession(self, context)


PROVIDER = SchwabProvider()
