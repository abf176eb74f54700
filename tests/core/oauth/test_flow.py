"""The whole login over real TLS on 127.0.0.1: authorize, callback, code exchange, sealed tokens."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.connections import load_tokens
from dashtam_cli.core.oauth.flow import LoginOptions, connect
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import open_vault

if TYPE_CHECKING:
    from collections.abc import Callable

    from oauth_server import OAuthServer


def test_browser_login_stores_sealed_tokens(
    oauth: OAuthServer, browser: Callable[[str], bool]
) -> None:
    """The code (ending in %40) reaches the token endpoint decoded; tokens are stored with lifetimes."""
    settings = load_settings()
    messages: list[str] = []
    before = dt.datetime.now(dt.UTC)
    info = asyncio.run(
        connect(
            settings,
            "schwab",
            LoginOptions(open_browser=browser, notify=messages.append, timeout=20),
        )
    )
    assert info.name == "schwab"
    assert info.provider == "schwab"
    (request,) = oauth.token_requests
    assert request.form["grant_type"] == "authorization_code"
    assert request.form["code"].endswith("@")
    assert oauth.codes[request.form["code"]] is True
    assert request.form["redirect_uri"] == oauth.redirect_uri
    assert request.content_type == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{oauth.client_id}:{oauth.client_secret}".encode()).decode()
    assert request.authorization == f"Basic {expected_auth}"
    (query,) = oauth.authorize_queries
    assert query["response_type"] == "code"
    assert len(query["state"]) >= 22  # at least 128 bits, base64url
    page = browser.pages[0]  # type: ignore[attr-defined]
    assert page.status_code == 200
    assert "Login complete" in page.text
    assert any("self-signed" in m for m in messages)

    async def stored() -> tuple[object, object]:
        async with open_vault(settings) as vault:
            return await load_tokens(vault, "schwab")

    info2, tokens = asyncio.run(stored())
    issued = oauth.issued[0]
    assert tokens.access_token == issued["access_token"]  # type: ignore[attr-defined]
    assert tokens.refresh_token == issued["refresh_token"]  # type: ignore[attr-defined]
    access_ttl = tokens.access_expires_at - tokens.issued_at  # type: ignore[attr-defined]
    refresh_ttl = tokens.refresh_expires_at - tokens.issued_at  # type: ignore[attr-defined]
    assert access_ttl == dt.timedelta(minutes=30)
    assert refresh_ttl == dt.timedelta(days=7)
    assert tokens.issued_at >= before  # type: ignore[attr-defined]
    assert info2 == info
    raw = settings.paths.vault_file.read_bytes()
    assert issued["access_token"].encode() not in raw


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            b'{"error":"invalid_grant","error_description":"Bad authorization code"}',
            "refused the authorization code (HTTP 400, invalid_grant",
        ),
        (
            401,
            b'{"error":"invalid_client","error_description":"Client authentication failed"}',
            "refused the app credentials (HTTP 401",
        ),
        (500, b'{"message":"boom"}', "token endpoint failed (HTTP 500)"),
        (200, b"<html>Access Denied</html>", "answered HTTP 200 with a body that is not JSON"),
    ],
)
def test_token_endpoint_failures_store_nothing(
    oauth: OAuthServer, browser: Callable[[str], bool], status: int, body: bytes, message: str
) -> None:
    """Each failure of the exchange is one clear message, and no connection is stored."""
    from dashtam_cli.core.connections import list_connections
    from dashtam_cli.core.oauth.errors import TokenExchangeFailed

    oauth.behaviour.token_status = status
    oauth.behaviour.token_body = body
    settings = load_settings()
    with pytest.raises(TokenExchangeFailed) as caught:
        asyncio.run(connect(settings, "schwab", LoginOptions(open_browser=browser, timeout=20)))
    assert message in caught.value.message
    assert "\n" not in caught.value.message

    async def count() -> int:
        async with open_vault(settings) as vault:
            return len(await list_connections(vault))

    assert asyncio.run(count()) == 0
