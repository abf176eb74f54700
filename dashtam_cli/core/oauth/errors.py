"""Errors of the login flow."""

from __future__ import annotations

from dashtam_cli.core.errors import DashtamError, InputError

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


class TokenExchangeFailed(LoginError):
    """The token endpoint refused the code or answered something unusable."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Keep the HTTP status and the provider's correlation id for the audit log."""
        super().__init__(message, hint=hint)
        self.http_status = http_status
        self.correlation_id = correlation_id
