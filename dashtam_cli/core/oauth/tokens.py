"""The token endpoint: exchanging a code (and, later, a refresh token) for tokens."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import httpx

from dashtam_cli.core.http import (
    ERROR_BODY_LIMIT,
    TOKEN_BODY_LIMIT,
    BadBody,
    BodyTooLarge,
    load_json,
    read_body,
)
from dashtam_cli.core.oauth.errors import TokenExchangeFailed
from dashtam_cli.core.redact import register_secret, sanitize

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dashtam_cli.core.providers.base import ProviderSpec

__all__ = ["AppCredentials", "TokenResponse", "TokenSet", "post_token_request"]


@dataclasses.dataclass(frozen=True, slots=True)
class AppCredentials:
    """A provider app's client id, secret and redirect URI, and where they came from."""

    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    redirect_uri: str
    source: str
    # Where the redirect URI is set, as a hint names it ("choose another port in ...").
    redirect_setting: str = ""

    def __post_init__(self) -> None:
        """Mask the secret (and the client id, which identifies the app) in every log."""
        register_secret(self.client_secret)
        register_secret(self.client_id)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens and their lifetimes, times in UTC."""

    access_token: str = dataclasses.field(repr=False)
    refresh_token: str | None = dataclasses.field(repr=False)
    token_type: str
    issued_at: dt.datetime
    access_expires_at: dt.datetime
    refresh_expires_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class TokenResponse:
    """A parsed token response with what the audit log records of the call."""

    tokens: TokenSet
    http_status: int
    duration_ms: int
    correlation_id: str | None


def _error_fields(body: Any) -> tuple[str, str]:  # noqa: ANN401 - any JSON
    if isinstance(body, dict):
        error = str(body.get("error") or body.get("message") or "")
        description = str(body.get("error_description") or body.get("errors") or "")
        return error, description
    return "", ""


def _clean(text: str, limit: int = 160) -> str:
    # The provider's text is untrusted: it may echo the request (the refresh
    # token, percent-encoded; the Basic header) or carry terminal escapes.
    return sanitize(text, limit=limit)


def _failure(
    spec: ProviderSpec, response: httpx.Response, data: bytes, grant: str, correlation: str | None
) -> TokenExchangeFailed:
    status = response.status_code
    try:
        body = load_json(data, what="the token endpoint", status=status)
    except (ValueError, BadBody):
        body = None
    error, description = _error_fields(body)
    detail = _clean(f"{error}: {description}" if description else error) or "no error detail"
    what = "authorization code" if grant == "authorization_code" else "refresh token"
    name = spec.display_name
    if status == httpx.codes.UNAUTHORIZED or error == "invalid_client":
        message = f"{name} refused the app credentials (HTTP {status}, {detail})"
        hint = (
            f"check {spec.client_id_env} and {spec.client_secret_env}, or run: "
            f"dashtam providers configure {spec.name} --client-id ID"
        )
    elif status >= httpx.codes.INTERNAL_SERVER_ERROR:
        message = f"{name}'s token endpoint failed (HTTP {status})"
        hint = "the provider is having trouble; try again in a few minutes"
    elif body is None:
        message = f"{name}'s token endpoint answered HTTP {status} with a body that is not JSON"
        hint = f"check {spec.base_url_env} points at the provider's API"
    else:
        message = f"{name} refused the {what} (HTTP {status}, {detail})"
        hint = "authorization codes work once and expire within about 30 seconds: log in again"
    return TokenExchangeFailed(message, hint=hint, http_status=status, correlation_id=correlation)


def _parse_tokens(
    spec: ProviderSpec,
    body: Any,  # noqa: ANN401 - any JSON
    issued_at: dt.datetime,
    previous_refresh: TokenSet | None,
) -> TokenSet:
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise TokenExchangeFailed(
            f"{spec.display_name}'s token endpoint answered without an access token",
            hint=f"check {spec.base_url_env} points at the provider's API",
        )
    access = body["access_token"]
    refresh = body.get("refresh_token")
    register_secret(access)
    if isinstance(refresh, str) and refresh:
        register_secret(refresh)
    for extra in ("id_token",):
        if isinstance(body.get(extra), str):
            register_secret(body[extra])
    try:
        expires_in = int(body.get("expires_in") or spec.access_ttl.total_seconds())
    except (TypeError, ValueError):
        expires_in = int(spec.access_ttl.total_seconds())
    unchanged = (
        previous_refresh is not None
        and isinstance(refresh, str)
        and refresh == previous_refresh.refresh_token
    )
    if isinstance(refresh, str) and refresh and not unchanged:
        refresh_expires: dt.datetime | None = issued_at + spec.refresh_ttl
        if body.get("refresh_token_expires_in") is not None:
            with contextlib.suppress(TypeError, ValueError):
                refresh_expires = issued_at + dt.timedelta(
                    seconds=int(body["refresh_token_expires_in"])
                )
        refresh_token: str | None = refresh
    elif previous_refresh is not None:
        # No new refresh token, or the same one sent back (Schwab does): keep it
        # with its original expiry. Schwab's 7 days run from the login, not the refresh.
        refresh_token = previous_refresh.refresh_token
        refresh_expires = previous_refresh.refresh_expires_at
    else:
        refresh_token, refresh_expires = None, None
    return TokenSet(
        access_token=access,
        refresh_token=refresh_token,
        token_type=str(body.get("token_type") or "Bearer"),
        issued_at=issued_at,
        access_expires_at=issued_at + dt.timedelta(seconds=expires_in),
        refresh_expires_at=refresh_expires,
    )


async def post_token_request(  # noqa: PLR0913 - the request and its context
    client: httpx.AsyncClient,
    spec: ProviderSpec,
    credentials: AppCredentials,
    form: Mapping[str, str],
    *,
    previous: TokenSet | None = None,
    now: dt.datetime | None = None,
) -> TokenResponse:
    """POST ``form`` to the token endpoint with HTTP Basic client authentication.

    Errors become ``TokenExchangeFailed`` with a one-line message: refused
    grants (400), refused credentials (401 or ``invalid_client``), provider
    failures (5xx), bodies that are not JSON, and network or TLS failures.
    """
    url = spec.base_url() + spec.token_path
    issued_at = now or dt.datetime.now(dt.UTC)
    started = time.monotonic()
    what = f"{spec.display_name}'s token endpoint"
    try:
        async with client.stream(
            "POST",
            url,
            data=dict(form),
            auth=httpx.BasicAuth(credentials.client_id, credentials.client_secret),
            headers={"Accept": "application/json"},
        ) as response:
            ok = response.status_code == httpx.codes.OK
            data = await read_body(
                response,
                limit=TOKEN_BODY_LIMIT if ok else ERROR_BODY_LIMIT,
                what=what,
                truncate=not ok,
                setting=spec.base_url_env,
            )
    except httpx.TimeoutException:
        raise TokenExchangeFailed(
            f"{spec.display_name}'s token endpoint did not answer in time",
            hint="check your connection and try again",
        ) from None
    except httpx.ConnectError as exc:
        cause = exc.__cause__ or exc.__context__
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(cause):
            raise TokenExchangeFailed(
                f"the TLS certificate of {httpx.URL(url).host} could not be verified",
                hint="if you use a gateway or a local sandbox, trust its CA with SSL_CERT_FILE "
                "or the ca_bundle setting",
            ) from None
        raise TokenExchangeFailed(
            f"cannot reach {httpx.URL(url).host}: {_clean(str(exc)) or type(exc).__name__}",
            hint=f"check your connection and {spec.base_url_env}",
        ) from None
    except httpx.HTTPError as exc:
        raise TokenExchangeFailed(
            f"the request to {spec.display_name}'s token endpoint failed: {type(exc).__name__}",
            hint="check your connection and try again",
        ) from None
    except (BodyTooLarge, BadBody) as exc:
        raise TokenExchangeFailed(
            exc.message,
            hint=exc.hint,
            http_status=exc.http_status,
            correlation_id=_correlation(spec, response),
        ) from None
    duration_ms = int((time.monotonic() - started) * 1000)
    correlation = _correlation(spec, response)
    grant = form.get("grant_type", "")
    if response.status_code != httpx.codes.OK:
        raise _failure(spec, response, data, grant, correlation)
    try:
        body = load_json(data, what=what, status=response.status_code, setting=spec.base_url_env)
    except (ValueError, BadBody):
        raise _failure(spec, response, data, grant, correlation) from None
    tokens = _parse_tokens(spec, body, issued_at, previous)
    return TokenResponse(tokens, response.status_code, duration_ms, correlation)


def _correlation(spec: ProviderSpec, response: httpx.Response) -> str | None:
    """The provider's correlation id for the call, as untrusted text, or None."""
    if not spec.correlation_header:
        return None
    return sanitize(response.headers.get(spec.correlation_header), limit=80) or None
