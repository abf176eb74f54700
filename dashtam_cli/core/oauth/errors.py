"""Errors of the login flow."""

from __future__ import annotations

from dashtam_cli.core.errors import DashtamError, InputError, ProviderError

__all__ = [
    "AccessDenied",
    "CallbackTimeout",
    "LoginError",
    "PortInUse",
    "RedirectUriError",
    "TokenExchangeFailed",
]


class LoginError(DashtamError):
    """Base of the login flow's errors."""


class RedirectUriError(InputError):
    """The redirect URI is not a loopback HTTPS address dashtam can listen on."""


class PortInUse(LoginError):
    """Another program listens on the redirect URI's port."""


class CallbackTimeout(LoginError):
    """No callback arrived in time."""


class AccessDenied(LoginError):
    """The user declined, or the provider refused the authorization."""


class TokenExchangeFailed(ProviderError, LoginError):
    """The token endpoint refused the code or answered something unusable."""
