"""What dashtam needs to know about a provider to log in to it."""

from __future__ import annotations

import dataclasses
import datetime as dt  # noqa: TC003 - dataclass fields are resolved at run time

__all__ = ["ProviderSpec"]


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

    def base_url(self, environ: dict[str, str] | None = None) -> str:
        """The provider's origin: the environment's override or the default, no trailing slash."""
        import os

        env = os.environ if environ is None else environ
        return (env.get(self.base_url_env, "").strip() or self.default_base_url).rstrip("/")
