"""dashtam's real code against the in-process sandbox: connect, data, token refresh, faults.

Nothing on dashtam's side is replaced: the vault (in the test's DASHTAM_HOME,
keyed through the in-memory keyring), the loopback HTTPS listener, the token
endpoint client and the Schwab client all run as in production. Only the
browser is a function that opens the consent page and presses a button.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
from typing import TYPE_CHECKING, Any

import pytest
from sandbox_support import login, point_dashtam_at

from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import list_connections, load_tokens
from dashtam_cli.core.oauth.errors import AccessDenied
from dashtam_cli.core.queries import (
    QueryOptions,
    query_accounts,
    query_positions,
    query_transactions,
)
from dashtam_cli.core.settings import Settings, load_settings
from dashtam_cli.core.sync import SyncOptions, sync
from dashtam_cli.core.tokens import refresh_connections, status_report, token_manager
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import CliCall
    from sandbox_support import FakeClock, RunningSandbox

    from dashtam_cli.core.models import Account, Position, Transaction
    from dashtam_cli.core.oauth.tokens import TokenSet
    from dashtam_cli.core.queries import QueryResult


def _dec(value: Any) -> decimal.Decimal:
    """A JSON number's exact decimal value, as dashtam must read it."""
    return decimal.Decimal(str(value))


def _masked(number: str) -> str:
    return "****" + number[-4:]


def stored_tokens(settings: Settings) -> TokenSet:
    """The tokens of the connection 'schwab' as sealed in the vault."""

    async def read() -> TokenSet:
        async with open_vault(settings) as vault:
            return (await load_tokens(vault, "schwab"))[1]

    return asyncio.run(read())


def token_requests(running: RunningSandbox) -> int:
    """How many requests the sandbox's token endpoint has had."""
    return running.sandbox.counts.get("POST /v1/oauth/token", 0)


def accounts(**options: Any) -> tuple[list[Account], QueryResult]:
    """`dashtam accounts list`: from the vault, synced first when never synced."""
    query = QueryOptions(**options)
    return asyncio.run(query_accounts(load_settings(), query, OpenOptions()))


def positions(**options: Any) -> tuple[list[Position], QueryResult]:
    """`dashtam positions list`."""
    query = QueryOptions(**options)
    return asyncio.run(query_positions(load_settings(), query, OpenOptions()))


def transactions(**options: Any) -> tuple[list[Transaction], QueryResult]:
    """`dashtam transactions list`: every batch the query hands on, in order."""
    found: list[Transaction] = []
    query = QueryOptions(**options)
    result = asyncio.run(query_transactions(load_settings(), query, OpenOptions(), found.extend))
    return found, result


def no_failures(result: QueryResult) -> bool:
    """The query's sync (when it ran one) failed nowhere."""
    return result.sync is None or result.sync.failures == []


@pytest.fixture
def connected(dashtam_at_sandbox: RunningSandbox, isolated_env: Path) -> RunningSandbox:
    """Dashtam logged in to the sandbox as 'schwab'."""
    info = login(dashtam_at_sandbox, isolated_env)
    assert info.name == "schwab"
    assert info.provider == "schwab"
    return dashtam_at_sandbox


def test_connect_stores_the_sandbox_tokens(connected: RunningSandbox) -> None:
    """The login goes through consent, the loopback listener and the token endpoint once."""
    tokens = stored_tokens(load_settings())
    assert token_requests(connected) == 1
    assert connected.sandbox.counts["GET /v1/oauth/authorize"] == 1
    assert connected.sandbox.counts["POST /v1/oauth/authorize/decision"] == 1
    assert tokens.refresh_token is not None
    assert tokens.access_expires_at - tokens.issued_at == dt.timedelta(minutes=30)
    assert tokens.refresh_expires_at is not None
    assert tokens.refresh_expires_at - tokens.issued_at == dt.timedelta(days=7)


def test_accounts_are_the_sandbox_accounts(connected: RunningSandbox) -> None:
    """Every sandbox account appears once, with its balances as exact Decimals."""
    items, result = accounts()
    assert result.sync is not None  # never synced: synced first
    assert no_failures(result)
    by_number = {a.number: a for a in items}
    expected = connected.sandbox.accounts
    assert {a.body["securitiesAccount"]["type"] for a in expected} == {"MARGIN", "CASH"}
    assert sorted(by_number) == sorted(_masked(a.number) for a in expected)
    for account in expected:
        sec = account.body["securitiesAccount"]
        got = by_number[_masked(account.number)]
        assert got.type == sec["type"]
        assert got.name == account.nickname  # from the sandbox's /userPreference
        assert got.cash == _dec(sec["currentBalances"]["cashBalance"])
        assert got.total_value == _dec(sec["currentBalances"]["liquidationValue"])
        # A cash account has no buyingPower: its cash available for trading stands in.
        power = "cashAvailableForTrading" if sec["type"] == "CASH" else "buyingPower"
        assert (sec["type"] == "CASH") is ("buyingPower" not in sec["currentBalances"])
        assert got.buying_power == _dec(sec["currentBalances"][power])
        assert got.buying_power is not None
        assert got.market_value == sum(
            (_dec(p["marketValue"]) for p in sec["positions"]), decimal.Decimal(0)
        )
        assert account.number not in got.model_dump_json()


def test_positions_are_the_sandbox_positions(connected: RunningSandbox) -> None:
    """Every position, signed long minus short, option symbols with their spaces."""
    items, result = positions()
    assert no_failures(result)
    got = sorted(
        (p.account, p.symbol, p.asset_type, p.quantity, p.market_value, p.average_price)
        for p in items
    )
    expected = sorted(
        (
            _masked(a.number),
            p["instrument"]["symbol"],
            p["instrument"]["assetType"],
            _dec(p["longQuantity"]) - _dec(p["shortQuantity"]),
            _dec(p["marketValue"]),
            _dec(p["averagePrice"]),
        )
        for a in connected.sandbox.accounts
        for p in a.body["securitiesAccount"]["positions"]
    )
    assert got == expected
    options = [p for p in items if p.asset_type == "OPTION"]
    assert options
    assert all(" " in p.symbol for p in options)
    assert any(p.quantity < 0 for p in options)


def _expected_transactions(
    running: RunningSandbox, since: dt.datetime, until: dt.datetime
) -> list[tuple[Any, ...]]:
    rows = []
    for account in running.sandbox.accounts:
        for item in account.between(since, until):
            main = next(
                (t for t in item["transferItems"] if t["instrument"]["assetType"] != "CURRENCY"),
                None,
            )
            # What netAmount implies: the money of the item traded, less the net amount.
            fees = (
                _dec(main["cost"]) - _dec(item["netAmount"])
                if item["type"] == "TRADE" and main is not None
                else decimal.Decimal(0)
            )
            rows.append(
                (
                    _masked(account.number),
                    dt.datetime.strptime(item["time"], "%Y-%m-%dT%H:%M:%S%z"),
                    item["type"],
                    _dec(item["netAmount"]),
                    (main or {}).get("instrument", {}).get("symbol"),
                    fees,
                )
            )
    return sorted(rows)


def transactions_after_accounts(**options: Any) -> tuple[list[Transaction], QueryResult]:
    """`dashtam accounts list`, then `dashtam transactions list`, as the demo runs them."""
    _, first = accounts()
    assert no_failures(first)
    found, result = transactions(**options)
    assert result.sync is None  # the first query synced; this one reads the vault
    return found, result


def _got_transactions(items: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((t.account, t.time, t.type, t.amount, t.symbol, t.fees) for t in items)


def test_transactions_are_the_sandbox_transactions(connected: RunningSandbox) -> None:
    """A year of transactions of every account: exact amounts and fees, option symbols intact."""
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = until - dt.timedelta(days=365)
    items, _ = transactions_after_accounts(since=since, until=until)
    got = _got_transactions(items)
    assert got == _expected_transactions(connected, since, until)
    assert len(got) > 100
    symbols = {t.symbol for t in items if t.symbol}
    assert any(" " in s for s in symbols)
    assert any(t.fees > 0 for t in items)
    assert {t.account for t in items} == {_masked(a.number) for a in connected.sandbox.accounts}


def test_transactions_filtered_by_type_and_option_symbol(connected: RunningSandbox) -> None:
    """A type and an option symbol (with spaces) select the same rows from the vault."""
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = until - dt.timedelta(days=365)
    window = _expected_transactions(connected, since, until)
    symbol = next(row[4] for row in window if row[4] and " " in row[4])
    items, _ = transactions_after_accounts(
        since=since, until=until, types=("TRADE",), symbol=symbol
    )
    got = _got_transactions(items)
    assert got
    assert got == [row for row in window if row[2] == "TRADE" and row[4] == symbol]


def test_transactions_right_after_connect(connected: RunningSandbox) -> None:
    """`dashtam transactions list` as the first command after connect returns the data."""
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = until - dt.timedelta(days=365)
    items, result = transactions(since=since, until=until)
    assert result.sync is not None
    assert no_failures(result)
    assert _got_transactions(items) == _expected_transactions(connected, since, until)


def test_the_cli_answers_right_after_connect_then_from_the_vault(
    connected: RunningSandbox, cli: CliCall
) -> None:
    """`connect`, then `dashtam accounts list` just works; later queries send no request."""

    def served() -> int:
        return sum(n for k, n in connected.sandbox.counts.items() if k.startswith("GET /trader/"))

    first = cli("accounts", "list", "--format", "json")
    assert first.exit_code == 0, first.stderr
    numbers = sorted(row["number"] for row in json.loads(first.stdout))
    assert numbers == sorted(_masked(a.number) for a in connected.sandbox.accounts)
    sent = served()
    assert sent > 0

    for command in (["positions", "list"], ["transactions", "list"], ["accounts", "list"]):
        later = cli(*command, "--format", "json")
        assert later.exit_code == 0, later.stderr
        assert json.loads(later.stdout)
    assert served() == sent


def test_forced_refresh_gets_a_new_working_access_token(connected: RunningSandbox) -> None:
    """`dashtam tokens refresh --force`: a new access token, the same refresh token, and it works."""
    settings = load_settings()
    before = stored_tokens(settings)
    results = asyncio.run(refresh_connections(settings, None, OpenOptions(), force=True))
    assert [(r.connection, r.result) for r in results] == [("schwab", "refreshed")]
    after = stored_tokens(settings)
    assert after.access_token != before.access_token
    assert after.refresh_token == before.refresh_token
    assert token_requests(connected) == 2
    items, result = accounts()
    assert no_failures(result)
    assert len(items) == len(connected.sandbox.accounts)
    assert token_requests(connected) == 2  # the new token was good: no further refresh


def _works(running: RunningSandbox, token: str) -> int:
    with running.client() as client:
        answer = client.get(
            "/trader/v1/accounts/accountNumbers", headers={"Authorization": f"Bearer {token}"}
        )
    return answer.status_code


def test_access_token_is_refreshed_once_30_minutes_have_passed(
    connected: RunningSandbox, sandbox_clock: FakeClock
) -> None:
    """After 31 minutes the old token is refused; TokenManager.access_token fetches a new one."""
    settings = load_settings()
    old = stored_tokens(settings).access_token
    sandbox_clock.advance(31 * 60)
    assert _works(connected, old) == 401

    async def fresh_token() -> str:
        async with token_manager(settings, OpenOptions(), clock=sandbox_clock.now) as manager:
            return await manager.access_token("schwab")

    new = asyncio.run(fresh_token())
    assert new != old
    assert token_requests(connected) == 2
    assert _works(connected, new) == 200
    assert stored_tokens(settings).access_token == new
    statuses = asyncio.run(status_report(settings, None, OpenOptions(), clock=sandbox_clock.now))
    assert [s.state for s in statuses] == ["ok"]
    assert statuses[0].access_expires_in_seconds is not None
    assert 29 * 60 < statuses[0].access_expires_in_seconds <= 30 * 60


def test_a_401_from_the_api_makes_dashtam_refresh_and_retry(
    connected: RunningSandbox, sandbox_clock: FakeClock
) -> None:
    """When only the sandbox knows the token expired, the 401 triggers one refresh and a retry."""
    sandbox_clock.advance(31 * 60)  # dashtam's own clock still thinks the token is fresh
    items, result = accounts()
    assert no_failures(result)
    assert len(items) == len(connected.sandbox.accounts)
    # The account numbers and the accounts calls run at once and both get a 401;
    # exactly one refresh follows (the login's code exchange was the first request).
    assert token_requests(connected) == 2


@pytest.mark.usefixtures("connected")
def test_a_refresh_keeps_the_refresh_tokens_seven_day_deadline(sandbox_clock: FakeClock) -> None:
    """Schwab's refresh token dies 7 days after the login: a refresh must not move that date."""
    settings = load_settings()
    deadline = stored_tokens(settings).refresh_expires_at
    sandbox_clock.advance(31 * 60)
    asyncio.run(
        refresh_connections(settings, None, OpenOptions(), force=True, clock=sandbox_clock.now)
    )
    assert stored_tokens(settings).refresh_expires_at == deadline


def test_a_denied_login_raises_access_denied_and_stores_nothing(
    dashtam_at_sandbox: RunningSandbox, isolated_env: Path
) -> None:
    """Pressing Deny ends the login with AccessDenied; no connection and no token request."""
    with pytest.raises(AccessDenied):
        login(dashtam_at_sandbox, isolated_env, decision="deny")
    assert token_requests(dashtam_at_sandbox) == 0

    async def connections() -> int:
        async with open_vault(load_settings()) as vault:
            return len(await list_connections(vault))

    assert asyncio.run(connections()) == 0


# Seed 5's faults, for the requests this sync makes, are one 429 and one 503:
# SchwabClient retries those (RETRY_STATUSES) but not 500, which other seeds draw.
# The sync keeps its real backoff, so the retries wait for real: Retry-After is
# 1 s, a first 503 retry at most 0.5 s.
FAULT_SEED = 5


def test_transactions_survive_injected_faults_through_retries(
    start_sandbox: Callable[..., RunningSandbox],
    monkeypatch: pytest.MonkeyPatch,
    isolated_env: Path,
) -> None:
    """With error_rate 0.3 the fetches still return exactly the sandbox's data, after retries."""
    running = start_sandbox(error_rate=0.3, seed=FAULT_SEED)
    point_dashtam_at(running, monkeypatch)
    login(running, isolated_env)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    since = until - dt.timedelta(days=365)
    report = asyncio.run(sync(load_settings(), SyncOptions(), OpenOptions()))
    assert report.outcome.failures == []
    items, _ = transactions(since=since, until=until)
    assert _got_transactions(items) == _expected_transactions(running, since, until)

    async def audited() -> list[tuple[str, str, int | None]]:
        async with open_vault(load_settings()) as vault:
            entries = await list_audit(vault)
        return [(e.operation, e.outcome, e.http_status) for e in entries]

    calls = [c for c in asyncio.run(audited()) if c[0].startswith("schwab.")]
    refused = {status for _, outcome, status in calls if outcome == "error"}
    assert refused == {429, 503}
    served = sum(n for k, n in running.sandbox.counts.items() if k.startswith("GET /trader/"))
    assert served == len(calls)
