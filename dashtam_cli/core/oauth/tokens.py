"""The token endpoint: exchanging a code (and, later, a refresh token) for tokens."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Final

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

__all__ = [
    "MAX_LIFETIME",
    "AppCredentials",
    "TokenResponse",
    "TokenSet",
    "UnusableTokens",
    "post_token_request",
]

log = logging.getLogger(__name__)


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
    # What in the answer was unusable and replaced by a safe default (for warnings and audit).
    notes: tuple[str, ...] = ()


# Lifetimes outside (0, a year] are not believed: 1e20, 5,000 digits or -1 would
# overflow a datetime or make every use refresh; the provider's default is used instead.
MAX_LIFETIME: Final = dt.timedelta(days=366)
# JSON integers longer than this are read as unusable, not converted (Python
# refuses more than 4,300 digits, and no lifetime has more than a few).
_MAX_INT_DIGITS: Final = 24
# Access and refresh tokens are visible ASCII of bounded length (RFC 6750's b64token,
# and Schwab's '@'): anything else would break the Authorization header.
_MAX_TOKEN_LENGTH: Final = 16384
# OAuth errors that say the app, not the login, was refused (RFC 6749, section 5.2).
_CLIENT_ERRORS: Final = frozenset({"invalid_client", "unauthorized_client"})
_TRY_LATER: Final = frozenset({408, 425, 429})


class _TooLong:
    """A JSON integer too long to be any real value."""

    __slots__ = ()

    def __repr__(self) -> str:
        """Say what it stands for."""
        return "<integer too long>"


_TOO_LONG: Final = _TooLong()


def _bounded_int(text: str) -> int | _TooLong:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _TOO_LONG


def _read_json(data: bytes) -> Any:  # noqa: ANN401 - any JSON
    """The body as JSON, or None when it is not JSON (or nested or sized beyond reading)."""
    try:
        return load_json(data, what="the token endpoint", parse_int=_bounded_int)
    except (ValueError, BadBody):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _seconds(value: object) -> int | None:
    """A lifetime in seconds as a provider sends it (number or digits), or None if unusable."""
    number: int | float | str
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        # ASCII only: int() also reads '١٨٠٠' and '²'-like digits of other scripts.
        number = value if len(value) <= _MAX_INT_DIGITS else "0"
    else:
        return None
    if isinstance(number, float) and not number.is_integer():  # nan, inf, 1.5
        return None
    seconds = int(number)
    return seconds if 0 < seconds <= MAX_LIFETIME.total_seconds() else None


def _usable_token(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_TOKEN_LENGTH
        and all("!" <= ch <= "~" for ch in value)
    )


def _error_fields(body: Any) -> tuple[str, str]:  # noqa: ANN401 - any JSON
    """The OAuth ``error`` (text only) and a description from any of the shapes seen."""
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    oauth_error = error if isinstance(error, str) else ""
    message = body.get("message")
    description = body.get("error_description") or body.get("errors") or ""
    if not oauth_error and isinstance(message, str):
        return "", _clean(f"{message} {description}" if description else message)
    return oauth_error, _clean(str(description))


def _clean(text: str, limit: int = 160) -> str:
    # The provider's text is untrusted: it may echo the request (the refresh
    # token, percent-encoded; the Basic header) or carry terminal escapes.
    return sanitize(text, limit=limit)


def _page_kind(data: bytes) -> str:
    """How to name a body that is not JSON: a gateway's HTML page, or anything else."""
    head = data[:4096].decode("utf-8", "replace").lower()
    if "<html" in head or "<!doctype html" in head:
        return "an HTML page" + (": Access Denied" if "access denied" in head else "")
    return "text" if head.strip() else "an empty body"


def _client_hint(spec: ProviderSpec, source: str) -> str:
    if source == "environment":
        return (
            f"check {spec.client_id_env} and {spec.client_secret_env} (they override the "
            f"credentials saved by: dashtam providers configure {spec.name})"
        )
    return f"run: dashtam providers configure {spec.name} --client-id ID (it asks for the secret)"


def _failure(  # noqa: PLR0911, PLR0913 - one return per kind of answer; the answer and its context
    spec: ProviderSpec,
    response: httpx.Response,
    data: bytes,
    grant: str,
    correlation: str | None,
    *,
    source: str,
    body: Any = None,  # noqa: ANN401 - any JSON, when already read
) -> TokenExchangeFailed:
    """One clear error for a refused or unusable answer, with what kind of failure it is.

    Only a 400 or 401 with an OAuth ``error`` (``invalid_grant``,
    ``unsupported_token_type``, ...) refuses the grant itself; ``invalid_client``
    refuses the app. A 403, a 5xx, a 429 or a body that is not JSON (a gateway's
    "Access Denied" page) is temporary: Schwab's edge answers so for a while.
    """
    status = response.status_code
    if body is None:
        body = _read_json(data)
    error, description = _error_fields(body)
    detail = _clean(f"{error}: {description}" if description and error else error or description)
    detail = detail or "no error detail"
    what = "authorization code" if grant == "authorization_code" else "refresh token"
    name = spec.display_name

    def fail(message: str, hint: str, kind: str) -> TokenExchangeFailed:
        return TokenExchangeFailed(
            message, hint=hint, http_status=status, correlation_id=correlation, kind=kind
        )

    later = "this is usually temporary: try again in a few minutes"
    if status >= httpx.codes.INTERNAL_SERVER_ERROR:
        return fail(f"{name}'s token endpoint failed (HTTP {status})", later, "temporary")
    if status in _TRY_LATER:
        return fail(f"{name}'s token endpoint is busy (HTTP {status})", later, "temporary")
    if not isinstance(body, dict):
        return fail(
            f"{name}'s token endpoint answered HTTP {status} with a body that is not JSON "
            f"({_page_kind(data)})",
            f"{later}; if it persists, check {spec.base_url_env} points at the provider's API",
            "temporary",
        )
    if status == httpx.codes.FORBIDDEN:
        return fail(
            f"{name}'s token endpoint refused the request for now (HTTP 403, {detail})",
            f"{later} (the provider's gateway sometimes refuses for a while)",
            "temporary",
        )
    if status in {httpx.codes.BAD_REQUEST, httpx.codes.UNAUTHORIZED} and error in _CLIENT_ERRORS:
        return fail(
            f"{name} refused the app credentials (HTTP {status}, {detail}): the app's client "
            "secret (or key) was refused, not the login",
            _client_hint(spec, source),
            "client_refused",
        )
    if status in {httpx.codes.BAD_REQUEST, httpx.codes.UNAUTHORIZED} and error:
        hint = (
            "authorization codes work once and expire within about 30 seconds: log in again"
            if grant == "authorization_code"
            else "log in again"
        )
        return fail(f"{name} refused the {what} (HTTP {status}, {detail})", hint, "grant_refused")
    return fail(
        f"{name}'s token endpoint answered HTTP {status} ({detail})",
        f"check {spec.base_url_env} points at the provider's API, and the app credentials "
        f"({_client_hint(spec, source)})",
        "unusable",
    )


class UnusableTokens(TokenExchangeFailed):
    """A 200 answer without a usable access token; ``salvage`` keeps a refresh token it rotated.

    A provider that rotates has already retired the refresh token sent: the new
    one, however malformed the rest of the answer, must be kept.
    """

    def __init__(self, message: str, *, hint: str, salvage: TokenSet | None) -> None:
        """Keep the tokens to store despite the failure."""
        super().__init__(message, hint=hint, http_status=httpx.codes.OK, kind="unusable")
        self.salvage = salvage


def _refresh_part(
    spec: ProviderSpec,
    body: dict[str, Any],
    issued_at: dt.datetime,
    previous: TokenSet | None,
    notes: list[str],
) -> tuple[str | None, dt.datetime | None]:
    """The refresh token to keep and its expiry, anchored at the original login."""
    sent = body.get("refresh_token")
    if sent is not None and not _usable_token(sent):
        notes.append("it sent a refresh_token that is not usable text, which was ignored")
        sent = None
    if sent is not None:
        register_secret(sent)
    if sent is None or (previous is not None and sent == previous.refresh_token):
        # No new refresh token, or the same one sent back (Schwab does): keep it
        # with its original expiry.
        if previous is None:
            return None, None
        return previous.refresh_token, previous.refresh_expires_at
    explicit = body.get("refresh_token_expires_in")
    limit = None if explicit is None else _seconds(explicit)
    if explicit is not None and limit is None:
        notes.append("its refresh_token_expires_in was unusable and was ignored")
    candidates: list[dt.datetime] = []
    if previous is not None and previous.refresh_expires_at is not None:
        # A rotated refresh token inherits the login's deadline: Schwab's 7 days
        # run from the login, not from the refresh.
        candidates.append(previous.refresh_expires_at)
    elif limit is None:
        candidates.append(issued_at + spec.refresh_ttl)
    if limit is not None:
        candidates.append(issued_at + dt.timedelta(seconds=limit))
    return sent, min(candidates)


def _parse_tokens(
    spec: ProviderSpec,
    body: Any,  # noqa: ANN401 - any JSON
    issued_at: dt.datetime,
    previous_refresh: TokenSet | None,
) -> tuple[TokenSet, tuple[str, ...]]:
    """The tokens of a 200 answer, and notes on what in it was unusable and replaced."""
    name = spec.display_name
    base_hint = f"check {spec.base_url_env} points at the provider's API"
    if not isinstance(body, dict):
        raise UnusableTokens(
            f"{name}'s token endpoint answered without an access token",
            hint=base_hint,
            salvage=None,
        )
    notes: list[str] = []
    for extra in ("id_token",):
        if isinstance(body.get(extra), str):
            register_secret(body[extra])
    refresh_token, refresh_expires = _refresh_part(spec, body, issued_at, previous_refresh, notes)
    access = body.get("access_token")
    if not _usable_token(access):
        salvage = None
        if previous_refresh is not None and refresh_token != previous_refresh.refresh_token:
            salvage = dataclasses.replace(
                previous_refresh, refresh_token=refresh_token, refresh_expires_at=refresh_expires
            )
        raise UnusableTokens(
            f"{name}'s token endpoint answered without a usable access token"
            + ("; the new refresh token it sent was kept" if salvage else ""),
            hint=f"try again in a few minutes; if it persists, {base_hint}",
            salvage=salvage,
        )
    assert isinstance(access, str)  # _usable_token checked it; this tells mypy
    register_secret(access)
    default = int(spec.access_ttl.total_seconds())
    raw_lifetime = body.get("expires_in")
    lifetime = None if raw_lifetime is None else _seconds(raw_lifetime)
    if lifetime is None:
        if raw_lifetime is not None:
            notes.append(
                f"its expires_in was unusable; the access token is assumed to last {default} s"
            )
        lifetime = default
    token_type = body.get("token_type")
    tokens = TokenSet(
        access_token=access,
        refresh_token=refresh_token,
        token_type=token_type
        if isinstance(token_type, str) and _usable_token(token_type)
        else "Bearer",
        issued_at=issued_at,
        access_expires_at=issued_at + dt.timedelta(seconds=lifetime),
        refresh_expires_at=refresh_expires,
    )
    for note in notes:
        log.warning("%s's token endpoint: %s", name, note)
    return tokens, tuple(notes)


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

    Errors become ``TokenExchangeFailed`` with a one-line message and a
    ``kind`` (see :func:`_failure`): refused grants, refused app credentials,
    temporary failures (403, 5xx, 429, gateway pages, network) and unusable
    answers. A lifetime that cannot be believed (``expires_in`` of 1e20, of
    5,000 digits, or negative) is replaced by the provider's default, with a
    note, so that a rotated refresh token is never lost to it.
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
                hint="if you use a gateway or a local sandbox, trust its CA with the ca_bundle "
                "setting (DASHTAM_CA_BUNDLE) or SSL_CERT_FILE, and check the one set",
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
    body = _read_json(data)
    if response.status_code != httpx.codes.OK or body is None:
        raise _failure(
            spec, response, data, grant, correlation, source=credentials.source, body=body
        )
    tokens, notes = _parse_tokens(spec, body, issued_at, previous)
    return TokenResponse(tokens, response.status_code, duration_ms, correlation, notes)


def _correlation(spec: ProviderSpec, response: httpx.Response) -> str | None:
    """The provider's correlation id for the call, as untrusted text, or None."""
    if not spec.correlation_header:
        return None
    return sanitize(response.headers.get(spec.correlation_header), limit=80) or None
