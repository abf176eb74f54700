"""Hostile and odd token-endpoint answers during a refresh: what marks a login dead, what is kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
import pytest
import respx
from schwab_support import BASE_URL, CORRELATION, TOKEN_URL
from schwab_support import add_connection as add_live_connection
from token_support import CLIENT_REFUSAL, FakeClock, add_connection, audit_of, stored, token_set

from dashtam_cli.core.connections import list_connections
from dashtam_cli.core.errors import ExitCode, ReauthRequired
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.tokens import ClientRefused, RefreshFailed, token_manager
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from conftest import CliCall

    from dashtam_cli.core.models import TokenStatus
    from dashtam_cli.core.tokens import RefreshOutcome, TokenManager

T = TypeVar("T")
START: Final = dt.datetime(2025, 3, 3, 15, 0, tzinfo=dt.UTC)
NAME: Final = "brokerage"
APP_KEY: Final = "test-app-key-0123456789abcdef"
APP_SECRET: Final = "test-app-secret-0123"
NEW_ACCESS: Final = "I0.new-access-token@"
NEW_REFRESH: Final = "R0.new-refresh-token@"
# Schwab's edge answers this page for a while at times (Schwabdev issue 61).
ACCESS_DENIED: Final = (
    b"<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
    b"You don't have permission to access \"http&#58;&#47;&#47;api&#46;schwabapi&#46;com&#47;"
    b'v1&#47;oauth&#47;token" on this server.<P>\nReference&#32;&#35;18&#46;5c3e1402\n'
    b"</BODY>\n</HTML>\n"
)


@pytest.fixture(autouse=True)
def schwab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schwab at the mocked origin, with the app's credentials in the environment."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    monkeypatch.setenv("SCHWAB_API_KEY", APP_KEY)
    monkeypatch.setenv("SCHWAB_API_SECRET", APP_SECRET)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands still at START unless the test moves it."""
    return FakeClock(START)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def answer(
    status: int, body: bytes, content_type: str = "application/json;charset=UTF-8"
) -> httpx.Response:
    """A token-endpoint answer as Schwab sends it: raw bytes, a content type, a correlation id."""
    return httpx.Response(
        status,
        content=body,
        headers={"Content-Type": content_type, CORRELATION: "corr-token-1"},
    )


def tokens_body(**fields: Any) -> bytes:
    """Schwab's token answer (README: access, refresh, id token, Bearer, api, 1800) with changes."""
    body: dict[str, Any] = {
        "expires_in": 1800,
        "token_type": "Bearer",
        "scope": "api",
        "refresh_token": NEW_REFRESH,
        "access_token": NEW_ACCESS,
        "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.c2ln",
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def with_manager(
    router: respx.MockRouter,
    clock: FakeClock,
    job: Callable[[TokenManager], Coroutine[Any, Any, T]],
) -> T:
    """Run ``job`` with a token manager whose HTTP goes to ``router``."""

    async def main() -> T:
        transport = httpx.MockTransport(router.async_handler)
        async with token_manager(
            load_settings(), OpenOptions(), transport=transport, clock=clock
        ) as manager:
            return await job(manager)

    return asyncio.run(main())


def refresh(router: respx.MockRouter, clock: FakeClock) -> RefreshOutcome:
    """Refresh the connection NAME (its access token expires within the margin)."""
    return with_manager(router, clock, lambda m: m.refresh(NAME))


def status_of(name: str) -> str:
    """The connection's recorded status (active, reauth_required)."""

    async def read() -> str:
        async with open_vault(load_settings()) as vault:
            (info,) = await list_connections(vault, name=name)
            return info.status

    return asyncio.run(read())


def connect_expiring() -> None:
    """A connection whose access token expires in a minute; its refresh token is good for days."""
    add_connection(NAME, token_set(START, access_in=dt.timedelta(minutes=1)))


# --- what a failed refresh means ------------------------------------------------------------------

TEMPORARY = [
    pytest.param(403, ACCESS_DENIED, "text/html", id="403-access-denied-page"),
    pytest.param(403, b'{"message":"Forbidden"}', "application/json", id="403-json"),
    pytest.param(401, ACCESS_DENIED, "text/html", id="401-html-page"),
    pytest.param(400, b"Bad Request", "text/plain", id="400-text"),
    pytest.param(200, ACCESS_DENIED, "text/html", id="200-html-page"),
    pytest.param(502, b"<html><body>Bad Gateway</body></html>", "text/html", id="502-html"),
    pytest.param(500, b'{"message":"Internal Server Error"}', "application/json", id="500"),
    pytest.param(401, b'{"message":"Unauthorized"}', "application/json", id="401-no-oauth-error"),
]


@pytest.mark.parametrize(("status", "body", "content_type"), TEMPORARY)
def test_a_gateway_page_403_or_5xx_does_not_need_a_new_login(
    router: respx.MockRouter, clock: FakeClock, status: int, body: bytes, content_type: str
) -> None:
    """403, 5xx, HTML pages and 4xx without an OAuth error: exit 1, the login stays usable."""
    connect_expiring()
    original = stored(NAME)[1]
    route = router.post(TOKEN_URL).mock(return_value=answer(status, body, content_type))

    with pytest.raises(RefreshFailed) as caught:
        refresh(router, clock)

    error = caught.value
    assert not isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.ERROR
    assert int(error.exit_code) == 1
    assert f"HTTP {status}" in error.message
    assert "\n" not in error.message
    assert "<" not in error.message  # nothing of the page's markup
    assert error.hint is not None
    assert route.call_count == 1
    assert status_of(NAME) == "active"
    assert stored(NAME)[1] == original
    (entry, *_) = audit_of(NAME)
    assert (entry.operation, entry.outcome, entry.http_status) == (
        "oauth.refresh",
        "failed",
        status,
    )
    # The same refresh token works once the provider is back.
    route.mock(return_value=answer(200, tokens_body()))
    assert refresh(router, clock).tokens.access_token == NEW_ACCESS


def test_the_access_denied_page_is_named_and_called_temporary(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """Schwab's 403 Access Denied page reads as what it is, with 'try again in a few minutes'."""
    connect_expiring()
    router.post(TOKEN_URL).mock(return_value=answer(403, ACCESS_DENIED, "text/html"))

    with pytest.raises(RefreshFailed) as caught:
        refresh(router, clock)

    assert "an HTML page: Access Denied" in caught.value.message
    assert caught.value.hint is not None
    assert "try again in a few minutes" in caught.value.hint


def test_a_refused_client_secret_names_the_app_not_the_login(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """401 invalid_client: the secret was refused (exit 1); the refresh token is not marked dead."""
    connect_expiring()
    original = stored(NAME)[1]
    route = router.post(TOKEN_URL).mock(return_value=answer(*CLIENT_REFUSAL))

    with pytest.raises(ClientRefused) as caught:
        refresh(router, clock)

    error = caught.value
    assert not isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.ERROR
    assert "client secret" in error.message
    assert "invalid_client" in error.message
    assert error.hint is not None
    # The credentials came from the environment: the hint names its variables.
    assert "SCHWAB_API_KEY" in error.hint
    assert "SCHWAB_API_SECRET" in error.hint
    assert "dashtam providers configure schwab" in error.hint
    assert APP_SECRET not in error.message + error.hint
    assert status_of(NAME) == "active"
    assert stored(NAME)[1] == original
    # Once the secret is right again, the same refresh token still works.
    route.mock(return_value=answer(200, tokens_body()))
    assert refresh(router, clock).tokens.refresh_token == NEW_REFRESH


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(
            400,
            b'{"error":"invalid_grant","error_description":"Refresh token is invalid or expired"}',
            id="400-invalid_grant",
        ),
        pytest.param(
            400,
            b'{"error":"unsupported_token_type","error_description":"400 Bad Request: '
            b'\\"{\\"error_description\\":\\"Exception while authenticating refresh token\\",'
            b'\\"error\\":\\"refresh_token_authentication_error\\"}\\""}',
            id="400-refresh_token_authentication_error",
        ),
        pytest.param(
            401,
            b'{"error":"invalid_grant","error_description":"Refresh token is invalid or expired"}',
            id="401-invalid_grant",
        ),
    ],
)
def test_an_oauth_refusal_of_the_refresh_token_needs_a_new_login(
    router: respx.MockRouter, clock: FakeClock, status: int, body: bytes
) -> None:
    """Only a 400/401 with an OAuth error about the grant marks the login dead (exit 4)."""
    connect_expiring()
    router.post(TOKEN_URL).mock(return_value=answer(status, body))

    with pytest.raises(ReauthRequired) as caught:
        refresh(router, clock)

    assert caught.value.exit_code == ExitCode.REAUTH
    assert caught.value.hint == f"run: dashtam connect schwab --name {NAME}"
    assert status_of(NAME) == "reauth_required"


# --- lifetimes that cannot be believed ------------------------------------------------------------

HOSTILE_EXPIRES_IN = [
    pytest.param(b"1e20", id="1e20"),
    pytest.param(b"9" * 5000, id="5000-digits"),
    pytest.param(b"-1800", id="negative"),
    pytest.param(b"0", id="zero"),
    pytest.param(b"Infinity", id="infinity"),
    pytest.param(b"NaN", id="nan"),
    pytest.param(b"1800.5", id="fraction"),
    pytest.param(b'"\\u0661\\u0668\\u0660\\u0660"', id="arabic-indic-digits"),
    pytest.param(b'"\\u00b2"', id="superscript-two"),
    pytest.param(b"true", id="boolean"),
    pytest.param(b'{"seconds":1800}', id="object"),
]


def _with_raw_expires_in(raw: bytes, **fields: Any) -> bytes:
    body = tokens_body(expires_in=424242, **fields)
    assert body.count(b"424242") == 1
    return body.replace(b"424242", raw)


@pytest.mark.parametrize("raw", HOSTILE_EXPIRES_IN)
def test_an_unusable_expires_in_keeps_the_rotated_refresh_token(
    router: respx.MockRouter, clock: FakeClock, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    """A rotated refresh token is stored whatever expires_in says; the access token gets 30 min."""
    connect_expiring()
    router.post(TOKEN_URL).mock(return_value=answer(200, _with_raw_expires_in(raw)))

    with caplog.at_level(logging.WARNING, logger="dashtam_cli"):
        outcome = refresh(router, clock)

    _, tokens = stored(NAME)
    assert outcome.refreshed is True
    assert tokens.refresh_token == NEW_REFRESH
    assert tokens.access_token == NEW_ACCESS
    # Schwab's own lifetime, not 1e20 s, not already expired.
    assert tokens.access_expires_at == START + dt.timedelta(minutes=30)
    assert status_of(NAME) == "active"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("expires_in was unusable" in w for w in warnings), warnings
    (entry, *_) = audit_of(NAME)
    assert entry.outcome == "ok"
    assert entry.detail is not None
    assert "refresh token rotated" in entry.detail
    assert "expires_in was unusable" in entry.detail


@pytest.mark.parametrize(
    "raw", [b"1e20", b"9" * 5000, b"-1", b'"forever"'], ids=["1e20", "5000-digits", "neg", "text"]
)
def test_an_unusable_refresh_token_expires_in_never_extends_the_login(
    router: respx.MockRouter, clock: FakeClock, raw: bytes
) -> None:
    """refresh_token_expires_in that cannot be believed is ignored: the login's deadline holds."""
    add_connection(
        NAME,
        token_set(START, access_in=dt.timedelta(minutes=1), refresh_in=dt.timedelta(days=5)),
    )
    body = tokens_body(refresh_token_expires_in=424242)
    router.post(TOKEN_URL).mock(return_value=answer(200, body.replace(b"424242", raw)))

    refresh(router, clock)

    _, tokens = stored(NAME)
    assert tokens.refresh_token == NEW_REFRESH
    assert tokens.refresh_expires_at == START + dt.timedelta(days=5)


@pytest.mark.parametrize(
    "access",
    [None, 12345, "", "A0.with a space@", "A0.\u00e9@", {"token": "x"}],
    ids=["absent", "number", "empty", "space", "non-ascii", "object"],
)
def test_a_rotated_refresh_token_is_kept_when_the_access_token_is_unusable(
    router: respx.MockRouter, clock: FakeClock, access: object
) -> None:
    """No usable access token, but a new refresh token: the new one is stored (the old is retired)."""
    connect_expiring()
    original = stored(NAME)[1]
    router.post(TOKEN_URL).mock(return_value=answer(200, tokens_body(access_token=access)))

    with pytest.raises(RefreshFailed) as caught:
        refresh(router, clock)

    assert not isinstance(caught.value, ReauthRequired)
    assert "without a usable access token" in caught.value.message
    assert "new refresh token" in caught.value.message
    _, tokens = stored(NAME)
    assert tokens.refresh_token == NEW_REFRESH
    assert tokens.refresh_expires_at == original.refresh_expires_at
    assert tokens.access_token == original.access_token
    assert status_of(NAME) == "active"


def test_wrong_types_elsewhere_in_the_token_answer_fall_back(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """token_type of the wrong type becomes Bearer; a refresh_token that is a number is ignored."""
    connect_expiring()
    original = stored(NAME)[1]
    router.post(TOKEN_URL).mock(
        return_value=answer(200, tokens_body(token_type={"kind": "Bearer"}, refresh_token=98765))
    )

    outcome = refresh(router, clock)

    assert outcome.tokens.token_type == "Bearer"
    _, tokens = stored(NAME)
    assert tokens.access_token == NEW_ACCESS
    assert tokens.refresh_token == original.refresh_token
    assert tokens.refresh_expires_at == original.refresh_expires_at


@pytest.mark.parametrize("status", [200, 400, 401])
def test_deeply_nested_json_is_a_clear_error(
    router: respx.MockRouter, clock: FakeClock, status: int
) -> None:
    """A body nested 20,000 deep gives a one-line RefreshFailed, not a RecursionError."""
    connect_expiring()
    original = stored(NAME)[1]
    body = b'{"error":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # within the 64 KiB limit
    router.post(TOKEN_URL).mock(return_value=answer(status, body))

    with pytest.raises(RefreshFailed) as caught:
        refresh(router, clock)

    assert not isinstance(caught.value, ReauthRequired)
    assert "not JSON" in caught.value.message
    assert status_of(NAME) == "active"
    assert stored(NAME)[1] == original


# --- the 7-day limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{}, {"refresh_token_expires_in": 604800}],
    ids=["no-refresh-lifetime", "refresh_token_expires_in-7d"],
)
def test_a_rotated_refresh_token_keeps_the_login_as_the_7_day_anchor(
    router: respx.MockRouter, clock: FakeClock, extra: dict[str, Any]
) -> None:
    """Logged in at START, refreshed 3 days later with a new refresh token: 4 days left, not 7."""
    add_connection(
        NAME,
        token_set(
            START - dt.timedelta(minutes=29),
            access_in=dt.timedelta(minutes=30),
            refresh_in=dt.timedelta(days=7, minutes=29),
        ),
    )
    clock.advance(dt.timedelta(days=3))
    router.post(TOKEN_URL).mock(return_value=answer(200, tokens_body(**extra)))

    refresh(router, clock)

    _, tokens = stored(NAME)
    assert tokens.refresh_token == NEW_REFRESH
    assert tokens.refresh_expires_at == START + dt.timedelta(days=7)
    rows: list[TokenStatus] = with_manager(router, clock, lambda m: m.status(NAME))
    (row,) = rows
    assert row.refresh_expires_in_seconds == 4 * 86400
    assert row.refresh_expires == "in 4 d 0 h"


# --- through the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type", "says"),
    [
        pytest.param(
            403,
            ACCESS_DENIED,
            "text/html",
            "answered HTTP 403 with a body that is not JSON (an HTML page: Access Denied); "
            "this is usually temporary: try again in a few minutes",
            id="access-denied",
        ),
        pytest.param(
            *CLIENT_REFUSAL,
            "application/json",
            "the app's client secret (or key) was refused, not the login; check SCHWAB_API_KEY",
            id="invalid_client",
        ),
    ],
)
def test_tokens_refresh_says_what_failed_and_keeps_the_login(
    cli: CliCall, status: int, body: bytes, content_type: str, says: str
) -> None:
    """`tokens refresh`: exit 1, the cause and what to do on stderr; `tokens status` not reauth."""
    add_live_connection(NAME, "A0.live-access@", access_in=dt.timedelta(minutes=1))
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(TOKEN_URL).mock(return_value=answer(status, body, content_type))
        result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert says in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    status_rows = json.loads(cli("tokens", "status", "--format", "json").stdout)
    assert [row["state"] for row in status_rows] == ["ok"]
