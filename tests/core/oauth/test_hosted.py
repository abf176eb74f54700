"""The hosted-page login over real TLS: the page, its policy, its one result, and hostile requests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from listener_support import HOSTILE, request, status
from oauth_fixtures import free_port

from dashtam_cli.core.errors import InputError
from dashtam_cli.core.oauth.errors import CallbackTimeout, LoginCancelled, PortInUse
from dashtam_cli.core.oauth.flow import LoginOptions
from dashtam_cli.core.oauth.hosted import HostedPage, hosted_login
from dashtam_cli.core.oauth.listener import RedirectTarget, parse_redirect_uri
from dashtam_cli.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

LINK_TOKEN = "link-sandbox-0b5e3c1d-9f7a-4c2e-8d61-5a0f4e2b7c93"
PUBLIC_TOKEN = "public-sandbox-6c1f0a2e-3b4d-4e5f-9a8b-7c6d5e4f3a2b"
BODY = (
    '<div id="widget" data-kind="link"></div>\n'
    '<script nonce="{{nonce}}">window.startWidget("' + LINK_TOKEN + '");</script>'
)
PAGE = HostedPage(
    title="Sandbox <Bank> & Co",
    body=BODY,
    script_sources=("https://cdn.example.test/link/v2/stable/link-initialize.js",),
    frame_sources=("https://cdn.example.test",),
    connect_sources=("https://127.0.0.1:9443", "https://[::1]:9443"),
    secrets=(LINK_TOKEN,),
    result_fields=("public_token", "institution"),
    setting="EXAMPLE_LINK_URI",
)
FIELDS = {"public_token": PUBLIC_TOKEN, "institution": "First Platypus Bank"}


class Notes:
    """The audit hook: every note it was given, in order."""

    def __init__(self) -> None:
        """Start with none."""
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(  # noqa: PLR0913 - the audit columns
        self,
        operation: str,
        outcome: str,
        *,
        http_status: int | None = None,
        duration_ms: int | None = None,
        correlation_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Keep one note."""
        self.records.append(
            (
                operation,
                outcome,
                {
                    "http_status": http_status,
                    "duration_ms": duration_ms,
                    "correlation_id": correlation_id,
                    "detail": detail,
                },
            )
        )

    def steps(self) -> list[tuple[str, str]]:
        """The operation and outcome of each note."""
        return [(op, outcome) for op, outcome, _ in self.records]


class Login:
    """One hosted login running in the background, with what a test needs to play the browser."""

    def __init__(self, settings: Settings, target: RedirectTarget, url: str) -> None:
        """Keep the login's address and its listener certificate."""
        self.target = target
        self.url = url
        self.port = target.port
        self.cert = settings.paths.data_dir / "tls" / "listener-cert.pem"
        self.origin = f"https://127.0.0.1:{target.port}"
        self.state = url.split("state=", 1)[1]

    def client(self) -> httpx.AsyncClient:
        """An HTTPS client that trusts exactly the listener's certificate."""
        return httpx.AsyncClient(verify=ssl.create_default_context(cafile=self.cert))

    async def page(self) -> httpx.Response:
        """GET the page, as the browser does."""
        async with self.client() as client:
            return await client.get(self.url)

    async def post(self, payload: object) -> httpx.Response:
        """POST to /link/done as the page's script does (same origin, JSON)."""
        async with self.client() as client:
            return await client.post(
                f"{self.origin}/link/done",
                content=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json", "Origin": self.origin},
            )

    async def finish(self, fields: dict[str, Any] | None = None) -> httpx.Response:
        """POST the good result."""
        return await self.post({"state": self.state, "fields": fields or FIELDS})

    def raw_post(self, body: bytes, **headers: str) -> bytes:
        """A POST to /link/done as raw bytes; headers default to the page's own."""
        values = {
            "Host": f"127.0.0.1:{self.port}",
            "Origin": self.origin,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        } | {name.replace("_", "-"): value for name, value in headers.items()}
        head = "".join(f"{name}: {value}\r\n" for name, value in values.items())
        return f"POST /link/done HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body

    def good_body(self) -> bytes:
        """The JSON body of the good result."""
        return json.dumps({"state": self.state, "fields": FIELDS}).encode()

    async def half_posted(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection that sent the good POST's head and half its body, then stopped."""
        context = ssl.create_default_context(cafile=self.cert)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=context, server_hostname="127.0.0.1"
        )
        body = self.good_body()
        writer.write(self.raw_post(body)[: -len(body) // 2])
        await writer.drain()
        return reader, writer


def run(  # noqa: PLR0913 - the login's knobs
    tmp_path: Path,
    act: Callable[[Login], Awaitable[None]],
    *,
    page: HostedPage = PAGE,
    mode: str = "browser",
    timeout: float = 20.0,
    notes: Notes | None = None,
    messages: list[str] | None = None,
) -> dict[str, str]:
    """Run ``hosted_login`` while ``act`` plays the browser at the URL it opens; its result."""
    del tmp_path  # the settings live under the isolated DASHTAM_HOME
    settings = load_settings()
    target = parse_redirect_uri(f"https://127.0.0.1:{free_port()}", setting="EXAMPLE_LINK_URI")
    said = messages if messages is not None else []

    async def main() -> dict[str, str]:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[str] = loop.create_future()

        def browser(url: str) -> bool:
            loop.call_soon_threadsafe(opened.set_result, url)
            return True

        def notify(message: str) -> None:
            said.append(message)
            if mode == "print" and "/link?state=" in message:
                opened.set_result(re.findall(r"https://\S+", message)[-1])

        options = LoginOptions(mode=mode, timeout=timeout, notify=notify, open_browser=browser)
        login = asyncio.ensure_future(
            hosted_login(settings, target, page, options, notes or Notes())
        )
        first: set[asyncio.Future[Any]] = {login, opened}
        done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if opened in done:
            acting = asyncio.ensure_future(act(Login(settings, target, opened.result())))
            either: set[asyncio.Future[Any]] = {login, acting}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if acting.done():
                acting.result()  # an assertion that failed in the browser's part
            else:
                await asyncio.wait_for(acting, 20)
        return await login

    return asyncio.run(main())


def policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as directive -> sources."""
    out: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in out
        out[name] = sources
    return out


def test_the_page_is_served_with_its_policy_and_its_result_returned(tmp_path: Path) -> None:
    """GET /link?state=: the page with every CSP directive; the good POST returns the fields."""
    notes = Notes()
    seen: dict[str, Any] = {}

    async def act(login: Login) -> None:
        page = await login.page()
        seen["page"] = page
        answer = await login.finish({**FIELDS, "extra": "dropped", "other": 5})
        assert answer.status_code == 200
        assert answer.json() == {"ok": True}
        assert answer.headers["content-type"] == "application/json"
        seen["after"] = login

    result = run(tmp_path, act, notes=notes)
    assert result == FIELDS  # unknown keys dropped
    page = seen["page"]
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    csp = policy(page.headers["content-security-policy"])
    (nonce_source,) = [s for s in csp["script-src"] if s.startswith("'nonce-")]
    nonce = nonce_source.removeprefix("'nonce-").removesuffix("'")
    assert len(nonce) >= 22  # at least 128 bits, base64url
    assert csp == {
        "default-src": ["'none'"],
        "script-src": [f"'nonce-{nonce}'", *PAGE.script_sources],
        "frame-src": list(PAGE.frame_sources),
        "connect-src": ["'self'", *PAGE.connect_sources],
        "style-src": [f"'nonce-{nonce}'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    text = page.text
    assert BODY.replace("{{nonce}}", nonce) in text  # the body as given, unescaped
    assert "{{nonce}}" not in text
    assert "<title>Sandbox &lt;Bank&gt; &amp; Co</title>" in text
    assert "<h1>Sandbox &lt;Bank&gt; &amp; Co</h1>" in text
    assert "<Bank>" not in text
    # Every script and style element carries the nonce; nothing is loaded from elsewhere.
    assert len(re.findall(r"<script\b", text)) == len(re.findall(f'<script nonce="{nonce}">', text))
    assert re.findall(r"<style\b[^>]*>", text) == [f'<style nonce="{nonce}">']
    own = text.replace(BODY.replace("{{nonce}}", nonce), "")
    assert not re.search(r"\b(src|href)=|@import|url\(", own)
    assert 'credentials: "same-origin"' in own
    assert "window.dashtamFinish" in own
    assert "window.dashtamCancel" in own
    assert "Done: you can close this window" in own
    assert notes.steps() == [("login.page", "served"), ("login.done", "ok")]

    # One-shot: the listener is gone once the result is in.
    with pytest.raises(OSError):  # noqa: PT011 - refused: nothing listens any more
        socket.create_connection(("127.0.0.1", seen["after"].port), timeout=5).close()


def test_each_login_has_a_fresh_nonce_and_state(tmp_path: Path) -> None:
    """Two logins: different nonces in their policies, different states in their URLs."""
    nonces: list[str] = []
    states: list[str] = []

    async def act(login: Login) -> None:
        page = await login.page()
        csp = policy(page.headers["content-security-policy"])
        nonces.append(csp["style-src"][0])
        states.append(login.state)
        assert (await login.finish()).status_code == 200

    run(tmp_path, act)
    run(tmp_path, act)
    assert len(set(nonces)) == 2
    assert len(set(states)) == 2
    assert all(len(state) >= 43 for state in states)  # 256 bits, base64url


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", 400),
        ("?state=", 400),
        ("?state=forged", 400),
        ("?state={state}&state={state}", 400),
        ("?state={state}x", 400),
    ],
)
def test_no_page_without_the_right_state(tmp_path: Path, query: str, code: int) -> None:
    """No state, an empty, forged, doubled or longer state: an error page, no widget, no result."""
    notes = Notes()

    async def act(login: Login) -> None:
        async with login.client() as client:
            answer = await client.get(f"{login.origin}/link{query.format(state=login.state)}")
        assert answer.status_code == code
        assert LINK_TOKEN not in answer.text
        assert "dashtamFinish" not in answer.text
        assert "This is not the login dashtam is waiting for" in answer.text
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert notes.steps() == []  # no page served, nothing settled
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, notes=notes) == FIELDS
    assert notes.steps() == [("login.done", "ok")]


REFUSED_POSTS: list[tuple[str, Callable[[Login], bytes], int]] = [
    (
        "wrong state",
        lambda lg: lg.raw_post(json.dumps({"state": "forged", "fields": FIELDS}).encode()),
        400,
    ),
    (
        "no state",
        lambda lg: lg.raw_post(json.dumps({"fields": FIELDS}).encode()),
        400,
    ),
    (
        "state not text",
        lambda lg: lg.raw_post(json.dumps({"state": [lg.state], "fields": FIELDS}).encode()),
        400,
    ),
    ("another site", lambda lg: lg.raw_post(lg.good_body(), Origin="https://evil.example"), 403),
    (
        "another port",
        lambda lg: lg.raw_post(lg.good_body(), Origin=f"https://127.0.0.1:{lg.port + 1}"),
        403,
    ),
    (
        "plain http origin",
        lambda lg: lg.raw_post(lg.good_body(), Origin=lg.origin[:4] + lg.origin[5:]),
        403,
    ),
    ("null origin", lambda lg: lg.raw_post(lg.good_body(), Origin="null"), 403),
    ("wrong host", lambda lg: lg.raw_post(lg.good_body(), Host="evil.example"), 421),
    ("host without port", lambda lg: lg.raw_post(lg.good_body(), Host="127.0.0.1"), 421),
    (
        "localhost",
        lambda lg: lg.raw_post(lg.good_body(), Host=f"localhost:{lg.port}"),
        421,
    ),
    (
        "form",
        lambda lg: lg.raw_post(lg.good_body(), Content_Type="application/x-www-form-urlencoded"),
        415,
    ),
    ("text", lambda lg: lg.raw_post(lg.good_body(), Content_Type="text/plain"), 415),
    (
        "json lookalike",
        lambda lg: lg.raw_post(lg.good_body(), Content_Type="application/jsonx"),
        415,
    ),
    (
        "oversized",
        lambda lg: lg.raw_post(
            json.dumps({"state": lg.state, "fields": {**FIELDS, "pad": "x" * 17000}}).encode()
        ),
        413,
    ),
    ("not json", lambda lg: lg.raw_post(b"state=" + lg.state.encode()), 400),
    ("not utf-8", lambda lg: lg.raw_post(b'{"state": "\xff\xfe"}'), 400),
    ("deeply nested", lambda lg: lg.raw_post(b"[" * 8000 + b"]" * 8000), 400),
    ("a list", lambda lg: lg.raw_post(json.dumps([lg.state, FIELDS]).encode()), 400),
    (
        "fields not strings",
        lambda lg: lg.raw_post(
            json.dumps(
                {"state": lg.state, "fields": {"public_token": 5, "institution": "x"}}
            ).encode()
        ),
        400,
    ),
    (
        "fields a list",
        lambda lg: lg.raw_post(json.dumps({"state": lg.state, "fields": [PUBLIC_TOKEN]}).encode()),
        400,
    ),
    (
        "missing field",
        lambda lg: lg.raw_post(
            json.dumps({"state": lg.state, "fields": {"public_token": PUBLIC_TOKEN}}).encode()
        ),
        400,
    ),
    (
        "cancelled not true",
        lambda lg: lg.raw_post(json.dumps({"state": lg.state, "cancelled": "yes"}).encode()),
        400,
    ),
    (
        "chunked",
        lambda lg: (
            lg.raw_post(b"", Content_Length="", Transfer_Encoding="chunked").replace(
                b"Content-Length: \r\n", b""
            )
            + b"0\r\n\r\n"
        ),
        411,
    ),
    ("bad length", lambda lg: lg.raw_post(lg.good_body(), Content_Length="12abc"), 400),
    # A latin-1 digit that str.isdigit() accepts and int() does not.
    ("superscript length", lambda lg: lg.raw_post(b"{}", Content_Length="\xb2"), 400),
    (
        "two lengths",
        lambda lg: lg.raw_post(lg.good_body()).replace(
            b"Content-Type", f"Content-Length: {len(lg.good_body())}\r\nContent-Type".encode()
        ),
        400,
    ),
    (
        "GET the result path",
        lambda lg: (
            f"GET /link/done?state={lg.state} HTTP/1.1\r\nHost: 127.0.0.1:{lg.port}\r\n\r\n".encode()
        ),
        405,
    ),
    (
        "preflight",
        lambda lg: lg.raw_post(b"").replace(b"POST", b"OPTIONS", 1),
        405,
    ),
    (
        "POST the page",
        lambda lg: lg.raw_post(lg.good_body()).replace(
            b"/link/done", f"/link?state={lg.state}".encode(), 1
        ),
        405,
    ),
    ("malformed header", lambda lg: lg.raw_post(lg.good_body(), **{"Bad Name": "x"}), 400),
]


@pytest.mark.parametrize(
    ("raw", "code"),
    [(raw, code) for _, raw, code in REFUSED_POSTS],
    ids=[n for n, *_ in REFUSED_POSTS],
)
def test_refused_results_keep_the_login_waiting(
    tmp_path: Path, raw: Callable[[Login], bytes], code: int
) -> None:
    """Each bad POST is refused with its status and settles nothing; the good POST after wins."""
    notes = Notes()

    async def act(login: Login) -> None:
        answer = await request(login.port, login.cert, raw(login))
        assert status(answer) == code
        assert b'"ok"' not in answer
        assert notes.steps() == []
        assert (await login.page()).status_code == 200
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, notes=notes) == FIELDS


@pytest.mark.parametrize("raw", HOSTILE)
def test_the_callbacks_hostile_requests_are_refused_here_too(tmp_path: Path, raw: bytes) -> None:
    """The OAuth callback's corpus, thrown at the hosted listener: each refused, the login completes."""

    async def act(login: Login) -> None:
        answer = await request(login.port, login.cert, raw)
        assert 400 <= status(answer) < 500
        assert LINK_TOKEN.encode() not in answer
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act) == FIELDS


def test_plain_http_idle_and_half_sent_clients_do_not_block(tmp_path: Path) -> None:
    """Plain HTTP gets 400; idle sockets and a POST that never sends its body hold nothing up."""

    async def act(login: Login) -> None:
        plain_r, plain_w = await asyncio.open_connection("127.0.0.1", login.port)
        plain_w.write(login.raw_post(login.good_body()))
        await plain_w.drain()
        assert (await asyncio.wait_for(plain_r.read(), 5)).startswith(b"HTTP/1.1 400")
        plain_w.close()
        idle = [socket.create_connection(("127.0.0.1", login.port)) for _ in range(10)]
        _, half = await login.half_posted()
        try:
            assert (await login.finish()).status_code == 200
        finally:
            for sock in idle:
                sock.close()
            half.close()

    assert run(tmp_path, act) == FIELDS


def test_after_the_result_every_request_of_the_login_is_gone() -> None:
    """One-shot: once a result (or a cancel) is taken, the page and any other result get 410."""
    from dashtam_cli.core.oauth.hosted import _HostedRoute
    from dashtam_cli.core.oauth.listener import Request

    target = parse_redirect_uri("https://127.0.0.1:8182", setting="X")
    state = "t" * 43
    route = _HostedRoute(target, PAGE, state, "n" * 24)
    host = (("host", "127.0.0.1:8182"),)
    json_post = (*host, ("content-type", "application/json"))

    def post(payload: object) -> Request:
        return Request("POST", "/link/done", json_post, json.dumps(payload).encode())

    page = Request("GET", f"/link?state={state}", host)
    assert status(route(page).response) == 200
    first = route(post({"state": state, "fields": FIELDS}))
    assert status(first.response) == 200
    assert first.outcome == FIELDS
    for late in (
        post({"state": state, "fields": {**FIELDS, "public_token": "other-token"}}),
        post({"state": state, "cancelled": True}),
        page,
    ):
        answer = route(late)
        assert status(answer.response) == 410
        assert answer.outcome is None
        assert answer.rejected == "login already finished"


def test_cancel_ends_the_login_with_exit_1(tmp_path: Path) -> None:
    """A cancel with a forged state is ignored; with the right one: LoginCancelled, exit 1."""
    notes = Notes()
    message = "\x1b[31mInstitution\x07 not found\x1b[0m " + "y" * 500 + " " + LINK_TOKEN

    async def act(login: Login) -> None:
        forged = await login.post({"state": "forged", "cancelled": True, "message": "x"})
        assert forged.status_code == 400
        assert notes.steps() == []
        answer = await login.post({"state": login.state, "cancelled": True, "message": message})
        assert answer.status_code == 200
        assert answer.json() == {"ok": True}

    with pytest.raises(LoginCancelled) as caught:
        run(tmp_path, act, notes=notes)
    error = caught.value
    assert error.exit_code == 1
    assert error.message.startswith(
        "the login was closed before it finished (Institution not found"
    )
    assert "\x1b" not in error.message
    assert "\x07" not in error.message
    assert LINK_TOKEN not in error.message
    assert len(error.message) < 250  # the page's message is capped
    assert error.hint == "run the same command again"
    assert notes.steps() == [("login.cancelled", "cancelled")]


def test_a_cancel_without_a_message(tmp_path: Path) -> None:
    """A cancel with no message (the widget's exit without an error) says only that it was closed."""

    async def act(login: Login) -> None:
        assert (await login.page()).status_code == 200
        assert (await login.post({"state": login.state, "cancelled": True})).status_code == 200

    with pytest.raises(LoginCancelled) as caught:
        run(tmp_path, act)
    assert caught.value.message == "the login was closed before it finished"


def test_timeout(tmp_path: Path) -> None:
    """No result within the timeout: CallbackTimeout (exit 1), audited, and the port is free after."""
    notes = Notes()
    ports: list[int] = []

    async def act(login: Login) -> None:
        ports.append(login.port)
        assert (await login.page()).status_code == 200

    with pytest.raises(CallbackTimeout) as caught:
        run(tmp_path, act, timeout=1.0, notes=notes)
    assert caught.value.exit_code == 1
    assert "within 1 s" in caught.value.message
    assert notes.steps() == [("login.page", "served"), ("login.done", "timeout")]
    socket.create_server(("127.0.0.1", ports[0])).close()


def test_port_in_use_names_the_setting(tmp_path: Path) -> None:
    """A taken port: PortInUse (exit 1) naming the port and, in its hint, the page's setting; audited."""
    del tmp_path
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="EXAMPLE_LINK_URI")
    blocker = socket.create_server(("127.0.0.1", port))
    notes = Notes()
    try:
        with pytest.raises(PortInUse) as caught:
            asyncio.run(hosted_login(load_settings(), target, PAGE, LoginOptions(), notes))
    finally:
        blocker.close()
    assert f"port {port}" in caught.value.message
    assert caught.value.exit_code == 1
    assert "EXAMPLE_LINK_URI" in (caught.value.hint or "")
    assert notes.steps() == [("login.done", "failed")]


def test_no_browser_prints_the_url(tmp_path: Path) -> None:
    """--no-browser (mode print): the page's URL is given to notify, and the browser is never run."""
    messages: list[str] = []

    async def act(login: Login) -> None:
        assert login.url == f"{login.origin}/link?state={login.state}"
        assert (await login.page()).status_code == 200
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, mode="print", messages=messages) == FIELDS
    assert not any("Opening your browser" in m for m in messages)
    assert any("/link?state=" in m and "Open this address" in m for m in messages)
    assert any("self-signed" in m for m in messages)


def test_manual_mode_is_refused(tmp_path: Path) -> None:
    """--manual cannot work for a page that posts to the listener: a one-line usage error (exit 2)."""
    del tmp_path
    target = parse_redirect_uri(f"https://127.0.0.1:{free_port()}", setting="X")
    with pytest.raises(InputError) as caught:
        asyncio.run(
            hosted_login(load_settings(), target, PAGE, LoginOptions(mode="manual"), Notes())
        )
    assert caught.value.exit_code == 2
    assert "\n" not in caught.value.message
    assert "--no-browser" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "source",
    [
        "https://cdn.example.test; script-src *",
        "https://cdn.example.test 'unsafe-inline'",
        "http://cdn.example.test",
        "*",
        "https://cdn.example.test,https://x",
    ],
)
def test_a_source_that_would_widen_the_policy_is_refused(tmp_path: Path, source: str) -> None:
    """A source with a separator, a keyword, a wildcard or plain http never reaches the policy."""
    del tmp_path
    target = parse_redirect_uri(f"https://127.0.0.1:{free_port()}", setting="X")
    page = HostedPage(title="t", body="", connect_sources=(source,))
    options = LoginOptions(mode="print", timeout=2)
    with pytest.raises(InputError) as caught:
        asyncio.run(hosted_login(load_settings(), target, page, options, Notes()))
    assert "only load https addresses" in caught.value.message


def test_interrupted_login_is_audited_and_releases_the_port(tmp_path: Path) -> None:
    """Ctrl-C (the task cancelled) while waiting: audited as interrupted, the port is free after."""
    del tmp_path
    notes = Notes()
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="X")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[str] = loop.create_future()

        def browser(url: str) -> bool:
            loop.call_soon_threadsafe(opened.set_result, url)
            return True

        options = LoginOptions(open_browser=browser, timeout=20)
        login = asyncio.ensure_future(hosted_login(load_settings(), target, PAGE, options, notes))
        await asyncio.wait_for(opened, 10)
        login.cancel()
        with pytest.raises(asyncio.CancelledError):
            await login

    asyncio.run(main())
    assert notes.steps() == [("login.done", "interrupted")]
    socket.create_server(("127.0.0.1", port)).close()


@pytest.fixture
def dashtam_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of dashtam's loggers at DEBUG, unfiltered (no RedactingFilter in the way).

    An earlier in-process CLI run may have given dashtam's logger its own
    handler without propagation: undo that for this test, and put it back after.
    """
    logger = logging.getLogger("dashtam_cli")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def test_no_secret_in_logs_or_audit(tmp_path: Path, dashtam_logs: pytest.LogCaptureFixture) -> None:
    """The state, the link token and the result never reach a log record or an audit note."""
    caplog = dashtam_logs
    notes = Notes()
    states: list[str] = []

    async def act(login: Login) -> None:
        states.append(login.state)
        wrong_host = f"GET /link?state={login.state} HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        for raw in (
            wrong_host.encode(),
            login.raw_post(json.dumps({"state": login.state + "x", "fields": FIELDS}).encode()),
            login.raw_post(login.good_body(), Origin="https://evil.example"),
            login.raw_post(json.dumps({"state": login.state, "fields": {"x": 1}}).encode()),
        ):
            assert status(await request(login.port, login.cert, raw)) >= 400
        assert (await login.page()).status_code == 200
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, notes=notes) == FIELDS
    # dashtam's own records (the test's httpx client logs the URL it fetched).
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("dashtam_cli")
    )
    assert "wrong Origin" in logged  # the listener did log its refusals
    audit = json.dumps(notes.records)
    for secret in (states[0], LINK_TOKEN, PUBLIC_TOKEN):
        assert secret not in logged
        assert secret not in audit


def test_a_body_not_sent_in_time_gets_408_and_the_login_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST whose body stops half-way is answered 408 after the idle bound; the login still ends."""
    import functools

    from dashtam_cli.core.oauth import hosted
    from dashtam_cli.core.oauth.listener import LoopbackListener

    shorter = functools.partial(LoopbackListener, idle_timeout=0.5)
    monkeypatch.setattr(hosted, "LoopbackListener", shorter)

    async def act(login: Login) -> None:
        reader, half = await login.half_posted()
        answer = await asyncio.wait_for(reader.read(), 10)
        half.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act) == FIELDS


# -- the provider's redirect back to the page (Plaid's OAuth institutions) ---------------------

RETURN_PAGE = dataclasses.replace(PAGE, return_parameter="oauth_state_id")
STATE_ID = "9a3b5c7d-1e2f-4a6b-8c0d-2e4f6a8b0c1d"


def _route(page: HostedPage = RETURN_PAGE) -> tuple[Any, str]:
    """A hosted login's route on 127.0.0.1:8182, and its state."""
    from dashtam_cli.core.oauth.hosted import _HostedRoute

    target = parse_redirect_uri("https://127.0.0.1:8182", setting="X")
    state = "t" * 43
    return _HostedRoute(target, page, state, "n" * 24), state


def _get(target: str) -> Any:
    from dashtam_cli.core.oauth.listener import Request

    return Request("GET", target, (("host", "127.0.0.1:8182"),))


def _post(payload: object) -> Any:
    from dashtam_cli.core.oauth.listener import Request

    headers = (("host", "127.0.0.1:8182"), ("content-type", "application/json"))
    return Request("POST", "/link/done", headers, json.dumps(payload).encode())


def test_the_providers_return_is_served_the_page_and_audited_without_its_value(
    tmp_path: Path, dashtam_logs: pytest.LogCaptureFixture
) -> None:
    """After the page, GET /link?oauth_state_id=ID (no state) gets the same page, and is noted.

    The audit has the page served, then the return, then the login's end; the
    parameter's value is in no audit note and no log record of dashtam's.
    """
    notes = Notes()
    seen: dict[str, Any] = {}

    async def act(login: Login) -> None:
        first = await login.page()
        async with login.client() as client:
            back = await client.get(f"{login.origin}/link?oauth_state_id={STATE_ID}")
        seen["first"], seen["back"] = first, back
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, page=RETURN_PAGE, notes=notes) == FIELDS
    first, back = seen["first"], seen["back"]
    assert back.status_code == 200
    assert back.text == first.text  # the same page: the same state and link token in it
    assert LINK_TOKEN in back.text
    csp = back.headers["content-security-policy"]
    assert csp == first.headers["content-security-policy"]
    assert back.headers["x-frame-options"] == "DENY"
    assert notes.steps() == [
        ("login.page", "served"),
        ("login.page", "returned"),
        ("login.done", "ok"),
    ]
    logged = "\n".join(
        r.getMessage() for r in dashtam_logs.records if r.name.startswith("dashtam_cli")
    )
    assert STATE_ID not in json.dumps(notes.records)
    assert STATE_ID not in logged


def test_a_return_before_the_page_was_served_is_refused() -> None:
    """The return is only for a login whose page was opened: before it, 400 as a wrong state."""
    route, state = _route()
    early = route(_get(f"/link?oauth_state_id={STATE_ID}"))
    assert status(early.response) == 400
    assert LINK_TOKEN.encode() not in early.response
    assert early.rejected == "return before the page was served"
    assert not route.served.is_set()
    assert status(route(_get(f"/link?state={state}")).response) == 200
    assert status(route(_get(f"/link?oauth_state_id={STATE_ID}")).response) == 200


def test_a_page_without_a_return_parameter_refuses_the_return() -> None:
    """A page that declares no return parameter (the default) answers it 400, page served or not."""
    route, state = _route(PAGE)
    assert status(route(_get(f"/link?state={state}")).response) == 200
    answer = route(_get(f"/link?oauth_state_id={STATE_ID}"))
    assert status(answer.response) == 400
    assert LINK_TOKEN.encode() not in answer.response
    assert answer.rejected == "missing or wrong state"
    assert route.returns == 0


@pytest.mark.parametrize(
    "query",
    [
        "oauth_state_id=",
        "oauth_state_id=" + "a" * 257,
        "oauth_state_id=a%20b",
        "oauth_state_id=a+b",
        "oauth_state_id=%C3%A9t%C3%A9",
        "oauth_state_id=a%00b",
        "oauth_state_id=a%0d%0aX:%20y",
        "oauth_state_id=a%7f",
        "oauth_state_id=a&oauth_state_id=b",
        "oauth_state_id=a&oauth_state_id=a",
        "oauth_state_id=a&other=b",
        "OAUTH_STATE_ID=a",
        "oauth_state_idx=a",
        "oauth_state_id",
    ],
)
def test_a_malformed_return_is_refused(query: str) -> None:
    """An empty, over-long, unprintable, doubled or accompanied parameter: 400, no page."""
    route, state = _route()
    assert status(route(_get(f"/link?state={state}")).response) == 200
    answer = route(_get(f"/link?{query}"))
    assert status(answer.response) == 400
    assert LINK_TOKEN.encode() not in answer.response
    assert route.returns == 0


def test_the_longest_return_value_is_served() -> None:
    """256 printable characters (the cap) are a return; one more is not (see above)."""
    route, state = _route()
    route(_get(f"/link?state={state}"))
    answer = route(_get("/link?oauth_state_id=" + "A~-._!" * 42 + "Zz0z"))
    assert len("A~-._!" * 42 + "Zz0z") == 256
    assert status(answer.response) == 200
    assert route.returns == 1


def test_a_return_after_the_login_finished_is_gone() -> None:
    """Once the result is in, the return gets 410 as the page does."""
    route, state = _route()
    route(_get(f"/link?state={state}"))
    assert status(route(_get(f"/link?oauth_state_id={STATE_ID}")).response) == 200
    assert route(_post({"state": state, "fields": FIELDS})).outcome == FIELDS
    late = route(_get(f"/link?oauth_state_id={STATE_ID}"))
    assert status(late.response) == 410
    assert late.rejected == "login already finished"
    assert LINK_TOKEN.encode() not in late.response


def test_returns_past_the_limit_are_refused() -> None:
    """Three returns are served; the fourth gets 400 (the login itself still finishes)."""
    from dashtam_cli.core.oauth.hosted import MAX_RETURNS

    assert MAX_RETURNS == 3
    route, state = _route()
    route(_get(f"/link?state={state}"))
    for n in range(MAX_RETURNS):
        assert status(route(_get(f"/link?oauth_state_id={STATE_ID}{n}")).response) == 200
    past = route(_get(f"/link?oauth_state_id={STATE_ID}"))
    assert status(past.response) == 400
    assert past.rejected == "too many returns to the page"
    assert LINK_TOKEN.encode() not in past.response
    assert route.returns == MAX_RETURNS
    assert route(_post({"state": state, "fields": FIELDS})).outcome == FIELDS


@pytest.mark.parametrize(
    "payload",
    [
        {"fields": FIELDS},
        {"oauth_state_id": STATE_ID, "fields": FIELDS},
        {"state": STATE_ID, "fields": FIELDS},
        {"state": "t" * 42 + "x", "fields": FIELDS},
    ],
)
def test_after_a_return_the_result_still_needs_the_state(payload: dict[str, Any]) -> None:
    """The return opens no other way in: a POST without the login's state is refused 400."""
    route, state = _route()
    route(_get(f"/link?state={state}"))
    route(_get(f"/link?oauth_state_id={STATE_ID}"))
    refused = route(_post(payload))
    assert status(refused.response) == 400
    assert refused.outcome is None
    assert refused.rejected == "missing or wrong state"
    assert route(_post({"state": state, "fields": FIELDS})).outcome == FIELDS


@pytest.mark.parametrize("raw", HOSTILE)
def test_the_hostile_requests_are_refused_after_a_return_too(tmp_path: Path, raw: bytes) -> None:
    """The callback's corpus at a page that takes returns, after the page and a return: refused."""

    async def act(login: Login) -> None:
        assert (await login.page()).status_code == 200
        async with login.client() as client:
            back = await client.get(f"{login.origin}/link?oauth_state_id={STATE_ID}")
        assert back.status_code == 200
        answer = await request(login.port, login.cert, raw)
        assert 400 <= status(answer) < 500
        assert LINK_TOKEN.encode() not in answer
        assert (await login.finish()).status_code == 200

    assert run(tmp_path, act, page=RETURN_PAGE) == FIELDS
