"""Errors of the login flow."""

from __future__ import annotations

from dashtam_cli.core.errors import DashtamError, InputError, ProviderError

__all__ = [
    "AccessDenied",
    "CallbackTimeout",
    "LoginCancelled",
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


class LoginCancelled(LoginError):
    """The person closed a hosted login page's widget before it finished."""


class TokenExchangeFailed(ProviderError, LoginError):
    """The token endpoint refused the code or answered something unusable.

    ``kind`` says what the failure means for a login: ``grant_refused`` (the code
    or refresh token is dead: only a new login helps), ``client_refused`` (the
    app's key or secret was refused; the login itself may be fine),
    ``temporary`` (network, 403, 5xx, 429, gateway pages: try again later) or
    ``unusable`` (an answer dashtam cannot use, such as a wrong base URL).
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
        correlation_id: str | None = None,
        kind: str = "temporary",
    ) -> None:
        """Keep what kind of failure this is beside the HTTP status and correlation id."""
        super().__init__(message, hint=hint, http_status=http_status, correlation_id=correlation_id)
        self.kind = kind
