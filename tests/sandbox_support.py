"""Helpers for the sandbox tests: a sandbox on a background event loop, a clock, an HTTP client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import re
import ssl
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx

from dashtam_cli.core.login import connect
from dashtam_cli.core.oauth.flow import LoginOptions
from dashtam_cli.core.settings import load_settings
from dashtam_cli.sandbox.app import Sandbox, SandboxConfig

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import pytest

    from dashtam_cli.core.models import ConnectionInfo

CONSENT = re.compile(r'name="consent" value="([^"]+)"')


class FakeClock:
    """Real time plus an offset the test moves, so tokens age without waiting.

    The sandbox takes it as ``clock`` (seconds, like ``time.time``); dashtam's
    token manager takes :meth:`now` (an aware datetime): both stay in step.
    """

    def __init__(self) -> None:
        """Start at the real time."""
        self.offset = 0.0

    def __call__(self) -> float:
        """Seconds since the epoch, shifted."""
        return time.time() + self.offset

    def now(self) -> dt.datetime:
        """The same instant as an aware UTC datetime."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.offset += seconds


@dataclasses.dataclass
class RunningSandbox:
    """A sandbox serving on 127.0.0.1, and what a client needs to reach it."""

    sandbox: Sandbox
    base_url: str
    ca_path: Path
    clock: FakeClock

    @property
    def config(self) -> SandboxConfig:
        """The sandbox's configuration."""
        return self.sandbox.config

    @property
    def redirect_uri(self) -> str:
        """The first registered redirect URI."""
        return self.config.redirect_uris[0]

    def use_plaid(self, monkeypatch: pytest.MonkeyPatch, redirect_uri: str) -> None:
        """Point dashtam's Plaid settings at this sandbox (its keys, its CA), with ``redirect_uri``."""
        monkeypatch.setenv("DASHTAM_PLAID_BASE_URL", self.base_url + "/plaid")
        monkeypatch.setenv("SSL_CERT_FILE", str(self.ca_path))
        monkeypatch.setenv("PLAID_CLIENT_ID", self.config.plaid_client_id)
        monkeypatch.setenv("PLAID_SECRET", self.config.plaid_secret)
        monkeypatch.setenv("PLAID_ENV", "sandbox")
        monkeypatch.setenv("PLAID_REDIRECT_URI", redirect_uri)

    def client(self) -> httpx.Client:
        """An HTTP client that trusts the sandbox's CA only, and follows no redirect."""
        return httpx.Client(
            base_url=self.base_url,
            verify=ssl.create_default_context(cafile=self.ca_path),
            follow_redirects=False,
            timeout=10,
        )


@contextlib.contextmanager
def run_sandbox(config: SandboxConfig, tls_dir: Path, clock: FakeClock) -> Iterator[RunningSandbox]:
    """Run ``Sandbox`` (an async context manager) on an event loop in a background thread.

    A thread of its own lets the test body stay synchronous and lets dashtam's
    code call ``asyncio.run`` in the main thread while the sandbox answers. The
    loop is stopped, its executor shut down and the loop closed on exit, even
    when starting failed.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox-loop", daemon=True)
    thread.start()
    sandbox = Sandbox(config, tls_dir, clock=clock)
    entered = False
    try:
        asyncio.run_coroutine_threadsafe(sandbox.__aenter__(), loop).result(timeout=30)
        entered = True
        assert sandbox.ca_path is not None
        yield RunningSandbox(sandbox, sandbox.base_url, sandbox.ca_path, clock)
    finally:
        try:
            if entered:
                stop = sandbox.__aexit__(None, None, None)
                asyncio.run_coroutine_threadsafe(stop, loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


def point_dashtam_at(running: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set what `dashtam sandbox serve` tells users to export, for dashtam in this process.

    The base URL, the sandbox's CA as SSL_CERT_FILE (TLS stays verified), the
    sandbox app's public credentials, and its registered redirect URI (a free
    loopback port, so dashtam's real listener binds it).
    """
    config = running.config
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", running.base_url)
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_path))
    monkeypatch.setenv("SCHWAB_API_KEY", config.client_id)
    monkeypatch.setenv("SCHWAB_API_SECRET", config.client_secret)
    monkeypatch.setenv("SCHWAB_REDIRECT_URI", running.redirect_uri)


def basic(client_id: str, secret: str) -> str:
    """An HTTP Basic authorization header value."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class SandboxApi:
    """Drives the sandbox over HTTPS as a browser and an OAuth client would."""

    def __init__(self, running: RunningSandbox) -> None:
        """Talk to ``running`` through a client that verifies its CA."""
        self.running = running
        self.http = running.client()

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    def authorize_url(self, **overrides: str) -> str:
        """The authorize path with the sandbox app's parameters (``overrides`` replace them)."""
        params = {
            "client_id": self.running.config.client_id,
            "redirect_uri": self.running.redirect_uri,
            "response_type": "code",
            "state": "st-123",
            **overrides,
        }
        return "/v1/oauth/authorize?" + urllib.parse.urlencode(params)

    def consent(self, **overrides: str) -> str:
        """Open the consent page and return its consent id."""
        page = self.http.get(self.authorize_url(**overrides))
        assert page.status_code == 200, page.text
        match = CONSENT.search(page.text)
        assert match is not None, page.text
        return match[1]

    def decide(self, consent: str, decision: str) -> httpx.Response:
        """Press Approve or Deny on the consent page."""
        return self.http.post(
            "/v1/oauth/authorize/decision", data={"consent": consent, "decision": decision}
        )

    def code(self, **overrides: str) -> str:
        """Approve a login and return the code from the redirect, decoded."""
        answer = self.decide(self.consent(**overrides), "approve")
        assert answer.status_code == 302, answer.text
        query = urllib.parse.urlsplit(answer.headers["location"]).query
        return urllib.parse.parse_qs(query)["code"][0]

    def token(
        self, form: dict[str, str], *, authorization: str | None = "default"
    ) -> httpx.Response:
        """POST ``form`` to the token endpoint, with the app's Basic auth unless told otherwise."""
        config = self.running.config
        headers = {}
        if authorization == "default":
            headers["Authorization"] = basic(config.client_id, config.client_secret)
        elif authorization is not None:
            headers["Authorization"] = authorization
        return self.http.post("/v1/oauth/token", data=form, headers=headers)

    def exchange(self, code: str) -> httpx.Response:
        """Exchange ``code`` for tokens."""
        return self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.running.redirect_uri,
            }
        )

    def login(self) -> dict[str, Any]:
        """A whole login: consent, approve, exchange; the token response."""
        answer = self.exchange(self.code())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def get(self, path: str, token: str | None, query: str = "") -> httpx.Response:
        """GET a Trader API path (``/trader/v1`` + ``path``) with a raw, already encoded query."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = "/trader/v1" + path + (f"?{query}" if query else "")
        return self.http.get(url, headers=headers)

    def hashes(self, token: str) -> list[str]:
        """The account hashes, in the sandbox's order."""
        answer = self.get("/accounts/accountNumbers", token)
        assert answer.status_code == 200, answer.text
        return [item["hashValue"] for item in answer.json()]


def schwab_time(moment: dt.datetime) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` in UTC, as Schwab wants dates in queries."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def transactions_query(
    start: dt.datetime, end: dt.datetime, types: str = "TRADE", symbol: str | None = None
) -> str:
    """An encoded transactions query; a symbol's spaces go as %20, commas in types stay."""
    parts = [
        f"startDate={urllib.parse.quote(schwab_time(start))}",
        f"endDate={urllib.parse.quote(schwab_time(end))}",
        f"types={urllib.parse.quote(types, safe=',')}",
    ]
    if symbol is not None:
        parts.append(f"symbol={urllib.parse.quote(symbol, safe='')}")
    return "&".join(parts)


class ConsentingBrowser:
    """A browser: open the consent page, press ``decision``, follow the redirect to the listener.

    The sandbox is verified against its CA, the listener against the
    certificate dashtam made in $DASHTAM_HOME/data/tls: both TLS hops are real.
    The listener's answers are kept in ``pages``.
    """

    def __init__(self, running: RunningSandbox, home: Path, decision: str = "approve") -> None:
        """Browse ``running``'s consent page for dashtam at ``home``, answering ``decision``."""
        self.running = running
        self.home = home
        self.decision = decision
        self.pages: list[httpx.Response] = []

    def __call__(self, url: str) -> bool:
        """Open ``url`` as dashtam's ``open_browser`` would; True, as a browser that opened."""
        sandbox_tls = ssl.create_default_context(cafile=self.running.ca_path)
        with httpx.Client(verify=sandbox_tls) as client:
            page = client.get(url)
            consent = CONSENT.search(page.text)
            assert consent is not None, page.text
            answer = client.post(
                self.running.base_url + "/v1/oauth/authorize/decision",
                data={"consent": consent[1], "decision": self.decision},
            )
        assert answer.status_code == 302
        listener_tls = ssl.create_default_context(
            cafile=self.home / "data" / "tls" / "listener-cert.pem"
        )
        with httpx.Client(verify=listener_tls) as client:
            self.pages.append(client.get(answer.headers["location"]))
        return True


def login(running: RunningSandbox, home: Path, decision: str = "approve") -> ConnectionInfo:
    """`dashtam connect schwab` through the real flow, the browser pressing ``decision``."""
    browser = ConsentingBrowser(running, home, decision)
    options = LoginOptions(open_browser=browser, timeout=20)
    info = asyncio.run(connect(load_settings(), "schwab", options))
    (page,) = browser.pages
    assert page.status_code == 200
    return info
