"""`dashtam dashboard`: the guard in front of every request, the pages' figures, the export, the server."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.core.dashboard.app import build_app
from dashtam_cli.core.dashboard.guard import CSP
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
PORT = 48213  # the in-process app is never bound: the port only names the expected Host
TOKEN = "t" * 43
ORIGIN = f"http://127.0.0.1:{PORT}"
HOSTILE_NAME = "<script>alert('name')</script>"
HOSTILE_TEXT = "<img src=x onerror=alert('desc')>"
COFFEE = 239  # coffee-shop transactions in the checking account
DASHBOARD_LIBRARIES = {"starlette", "uvicorn", "jinja2", "pygal", "markupsafe"}


@pytest.fixture
def vault(cli: CliCall, master_key: bytes) -> Path:
    """A vault synced from a SimpleFIN Bridge: 2 USD accounts (one named to attack), 241 transactions.

    The Bridge is mocked only while the vault is filled: the dashboard itself must need no network.
    """
    del master_key
    checking = BridgeAccount("ACT-checking-0001", HOSTILE_NAME, "1520.33")
    checking.transactions = [
        BridgeTxn(f"c{i}", f"-{10 + i}.25", f"Coffee shop {i}", NOW - i * DAY)
        for i in range(1, COFFEE + 1)
    ]
    card = BridgeAccount("ACT-card-0002", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [BridgeTxn("k1", "-310.10", HOSTILE_TEXT, NOW - 2 * DAY)]
    bridge = Bridge(
        now=NOW,
        accounts=[checking, card],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        token = bridge.setup_token()
        done = cli("connect", "simplefin", "--name", "banks", "-f", "json", input=f"{token}\n")
        assert done.exit_code == 0, done.stderr
        synced = cli("sync", "--quiet")
        assert synced.exit_code == 0, synced.stderr
    return load_settings().paths.vault_file


def _ask(
    talk: Callable[[httpx.AsyncClient], Awaitable[list[httpx.Response]]],
) -> list[httpx.Response]:
    """Run ``talk`` against a fresh in-process dashboard (port PORT, token TOKEN)."""
    app = build_app(load_settings(), OpenOptions(), port=PORT, token=TOKEN)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            return await talk(client)

    return asyncio.run(main())


async def _login(client: httpx.AsyncClient) -> httpx.Response:
    """Exchange the token for the session cookie (kept by the client)."""
    return await client.get(f"/?token={TOKEN}")


def _pages(*paths: str) -> list[httpx.Response]:
    """Log in, then GET each of ``paths``."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        await _login(client)
        return [await client.get(path) for path in paths]

    return _ask(talk)


@pytest.mark.usefixtures("vault")
def test_without_the_token_or_a_session_every_page_is_refused() -> None:
    """No cookie, a made-up cookie or a wrong token: 403 on every path, the data never shown."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = [await client.get(p) for p in ("/", "/transactions", "/static/dashboard.css")]
        client.cookies.set(f"dashtam_session_{PORT}", "guessed")
        answers.append(await client.get("/"))
        client.cookies.clear()
        answers.append(await client.get("/?token=" + "u" * 43))
        answers.append(await client.get("/?token="))
        answers.append(await client.get(f"/transactions?token={TOKEN}"))  # only / takes it
        return answers

    answers = _ask(talk)
    assert [a.status_code for a in answers] == [403] * 7
    assert all("1520.33" not in a.text for a in answers)


@pytest.mark.usefixtures("vault")
def test_the_token_opens_one_session_once_and_leaves_the_address_bar() -> None:
    """The right token: a redirect to / with an HttpOnly, SameSite=Strict cookie; the token works once."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        wrong = await client.get("/?token=" + "x" * 43)
        first = await _login(client)
        page = await client.get("/")
        cookie = dict(client.cookies)
        client.cookies.clear()
        again = await _login(client)  # someone else replaying the address
        client.cookies.update(cookie)
        still = await client.get("/")
        return [wrong, first, page, again, still]

    wrong, first, page, again, still = _ask(talk)
    assert wrong.status_code == 403
    assert first.status_code == 303
    assert first.headers["location"] == "/"
    set_cookie = first.headers["set-cookie"]
    name, _, rest = set_cookie.partition("=")
    value = rest.split(";", 1)[0]
    assert name == f"dashtam_session_{PORT}"
    assert len(value) >= 43  # 32 random bytes
    assert value != TOKEN
    assert {p.strip() for p in rest.split(";")[1:]} == {"HttpOnly", "SameSite=Strict", "Path=/"}
    assert page.status_code == 200
    assert again.status_code == 403
    assert still.status_code == 200


@pytest.mark.usefixtures("vault")
def test_a_wrong_host_is_refused_even_with_the_session() -> None:
    """DNS rebinding: any Host but exactly 127.0.0.1:PORT is refused, with or without a session."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        await _login(client)
        hosts = ["evil.example", f"evil.example:{PORT}", f"localhost:{PORT}", "127.0.0.1:1"]
        answers = [await client.get("/", headers={"Host": host}) for host in hosts]
        answers.append(await client.get(f"/?token={TOKEN}", headers={"Host": "evil.example"}))
        return answers

    answers = _ask(talk)
    assert [a.status_code for a in answers] == [421] * 5
    assert all("1520.33" not in a.text for a in answers)


@pytest.mark.usefixtures("vault")
def test_only_get_and_head_are_answered() -> None:
    """POST, PUT, DELETE, PATCH get 405 with Allow, even with the session; HEAD gets the headers."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        await _login(client)
        answers = [
            await client.request(method, "/") for method in ("POST", "PUT", "DELETE", "PATCH")
        ]
        answers.append(await client.head("/"))
        return answers

    *refused, head = _ask(talk)
    assert [a.status_code for a in refused] == [405] * 4
    assert all(a.text == "the dashboard is read-only\n" for a in refused)  # the guard, first
    assert all(a.headers["allow"] == "GET, HEAD" for a in refused)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.usefixtures("vault")
def test_a_request_from_another_site_is_refused() -> None:
    """Sec-Fetch-Site cross-site or same-site (another port) is refused; same-origin and none pass."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        await _login(client)
        return [
            await client.get("/", headers={"Sec-Fetch-Site": site})
            for site in ("cross-site", "same-site", "same-origin", "none")
        ]

    answers = _ask(talk)
    assert [a.status_code for a in answers] == [403, 403, 200, 200]


@pytest.mark.usefixtures("vault")
def test_every_answer_carries_the_security_headers() -> None:
    """Refusals, the redirect, pages, stylesheets and a missing page all carry CSP and the rest."""

    async def talk(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = [await client.get("/")]  # 403
        answers.append(await client.get("/", headers={"Host": "evil.example"}))  # 421
        answers.append(await client.post("/"))  # 405
        answers.append(await _login(client))  # 303
        paths = ("/", "/transactions", "/static/dashboard.css", "/static/charts.css", "/x")
        return answers + [await client.get(path) for path in paths]

    answers = _ask(talk)
    assert [a.status_code for a in answers] == [403, 421, 405, 303, 200, 200, 200, 200, 404]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in CSP
    assert "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP


def _networth_cells(page: str) -> dict[str, str]:
    cells = re.findall(r'class="num networth-total" data-currency="([^"]+)">([^<]*)<', page)
    return dict(cells)


def test_the_net_worth_on_the_page_is_what_the_cli_prints(cli: CliCall, vault: Path) -> None:
    """The front page's totals equal `dashtam networth -f json`, per currency, to the cent."""
    del vault
    printed = json.loads(cli("networth", "-f", "json").stdout)
    (page,) = _pages("/")
    assert page.status_code == 200
    shown = _networth_cells(page.text)
    assert shown == {row["currency"]: row["total"] for row in printed}
    assert shown == {"USD": "1210.23"}  # 1520.33 - 310.10: the check sees real figures


def test_the_front_page_shows_every_view_and_loads_nothing_from_elsewhere(
    cli: CliCall, vault: Path
) -> None:
    """Net worth by institution, charts, cash flow, accounts, positions; every address is local.

    The served HTML has no script, no inline style (the CSP allows neither)
    and no link or source outside this origin.
    """
    del vault
    (page,) = _pages("/")
    html = page.text
    for section in ("networth", "history", "cashflow", "accounts", "positions"):
        assert f'<section id="{section}">' in html
    assert html.count("<svg") >= 2  # net worth by month, cash flow by month
    flows = json.loads(cli("cashflow", "-f", "json").stdout)
    for flow in flows:
        assert f'<td class="num">{flow["outflow"]}</td>' in html
    assert "Chase Card Services" in html  # by institution
    for forbidden in ("<script", "<style", "style=", "javascript:", "on" + "error="):
        assert forbidden not in html.lower()
    addresses = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert addresses
    assert all(a.startswith("/") and not a.startswith("//") for a in addresses)


def test_provider_text_is_escaped_never_markup(vault: Path) -> None:
    """An account named `<script>` and a description `<img onerror>` appear as text, escaped."""
    del vault
    overview, transactions = _pages("/", "/transactions?q=onerror")
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in overview.text
    assert "<script" not in overview.text
    assert "&lt;img src=x onerror=alert(&#39;desc&#39;)&gt;" in transactions.text
    assert "<img" not in transactions.text
    assert "<script" not in transactions.text


def _rows(page: httpx.Response) -> list[str]:
    body = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body)


@pytest.mark.usefixtures("vault")
def test_transactions_come_in_pages_of_100_newest_first() -> None:
    """240 transactions: pages of 100, 100 and 40, newest first; links to the next and previous."""
    first, second, third, beyond, junk = _pages(
        "/transactions",
        "/transactions?page=2",
        "/transactions?page=3",
        "/transactions?page=9",
        "/transactions?page=abc",
    )
    assert [len(_rows(p)) for p in (first, second, third)] == [100, 100, 40]
    assert _rows(beyond) == ['<td colspan="9">No transactions.</td>']
    assert "240 transactions; page 1 of 3." in first.text
    assert 'rel="next" href="/transactions?page=2&amp;q=&amp;kind=&amp;account="' in first.text
    assert 'rel="prev"' not in first.text
    assert 'rel="prev" href="/transactions?page=2&amp;q=&amp;kind=&amp;account="' in third.text
    assert 'rel="next"' not in third.text
    assert "Coffee shop 1<" in _rows(first)[0]  # newest first (the card's is a day older)
    assert "Coffee shop 239<" in _rows(third)[-1]
    assert len(_rows(junk)) == 100  # a page that is not a number is the first


@pytest.mark.usefixtures("vault")
def test_the_search_finds_text_in_any_case_and_pages_its_matches() -> None:
    """?q= matches description, account and type in any case; the query is kept in the links."""
    one, many, none = _pages(
        "/transactions?q=COFFEE%20SHOP%2012",
        "/transactions?q=coffee&page=2",
        "/transactions?q=%3Cb%3Enothing",
    )
    assert {row.split("Coffee shop ")[1].split("<")[0] for row in _rows(one)} == {
        "12",
        *(str(n) for n in range(120, 130)),
    }
    assert "239 transactions; page 2 of 3." in many.text
    assert 'href="/transactions?page=3&amp;q=coffee&amp;kind=&amp;account="' in many.text
    assert _rows(none)[0].startswith('<td colspan="9">No transactions match')
    assert 'value="&lt;b&gt;nothing"' in none.text


def test_the_dashboard_never_writes_the_vault(vault: Path) -> None:
    """Serving every page leaves the vault's folder byte for byte as it was: no sync, no write."""

    def snapshot() -> dict[str, str]:
        folder = vault.parent
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())
            if p.is_file()
        }

    before = snapshot()
    answers = _pages("/", "/transactions", "/transactions?q=coffee&page=2")
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert snapshot() == before


def test_export_writes_one_private_self_contained_file(
    cli: CliCall, vault: Path, tmp_path: Path
) -> None:
    """--export: mode 0600, a warning on stderr, every view and transaction, nothing to load."""
    del vault
    target = tmp_path / "report.html"
    done = cli("dashboard", "--export", str(target))
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ""
    assert "in the clear" in done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    html = target.read_text(encoding="utf-8")
    assert 'data-currency="USD">1210.23<' in html
    assert html.count("<tr><td>") >= 240  # every transaction (and the accounts)
    assert "&lt;img src=x onerror=alert(&#39;desc&#39;)&gt;" in html
    assert "<script" not in html
    assert re.findall(r'(?:src|href)="', html) == []
    assert "default-src 'none'" in html  # the file may load nothing, even opened from disk


def test_a_port_in_use_is_a_usage_error(cli: CliCall, vault: Path) -> None:
    """--port on a port already taken: exit 2, one line and a hint, no traceback."""
    del vault
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = cli("dashboard", "--no-browser", "--port", str(port))
    assert done.exit_code == 2, done.stderr
    assert f"{port} is already in use" in done.stderr
    assert "hint:" in done.stderr
    assert "Traceback" not in done.stderr


def _url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("dashboard: "):
            return line.removeprefix("dashboard: ").strip()
    pytest.fail(f"no address printed; exit {process.wait()}")


def test_the_server_listens_on_loopback_prints_the_address_and_stops_on_ctrl_c(
    vault: Path,
) -> None:
    """The real server: --no-browser prints a one-time URL for 127.0.0.1; Ctrl-C exits 130."""
    del vault
    command = [sys.executable, "-m", "dashtam_cli", "dashboard", "--no-browser"]
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = _url(process)
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,})", url)
        assert match, url
        base = f"http://127.0.0.1:{match[1]}"
        with httpx.Client(base_url=base, timeout=60, follow_redirects=True) as client:
            assert client.get("/").status_code == 403
            opened = client.get(url)  # follows the redirect with the cookie
            assert opened.status_code == 200
            assert 'data-currency="USD">1210.23<' in opened.text
            assert [r.status_code for r in opened.history] == [303]
        with httpx.Client(timeout=60) as stranger:
            assert stranger.get(url).status_code == 403  # the token works once
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "interrupted" in rest
    assert "Traceback" not in rest


def test_the_listener_is_bound_to_loopback_only() -> None:
    """The socket served is bound to 127.0.0.1 (not 0.0.0.0, not ::), on a free port by default."""
    from dashtam_cli.core.dashboard.server import listen

    with listen(0) as sock:
        host, port = sock.getsockname()
        assert sock.family == socket.AF_INET
    assert host == "127.0.0.1"
    assert port > 0


def test_no_other_command_imports_the_dashboard_libraries(vault: Path, tmp_path: Path) -> None:
    """`dashtam --help`, `networth --help` and `paths` load none of starlette, uvicorn, jinja2, pygal.

    `dashboard --export` does load them: the check is not blind.
    """
    from test_architecture import _run_entry

    for args in (["--help"], ["networth", "--help"], ["paths", "--format", "json"]):
        code, _, loaded = _run_entry(args)
        assert code == 0
        assert loaded & DASHBOARD_LIBRARIES == set(), args
    del vault
    code, _, loaded = _run_entry(["dashboard", "--export", str(tmp_path / "r.html")])
    assert code == 0
    assert {"jinja2", "pygal", "markupsafe"} <= loaded


def test_a_vault_that_cannot_be_opened_is_a_page_saying_why(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key gone after the start: each page answers 500 with the core's message, no figure."""
    del vault
    monkeypatch.delenv("DASHTAM_MASTER_KEY")
    overview, transactions = _pages("/", "/transactions")
    for page in (overview, transactions):
        assert page.status_code == 500
        assert page.headers["content-security-policy"] == CSP
        assert "key" in page.text.lower()
        assert "1520.33" not in page.text
        assert "Traceback" not in page.text


@pytest.mark.usefixtures("vault")
def test_filters_by_kind_and_account_as_transactions_list_does(cli: CliCall) -> None:
    """?kind= and ?account= give what `transactions list --type --account` gives, kept in links."""
    purchases, card, both = _pages(
        "/transactions?kind=purchase",
        "/transactions?account=0002",
        "/transactions?kind=withdrawal&account=0001",
    )
    listed = json.loads(
        cli("transactions", "list", "--type", "purchase", "-f", "json", "--offline").stdout
    )
    assert f"{len(listed)} transaction" in purchases.text
    assert 'value="purchase" selected' in purchases.text
    (row,) = _rows(card)
    assert "****0002" in row
    assert f"{COFFEE} transactions; page 1 of 3." in both.text
    assert "kind=withdrawal&amp;account=0001" in both.text


@pytest.mark.usefixtures("vault")
def test_the_overview_shows_the_allocation_and_each_positions_gain(cli: CliCall) -> None:
    """The allocation table is `networth --by asset-type`; positions carry cost basis and gain."""
    (page,) = _pages("/")
    expected = json.loads(cli("networth", "--by", "asset-type", "-f", "json").stdout)
    shown = re.findall(r'class="num allocation-total">([^<]*)<', page.text)
    assert shown == [row["total"] for row in expected]
    assert '<th class="num">Cost basis</th>' in page.text
    assert 'id="allocation"' in page.text
