"""The token endpoint call on its own: the request it sends, the tokens it reads, how it fails.

Refresh answers through the token manager are in ``tests/core/test_token_endpoint.py``;
this module calls :func:`post_token_request` directly, as the login's code exchange does.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from dashtam_cli.core.oauth.errors import TokenExchangeFailed
from dashtam_cli.core.oauth.tokens import (
    AppCredentials,
    TokenResponse,
    TokenSet,
    UnusableTokens,
    post_token_request,
)
from dashtam_cli.core.providers import get_provider
from dashtam_cli.core.redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable

SPEC: Final = get_provider("schwab")
NOW: Final = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)
CLIENT_ID: Final = "ClientId0123456789abcdefABCDEF01"
CLIENT_SECRET: Final = "ClientSecret0123"
CODE_FORM: Final = {
    "grant_type": "authorization_code",
    "code": "C0.code@",
    "redirect_uri": "https://127.0.0.1:8182",
}
TOKEN_URL: Final = "https://api.schwabapi.com/v1/oauth/token"


def exchange(
    handler: Callable[[httpx.Request], httpx.Response],
    form: dict[str, str] = CODE_FORM,
    *,
    previous: TokenSet | None = None,
    source: str = "vault",
) -> TokenResponse:
    """Call the token endpoint once, answered by ``handler``."""
    credentials = AppCredentials(CLIENT_ID, CLIENT_SECRET, "https://127.0.0.1:8182", source)

    async def run() -> TokenResponse:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await post_token_request(
                client, SPEC, credentials, form, previous=previous, now=NOW
            )

    return asyncio.run(run())


def answering(
    status: int, body: object, *, raw: bytes | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering ``status`` with ``body`` as JSON (or ``raw`` bytes)."""

    def handler(_request: httpx.Request) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.Response(
            status, content=content, headers={"Schwab-Client-CorrelId": "corr-\x1b[31m7"}
        )

    return handler


def good(**changes: object) -> dict[str, object]:
    """Schwab's answer to a code exchange, with ``changes``."""
    body: dict[str, object] = {
        "access_token": "I0.access@",
        "refresh_token": "R0.refresh@",
        "token_type": "Bearer",
        "expires_in": 1800,
        "scope": "api",
        "id_token": "eyJhbGciOi.e30.sig",
    }
    body.update(changes)
    return body


def test_the_request_is_a_form_post_with_basic_client_authentication() -> None:
    """POST to the token path, the form url-encoded, the app authenticated by HTTP Basic."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=good())

    exchange(handler)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == TOKEN_URL
    assert request.headers["Accept"] == "application/json"
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert dict(httpx.QueryParams(request.content.decode())) == CODE_FORM


def test_a_code_exchange_reads_the_tokens_and_their_lifetimes() -> None:
    """Tokens, type and lifetimes from the answer; the refresh token lasts the provider's 7 days."""
    answer = exchange(answering(200, good()))
    assert answer.tokens == TokenSet(
        access_token="I0.access@",
        refresh_token="R0.refresh@",
        token_type="Bearer",
        issued_at=NOW,
        access_expires_at=NOW + dt.timedelta(seconds=1800),
        refresh_expires_at=NOW + dt.timedelta(days=7),
    )
    assert answer.http_status == 200
    assert answer.notes == ()
    # The correlation id is the provider's text: sanitised (no escape sequence).
    assert answer.correlation_id == "corr-7"


def test_every_token_in_the_answer_is_masked_from_then_on() -> None:
    """Access, refresh and id tokens become registered secrets the moment they are read."""
    exchange(answering(200, good()))
    assert redact("I0.access@ R0.refresh@ eyJhbGciOi.e30.sig") == "*** *** ***"


def test_token_set_and_credentials_never_show_secrets_in_repr() -> None:
    """A TokenSet or AppCredentials printed by accident shows no token and no secret."""
    answer = exchange(answering(200, good()))
    shown = repr(answer.tokens) + repr(
        AppCredentials(CLIENT_ID, CLIENT_SECRET, "https://127.0.0.1:8182", "vault")
    )
    assert "I0.access@" not in shown
    assert "R0.refresh@" not in shown
    assert CLIENT_SECRET not in shown


def test_an_explicit_refresh_lifetime_shorter_than_the_default_is_used() -> None:
    """``refresh_token_expires_in`` given: the earlier of it and the provider's default."""
    answer = exchange(answering(200, good(refresh_token_expires_in=3600)))
    assert answer.tokens.refresh_expires_at == NOW + dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "expires_in",
    [
        pytest.param(1e20, id="1e20"),
        pytest.param(-1, id="negative"),
        pytest.param(0, id="zero"),
        pytest.param(1800.5, id="fraction"),
        pytest.param(True, id="boolean"),
        pytest.param("\u0661\u0668\u0660\u0660", id="arabic-indic-digits"),
        pytest.param("soon", id="word"),
    ],
)
def test_an_unbelievable_expires_in_falls_back_to_the_default_with_a_note(
    expires_in: object,
) -> None:
    """The provider's 30 minutes are assumed, and a note says so."""
    answer = exchange(answering(200, good(expires_in=expires_in)))
    assert answer.tokens.access_expires_at == NOW + dt.timedelta(minutes=30)
    assert any("expires_in was unusable" in note for note in answer.notes)


def test_digits_as_text_are_a_usable_lifetime() -> None:
    """``"900"`` is read as 900 seconds, without a note."""
    answer = exchange(answering(200, good(expires_in="900")))
    assert answer.tokens.access_expires_at == NOW + dt.timedelta(seconds=900)
    assert answer.notes == ()


def test_an_odd_token_type_is_read_as_bearer() -> None:
    """A token type that is not header-safe text becomes Bearer."""
    answer = exchange(answering(200, good(token_type="Bear er\r\n")))
    assert answer.tokens.token_type == "Bearer"


@pytest.mark.parametrize(
    "access",
    [None, "", "has space", "x" * 16385, 42],
    ids=["missing", "empty", "space", "over-16-KiB", "number"],
)
def test_no_usable_access_token_is_unusable(access: object) -> None:
    """A 200 without a usable access token is UnusableTokens; a first login has nothing to salvage."""
    with pytest.raises(UnusableTokens) as caught:
        exchange(answering(200, good(access_token=access)))
    assert caught.value.kind == "unusable"
    assert caught.value.salvage is None
    assert "without a usable access token" in caught.value.message


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        pytest.param(
            400,
            {"error": "invalid_grant", "error_description": "code expired"},
            "grant_refused",
            "refused the authorization code (HTTP 400, invalid_grant: code expired)",
            id="invalid-grant",
        ),
        pytest.param(
            401,
            {"error": "invalid_client"},
            "client_refused",
            "refused the app credentials (HTTP 401, invalid_client)",
            id="invalid-client",
        ),
        pytest.param(
            503, {"message": "down"}, "temporary", "token endpoint failed (HTTP 503)", id="503"
        ),
        pytest.param(
            429, {"message": "slow"}, "temporary", "token endpoint is busy (HTTP 429)", id="429"
        ),
        pytest.param(
            403,
            {"message": "Forbidden"},
            "temporary",
            "refused the request for now (HTTP 403, Forbidden)",
            id="403",
        ),
        pytest.param(
            404, {"message": "no route"}, "unusable", "answered HTTP 404 (no route)", id="404"
        ),
    ],
)
def test_refusals_say_what_kind_of_failure_they_are(
    status: int, body: object, kind: str, words: str
) -> None:
    """Each refusal has one message naming the answer, and a kind the login acts on."""
    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(answering(status, body))
    assert caught.value.kind == kind
    assert words in caught.value.message
    assert caught.value.http_status == status
    assert caught.value.correlation_id == "corr-7"


def test_a_refused_code_says_codes_work_once() -> None:
    """A refused authorization code hints that codes are single-use and short-lived."""
    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(answering(400, {"error": "invalid_grant"}))
    assert "work once" in (caught.value.hint or "")


def test_refused_app_credentials_from_the_environment_name_the_variables() -> None:
    """The hint names the variables when the credentials came from the environment."""
    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(answering(401, {"error": "invalid_client"}), source="environment")
    hint = caught.value.hint or ""
    assert "SCHWAB_API_KEY" in hint
    assert "SCHWAB_API_SECRET" in hint


def test_an_html_page_is_named_as_such() -> None:
    """A gateway's HTML page is called one (temporary), never parsed or shown."""
    page = b"<html><body><h1>Access Denied</h1>secret-ish</body></html>"
    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(answering(200, None, raw=page))
    assert caught.value.kind == "temporary"
    assert "an HTML page: Access Denied" in caught.value.message
    assert "secret-ish" not in caught.value.message


def test_a_provider_echoing_the_secret_is_masked_in_the_message() -> None:
    """An error description that echoes the client secret never repeats it."""
    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(answering(400, {"error": "invalid_request", "error_description": CLIENT_SECRET}))
    assert CLIENT_SECRET not in caught.value.message
    assert "***" in caught.value.message


@pytest.mark.parametrize(
    ("error", "words"),
    [
        pytest.param(httpx.ReadTimeout("slow"), "did not answer in time", id="timeout"),
        pytest.param(httpx.ConnectError("refused"), "cannot reach api.schwabapi.com", id="connect"),
        pytest.param(
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "TLS certificate of api.schwabapi.com could not be verified",
            id="certificate",
        ),
        pytest.param(
            httpx.RemoteProtocolError("bad"), "failed: RemoteProtocolError", id="protocol"
        ),
    ],
)
def test_network_failures_are_one_line_errors(error: httpx.HTTPError, words: str) -> None:
    """Timeouts, refused connections, bad certificates and protocol errors each get a clear line."""

    def handler(_request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(TokenExchangeFailed) as caught:
        exchange(handler)
    assert words in caught.value.message
    assert caught.value.kind == "temporary"
