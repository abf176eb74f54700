"""Charles Schwab's Trader API: OAuth endpoints, lifetimes and settings."""

from __future__ import annotations

import datetime as dt

from dashtam_cli.core.providers.base import ProviderSpec

__all__ = ["SPEC"]

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
