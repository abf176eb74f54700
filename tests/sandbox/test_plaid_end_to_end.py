"""dashtam's Plaid provider against the sandbox's Plaid server, end to end, through the CLI.

Nothing on dashtam's side is replaced: `dashtam connect plaid` creates a link
token at the sandbox, serves the real hosted page on its loopback listener
(``hosted_login``), and the "browser" (the sandbox's ``complete_link``, what
a person in Link does) fetches that page and posts the public token back; the
item's access token is sealed, and `sync` pages ``/transactions/sync`` from
the sandbox, whose clock the tests move so that a day of changes arrives.
The only seam is the one `webbrowser.open` call, so no real browser starts.
"""

from __future__ import annotations

import collections
import decimal
import json
import socket
import ssl
import webbrowser
from typing import TYPE_CHECKING, Any

import pytest
from plaid_sandbox_support import PlaidApi

from dashtam_cli.sandbox.plaid import complete_link

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from conftest import CliCall
    from sandbox_support import RunningSandbox

DAY = 86_400
PRODUCTS = ("transactions", "investments")


class LinkBrowser:
    """What `webbrowser.open` does in these tests: a person completing Plaid Link.

    ``complete_link`` GETs the hosted page from dashtam's listener (verified
    against the certificate dashtam made), makes the public token at the
    sandbox (or, with ``update``, through the stand-in Link with the page's
    link token) and posts it to ``/link/done``. The listener's answers and
    the pages' URLs are kept.
    """

    def __init__(self, running: RunningSandbox, home: Path) -> None:
        """Browse for dashtam at ``home``, against ``running``."""
        self.running = running
        self.home = home
        self.update = False
        self.urls: list[str] = []
        self.answers: list[dict[str, Any]] = []

    def __call__(self, url: str, new: int = 0, autoraise: bool = True) -> bool:  # noqa: FBT002 - webbrowser.open's own signature
        """Complete Link on the page at ``url``; True, as a browser that opened."""
        del new, autoraise
        self.urls.append(url)
        config = self.running.config
        self.answers.append(
            complete_link(
                url,
                plaid_url=self.running.base_url + "/plaid",
                client_id=config.plaid_client_id,
                secret=config.plaid_secret,
                sandbox_verify=ssl.create_default_context(cafile=self.running.ca_path),
                listener_verify=ssl.create_default_context(
                    cafile=self.home / "data" / "tls" / "listener-cert.pem"
                ),
                products=PRODUCTS,
                update=self.update,
            )
        )
        return True


@pytest.fixture
def start(
    start_sandbox: Callable[..., RunningSandbox],
    monkeypatch: pytest.MonkeyPatch,
    redirect_uri: str,
    master_key: bytes,
) -> Callable[..., RunningSandbox]:
    """Start a sandbox with ``overrides``; dashtam's Plaid variables point at it.

    The listener is on a free port (``PLAID_REDIRECT_URI``), TLS to the
    sandbox verified against its CA (``SSL_CERT_FILE``).
    """
    del master_key

    def begin(**overrides: Any) -> RunningSandbox:
        found: RunningSandbox = start_sandbox(**{"transactions_per_account": 12, **overrides})
        found.use_plaid(monkeypatch, redirect_uri)
        return found

    return begin


@pytest.fixture
def running(start: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A sandbox with small data, dashtam pointed at it."""
    return start()


@pytest.fixture
def browser(
    running: RunningSandbox, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> LinkBrowser:
    """The browser dashtam opens (``webbrowser.open``), completing Link."""
    found = LinkBrowser(running, isolated_env)
    monkeypatch.setattr(webbrowser, "open", found)
    return found


@pytest.fixture
def plaid(running: RunningSandbox) -> Iterator[PlaidApi]:
    """A client of the sandbox's Plaid paths, to see what the sandbox itself has."""
    client = PlaidApi(running)
    yield client
    client.close()


def _json(text: str) -> Any:
    return json.loads(text, parse_float=decimal.Decimal)


def _connect(cli: CliCall, browser: LinkBrowser, *args: str) -> None:
    done = cli("connect", "plaid", *args)
    assert done.exit_code == 0, done.stderr
    assert browser.answers[-1] == {"status": 200, "ok": True}


def _item(running: RunningSandbox) -> Any:
    (item,) = running.sandbox.plaid.items.values()
    return item


def _sandbox_accounts(plaid: PlaidApi, token: str) -> dict[str, dict[str, Any]]:
    """The sandbox's accounts by name, as /accounts/get answers now."""
    answer = plaid.call("/accounts/get", {"access_token": token})
    return {a["name"]: a for a in answer["accounts"]}


def _sandbox_transactions(
    plaid: PlaidApi, token: str
) -> collections.Counter[tuple[str, decimal.Decimal]]:
    """Every transaction the sandbox has now, as (account id, amount in dashtam's sign)."""
    pages, _ = plaid.sync_all(token)
    state: dict[str, dict[str, Any]] = {}
    for page in pages:
        for txn in [*page["added"], *page["modified"]]:
            state[txn["transaction_id"]] = txn
        for gone in page["removed"]:
            state.pop(gone["transaction_id"], None)
    return collections.Counter((t["account_id"], -t["amount"]) for t in state.values())


def _stored(
    cli: CliCall, plaid_ids: dict[str, str]
) -> tuple[collections.Counter[tuple[str, decimal.Decimal]], list[dict[str, Any]]]:
    """The transactions dashtam lists (the bank accounts'), keyed as the sandbox's; the rows."""
    listed = cli("transactions", "list", "-f", "json", "--limit", "100000")
    assert listed.exit_code == 0, listed.stderr
    rows: list[dict[str, Any]] = _json(listed.stdout)
    return (
        collections.Counter(
            (plaid_ids[r["account_id"]], decimal.Decimal(r["amount"]))
            for r in rows
            if r["account_id"] in plaid_ids
        ),
        rows,
    )


def _accounts(cli: CliCall) -> list[dict[str, Any]]:
    listed = cli("accounts", "list", "-f", "json")
    assert listed.exit_code == 0, listed.stderr
    found: list[dict[str, Any]] = _json(listed.stdout)
    return found


def _ids(cli: CliCall, plaid: PlaidApi, token: str) -> dict[str, str]:
    """The sandbox's account id of each dashtam account /transactions/sync covers, by dashtam's id."""
    theirs = _sandbox_accounts(plaid, token)
    return {
        a["id"]: theirs[a["name"]]["account_id"]
        for a in _accounts(cli)
        if theirs[a["name"]]["type"] != "investment"
    }


def _check_the_queries(
    cli: CliCall, plaid: PlaidApi, token: str
) -> tuple[dict[str, str], collections.Counter[tuple[str, decimal.Decimal]]]:
    """`accounts list`, `transactions list` and `networth` against the sandbox's own answers.

    The account ids (see :func:`_ids`) and the stored transactions, for later comparisons.
    """
    # Balances: a bank account's as Plaid says; a card's (what is owed, positive at Plaid) negated.
    theirs = _sandbox_accounts(plaid, token)
    mine = _accounts(cli)
    assert sorted(a["name"] for a in mine) == sorted(theirs)
    for account in mine:
        balances = theirs[account["name"]]["balances"]
        current = decimal.Decimal(str(balances["current"]))
        expected = -current if theirs[account["name"]]["type"] == "credit" else current
        assert decimal.Decimal(account["total_value"]) == expected, account["name"]
        assert account["currency"] == (
            balances["iso_currency_code"] or balances["unofficial_currency_code"]
        )
        assert account["institution"] == "First Platypus Bank"
    card = next(a for a in mine if a["type"] == "CREDIT_CARD")
    assert card["total_value"] == str(
        -decimal.Decimal(str(theirs[card["name"]]["balances"]["current"]))
    )

    # Transactions: every one the sandbox has, each amount negated (money out is negative).
    ids = _ids(cli, plaid, token)
    stored, rows = _stored(cli, ids)
    assert stored == _sandbox_transactions(plaid, token)
    assert sum(1 for r in rows if r["status"] == "PENDING") == 6
    spent = [r for r in rows if r["kind"] == "purchase" and r["account_id"] in ids]
    assert spent, "no purchases: the sign check would be blind"
    assert all(decimal.Decimal(r["amount"]) < 0 for r in spent)
    brokerage = next(a["id"] for a in mine if a["type"] == "INVESTMENT")
    assert any(r["account_id"] == brokerage for r in rows)  # investment transactions too

    # Net worth: per currency, the accounts' totals (the card's, in dashtam's sign, included).
    worth = cli("networth", "-f", "json")
    assert worth.exit_code == 0, worth.stderr
    totals = {g["currency"]: decimal.Decimal(g["total"]) for g in _json(worth.stdout)}
    expected_totals: dict[str, decimal.Decimal] = collections.defaultdict(decimal.Decimal)
    for account in mine:
        expected_totals[account["currency"]] += decimal.Decimal(account["total_value"])
    assert totals == expected_totals
    return ids, stored


def test_connect_sync_queries_relogin_in_update_mode_then_disconnect(
    cli: CliCall,
    browser: LinkBrowser,
    running: RunningSandbox,
    plaid: PlaidApi,
    redirect_uri: str,
) -> None:
    """The whole life of a Plaid item, every part real but the browser's clicks.

    Connect (the hosted page, the exchange), sync, the queries in dashtam's
    sign; the sandbox forces a new login: sync exits 4 naming the update
    command, which repairs the item with its data kept; disconnect revokes
    the item at the sandbox.
    """
    _connect(cli, browser, "--name", "bank", "--products", "transactions,investments")
    (url,) = browser.urls
    assert url.startswith(f"{redirect_uri}/link?state=")
    item = _item(running)
    assert item.products == PRODUCTS
    token = item.access_token
    listed = cli("connections", "list", "-f", "json")
    assert listed.exit_code == 0, listed.stderr
    assert token not in listed.stdout

    synced = cli("sync", "-f", "json")
    assert synced.exit_code == 0, synced.stderr
    (report,) = _json(synced.stdout)
    assert report["result"] == "ok", report

    ids, stored = _check_the_queries(cli, plaid, token)

    # The sandbox forces a new login: sync exits 4 and names the update command.
    plaid.call("/sandbox/item/reset_login", {"access_token": token})
    failed = cli("sync")
    assert failed.exit_code == 4, failed.stdout + failed.stderr
    assert "dashtam connect plaid --update bank" in failed.stdout + failed.stderr
    assert token not in failed.stdout + failed.stderr

    # Update mode through Link again: the same item, its login repaired, the data kept.
    browser.update = True
    _connect(cli, browser, "--update", "bank")
    assert list(running.sandbox.plaid.items.values()) == [item]
    assert not item.login_required
    again = cli("sync", "-f", "json")
    assert again.exit_code == 0, again.stderr
    (report,) = _json(again.stdout)
    assert report["result"] == "ok", report
    assert report["new"] == 0
    kept, _ = _stored(cli, ids)
    assert kept == stored

    # Disconnect: the item is revoked at Plaid (/item/remove), then forgotten here.
    gone = cli("disconnect", "bank", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert item.removed
    assert cli("connections", "list", "-f", "json").stdout.strip() in {"[]", ""}


@pytest.mark.parametrize("faults", [(), ("mutation",)], ids=["calm", "mutation"])
def test_a_day_of_changes_through_paged_cursors_leaves_exactly_the_sandboxs_rows(
    cli: CliCall,
    start: Callable[..., RunningSandbox],
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: tuple[str, ...],
) -> None:
    """Two pages of /transactions/sync (a mutation while paging restarts it), then a day later.

    The next morning the pending transactions post under new ids, one amount
    is corrected and one transaction withdrawn: after the second sync dashtam
    holds exactly what the sandbox holds, no pending row left, none doubled.
    """
    running = start(transactions_per_account=300, plaid_faults=faults)
    browser = LinkBrowser(running, isolated_env)
    monkeypatch.setattr(webbrowser, "open", browser)
    plaid = PlaidApi(running)
    try:
        _connect(cli, browser, "--name", "bank")
        token = _item(running).access_token
        first = cli("sync", "-f", "json")
        assert first.exit_code == 0, first.stderr
        (report,) = _json(first.stdout)
        assert report["requests"] >= 3  # /accounts/get and at least two pages
        ids = _ids(cli, plaid, token)
        stored, rows = _stored(cli, ids)
        assert stored == _sandbox_transactions(plaid, token)
        assert sum(1 for r in rows if r["status"] == "PENDING") == 6
        if faults:
            assert _item(running).mutated  # the fault happened, and the restart took it in
            assert any(
                r["description"] == "Corner Coffee" and r["amount"] == "-12.34" for r in rows
            )

        running.clock.advance(2 * DAY)  # past 06:00 UTC the next day, whatever the hour now
        second = cli("sync", "-f", "json")
        assert second.exit_code == 0, second.stderr
        later, rows = _stored(cli, ids)
        truth = _sandbox_transactions(plaid, token)
        assert later == truth
        assert later != stored  # the day changed something
        assert sum(1 for r in rows if r["status"] == "PENDING") == 0
        assert len(rows) == len({r["id"] for r in rows})
    finally:
        plaid.close()


def test_a_taken_listener_port_names_plaids_setting(
    cli: CliCall, browser: LinkBrowser, running: RunningSandbox, redirect_uri: str
) -> None:
    """When the listener's port is in use, the hint names PLAID_REDIRECT_URI, the setting to change."""
    del running
    port = int(redirect_uri.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = cli("connect", "plaid", "--name", "bank")
    assert done.exit_code == 1, done.stdout + done.stderr
    assert "PLAID_REDIRECT_URI" in done.stderr
    assert browser.urls == []
