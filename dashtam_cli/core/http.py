"""The one way the core makes HTTP clients: TLS always verified, timeouts always set."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Final

import httpx

from dashtam_cli.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dashtam_cli.core.settings import Settings

__all__ = ["DEFAULT_TIMEOUT", "make_client", "tls_context"]

DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)


def tls_context(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | bool:
    """The certificate authorities to trust: the ``ca_bundle`` setting, else ``SSL_CERT_FILE``.

    With neither, httpx's default (the certifi bundle) applies. Verification
    itself is never turned off: a custom CA is how a gateway or a local
    sandbox is trusted.
    """
    env = os.environ if environ is None else environ
    bundle = settings.ca_bundle or env.get("SSL_CERT_FILE", "").strip() or None
    if bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        origin = "the ca_bundle setting" if settings.ca_bundle else "SSL_CERT_FILE"
        raise ConfigError(
            f"cannot load the CA bundle {bundle} from {origin}: {exc}",
            hint="point it at a readable PEM file of CA certificates",
        ) from None


def make_client(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """Return an HTTP client; tests pass a transport (respx or a MockTransport)."""
    from dashtam_cli import __version__

    return httpx.AsyncClient(
        verify=tls_context(settings),
        timeout=timeout,
        transport=transport,
        headers={"User-Agent": f"dashtam/{__version__}"},
        follow_redirects=False,
        trust_env=True,  # proxies (HTTPS_PROXY, NO_PROXY) as users expect
    )
