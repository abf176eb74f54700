"""What dashtam needs to know about a provider to log in to it."""

from __future__ import annotations

import dataclasses
import datetime as dt  # noqa: TC003 - dataclass fields are resolved at run time
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

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

    def base_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The provider's origin: the environment's override or the default, no trailing slash.

        An override must be an https URL with a host (http only to this machine's
        loopback, for a local test server), with no user or password, query or
        fragment; anything else is a ConfigError that does not repeat the value.
        """
        import os

        env = os.environ if environ is None else environ
        raw = env.get(self.base_url_env, "").strip()
        if not raw:
            return self.default_base_url
        problem = _url_problem(raw)
        if problem is not None:
            raise ConfigError(
                f"{self.base_url_env} is not a usable provider URL: {problem}",
                hint=f"give an origin like {self.default_base_url}, or unset {self.base_url_env}",
            )
        return raw.rstrip("/")


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
