"""Charles Schwab's Trader API: OAuth endpoints, lifetimes and settings, and its provider."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.providers.base import LoginKind, Provider, ProviderSpec

if TYPE_CHECKING:
    from dashtam_cli.core.models import Kind
    from dashtam_cli.core.providers.base import ProviderSession, SessionContext

__all__ = ["PROVIDER", "SPEC", "TRANSACTION_TYPES", "SchwabProvider"]

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


# Schwab's transaction types, here rather than in the client so that checking
# `--type` does not import the client (and httpx with it).
TRANSACTION_TYPES: Final = (
    "TRADE",
    "RECEIVE_AND_DELIVER",
    "DIVIDEND_OR_INTEREST",
    "ACH_RECEIPT",
    "ACH_DISBURSEMENT",
    "CASH_RECEIPT",
    "CASH_DISBURSEMENT",
    "ELECTRONIC_FUND",
    "WIRE_OUT",
    "WIRE_IN",
    "JOURNAL",
    "MEMORANDUM",
    "MARGIN_CALL",
    "MONEY_MARKET",
    "SMA_ADJUSTMENT",
)


class SchwabProvider(Provider):
    """Schwab: an OAuth login whose tokens refresh; accounts by number, calls by hash."""

    name = "schwab"
    display_name = "Charles Schwab"
    login = LoginKind.OAUTH
    refreshes = True
    spec = SPEC

    transaction_types = TRANSACTION_TYPES

    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of one of Schwab's types."""
        from dashtam_cli.core.providers.schwab.mapping import kind_of

        return kind_of(provider_type)

    def session(self, context: SessionContext) -> ProviderSession:
        """A session of the Trader API for one connection."""
        from dashtam_cli.core.providers.schwab.session import SchwabSession

        return SchwabSession(self, context)


PROVIDER = SchwabProvider()
