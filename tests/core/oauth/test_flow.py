"""The whole login over real TLS on 127.0.0.1: authorize, callback, code exchange, sealed tokens."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import http.client
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from oauth_fixtures import listener_cert

from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import list_connections, load_tokens
from dashtam_cli.core.errors import DashtamError, InputError
from dashtam_cli.core.login import connect
from dashtam_cli.core.oauth import flow
from dashtam_cli.core.oauth.errors import (
    AccessDenied,
    CallbackTimeout,
    LoginError,
    PortInUse,
    RedirectUriError,
    TokenExchangeFailed,
)
from dashtam_cli.core.oauth.flow import LoginOptions
from dashtam_cli.core.oauth.listener import parse_redirect_uri
from dashtam_cli.core.oauth.tokens import AppCredentials
from dashtam_cli.core.providers import get_provider
from dashtam_cli.core.redact import MASK, RedactingFilter
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from oauth_fixtures import Browser
    from oauth_server import OAuthServer

    from dashtam_cli.core.models import AuditEntry, ConnectionInfo
    from dashtam_cli.core.oauth.tokens import TokenSet


def test_browser_login_stores_sealed_tokens(oauth: OAuthServer, browser: Browser) -> None:
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
    page = browser.pages[0]
    assert page.status_code == 200
    assert "Login complete" in page.text
    assert any("self-signed" in m for m in messages)

    async def stored() -> tuple[ConnectionInfo, TokenSet]:
        async with open_vault(settings) as vault:
            return await load_tokens(vault, "schwab")

    info2, tokens = asyncio.run(stored())
    issued = oauth.issued[0]
    assert tokens.access_token == issued["access_token"]
    assert tokens.refresh_token == issued["refresh_token"]
    access_ttl = tokens.access_expires_at - tokens.issued_at
    assert tokens.refresh_expires_at is not None
    refresh_ttl = tokens.refresh_expires_at - tokens.issued_at
    assert access_ttl == dt.timedelta(minutes=30)
    assert refresh_ttl == dt.timedelta(days=7)
    assert tokens.issued_at >= before
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
    oauth: OAuthServer, browser: Browser, status: int, body: bytes, message: str
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


# --- helpers ---------------------------------------------------------------

AUTHORIZE_URL = re.compile(r"https://\S+/v1/oauth/authorize\?\S+")


def login(**options: Any) -> ConnectionInfo:
    """Run the whole login with these LoginOptions (a 20 s timeout unless given)."""
    options.setdefault("timeout", 20)
    return asyncio.run(connect(load_settings(), "schwab", LoginOptions(**options)))


def tokens_of(name: str) -> tuple[ConnectionInfo, TokenSet]:
    """The connection called ``name`` and its tokens, read back from the vault."""

    async def read() -> tuple[ConnectionInfo, TokenSet]:
        async with open_vault(load_settings()) as vault:
            return await load_tokens(vault, name)

    return asyncio.run(read())


def connections() -> list[ConnectionInfo]:
    """Every stored connection (none when the vault does not exist yet)."""
    settings = load_settings()
    if not settings.paths.vault_file.exists():
        return []

    async def read() -> list[ConnectionInfo]:
        async with open_vault(settings) as vault:
            return await list_connections(vault)

    return asyncio.run(read())


def audit_entries() -> list[AuditEntry]:
    """The audit log, oldest first."""

    async def read() -> list[AuditEntry]:
        async with open_vault(load_settings()) as vault:
            return await list_audit(vault)

    return list(reversed(asyncio.run(read())))


def authorize_url_in(messages: list[str]) -> str:
    """The authorize URL the flow showed the user."""
    for message in messages:
        match = AUTHORIZE_URL.search(message)
        if match:
            return match[0]
    pytest.fail(f"no authorize URL in {messages}")


def approve(url: str, ca_file: Path) -> str:
    """Do what the user does in a browser elsewhere: open the URL; return where it redirects."""
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:
        answer = client.get(url)
    assert answer.status_code == 302
    return answer.headers["location"]


def quiet_browser(ca_file: Path, home: Path) -> Callable[[str], bool]:
    """A browser built on http.client, which logs nothing (httpx would log the callback URL)."""

    def fetch(url: str, context: ssl.SSLContext) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
        try:
            conn.request("GET", f"{parts.path or '/'}?{parts.query}")
            response = conn.getresponse()
            response.read()
            return response
        finally:
            conn.close()

    def open_url(url: str) -> bool:
        location = fetch(url, ssl.create_default_context(cafile=ca_file)).headers["location"]
        cert = listener_cert(home)
        assert fetch(location, ssl.create_default_context(cafile=cert)).status == 200
        return True

    return open_url


# --- manual mode -----------------------------------------------------------


def test_manual_mode_exchanges_the_pasted_redirect(oauth: OAuthServer, ca_file: Path) -> None:
    """The pasted address (with %40 in the code) is checked and exchanged; no port is needed."""
    messages: list[str] = []
    pasted: list[str] = []

    def read_pasted_url() -> str:
        location = approve(authorize_url_in(messages), ca_file)
        pasted.append(location)
        return f"  {location}\n"  # as typed: spaces and the newline of Enter

    port = urllib.parse.urlsplit(oauth.redirect_uri).port
    assert port is not None
    # Manual mode does not listen: the redirect port may be taken by something else.
    blocker = socket.create_server(("127.0.0.1", port))
    try:
        info = login(mode="manual", read_pasted_url=read_pasted_url, notify=messages.append)
    finally:
        blocker.close()
    assert (info.name, info.provider) == ("schwab", "schwab")
    assert "%40" in pasted[0]
    (request,) = oauth.token_requests
    assert request.form["code"].endswith("@")
    assert oauth.codes[request.form["code"]] is True
    assert any("paste it here" in m for m in messages)
    _, tokens = tokens_of("schwab")
    assert tokens.access_token == oauth.issued[0]["access_token"]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda url: re.sub(r"state=[^&]+", "state=forged", url),
            "refused: missing or wrong state",
        ),
        (lambda url: re.sub(r"&state=[^&]+", "", url), "refused: missing or wrong state"),
        (lambda url: re.sub(r"code=[^&]+", "code=", url), "refused: callback without a code"),
        (lambda url: url.replace("https://127.0.0.1", "https://evil.example"), "not the redirect"),
        (lambda url: url.replace("https://", "http://"), "not the redirect"),
        (lambda url: re.sub(r":\d+/", ":1/", url), "not the redirect"),
        (lambda url: re.sub(r":\d+/", ":99999/", url), "not the redirect"),
        (lambda url: re.sub(r"^https://[^/]+", "https://[::1", url), "not the redirect"),
        (lambda url: url.split("?")[1], "not the redirect"),
    ],
    ids=[
        "wrong-state",
        "no-state",
        "no-code",
        "other-host",
        "http",
        "other-port",
        "bad-port",
        "broken-host",
        "query-only",
    ],
)
def test_manual_mode_refuses_a_pasted_address_that_does_not_match(
    oauth: OAuthServer, ca_file: Path, tamper: Callable[[str], str], message: str
) -> None:
    """A wrong state, another host, scheme or port: a clear LoginError, no exchange, nothing stored."""
    messages: list[str] = []

    def read_pasted_url() -> str:
        return tamper(approve(authorize_url_in(messages), ca_file))

    with pytest.raises(LoginError) as caught:
        login(mode="manual", read_pasted_url=read_pasted_url, notify=messages.append)
    assert message in caught.value.message
    assert caught.value.hint
    assert type(caught.value) is LoginError  # not an internal error, not AccessDenied
    assert oauth.token_requests == []
    assert connections() == []
    failed = [e for e in audit_entries() if e.operation == "oauth.callback"]
    assert [e.outcome for e in failed] == ["failed"]


def test_manual_mode_with_a_pasted_refusal_is_access_denied(
    oauth: OAuthServer, ca_file: Path
) -> None:
    """Pasting the address of a declined login (right state) ends with AccessDenied."""
    oauth.behaviour.approve = False
    messages: list[str] = []

    def read_pasted_url() -> str:
        return approve(authorize_url_in(messages), ca_file)

    with pytest.raises(AccessDenied, match="access_denied"):
        login(mode="manual", read_pasted_url=read_pasted_url, notify=messages.append)
    assert connections() == []


def test_manual_mode_times_out_without_waiting_for_the_paste(oauth: OAuthServer) -> None:
    """A paste that never comes: CallbackTimeout after the timeout, the reader is abandoned."""
    release = threading.Event()

    def read_pasted_url() -> str:
        release.wait(10)  # a terminal nobody types into
        return ""

    try:
        started = time.monotonic()
        with pytest.raises(CallbackTimeout, match=re.escape("no address was pasted within 0.3 s")):
            login(mode="manual", read_pasted_url=read_pasted_url, timeout=0.3)
        # asyncio.run returned without joining the reader's thread.
        assert time.monotonic() - started < 5
    finally:
        release.set()
    assert oauth.token_requests == []


# --- refusals and timeouts -------------------------------------------------


def test_access_denied_stores_nothing(oauth: OAuthServer, browser: Browser) -> None:
    """The user declines: AccessDenied with a hint, the page says so, no exchange, nothing stored."""
    oauth.behaviour.approve = False
    with pytest.raises(AccessDenied) as caught:
        login(open_browser=browser)
    assert "access_denied" in caught.value.message
    assert "approve" in (caught.value.hint or "")
    assert "Login cancelled" in browser.pages[0].text
    assert oauth.token_requests == []
    assert connections() == []
    callback = [e for e in audit_entries() if e.operation == "oauth.callback"]
    assert [e.outcome for e in callback] == ["denied"]


def test_no_callback_in_time_is_a_callback_timeout(oauth: OAuthServer, redirect_uri: str) -> None:
    """Print mode, nobody calls back: CallbackTimeout naming the timeout; the port is released."""
    messages: list[str] = []
    with pytest.raises(CallbackTimeout) as caught:
        login(mode="print", timeout=0.5, notify=messages.append)
    assert "no login callback arrived within 0.5 s" in caught.value.message
    assert "--timeout" in (caught.value.hint or "")
    assert authorize_url_in(messages)  # print mode showed the URL
    assert oauth.authorize_queries == []  # nobody opened it
    assert connections() == []
    port = urllib.parse.urlsplit(redirect_uri).port
    socket.create_server(("127.0.0.1", port)).close()
    assert [e.outcome for e in audit_entries() if e.operation == "oauth.callback"] == ["timeout"]


def test_browser_that_does_not_return_does_not_hold_the_login(
    oauth: OAuthServer, browser: Browser
) -> None:
    """A $BROWSER command that runs until the browser closes: the code is exchanged at once."""
    closed = threading.Event()

    def lingering(url: str) -> bool:
        browser(url)
        closed.wait(10)  # the browser stays open after the login
        return True

    try:
        started = time.monotonic()
        info = login(open_browser=lingering)
        assert time.monotonic() - started < 8
        assert not closed.is_set()
    finally:
        closed.set()
    assert info.name == "schwab"
    assert len(oauth.token_requests) == 1


@pytest.mark.usefixtures("oauth")
def test_a_browser_that_cannot_be_opened_shows_the_url(browser: Browser) -> None:
    """When no browser opens, the URL is shown so the user can open it; the login still works."""
    messages: list[str] = []
    shown = threading.Event()

    def notify(message: str) -> None:
        messages.append(message)
        if "Open this address in a browser" in message:
            shown.set()

    def user() -> None:
        # The person reads the URL from the terminal and opens it by hand.
        if shown.wait(10):
            browser(authorize_url_in(messages))

    def no_browser(url: str) -> bool:
        del url
        return False

    reader = threading.Thread(target=user, daemon=True)
    reader.start()
    try:
        info = login(open_browser=no_browser, notify=notify)
    finally:
        shown.set()
        reader.join(10)
    assert info.name == "schwab"
    assert browser.pages[0].status_code == 200


def test_a_non_loopback_redirect_uri_is_refused_before_any_browser(
    oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCHWAB_REDIRECT_URI on another host: RedirectUriError (exit 2), no browser, no URL shown."""
    opened: list[str] = []
    messages: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        return True

    for uri in ("https://192.0.2.1:8182", "https://example.com:8182", "http://127.0.0.1:8182"):
        monkeypatch.setenv("SCHWAB_REDIRECT_URI", uri)
        with pytest.raises(RedirectUriError) as caught:
            login(open_browser=opener, notify=messages.append)
        assert caught.value.exit_code == 2
        assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")
    assert opened == []
    assert messages == []
    assert oauth.authorize_queries == []
    assert connections() == []


def test_a_port_in_use_is_reported_before_any_browser(
    oauth: OAuthServer, redirect_uri: str
) -> None:
    """Another program on the redirect port: PortInUse names the port and the setting; no browser."""
    opened: list[str] = []
    port = urllib.parse.urlsplit(redirect_uri).port
    blocker = socket.create_server(("127.0.0.1", port))

    def browser(url: str) -> bool:
        opened.append(url)
        return False

    try:
        with pytest.raises(PortInUse) as caught:
            login(open_browser=browser)
    finally:
        blocker.close()
    assert f"port {port}" in caught.value.message
    assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")
    assert opened == []
    assert oauth.authorize_queries == []


# --- connections -----------------------------------------------------------


def test_a_second_login_under_the_same_name_replaces_the_tokens_only_when_it_succeeds(
    oauth: OAuthServer, browser: Browser
) -> None:
    """A failed or abandoned re-login leaves the old tokens usable; a good one replaces them."""
    first = login(open_browser=browser)
    _, old = tokens_of("schwab")

    oauth.behaviour.token_status = 500
    oauth.behaviour.token_body = b'{"message":"down"}'
    with pytest.raises(TokenExchangeFailed):
        login(open_browser=browser)
    oauth.behaviour.token_status = None
    with pytest.raises(CallbackTimeout):
        login(mode="print", timeout=0.3)  # abandoned: nobody logs in
    info, kept = tokens_of("schwab")
    assert kept == old
    assert (kept.access_token, kept.refresh_token) == (old.access_token, old.refresh_token)
    assert info.status == "active"

    second = login(open_browser=browser)
    _, new = tokens_of("schwab")
    assert new.access_token == oauth.issued[-1]["access_token"]
    assert new.access_token != old.access_token
    assert new.refresh_token != old.refresh_token
    assert new.issued_at > old.issued_at
    assert second.id == first.id  # the same connection, new tokens
    assert second.created_at == first.created_at
    assert [c.name for c in connections()] == ["schwab"]


def test_two_names_make_two_connections_to_one_provider(
    oauth: OAuthServer, browser: Browser
) -> None:
    """--name main and --name ira: two connections to Schwab, each with its own tokens."""
    main = login(open_browser=browser, name="main")
    ira = login(open_browser=browser, name="ira")
    assert main.id != ira.id
    assert [(c.name, c.provider) for c in connections()] == [("ira", "schwab"), ("main", "schwab")]
    assert tokens_of("main")[1].access_token == oauth.issued[0]["access_token"]
    assert tokens_of("ira")[1].access_token == oauth.issued[1]["access_token"]


# --- audit and logs --------------------------------------------------------


def test_the_audit_log_has_every_step_and_no_secret(oauth: OAuthServer, browser: Browser) -> None:
    """authorize, callback, token exchange (HTTP 200, correlation id), save: and no secret at all."""
    login(open_browser=browser)
    entries = audit_entries()
    steps = [(e.operation, e.outcome, e.http_status) for e in entries]
    assert steps == [
        ("oauth.authorize", "started", None),
        ("oauth.callback", "ok", None),
        ("oauth.token_exchange", "ok", 200),
        ("connection.save", "ok", None),
    ]
    exchange = entries[2]
    assert exchange.correlation_id  # Schwab-Client-CorrelId, for support
    assert exchange.duration_ms is not None
    assert all(e.connection == "schwab" and e.provider == "schwab" for e in entries)
    code = oauth.token_requests[0].form["code"]
    state = oauth.authorize_queries[0]["state"]
    issued = oauth.issued[0]
    secrets_ = [
        code,
        urllib.parse.quote(code, safe=""),
        state,
        issued["access_token"],
        issued["refresh_token"],
        issued["id_token"],
        oauth.client_secret,
        MASK,  # nothing was even written that needed masking
    ]
    for entry in entries:
        for value in entry.model_dump(mode="json").values():
            if isinstance(value, str):
                assert not any(s in value for s in secrets_), (entry.operation, value)


def test_a_failed_exchange_is_audited_with_its_status(oauth: OAuthServer, browser: Browser) -> None:
    """invalid_grant is recorded as a failed exchange with HTTP 400 and the provider's words."""
    oauth.behaviour.token_status = 400
    oauth.behaviour.token_body = b'{"error":"invalid_grant","error_description":"expired"}'
    with pytest.raises(TokenExchangeFailed):
        login(open_browser=browser)
    (failed,) = [e for e in audit_entries() if e.operation == "oauth.token_exchange"]
    assert (failed.outcome, failed.http_status) == ("failed", 400)
    assert "invalid_grant" in (failed.detail or "")
    assert "connection.save" not in {e.operation for e in audit_entries()}


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every record at DEBUG through the RedactingFilter, as the CLI's handler does.

    An earlier in-process CLI run may have given dashtam's and the libraries'
    loggers their own handlers without propagation: undo that for this test,
    and put it back after.
    """
    names = ("dashtam_cli", "httpx", "httpcore", "asyncio", "aiosqlite", "sqlalchemy")
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    caplog.handler.addFilter(RedactingFilter())
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)


def test_logs_never_hold_the_code_the_state_or_the_callback_url(
    oauth: OAuthServer, ca_file: Path, isolated_env: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, dashtam's and httpx's records name no code, state or callback URL."""
    browser = quiet_browser(ca_file, isolated_env)

    def open_url(url: str) -> bool:
        # A stray request first, so the listener logs a rejection too.
        assert _favicon(oauth.redirect_uri, isolated_env)
        return browser(url)

    login(open_browser=open_url)
    code = oauth.token_requests[0].form["code"]
    state = oauth.authorize_queries[0]["state"]
    text = debug_logs.text
    assert "connected Charles Schwab as 'schwab'" in text  # the capture works
    assert "HTTP Request: POST" in text  # httpx's request log was captured
    assert "login listener rejected a request: wrong path" in text
    for needle in (code, urllib.parse.quote(code, safe=""), state, "code=", "?code", MASK):
        assert needle not in text, needle
    assert oauth.redirect_uri + "/?" not in text


def _favicon(redirect_uri: str, home: Path) -> bool:
    """Ask the listener for /favicon.ico over TLS, as a browser does."""
    parts = urllib.parse.urlsplit(redirect_uri)
    assert parts.hostname is not None
    context = ssl.create_default_context(cafile=listener_cert(home))
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
    try:
        conn.request("GET", "/favicon.ico")
        return conn.getresponse().status == 404
    finally:
        conn.close()


# --- the smaller branches of the flow ---------------------------------------------------------

# RFC 7636, appendix B: a verifier and the S256 challenge it gives.
RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def _pending(*, pkce: bool) -> flow.PendingAuthorization:
    """A login in progress for a provider with (or without) PKCE."""
    spec = get_provider("schwab")
    spec = dataclasses.replace(spec, supports_pkce=pkce)
    credentials = AppCredentials(
        client_id="app-id-for-pkce",
        client_secret="app-secret-for-pkce",
        redirect_uri="https://127.0.0.1:8182",
        source="test",
    )
    target = parse_redirect_uri(credentials.redirect_uri, setting="SCHWAB_REDIRECT_URI")
    return flow.PendingAuthorization.new(spec, credentials, target)


def test_pkce_sends_the_s256_challenge_and_the_verifier_at_the_exchange() -> None:
    """With PKCE the consent URL carries SHA-256 of the verifier (RFC 7636), the exchange the verifier."""
    pending = dataclasses.replace(_pending(pkce=True), code_verifier=RFC7636_VERIFIER)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(pending.authorize_url()).query)
    assert query["code_challenge"] == [RFC7636_CHALLENGE]
    assert query["code_challenge_method"] == ["S256"]
    assert RFC7636_VERIFIER not in pending.authorize_url()
    assert pending.token_form("the-code")["code_verifier"] == RFC7636_VERIFIER


def test_without_pkce_nothing_of_it_is_sent() -> None:
    """A provider without PKCE gets no challenge and no verifier."""
    pending = _pending(pkce=False)
    assert pending.code_verifier is None
    assert "code_challenge" not in pending.authorize_url()
    assert "code_verifier" not in pending.token_form("the-code")


def test_a_new_pkce_verifier_is_fresh_and_of_legal_length() -> None:
    """Each login draws its own verifier of 43 to 128 unreserved characters (RFC 7636, 4.1)."""
    first, second = _pending(pkce=True), _pending(pkce=True)
    assert first.code_verifier is not None
    assert second.code_verifier is not None
    assert first.code_verifier != second.code_verifier
    assert 43 <= len(first.code_verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9\-._~]+", first.code_verifier)


def test_an_unknown_mode_is_refused_before_anything_is_opened() -> None:
    """A login mode that does not exist is a usage error; no vault is created for it."""
    with pytest.raises(InputError, match="unknown login mode 'carrier-pigeon'"):
        login(mode="carrier-pigeon")
    assert not load_settings().paths.vault_file.exists()


@pytest.mark.usefixtures("oauth")
def test_manual_mode_without_a_terminal_is_refused() -> None:
    """--manual with nothing to read the pasted address from says it needs a terminal."""
    with pytest.raises(InputError, match="--manual needs a terminal"):
        login(mode="manual", read_pasted_url=None)


def test_declining_to_replace_a_connection_keeps_it_and_opens_no_browser(
    oauth: OAuthServer, browser: Browser
) -> None:
    """Answering no to "replace it?" leaves the old tokens and never reaches the consent page."""
    login(open_browser=browser)
    _, old = tokens_of("schwab")
    asked: list[str] = []

    def decline(name: str) -> bool:
        asked.append(name)
        return False

    with pytest.raises(DashtamError, match="the connection 'schwab' was left as it is"):
        login(open_browser=browser, confirm_replace=decline)
    assert asked == ["schwab"]
    assert len(oauth.authorize_queries) == 1
    _, kept = tokens_of("schwab")
    assert kept == old


def test_a_browser_that_cannot_start_counts_as_not_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webbrowser's own error means "not opened" (the URL is shown instead), not a crash."""
    import webbrowser

    opened: list[tuple[str, int]] = []

    def fake_open(url: str, new: int = 0) -> bool:
        opened.append((url, new))
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    assert flow.open_with_webbrowser("https://example.test/consent") is True
    assert opened == [("https://example.test/consent", 2)]

    def broken_open(*_args: object, **_kwargs: object) -> bool:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken_open)
    assert flow.open_with_webbrowser("https://example.test/consent") is False
