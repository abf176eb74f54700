"""SimpleFIN through the CLI: connect with a setup token, sync, and the queries (the Bridge mocked by respx)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import shlex
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
import respx
from simplefin_bridge import Bridge, BridgeAccount, BridgeTxn

from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def _bridge() -> Bridge:
    checking = BridgeAccount("ACT-checking-0001", "Chase Total Checking (1234)", "1520.33")
    checking.transactions = [
        BridgeTxn(f"c{i}", f"-{10 + i}.25", f"Coffee shop {i}", NOW - i * 3 * DAY)
        for i in range(1, 240)  # about two years, one every three days
    ]
    checking.transactions.append(BridgeTxn("p1", "-42.00", "Grocer (pending)", None, NOW - DAY))
    card = BridgeAccount("ACT-card-0002", "Sapphire Visa", "-310.10", conn_id="CON-2")
    card.transactions = [BridgeTxn("k1", "-310.10", "Airline", NOW - 2 * DAY)]
    return Bridge(
        now=NOW,
        accounts=[checking, card],
        connections={"CON-1": "Chase", "CON-2": "Chase Card Services"},
    )


@pytest.fixture
def bridge(master_key: bytes) -> Iterator[Bridge]:
    """The Bridge, answering every HTTP client the CLI makes (and a vault key)."""
    del master_key
    fake = _bridge()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        fake.install(router)
        yield fake


def _json(text: str) -> Any:
    return json.loads(text)


def _connect(cli: CliCall, bridge: Bridge, name: str = "banks") -> None:
    token = bridge.setup_token()
    connected = cli("connect", "simplefin", "--name", name, "-f", "json", input=f"{token}\n")
    assert connected.exit_code == 0, connected.stderr
    assert token not in connected.stdout + connected.stderr


def test_connect_then_sync_stores_every_window_in_few_requests(
    cli: CliCall, bridge: Bridge
) -> None:
    """A first sync: the last 90 days in one request, then 90-day windows back to the history."""
    _connect(cli, bridge)
    synced = cli("sync", "-f", "json")
    assert synced.exit_code == 0, synced.stderr
    (report,) = _json(synced.stdout)
    # 730 days: the newest 89 at once (a day short of the cap: clocks differ), then
    # ceil(641 / 90) = 8 older windows.
    assert report["requests"] == 9
    assert len(bridge.data_requests) == 9
    assert report["requests_left"] == 24 - 9
    assert report["accounts"] == 2
    total = 240 + 1  # the checking account's 239 posted + 1 pending, and the card's one
    assert report["new"] == total
    # Every window is at most 90 days and they meet without a gap or an overlap.
    windows = []
    for request in bridge.data_requests[1:]:
        params = dict(request.url.params)
        windows.append((int(params["start-date"]), int(params["end-date"])))
        assert int(params["end-date"]) - int(params["start-date"]) <= 90 * 86400
        # Only the accounts that still need history are asked for (both, on a first sync).
        assert sorted(request.url.params.get_list("account")) == [
            "ACT-card-0002",
            "ACT-checking-0001",
        ]
    latest_start = int(bridge.data_requests[0].url.params["start-date"])
    assert windows[0][1] == latest_start
    for (newer_start, _), (_, older_end) in itertools.pairwise(windows):
        assert older_end == newer_start  # end-date is exclusive: no gap, no overlap
    # The history reaches back sync_history_days (730) from the sync's start.
    assert windows[-1][0] == latest_start - 641 * 86400
    accounts = _json(cli("accounts", "list", "-f", "json").stdout)
    by_name = {a["name"]: a for a in accounts}
    assert by_name["Sapphire Visa"]["type"] == "CREDIT_CARD"
    assert by_name["Sapphire Visa"]["institution"] == "Chase Card Services"
    assert by_name["Chase Total Checking (1234)"]["total_value"] == "1520.33"
    transactions = _json(cli("transactions", "list", "-f", "json", "--limit", "1000").stdout)
    assert len(transactions) == total
    pending = [t for t in transactions if t["status"] == "PENDING"]
    assert [t["amount"] for t in pending] == ["-42.00"]


def test_a_second_sync_is_one_request_and_a_pending_transaction_that_posts_anew_is_removed(
    cli: CliCall, bridge: Bridge
) -> None:
    """Incremental: one request; the pending one posted under a new id replaces it."""
    _connect(cli, bridge)
    assert cli("sync").exit_code == 0
    checking = bridge.accounts[0]
    checking.transactions = [t for t in checking.transactions if t.id != "p1"]
    checking.transactions.append(BridgeTxn("p1-posted", "-44.50", "Grocer", NOW))
    before = len(bridge.data_requests)
    synced = cli("sync", "-f", "json")
    assert synced.exit_code == 0, synced.stderr
    (report,) = _json(synced.stdout)
    assert len(bridge.data_requests) == before + 1
    assert (report["new"], report["removed"]) == (1, 1)
    rows = _json(cli("transactions", "list", "-f", "json", "--limit", "1000").stdout)
    assert not [t for t in rows if t["status"] == "PENDING"]
    assert [t["amount"] for t in rows if t["description"] == "Grocer"] == ["-44.50"]


def test_the_budget_refuses_past_the_limit_and_says_when_it_resets(
    cli: CliCall, bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget of 10, a first sync (9) fits; the next two spend the last, then exit 1."""
    monkeypatch.setenv("DASHTAM_SIMPLEFIN_DAILY_REQUESTS", "10")
    _connect(cli, bridge)
    assert cli("sync").exit_code == 0
    assert cli("sync", "--full").exit_code == 3  # one request left: older windows fail
    sent = len(bridge.data_requests)
    refused = cli("sync")
    assert refused.exit_code == 1
    assert "budget of 10 requests a day is spent" in refused.stderr
    assert "resets at 00:00 UTC" in refused.stderr
    assert len(bridge.data_requests) == sent  # nothing was sent


def test_an_institution_to_log_in_again_exits_4_with_a_sync_command_that_runs(
    cli: CliCall, bridge: Bridge
) -> None:
    """con.auth: exit 4, the rest stored, and the hint's ``dashtam sync ...`` is a command that runs."""
    _connect(cli, bridge)
    bridge.errlist.append({"code": "con.auth", "msg": "Log in again", "conn_id": "CON-2"})
    synced = cli("sync", "-f", "json")
    assert synced.exit_code == 4, synced.stderr
    (report,) = _json(synced.stdout)
    assert report["result"] == "partial"
    assert "Chase Card Services needs you to log in to it again" in synced.stderr
    hint = [line for line in synced.stderr.splitlines() if line.startswith("hint:")][-1]
    argv = shlex.split(hint.split("then run: ", 1)[1])
    assert argv[0] == "dashtam"
    bridge.errlist.clear()  # logged in again at the Bridge
    again = cli(*argv[1:], "-f", "json")
    assert again.exit_code == 0, again.stderr
    (report,) = _json(again.stdout)
    assert (report["connection"], report["result"]) == ("banks", "ok")


def test_a_claimed_token_is_refused_with_the_compromise_warning(
    cli: CliCall, bridge: Bridge
) -> None:
    """A 403 on claim: exit 1, the warning, and the token nowhere in the output."""
    token = bridge.setup_token()
    assert cli("connect", "simplefin", input=f"{token}\n").exit_code == 0
    again = cli("connect", "simplefin", "--name", "other", input=f"{token}\n")
    assert again.exit_code == 1
    assert "compromised" in again.stderr
    assert token not in again.stderr + again.stdout


def test_the_access_url_is_sealed_and_never_shown(cli: CliCall, bridge: Bridge) -> None:
    """The access URL's password is in no output, audit record or vault column in the clear."""
    _connect(cli, bridge)
    assert cli("sync").exit_code == 0
    (user, password) = next(iter(bridge.users.items()))
    outputs = [
        cli("connections", "list", "-f", "json"),
        cli("audit", "list", "-f", "json"),
        cli("accounts", "list", "-f", "json"),
    ]
    for result in outputs:
        assert result.exit_code == 0, result.stderr
        assert password not in result.stdout + result.stderr
        assert user not in result.stdout + result.stderr
    path = load_settings().paths.vault_file
    data = path.read_bytes()
    assert password.encode() not in data
    assert user.encode() not in data
    with contextlib.closing(sqlite3.connect(path)) as db:
        (blob,) = db.execute("SELECT secret FROM connections").fetchone()
    assert blob is not None


def test_holdings_are_positions_and_a_custom_currency_is_kept_apart(
    cli: CliCall, bridge: Bridge
) -> None:
    """Holdings become positions; a miles account keeps its currency URL and says "miles".

    The average price is the cost basis over the shares, to six places; the
    miles account is typed REWARDS.
    """
    broker = BridgeAccount("ACT-broker-0003", "Fidelity Individual", "12000.00", conn_id="CON-1")
    broker.holdings = [
        {
            "id": "HOL-1",
            "created": 1700000000,
            "currency": "USD",
            "cost_basis": "1000.00",
            "description": "VANGUARD TOTAL STOCK",
            "market_value": "1500.00",
            "purchase_price": "333.33",
            "shares": "3",
            "symbol": "VTI",
        }
    ]
    miles = BridgeAccount(
        "ACT-miles-0004",
        "SkyMiles",
        "83997",
        currency="https://bridge.simplefin.test/currency/miles",
    )
    bridge.accounts.extend([broker, miles])
    _connect(cli, bridge)
    assert cli("sync").exit_code == 0
    (position,) = _json(cli("positions", "list", "-f", "json").stdout)
    assert (position["symbol"], position["quantity"], position["market_value"]) == (
        "VTI",
        "3",
        "1500.00",
    )
    assert position["average_price"] == "333.333333"
    assert (position["cost_basis"], position["unrealized_gain"]) == ("1000.00", "500.00")
    accounts = {a["name"]: a for a in _json(cli("accounts", "list", "-f", "json").stdout)}
    assert accounts["Fidelity Individual"]["type"] == "INVESTMENT"
    assert accounts["Fidelity Individual"]["market_value"] == "1500.00"
    assert accounts["Fidelity Individual"]["cash"] == "10500.00"
    assert accounts["SkyMiles"]["type"] == "REWARDS"
    assert accounts["SkyMiles"]["currency"] == miles.currency
    table = cli("accounts", "list", "-f", "table", env={"COLUMNS": "200"}).stdout
    assert "83997.00 miles" in table


def test_disconnect_forgets_the_access_and_says_to_disable_it_at_the_bridge(
    cli: CliCall, bridge: Bridge
) -> None:
    """SimpleFIN cannot revoke: disconnect removes the connection and says where to disable it."""
    _connect(cli, bridge)
    removed = cli("disconnect", "banks", "--yes")
    assert removed.exit_code == 0, removed.stderr
    assert "disable it at the SimpleFIN Bridge" in removed.stderr
    assert _json(cli("connections", "list", "-f", "json").stdout) == []
    assert len(bridge.data_requests) == 0  # nothing was sent to revoke


def test_a_misspelt_setting_is_warned_about_and_a_failed_sync_still_counts_its_requests(
    cli: CliCall, bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DASHTAM_SIMPLEFIN_DAILY_REQUEST (no S) warns; a revoked access reports the request it sent."""
    _connect(cli, bridge)
    monkeypatch.setenv("DASHTAM_SIMPLEFIN_DAILY_REQUEST", "5")
    bridge.revoked.update(bridge.users)
    synced = cli("sync", "-f", "json")
    assert synced.exit_code == 4
    assert "ignoring unknown SimpleFIN setting 'daily_request'" in synced.stderr
    (report,) = _json(synced.stdout)
    assert report["result"] == "reauth_required"
    assert (report["requests"], report["requests_left"]) == (1, 23)
