"""The stand-in Link script in a real browser: headless Chromium logs in or cancels, as a user would.

Debian's ``chromium`` and ``chromium-driver``, driven with selenium, as in
``tests/cli/test_dashboard_browser.py``. A stand-in for dashtam's listener
(its own HTTPS origin on 127.0.0.1) serves a page shaped like the Plaid
provider's Link page, under a strict Content-Security-Policy: it loads the
sandbox's ``link-initialize.js`` and posts what Link hands it to
``/link/done``. The browser fills in ``user_good`` / ``pass_good`` (or
presses Cancel), and nothing is requested from anywhere but the two origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from plaid_sandbox_support import PlaidApi

from dashtam_cli.sandbox.http import HttpServer, Request, Response
from dashtam_cli.sandbox.tls import make_sandbox_tls

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sandbox_support import RunningSandbox

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"

# The Plaid provider's page body (contract 2 of the Plaid work), with the hosted page's helpers.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connect with Plaid</title></head>
<body><p id="status">Opening Plaid Link</p>
<script nonce="NONCE">
function post(payload) {
  return fetch("/link/done", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(payload)}).then(function () {
      document.getElementById("status").textContent = "You can close this window";
    });
}
function dashtamFinish(fields) { return post({state: STATE, fields: fields}); }
function dashtamCancel(message) { return post({state: STATE, cancelled: true, message: message}); }
</script>
<script nonce="NONCE" src="SCRIPT"></script>
<script nonce="NONCE">
Plaid.create({
  token: LINK_TOKEN,
  onSuccess: function (public_token, metadata) {
    dashtamFinish({public_token: public_token,
      institution: metadata.institution ? metadata.institution.name : ""});
  },
  onExit: function (err, metadata) { dashtamCancel("closed"); }
}).open();
</script></body></html>"""


class FakeListener:
    """dashtam's listener, as far as the page needs it: the page, and ``/link/done``."""

    def __init__(self, page: str, tls_dir: Path) -> None:
        """Serve ``page`` at /link over TLS from ``tls_dir``."""
        self.page = page
        self.tls_dir = tls_dir
        self.done: list[dict[str, Any]] = []
        self.port = 0

    async def handle(self, request: Request) -> Response:
        """GET /link: the page with a fresh nonce in its CSP; POST /link/done: keep the body."""
        if request.method == "GET" and request.path == "/link":
            nonce = secrets.token_urlsafe(16)
            csp = (
                f"default-src 'none'; script-src 'nonce-{nonce}' {self.script_origin}; "
                f"connect-src 'self' {self.script_origin}; style-src 'none'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            )
            return Response(
                200,
                self.page.replace("NONCE", nonce).encode(),
                headers={"Content-Security-Policy": csp},
                content_type="text/html; charset=utf-8",
            )
        if request.method == "POST" and request.path == "/link/done":
            self.done.append(json.loads(request.body))
            return Response(200, b'{"ok":true}')
        return Response(404, b"{}")

    script_origin = ""


@contextlib.contextmanager
def fake_listener(page: str, tls_dir: Path, script_origin: str) -> Iterator[FakeListener]:
    """A :class:`FakeListener` on its own event loop thread, on a free port of 127.0.0.1."""
    listener = FakeListener(page, tls_dir)
    listener.script_origin = script_origin
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    context, _ca = make_sandbox_tls(tls_dir)
    server = HttpServer(listener.handle, ssl_context=context)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        listener.port = server.port
        yield listener
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    """Headless Chromium with its network log on; a clear failure when it is not installed.

    Both certificates are the tests' own, made fresh: the browser is told to
    accept them (TLS itself is tested elsewhere, with verification).
    """
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail(
            "chromium and chromium-driver are needed for the stand-in Link's browser test: "
            "sudo apt-get install chromium chromium-driver (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--ignore-certificate-errors",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _requested(driver: Any) -> list[str]:
    """Every URL the page asked for (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _wait(listener: FakeListener, seconds: float = 20) -> dict[str, Any]:
    """The first body posted to /link/done (polled: the browser posts it on its own)."""
    deadline = time.monotonic() + seconds
    while not listener.done:
        if time.monotonic() > deadline:
            pytest.fail("the page posted nothing to /link/done")
        time.sleep(0.1)
    return listener.done[0]


@pytest.fixture
def plaid(start_sandbox: Any) -> Iterator[PlaidApi]:
    """A Plaid client of a running sandbox."""
    running: RunningSandbox = start_sandbox(transactions_per_account=5)
    client = PlaidApi(running)
    yield client
    client.close()


def _page(plaid: PlaidApi, state: str) -> tuple[str, str]:
    link = plaid.call(
        "/link/token/create",
        {"client_name": "dashtam", "language": "en", "country_codes": ["US"],
         "user": {"client_user_id": "u"}, "products": ["transactions"]},
    )["link_token"]  # fmt: skip
    script = plaid.root + "/link/v2/stable/link-initialize.js"
    page = (
        PAGE.replace("SCRIPT", script)
        .replace("LINK_TOKEN", json.dumps(link))
        .replace("STATE", json.dumps(state))
    )
    return page, link


def test_a_browser_logs_in_through_the_stand_in_link(plaid: PlaidApi, tmp_path: Path) -> None:
    """user_good / pass_good in the form: the page posts a public token that exchanges for an item.

    The form works under the page's strict CSP, and the browser requests
    nothing but the listener's origin and the sandbox's.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page, _link = _page(plaid, "S-1")
    with (
        fake_listener(page, tmp_path / "tls", plaid.running.base_url) as listener,
        _browser() as driver,
    ):
        origin = f"https://127.0.0.1:{listener.port}"
        driver.get(f"{origin}/link?state=S-1")
        driver.find_element(By.NAME, "username").send_keys("user_good")
        driver.find_element(By.NAME, "password").send_keys("wrong")
        Select(driver.find_element(By.NAME, "institution_id")).select_by_value("ins_109510")
        driver.find_element(By.ID, "plaid-stand-in-submit").click()
        deadline = time.monotonic() + 20
        status = driver.find_element(By.ID, "plaid-stand-in-status")
        while "credentials" not in status.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "user_good / pass_good" in status.text
        assert listener.done == []
        password = driver.find_element(By.NAME, "password")
        password.clear()
        password.send_keys("pass_good")
        driver.find_element(By.ID, "plaid-stand-in-submit").click()
        done = _wait(listener)
        requested = _requested(driver)
    assert done["state"] == "S-1"
    assert done["fields"]["institution"] == "Tattersall Federal Credit Union"
    exchanged = plaid.call(
        "/item/public_token/exchange", {"public_token": done["fields"]["public_token"]}
    )
    assert exchanged["access_token"].startswith("access-sandbox-")
    assert requested, "the network log is empty: the check would be blind"
    elsewhere = [
        u for u in requested if not u.startswith((f"{origin}/", f"{plaid.running.base_url}/"))
    ]
    assert elsewhere == []


def test_cancel_in_the_stand_in_link_reaches_the_page(plaid: PlaidApi, tmp_path: Path) -> None:
    """Cancel calls onExit: the page posts a cancellation with its state, and no public token."""
    from selenium.webdriver.common.by import By

    page, _link = _page(plaid, "S-2")
    with (
        fake_listener(page, tmp_path / "tls", plaid.running.base_url) as listener,
        _browser() as driver,
    ):
        driver.get(f"https://127.0.0.1:{listener.port}/link?state=S-2")
        driver.find_element(By.ID, "plaid-stand-in-cancel").click()
        done = _wait(listener)
    assert done == {"state": "S-2", "cancelled": True, "message": "closed"}
    assert plaid.running.sandbox.plaid.items == {}


def _connect_in_chromium(  # noqa: PLR0913 - the test's fixtures, and what the person does
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    running: RunningSandbox,
    redirect_uri: str,
    walk: Callable[[Any, str, dict[str, Any]], bool],
    *,
    name: str,
) -> tuple[Any, dict[str, Any]]:
    """`dashtam connect plaid --name NAME` against the sandbox, the browser Chromium.

    ``walk(driver, url, seen)`` is what the person does at the page dashtam
    opens; it records what it saw in ``seen``. Returns the command's result
    and ``seen``, read to its end (dashtam stops waiting once the result is in).
    """
    import webbrowser

    running.use_plaid(monkeypatch, redirect_uri)
    seen: dict[str, Any] = {}
    finished = threading.Event()
    with _browser() as driver:

        def person(url: str, new: int = 0, autoraise: bool = True) -> bool:  # noqa: FBT002 - webbrowser.open's signature
            del new, autoraise
            try:
                return walk(driver, url, seen)
            finally:
                finished.set()

        monkeypatch.setattr(webbrowser, "open", person)
        done = cli("connect", "plaid", "--name", name, "--timeout", "60")
        assert finished.wait(30)
    return done, seen


def _log_in(driver: Any, url: str, seen: dict[str, Any]) -> bool:
    """A person in the browser: open ``url``, log in to the stand-in Link; what it saw in ``seen``."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.NAME, "username").send_keys("user_good")
    driver.find_element(By.NAME, "password").send_keys("pass_good")
    driver.find_element(By.ID, "plaid-stand-in-submit").click()
    return _finished(driver, seen)


def _finished(driver: Any, seen: dict[str, Any]) -> bool:
    """Wait for dashtam's page to say it is done; what the browser showed, asked and logged."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 20
    text = ""
    while "close this window" not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(Exception):  # the window may be between pages
            text = driver.find_element(By.ID, "dashtam-status").text
    seen["status"] = text
    seen["url"] = driver.current_url
    seen["requested"] = _requested(driver)
    seen["console"] = driver.get_log("browser")
    return True


def _assert_only_here_and_no_csp_violation(
    seen: dict[str, Any], redirect_uri: str, sandbox_url: str
) -> None:
    """Nothing was requested but from dashtam's listener and the sandbox; no CSP violation."""
    elsewhere = [
        u for u in seen["requested"] if not u.startswith((f"{redirect_uri}/", f"{sandbox_url}/"))
    ]
    assert elsewhere == []
    violations = [
        e["message"] for e in seen["console"] if "Content Security Policy" in e["message"]
    ]
    assert violations == []


def test_dashtams_real_hosted_page_with_the_stand_in_link_in_chromium(
    start_sandbox: Any,
    cli: Any,
    redirect_uri: str,
    master_key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dashtam connect plaid` end to end in Chromium: the parts of the three Plaid pieces fit.

    The page is the one dashtam's listener really serves (``hosted_login``
    with the Plaid provider's body and its Content-Security-Policy); it loads
    the sandbox's stand-in Link script, the browser logs in with
    user_good / pass_good, the stand-in posts to the sandbox, the page hands
    the public token to ``/link/done``, and dashtam exchanges it and stores
    the item. Nothing is requested from anywhere but the listener and the
    sandbox, and the browser reports no CSP violation.
    """
    del master_key
    running: RunningSandbox = start_sandbox(transactions_per_account=5)
    done, seen = _connect_in_chromium(cli, monkeypatch, running, redirect_uri, _log_in, name="bank")
    assert done.exit_code == 0, done.stdout + done.stderr

    assert seen["status"] == "Done: you can close this window"
    (item,) = running.sandbox.plaid.items.values()
    assert item.institution_id == "ins_109508"
    listed = cli("connections", "list", "-f", "json")
    assert json.loads(listed.stdout)[0]["name"] == "bank"
    requested = seen["requested"]
    assert any(u.endswith("/plaid/link/v2/stable/link-initialize.js") for u in requested)
    assert any(u.endswith("/plaid/link/stand-in/complete") for u in requested)
    _assert_only_here_and_no_csp_violation(seen, redirect_uri, running.base_url)


@pytest.mark.parametrize(
    ("metadata", "institution"),
    [
        ({"institution": {"name": "First Platypus Bank", "institution_id": "ins_109508"}},
         "First Platypus Bank"),
        ({"institution": {"institution_id": "ins_109508"}}, ""),
        ({"institution": {"name": None, "institution_id": "ins_109508"}}, ""),
        ({"institution": None}, ""),
        ({}, ""),
        (None, ""),
    ],
)  # fmt: skip
def test_the_plaid_pages_script_hands_back_the_institution_as_text_whatever_link_says(
    metadata: Any, institution: str
) -> None:
    """The Plaid provider's page script, run in Chromium with a Link that answers ``metadata``.

    The listener refuses a result whose fields are not all strings (and keeps
    waiting), so a missing or null institution name must come back as "".
    """
    from dashtam_cli.core.providers.plaid import link_body

    body = link_body("link-sandbox-0123", "https://cdn.plaid.com/link/v2/stable/link-initialize.js")
    script = body.split('<script nonce="{{nonce}}">', 1)[1].split("</script>", 1)[0]
    harness = (
        "var metadata = arguments[0];"
        "window.dashtamFinish = function (fields) { window.got = fields; };"
        "window.dashtamCancel = function (message) { window.got = {cancelled: message}; };"
        "window.Plaid = {create: function (config) { return {open: function () {"
        "  config.onSuccess('public-sandbox-1', metadata); }}; }};"
        f"{script}; return window.got;"
    )
    with _browser() as driver:
        got = driver.execute_script(harness, metadata)
    assert got == {"public_token": "public-sandbox-1", "institution": institution}


def _through_oauth(driver: Any, url: str, seen: dict[str, Any]) -> bool:
    """A person choosing an OAuth institution: Link sends the window to its site and back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url)
    Select(driver.find_element(By.NAME, "institution_id")).select_by_value("ins_127287")
    driver.find_element(By.ID, "plaid-stand-in-submit").click()
    return _finished(driver, seen)


def test_an_oauth_institution_leaves_for_its_site_and_link_finishes_on_the_return(
    start_sandbox: Any,
    cli: Any,
    redirect_uri: str,
    master_key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dashtam connect plaid` with an OAuth institution, end to end in Chromium.

    The stand-in Link plays Platypus OAuth Bank: the window leaves dashtam's
    page for the institution's site (the sandbox), which sends it back to the
    redirect URI ``/link?oauth_state_id=...`` without dashtam's state. The
    listener serves the page again, the page creates Link again with the same
    token and ``receivedRedirectUri``, Link finishes, and the connection is
    saved; no CSP violation, nothing requested from anywhere else.
    """
    del master_key
    running: RunningSandbox = start_sandbox(transactions_per_account=5)
    done, seen = _connect_in_chromium(
        cli, monkeypatch, running, redirect_uri + "/link", _through_oauth, name="oauth-bank"
    )
    assert done.exit_code == 0, done.stdout + done.stderr

    assert seen["status"] == "Done: you can close this window"
    assert seen["url"].startswith(f"{redirect_uri}/link?oauth_state_id=")
    (item,) = running.sandbox.plaid.items.values()
    assert item.institution_id == "ins_127287"
    listed = json.loads(cli("connections", "list", "-f", "json").stdout)
    assert [c["name"] for c in listed] == ["oauth-bank"]
    requested = seen["requested"]
    bank = [u for u in requested if "/plaid/link/stand-in/bank?oauth_state_id=" in u]
    returned = [u for u in requested if u.startswith(f"{redirect_uri}/link?oauth_state_id=")]
    assert len(bank) == 1
    assert len(returned) == 1
    assert bank[0].split("oauth_state_id=", 1)[1] == returned[0].split("oauth_state_id=", 1)[1]
    assert any(u.endswith("/plaid/link/stand-in/complete") for u in requested)
    _assert_only_here_and_no_csp_violation(seen, redirect_uri, running.base_url)


def _plaid_page(plaid: PlaidApi, state: str, **token: Any) -> str:
    """The fake listener's helpers, then the Plaid provider's own page body (its Link script)."""
    from dashtam_cli.core.providers.plaid import link_body

    link = plaid.call(
        "/link/token/create",
        {"client_name": "dashtam", "language": "en", "country_codes": ["US"],
         "user": {"client_user_id": "u"}, "products": ["transactions"], **token},
    )["link_token"]  # fmt: skip
    script = plaid.root + "/link/v2/stable/link-initialize.js"
    helpers = PAGE.split('<script nonce="NONCE" src=', 1)[0].replace("STATE", json.dumps(state))
    body = link_body(link, script).replace("{{nonce}}", "NONCE")
    return f"{helpers}{body}</body></html>"


def test_a_return_with_an_unknown_oauth_state_id_ends_link_with_its_error(
    plaid: PlaidApi, tmp_path: Path
) -> None:
    """The page at /link?oauth_state_id=unknown: Link, created with receivedRedirectUri, exits.

    The Plaid page passes its own address to Link; the stand-in finds no such
    id and calls onExit with Plaid's error, which the page hands to dashtam as
    a cancel carrying the display message. No item is made.
    """
    with (
        fake_listener("", tmp_path / "tls", plaid.running.base_url) as listener,
        _browser() as driver,
    ):
        return_uri = f"https://127.0.0.1:{listener.port}/link"
        listener.page = _plaid_page(plaid, "S-3", redirect_uri=return_uri)
        driver.get(f"{return_uri}?oauth_state_id=0123456789abcdef")
        done = _wait(listener)
        requested = _requested(driver)
    assert done == {
        "state": "S-3",
        "cancelled": True,
        "message": "The login at the institution could not be finished (OAUTH_STATE_ID_NOT_FOUND)",
    }
    assert any(u.endswith("/plaid/link/stand-in/complete") for u in requested)
    assert plaid.running.sandbox.plaid.items == {}
