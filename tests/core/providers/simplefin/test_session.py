"""A SimpleFIN connection's sync against the respx Bridge: windows, errors, the budget, pending, secrets."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
import respx
from simplefin_bridge import CAP_WARNING, Bridge, BridgeAccount, BridgeTxn
from sqlalchemy import select
from sync_support import run_sync, transactions

from dashtam_cli.core import store
from dashtam_cli.core.connections import list_connections, save_secret_login
from dashtam_cli.core.errors import RequestBudgetSpent
from dashtam_cli.core.providers.base import Changes
from dashtam_cli.core.resilience import Backoff
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx
    from conftest import CliCall

    from dashtam_cli.core.models import SyncReport, Transaction
    from dashtam_cli.core.sync import SyncResult

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
NO_WAIT = Backoff(attempts=3, base=0.0, cap=0.0)


class Fixture:
    """The Bridge and the respx router answering for it."""

    def __init__(self, bridge: Bridge, router: respx.MockRouter) -> None:
        """Keep both."""
        self.bridge = bridge
        self.router = router

    def sync(self, at: dt.datetime = NOW, **options: Any) -> SyncResult:
        """`dashtam sync` through the core, its clock at ``at``, retries without waiting."""
        options.setdefault("backoff", NO_WAIT)
        return run_sync(self.router, clock=lambda: at, **options)

    def report(self, at: dt.datetime = NOW, **options: Any) -> SyncReport:
        """The report of a sync of the only connection."""
        (report,) = self.sync(at, **options).reports
        return report


@pytest.fixture
def sfin(master_key: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fixture]:
    """A Bridge of two institutions, one account each, and 269 days of history to fetch.

    269 days: the newest window of 89 days, then two older windows of exactly 90.
    """
    del master_key
    monkeypatch.setenv("DASHTAM_SYNC_HISTORY_DAYS", "269")
    checking = BridgeAccount("ACT-checking", "Everyday Checking", "1000.00")
    card = BridgeAccount("ACT-card", "Rewards Visa", "-50.00", conn_id="CON-2")
    bridge = Bridge(
        now=NOW, accounts=[checking, card], connections={"CON-1": "Chase", "CON-2": "Amex"}
    )
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        yield Fixture(bridge, router)


def _connect(cli: CliCall, bridge: Bridge, name: str = "banks") -> tuple[str, str]:
    """Connect through the CLI; the access's user and password."""
    token = bridge.setup_token()
    before = set(bridge.users)
    done = cli("connect", "simplefin", "--name", name, input=f"{token}\n")
    assert done.exit_code == 0, done.stderr
    (user,) = set(bridge.users) - before
    return user, bridge.users[user]


def _stored() -> list[Transaction]:
    found, _ = transactions(None, limit=100_000)
    return found


def _by_description() -> dict[str, Transaction]:
    return {t.description or "": t for t in _stored()}


def _windows(bridge: Bridge) -> list[tuple[int | None, int | None, list[str]]]:
    """Each /accounts request's start, end and account parameters."""
    found = []
    for request in bridge.data_requests:
        params = request.url.params
        found.append(
            (
                int(params["start-date"]) if "start-date" in params else None,
                int(params["end-date"]) if "end-date" in params else None,
                sorted(params.get_list("account")),
            )
        )
    return found


# -- windows ----------------------------------------------------------------------------------


def test_windows_split_at_exactly_90_days_and_a_transaction_on_a_boundary_is_stored_once(
    sfin: Fixture, cli: CliCall
) -> None:
    """Windows of 90 days meet end-exclusive: a transaction at a boundary second is never lost or doubled."""
    latest = NOW - 89 * DAY
    middle = latest - 90 * DAY
    oldest = middle - 90 * DAY  # the start of the 269 days of history
    second = dt.timedelta(seconds=1)
    moments = {
        "at newest start": latest,
        "before newest start": latest - second,
        "at middle start": middle,
        "before middle start": middle - second,
        "at history start": oldest,
        "recent": NOW - DAY,
    }
    sfin.bridge.accounts[0].transactions = [
        BridgeTxn(f"t{i}", "-1.00", name, when) for i, (name, when) in enumerate(moments.items())
    ]
    _connect(cli, sfin.bridge)
    report = sfin.report()
    assert report.result == "ok", report.message
    windows = _windows(sfin.bridge)
    assert windows[0][:2] == (int(latest.timestamp()), None)
    assert windows[1:] == [
        (int(middle.timestamp()), int(latest.timestamp()), ["ACT-card", "ACT-checking"]),
        (int(oldest.timestamp()), int(middle.timestamp()), ["ACT-card", "ACT-checking"]),
    ]
    stored = _by_description()
    assert sorted(stored) == sorted(moments)
    assert (report.new, report.changed, report.unchanged) == (len(moments), 0, 0)
    for name, when in moments.items():
        assert stored[name].time == when


def test_a_clock_that_moves_during_the_sync_costs_no_extra_window(
    sfin: Fixture, cli: CliCall
) -> None:
    """A clock a second later at each reading: 269 days are still 3 requests, no empty fourth."""
    _connect(cli, sfin.bridge)
    ticks = itertools.count()

    def clock() -> dt.datetime:
        return NOW + dt.timedelta(seconds=next(ticks))

    (report,) = run_sync(sfin.router, clock=clock, backoff=NO_WAIT).reports
    assert report.result == "ok", report.message
    windows = _windows(sfin.bridge)
    assert report.requests == len(windows) == 3
    assert all(end is None or (start is not None and start < end) for start, end, _ in windows)


def test_a_server_clock_hours_ahead_loses_nothing_at_the_start_of_the_newest_window(
    sfin: Fixture, cli: CliCall, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest window is 89 days: a Bridge 6 hours ahead does not cap it, so its first hour stands."""
    sfin.bridge.now = NOW + dt.timedelta(hours=6)
    early = NOW - 89 * DAY + dt.timedelta(hours=1)
    sfin.bridge.accounts[0].transactions = [BridgeTxn("e", "-5.00", "early", early)]
    _connect(cli, sfin.bridge)
    with caplog.at_level(logging.WARNING):
        report = sfin.report()
    assert report.result == "ok", report.message
    assert CAP_WARNING not in caplog.text
    start, end, _ = _windows(sfin.bridge)[0]
    assert end is None
    assert start == int((NOW - 89 * DAY).timestamp())
    assert _by_description()["early"].time == early


def test_only_accounts_that_need_older_history_are_asked_for_it(
    sfin: Fixture, cli: CliCall
) -> None:
    """After a full sync, a new account alone is named (``account=``) in the older windows."""
    _connect(cli, sfin.bridge)
    assert sfin.report().result == "ok"
    sfin.bridge.accounts.append(BridgeAccount("ACT-new", "New Savings", "5.00"))
    sfin.bridge.requests.clear()
    report = sfin.report(NOW + DAY)
    assert report.result == "ok", report.message
    windows = _windows(sfin.bridge)
    assert len(windows) == 3
    assert windows[0][2] == []
    assert [w[2] for w in windows[1:]] == [["ACT-new"], ["ACT-new"]]
    assert report.requests == 3


# -- the server's errors ----------------------------------------------------------------------


def test_gen_auth_is_exit_4_with_the_reconnect_command_and_marks_the_connection(
    sfin: Fixture, cli: CliCall
) -> None:
    """``gen.auth``: exit 4, ``dashtam connect simplefin --name banks``, ``tokens status`` says so."""
    _connect(cli, sfin.bridge)
    sfin.bridge.errlist = [{"code": "gen.auth", "msg": "Access revoked"}]
    synced = cli("sync")
    assert synced.exit_code == 4, synced.stderr
    assert "dashtam connect simplefin --name banks" in synced.stderr
    status = json.loads(cli("tokens", "status", "-f", "json").stdout)
    assert [(s["connection"], s["state"]) for s in status] == [("banks", "reauth_required")]
    assert _stored() == []


def test_con_auth_for_one_institution_is_exit_4_and_the_others_accounts_are_stored(
    sfin: Fixture, cli: CliCall
) -> None:
    """``con.auth`` for Amex: exit 4 naming Amex; Chase's account and transactions are stored."""
    sfin.bridge.accounts[0].transactions = [BridgeTxn("c1", "-3.00", "coffee", NOW - DAY)]
    sfin.bridge.accounts.pop()  # the Bridge leaves out what it cannot read
    sfin.bridge.errlist = [{"code": "con.auth", "msg": "MFA needed", "conn_id": "CON-2"}]
    _connect(cli, sfin.bridge)
    synced = cli("sync")
    assert synced.exit_code == 4, synced.stderr
    assert "Amex needs you to log in to it again" in synced.stderr
    accounts = json.loads(cli("accounts", "list", "-f", "json", "--offline").stdout)
    assert [(a["name"], a["institution"]) for a in accounts] == [("Everyday Checking", "Chase")]
    assert [t.description for t in _stored()] == ["coffee"]


@pytest.mark.parametrize("code", ["act.failed", "act.missingdata"])
def test_a_failed_account_is_exit_3_and_keeps_what_was_stored_while_others_update(
    sfin: Fixture, cli: CliCall, code: str
) -> None:
    """``act.*`` for the card: exit 3; its balance and transactions as before; checking updated."""
    checking, card = sfin.bridge.accounts
    checking.transactions = [BridgeTxn("c1", "-3.00", "coffee", NOW - DAY)]
    card.transactions = [BridgeTxn("k1", "-50.00", "flight", NOW - DAY)]
    _connect(cli, sfin.bridge)
    assert cli("sync").exit_code == 0
    before = {a["name"]: a for a in json.loads(cli("accounts", "list", "-f", "json").stdout)}
    checking.balance, card.balance = "900.00", "-999.00"
    checking.transactions.append(BridgeTxn("c2", "-7.00", "lunch", NOW))
    card.transactions = [BridgeTxn("k2", "-999.00", "junk", NOW)]  # a broken answer's rows
    sfin.bridge.errlist = [{"code": code, "msg": "could not reach", "account_id": "ACT-card"}]
    synced = cli("sync")
    assert synced.exit_code == 3, synced.stderr
    assert code in synced.stderr
    after = {a["name"]: a for a in json.loads(cli("accounts", "list", "-f", "json").stdout)}
    assert after["Rewards Visa"]["total_value"] == before["Rewards Visa"]["total_value"] == "-50.00"
    assert after["Everyday Checking"]["total_value"] == "900.00"
    assert sorted(t.description or "" for t in _stored()) == ["coffee", "flight", "lunch"]


def test_an_account_failing_in_an_older_window_fails_alone_and_keeps_its_newest_window(
    sfin: Fixture, cli: CliCall
) -> None:
    """``act.failed`` for the card only in the history windows: the card fails, checking completes."""
    checking, card = sfin.bridge.accounts
    checking.transactions = [BridgeTxn("c-old", "-1.00", "checking old", NOW - 150 * DAY)]
    card.transactions = [
        BridgeTxn("k-new", "-2.00", "card new", NOW - DAY),
        BridgeTxn("k-old", "-3.00", "card old", NOW - 150 * DAY),
    ]
    answer = sfin.bridge._accounts
    route = next(r for r in sfin.router.routes if r.side_effect == answer)

    def older_windows_fail_the_card(request: httpx.Request) -> httpx.Response:
        if "end-date" in request.url.params:
            sfin.bridge.errlist = [
                {"code": "act.failed", "msg": "timeout", "account_id": "ACT-card"}
            ]
        try:
            return answer(request)
        finally:
            sfin.bridge.errlist = []

    route.side_effect = older_windows_fail_the_card
    _connect(cli, sfin.bridge)
    report = sfin.report()
    assert report.result == "partial"
    assert "act.failed" in (report.message or "")
    stored = _by_description()
    assert sorted(stored) == ["card new", "checking old"]

    async def points() -> list[str]:
        async with open_vault(load_settings()) as vault:
            (info,) = await list_connections(vault)
            return list(await store.sync_points(vault, info.id))

    # Checking's history is complete (its sync point set); the card's is not.
    assert asyncio.run(points()) == [stored["checking old"].account_id]


def test_a_403_on_accounts_is_exit_4(sfin: Fixture, cli: CliCall) -> None:
    """An access revoked at the Bridge (HTTP 403): exit 4 with the command that reconnects."""
    user, _ = _connect(cli, sfin.bridge)
    sfin.bridge.revoked.add(user)
    synced = cli("sync")
    assert synced.exit_code == 4, synced.stderr
    assert "HTTP 403" in synced.stderr
    assert "dashtam connect simplefin --name banks" in synced.stderr


def test_version_1_warnings_are_shown_sanitised_with_the_connection_named(
    sfin: Fixture, cli: CliCall
) -> None:
    """A version-1 ``errors`` string with escapes: on stderr once, plain, after the connection."""
    sfin.bridge.version = 1
    sfin.bridge.errors = ["\x1b[31mChase\x1b[0m is \x1b]0;pwned\x07slow today"]
    _connect(cli, sfin.bridge)
    synced = cli("sync")
    assert synced.exit_code == 0, synced.stderr
    assert "SimpleFIN banks: Chase is slow today" in synced.stderr
    assert synced.stderr.count("slow today") == 1
    assert "\x1b" not in synced.stderr
    assert "pwned" not in synced.stderr


# -- the budget -------------------------------------------------------------------------------


def _used() -> dict[str, int]:
    """The request counts the vault holds, by day."""

    async def read() -> dict[str, int]:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            table = schema.request_budget
            rows = await conn.execute(select(table.c.day, table.c.used))
            return {row.day: row.used for row in rows}

    return asyncio.run(read())


def test_faults_are_retried_and_every_attempt_is_counted_against_the_budget(
    sfin: Fixture, cli: CliCall
) -> None:
    """A 429 then a 503 before the answer: the sync succeeds, and all 5 requests are counted."""
    _connect(cli, sfin.bridge)
    sfin.bridge.faults = [429, 503]
    report = sfin.report()
    assert report.result == "ok", report.message
    assert len(sfin.bridge.data_requests) == 5
    assert report.requests_left == 24 - 5
    assert _used() == {NOW.date().isoformat(): 5}


def test_retries_stop_when_the_budget_is_spent(
    sfin: Fixture, cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 2 requests a day and the server failing: 2 attempts, then the budget's error."""
    monkeypatch.setenv("DASHTAM_SIMPLEFIN_DAILY_REQUESTS", "2")
    _connect(cli, sfin.bridge)
    sfin.bridge.faults = [503, 503, 503]
    (report,) = sfin.sync().reports
    assert report.result == "failed"
    assert "budget of 2 requests a day is spent" in (report.message or "")
    assert len(sfin.bridge.data_requests) == 2
    assert _used() == {NOW.date().isoformat(): 2}


def test_two_connections_of_one_access_share_its_budget_which_resets_the_next_utc_day(
    sfin: Fixture, cli: CliCall
) -> None:
    """The same access under two names counts in one budget; the next UTC day starts anew."""
    user, password = _connect(cli, sfin.bridge)
    record = json.dumps({"version": 1, "access_url": sfin.bridge.access_url(user)})

    async def copy() -> None:
        async with open_vault(load_settings()) as vault:
            await save_secret_login(vault, provider="simplefin", name="copy", secret=record)
            assert len(await list_connections(vault)) == 2

    asyncio.run(copy())
    del password
    day = dt.datetime(NOW.year, NOW.month, NOW.day, 23, 0, tzinfo=dt.UTC)
    first = sfin.sync(day).reports
    assert sum(r.requests for r in first) == 6
    assert min(r.requests_left or 0 for r in first) == 24 - 6
    again = sfin.sync(day + dt.timedelta(minutes=30)).reports
    assert sorted(r.requests_left or 0 for r in again) == [24 - 8, 24 - 7]
    tomorrow = sfin.sync(day + dt.timedelta(hours=1, minutes=5)).reports
    assert sorted(r.requests_left or 0 for r in tomorrow) == [24 - 2, 24 - 1]
    assert _used() == {day.date().isoformat(): 8, (day + DAY).date().isoformat(): 2}


def test_concurrent_spends_on_two_vault_handles_never_both_take_the_last_request(
    sfin: Fixture, cli: CliCall
) -> None:
    """Eight spends at once from two handles of one vault, with 3 left: exactly 3 succeed."""
    _connect(cli, sfin.bridge)

    async def race() -> list[int | BaseException]:
        settings = load_settings()
        async with open_vault(settings) as one, open_vault(settings) as two:
            for _ in range(21):
                await store.spend_request(one, "simplefin:test", 24, NOW)
            attempts = [
                store.spend_request(vault, "simplefin:test", 24, NOW)
                for vault in (one, two, one, two, one, two, one, two)
            ]
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        return [o[0] if isinstance(o, tuple) else o for o in outcomes]

    outcomes = asyncio.run(race())
    left = sorted(o for o in outcomes if isinstance(o, int))
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert left == [0, 1, 2]
    assert len(refused) == 5
    assert all(isinstance(o, RequestBudgetSpent) for o in refused)
    assert _used() == {NOW.date().isoformat(): 24}


# -- secrets ----------------------------------------------------------------------------------


def test_the_credentials_go_only_in_the_basic_header(sfin: Fixture, cli: CliCall) -> None:
    """No request's URL holds the user or password; audit details and stderr hold neither."""
    user, password = _connect(cli, sfin.bridge)
    sfin.bridge.faults = [503]
    sfin.bridge.errlist = [
        {"code": "gen.warn", "msg": f"hello {user}:{password}"},
        {"code": "act.failed", "msg": f"bad {password}", "account_id": "ACT-card"},
    ]
    synced = cli("sync")
    assert synced.exit_code == 3, synced.stderr
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert sfin.bridge.data_requests
    for request in sfin.bridge.requests:
        assert request.url.userinfo == b""
        assert user not in str(request.url)
        assert password not in str(request.url)
    for request in sfin.bridge.data_requests:
        assert request.headers["Authorization"] == expected
    audit = cli("audit", "list", "-f", "json")
    assert audit.exit_code == 0
    records = json.loads(audit.stdout)
    assert any(r.get("detail") for r in records)
    for text in (audit.stdout, synced.stderr, synced.stdout):
        assert user not in text
        assert password not in text


# -- pending ----------------------------------------------------------------------------------


def test_a_pending_transaction_posted_under_its_id_is_changed_in_place(
    sfin: Fixture, cli: CliCall
) -> None:
    """Pending ``p1`` then posted as ``p1``: one row, counted changed (not new, not removed)."""
    pending = BridgeTxn("p1", "-20.00", "grocer", None, NOW - DAY)
    sfin.bridge.accounts[0].transactions = [pending]
    _connect(cli, sfin.bridge)
    assert sfin.report().new == 1
    (row,) = _stored()
    assert row.status == "PENDING"
    pending.posted, pending.amount = NOW, "-21.50"
    report = sfin.report(NOW + DAY)
    assert (report.new, report.changed, report.removed) == (0, 1, 0)
    (after,) = _stored()
    assert (after.id, after.status, str(after.amount)) == (row.id, "POSTED", "-21.50")


def test_pending_from_removes_only_the_pending_rows_of_that_account_from_that_time(
    sfin: Fixture, cli: CliCall
) -> None:
    """A batch naming checking from a time drops its pending rows since; nothing else goes."""
    checking, card = sfin.bridge.accounts
    checking.transactions = [
        BridgeTxn("old-pending", "-1.00", "checking pending old", None, NOW - 30 * DAY),
        BridgeTxn("new-pending", "-2.00", "checking pending new", None, NOW - DAY),
        BridgeTxn("posted", "-3.00", "checking posted new", NOW - DAY),
    ]
    card.transactions = [BridgeTxn("card-pending", "-4.00", "card pending new", None, NOW - DAY)]
    _connect(cli, sfin.bridge)
    assert sfin.report().new == 4
    rows = _by_description()
    account = rows["checking posted new"].account_id

    async def drop() -> store.Counts:
        async with open_vault(load_settings()) as vault:
            (info,) = await list_connections(vault)
            batch = Changes(pending_from={account: NOW - 10 * DAY})
            return await store.write_changes(vault, info, batch, through={}, now=NOW)

    counts = asyncio.run(drop())
    assert counts.removed == 1
    assert sorted(_by_description()) == [
        "card pending new",
        "checking pending old",
        "checking posted new",
    ]


def test_a_pending_transaction_without_a_date_keeps_the_day_it_was_first_seen(
    master_key: bytes, cli: CliCall
) -> None:
    """No ``transacted_at``: stored at the first sync's day, and unchanged two days later."""
    del master_key
    first = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    checking = BridgeAccount("ACT-chk-1111", "Checking", "100.00")
    checking.transactions = [BridgeTxn("p1", "-9.99", "Pending coffee", None)]
    bridge = Bridge(now=first, accounts=[checking])
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        bridge.install(router)
        token = bridge.setup_token()
        assert cli("connect", "simplefin", "--name", "banks", input=f"{token}\n").exit_code == 0
        reports = []
        for moment in (first, first + dt.timedelta(days=2)):
            bridge.now = moment
            result = run_sync(router, clock=lambda m=moment: m)
            reports.extend(result.reports)
    # (The mock Bridge lists a pending transaction in every window a sync asks for.)
    assert [(r.new, r.changed) for r in reports] == [(1, 0), (0, 0)]
    assert reports[1].unchanged == 1
    (row,) = json.loads(cli("transactions", "list", "-f", "json", "--offline").stdout)
    assert row["time"].startswith("2026-03-10")
