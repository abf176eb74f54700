"""`dashtam sync`: incremental windows, updates without duplicates, failures that keep what is stored."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import logging
import urllib.parse
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import respx
from raw_vault import raw_vault_bytes
from schwab_support import (
    API,
    BASE_URL,
    CORRELATION,
    TOKEN_URL,
    TRANSACTIONS_PATH,
    add_connection,
    hash_of,
    json_response,
    mock_connection_api,
    transaction_text,
)
from sqlalchemy import select
from sync_support import NOW, accounts, at, rows_in, run_sync, transactions, transport

from dashtam_cli.core import store
from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import list_connections
from dashtam_cli.core.errors import (
    DashtamError,
    ExitCode,
    InputError,
    PartialFailure,
    ReauthRequired,
)
from dashtam_cli.core.paths import resolve_paths
from dashtam_cli.core.queries import QueryOptions, query_transactions
from dashtam_cli.core.results import Failure, FetchResult
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, connected_elsewhere, sync
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from pathlib import Path

    from dashtam_cli.core.models import Transaction
    from dashtam_cli.core.vault.vault import Vault

FIRST, SECOND = "11111111", "22222222"
TOKEN: Final = "token-b"
DAY: Final = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def schwab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schwab at the mocked origin, with the app's credentials in the environment."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def with_vault(job: Callable[[Vault], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``job`` on the test's vault."""

    async def main() -> Any:
        async with open_vault(load_settings()) as vault:
            return await job(vault)

    return asyncio.run(main())


def windows(router: respx.MockRouter) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    """The (startDate, endDate) of each transactions call, by account hash, in order."""
    found: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    for call in router.calls:
        match = TRANSACTIONS_PATH.match(call.request.url.path)
        if match is None:
            continue
        query = urllib.parse.parse_qs(call.request.url.query.decode())
        start = dt.datetime.fromisoformat(query["startDate"][0])
        end = dt.datetime.fromisoformat(query["endDate"][0])
        found.setdefault(match[1], []).append((start, end))
    return {k: sorted(v) for k, v in found.items()}


def starts(router: respx.MockRouter) -> dict[str, dt.datetime]:
    """The earliest startDate asked for each account hash."""
    return {k: v[0][0] for k, v in windows(router).items()}


def points() -> dict[str, store.SyncPoint]:
    """Every account's sync point, by account id."""

    async def read(vault: Vault) -> dict[str, store.SyncPoint]:
        (info,) = await list_connections(vault)
        return await store.sync_points(vault, info.id)

    result: dict[str, store.SyncPoint] = with_vault(read)
    return result


def ids_by_number() -> dict[str, str]:
    """Each stored account's id, by masked number."""
    return {a.number: a.id for a in accounts()[0]}


@pytest.fixture
def brokerage(router: respx.MockRouter) -> dict[str, str]:
    """One connection, 'brokerage', with two accounts answered from the fixtures (not synced)."""
    add_connection("brokerage", TOKEN)
    return mock_connection_api(router, TOKEN, [FIRST, SECOND])


# --- windows ------------------------------------------------------------------------------------


def test_a_first_sync_fetches_the_default_history(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """730 days back from now, in windows of at most a year, for every account."""
    result = run_sync(router, clock=at(NOW))

    (report,) = result.reports
    assert report.result == "ok"
    assert report.since == NOW - 730 * DAY
    assert report.until == NOW
    asked = windows(router)
    assert set(asked) == set(brokerage.values())
    for spans in asked.values():
        assert spans[0][0] == NOW - 730 * DAY
        assert spans[-1][1] == NOW
        # The windows tile the history with neither gap nor overlap.
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert {p.through for p in points().values()} == {NOW}


def test_the_history_is_a_setting(
    router: respx.MockRouter, brokerage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DASHTAM_SYNC_HISTORY_DAYS=30: one window of 30 days per account."""
    monkeypatch.setenv("DASHTAM_SYNC_HISTORY_DAYS", "30")

    run_sync(router, clock=at(NOW))

    assert windows(router) == {h: [(NOW - 30 * DAY, NOW)] for h in brokerage.values()}


def test_a_later_sync_starts_at_the_last_point_less_the_overlap(
    router: respx.MockRouter, brokerage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days later: from the last sync less 7 days; with an overlap of 2, less 2 days."""
    run_sync(router, clock=at(NOW))
    router.reset()

    later = NOW + 3 * DAY
    second = run_sync(router, clock=at(later))

    assert windows(router) == {h: [(NOW - 7 * DAY, later)] for h in brokerage.values()}
    assert second.reports[0].result == "ok"
    assert second.reports[0].unchanged == 4
    assert second.reports[0].new == 0
    assert {p.through for p in points().values()} == {later}

    router.reset()
    monkeypatch.setenv("DASHTAM_SYNC_OVERLAP_DAYS", "2")
    last = later + DAY
    run_sync(router, clock=at(last))
    assert windows(router) == {h: [(later - 2 * DAY, last)] for h in brokerage.values()}


def test_since_and_full(router: respx.MockRouter, brokerage: dict[str, str]) -> None:
    """--since fetches from that date; --full the whole history again, even when just synced."""
    run_sync(router, clock=at(NOW))
    router.reset()

    since = NOW - 45 * DAY
    first = run_sync(router, clock=at(NOW), since=since)
    assert first.reports[0].result == "ok"
    assert windows(router) == {h: [(since, NOW)] for h in brokerage.values()}

    router.reset()
    full = run_sync(router, clock=at(NOW), full=True)
    assert full.reports[0].result == "ok"
    assert starts(router) == dict.fromkeys(brokerage.values(), NOW - 730 * DAY)


# --- changes ------------------------------------------------------------------------------------


def test_a_changed_transaction_is_updated_not_duplicated(router: respx.MockRouter) -> None:
    """The second sync: one amount changed, one new, one unchanged; three rows, the new amount."""
    add_connection("brokerage", TOKEN)
    bodies = [
        "[" + transaction_text(1) + "," + transaction_text(2) + "]",
        "["
        + transaction_text(1)
        + ","
        + transaction_text(2, net_amount="-99.5")
        + ","
        + transaction_text(3)
        + "]",
    ]
    answer = {"body": bodies[0]}
    mock_connection_api(
        router, TOKEN, [FIRST], transactions=lambda _r: json_response(answer["body"])
    )
    first = run_sync(router, clock=at(NOW), since=NOW - 30 * DAY)
    assert (first.reports[0].new, first.reports[0].changed) == (2, 0)

    answer["body"] = bodies[1]
    second = run_sync(router, clock=at(NOW + DAY))

    (report,) = second.reports
    assert (report.new, report.changed, report.unchanged) == (1, 1, 1)
    assert rows_in(schema.transactions) == 3
    # Stored as printed, money with two places at least: the same amounts.
    amounts = sorted(t.amount for t in transactions()[0])
    assert amounts == [Decimal("-1215.95"), Decimal("-1215.95"), Decimal("-99.5")]


def test_a_failing_account_keeps_its_data_and_its_sync_point(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """One account's transactions fail: its rows and point stay, the other's point moves (exit 3)."""
    run_sync(router, clock=at(NOW))
    ids = ids_by_number()
    stored = transactions()[0]

    failing = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    failing.get(f"{API}/accounts/{brokerage[FIRST]}/transactions").mock(
        return_value=json_response('{"message":"boom","errors":["boom"]}', 500, "c-500")
    )
    mock_connection_api(failing, TOKEN, [FIRST, SECOND])
    later = NOW + 2 * DAY

    result = run_sync(failing, clock=at(later))

    (report,) = result.reports
    assert report.result == "partial"
    assert report.failed_accounts == ["****1111"]
    (failure,) = result.outcome.failures
    assert failure.label == "brokerage ****1111"
    error = result.outcome.outcome()
    assert isinstance(error, PartialFailure)
    assert error.exit_code == ExitCode.PARTIAL
    assert "HTTP 500" in error.message
    assert FIRST not in error.message
    assert transactions()[0] == stored
    moved = points()
    assert moved[ids["****1111"]].through == NOW
    assert moved[ids["****2222"]].through == later

    # The next sync asks the failed account from its old point, the other from its new one.
    router.reset()
    last = later + DAY
    run_sync(router, clock=at(last))
    assert starts(router) == {
        brokerage[FIRST]: NOW - 7 * DAY,
        brokerage[SECOND]: later - 7 * DAY,
    }


def test_a_login_to_renew_keeps_everything_stored(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """The API refuses the token and the refresh is refused: exit 4 with the command; nothing lost."""
    run_sync(router, clock=at(NOW))
    before = (accounts()[0], transactions()[0], points())
    del brokerage

    refused = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    refused.get(url__startswith=API).mock(
        return_value=json_response('{"message":"Unauthorized","errors":[]}', 401)
    )
    refused.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": "unsupported_token_type",
                "error_description": "400 Bad Request: refresh_token_authentication_error",
            },
            headers={CORRELATION: "c-refresh"},
        )
    )

    result = run_sync(refused, clock=at(NOW + DAY))

    (report,) = result.reports
    assert report.result == "reauth_required"
    error = result.outcome.outcome()
    assert isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.REAUTH
    assert error.hint == "run: dashtam connect schwab --name brokerage"
    assert (accounts()[0], transactions()[0], points()) == before


def test_dead_refresh_tokens_everywhere_require_a_new_login(router: respx.MockRouter) -> None:
    """Both connections' access tokens expired and their refresh refused: exit 4, no API call."""
    add_connection("alpha", "token-alpha", access_in=dt.timedelta(minutes=-1))
    add_connection("beta", "token-beta", access_in=dt.timedelta(minutes=-1))
    refused = router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": "unsupported_token_type",
                "error_description": "400 Bad Request: refresh_token_authentication_error",
            },
            headers={CORRELATION: "c-refresh"},
        )
    )
    api = router.get(url__startswith=API).mock(return_value=json_response("[]"))

    result = run_sync(router)

    assert result.outcome.succeeded == 0
    sent = {
        urllib.parse.parse_qs(c.request.content.decode())["refresh_token"][0] for c in refused.calls
    }
    assert sent == {"refresh-for-token-alpha", "refresh-for-token-beta"}
    assert api.call_count == 0
    for failure in result.outcome.failures:
        assert isinstance(failure.error, ReauthRequired)
        assert failure.error.hint == f"run: dashtam connect schwab --name {failure.connection}"
    error = result.outcome.outcome()
    assert isinstance(error, ReauthRequired)
    assert error.exit_code == ExitCode.REAUTH
    assert {r.result for r in result.reports} == {"reauth_required"}

    async def statuses(vault: Vault) -> set[str]:
        return {info.status for info in await list_connections(vault)}

    assert with_vault(statuses) == {"reauth_required"}


def test_a_401_refreshes_through_the_token_manager_and_retries(router: respx.MockRouter) -> None:
    """The API refuses the stored token: one refresh, then the calls go with the new token."""
    add_connection("brokerage", "token-old")
    router.get(url__startswith=API, headers={"Authorization": "Bearer token-old"}).mock(
        return_value=json_response('{"message":"Unauthorized","errors":[]}', 401)
    )
    mock_connection_api(router, "token-new", [FIRST])
    refresh = router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "access_token": "token-new",
                "refresh_token": "refresh-for-token-old",
                "id_token": "eyJ.x.y",
                "token_type": "Bearer",
                "scope": "api",
                "expires_in": 1800,
            },
        )
    )

    result = run_sync(router)

    assert result.outcome.failures == []
    assert [a.number for a in accounts()[0]] == ["****1111"]
    assert refresh.call_count == 1


def test_one_failing_connection_is_a_partial_failure(router: respx.MockRouter) -> None:
    """Alpha answers, beta's API fails with 500: alpha stored, exit 3 naming beta."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(router, "token-alpha", [FIRST])
    failing = router.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"})
    failing.mock(
        return_value=json_response('{"message":"Internal Server Error","errors":[]}', 500, "c-500")
    )

    result = run_sync(router, clock=at(NOW))

    assert {r.connection: r.result for r in result.reports} == {"alpha": "ok", "beta": "failed"}
    assert [a.connection for a in accounts()[0]] == ["alpha"]
    assert result.outcome.succeeded == 1
    assert [f.connection for f in result.outcome.failures] == ["beta"]
    error = result.outcome.outcome()
    assert isinstance(error, PartialFailure)
    assert int(error.exit_code) == 3
    assert "1 of 2 connections failed" in error.message
    assert "HTTP 500" in error.message
    assert "c-500" in error.message


def test_no_connections_is_a_clear_error(router: respx.MockRouter) -> None:
    """With no connection (and even no vault yet) the error says to log in first."""
    for _ in range(2):
        with pytest.raises(DashtamError) as caught:
            run_sync(router)
        assert caught.value.message == "there are no connections yet"
        assert caught.value.hint is not None
        assert caught.value.hint.startswith("log in first: dashtam connect")

        async def create_empty_vault() -> None:
            async with open_vault(load_settings(), OpenOptions(create=True)):
                pass

        asyncio.run(create_empty_vault())
    assert router.calls.call_count == 0


def test_an_unknown_connection_is_named(router: respx.MockRouter) -> None:
    """--connection with a name that is not stored: that name in the error, nothing fetched."""
    add_connection("brokerage", TOKEN)
    with pytest.raises(DashtamError, match="nope"):
        run_sync(router, connections=("nope",))
    assert router.calls.call_count == 0


def test_outcome_without_failures_is_none() -> None:
    """Nothing failed: no error to exit with."""
    assert FetchResult([1], [], succeeded=1).outcome() is None


def test_outcome_of_one_failure_among_one_is_that_failure() -> None:
    """The only connection failed: its own error, with its own exit code."""
    error = ReauthRequired("gone", hint="run: dashtam connect schwab --name a")
    assert FetchResult([], [Failure("a", error)], succeeded=0).outcome() is error


# --- ids, sealing, secrets ----------------------------------------------------------------------


@pytest.mark.usefixtures("brokerage")
def test_account_and_transaction_ids_are_stable_across_syncs(router: respx.MockRouter) -> None:
    """Two syncs: the same account and transaction ids; two accounts, two random ids."""
    import uuid

    run_sync(router, clock=at(NOW))
    first = ids_by_number()
    first_txns = sorted(t.id for t in transactions()[0])
    run_sync(router, clock=at(NOW + DAY), full=True)

    assert ids_by_number() == first
    assert sorted(t.id for t in transactions()[0]) == first_txns
    assert first["****1111"] != first["****2222"]
    for account_id in first.values():
        uuid.UUID(account_id)
    assert rows_in(schema.accounts) == 2


def test_the_vault_is_sealed_and_numbers_stay_out_of_messages(
    router: respx.MockRouter, brokerage: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The vault at rest holds no number, hash or amount in the clear; logs and audit no number.

    At rest: its files, or a shared vault's pg_dump.
    """
    with caplog.at_level(logging.DEBUG, logger="dashtam_cli"):
        result = run_sync(router, clock=at(NOW))
    assert result.outcome.failures == []

    raw = raw_vault_bytes()
    assert raw
    hashes = (brokerage[FIRST], brokerage[SECOND])
    for secret in (FIRST, SECOND, *hashes, "51420.89", "88853.04", "1215.95", "854.95", "2.7733"):
        assert secret.encode() not in raw, secret

    async def audit(vault: Vault) -> str:
        return json.dumps([e.model_dump(mode="json") for e in await list_audit(vault)])

    audited = with_vault(audit)
    assert "schwab.transactions" in audited
    logged = caplog.text + str(result)
    for secret in (FIRST, SECOND, *hashes):
        assert secret not in audited
        assert secret not in logged


# --- two syncs at once --------------------------------------------------------------------------


def test_two_syncs_at_once_fetch_once(
    router: respx.MockRouter,
    brokerage: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The second sync waits for the first, then reports skipped: each window is asked once.

    On a shared vault the second sync runs as another machine would, with a
    home of its own: only the database's lock can hold it back.
    """
    release = asyncio.Event()

    def waiting(record: logging.LogRecord) -> bool:
        if "another dashtam process is syncing" in record.getMessage():
            release.set()
        return True

    async def held(request: httpx.Request) -> httpx.Response:
        # The first sync's transactions wait until the second is waiting for the lock.
        await asyncio.wait_for(release.wait(), 60)
        return json_response(
            "[" + transaction_text(1) + "]" if hash_of(FIRST) in request.url.path else "[]"
        )

    mock_connection_api(router, TOKEN, [FIRST, SECOND], transactions=held)
    caplog.handler.addFilter(waiting)

    async def both() -> list[Any]:
        opts = SyncOptions(transport=transport(router), clock=at(NOW))
        settings = load_settings()
        other = settings
        if settings.database_url is not None:
            home = {"DASHTAM_HOME": str(tmp_path / "machine-b")}
            other = dataclasses.replace(settings, paths=resolve_paths(home))
        return list(
            await asyncio.gather(
                sync(settings, opts, OpenOptions()),
                sync(other, opts, OpenOptions()),
            )
        )

    with caplog.at_level(logging.WARNING):
        results = asyncio.run(both())

    assert sorted(r.reports[0].result for r in results) == ["ok", "skipped"]
    assert all(r.outcome.outcome() is None for r in results)
    asked = windows(router)
    assert set(asked) == set(brokerage.values())
    assert all(len(spans) == 2 for spans in asked.values())  # 730 days: two windows, once
    assert rows_in(schema.accounts) == 2
    assert rows_in(schema.transactions) == 1
    assert rows_in(schema.balances) == 2


def test_a_query_during_a_sync_sees_the_last_committed_state(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a sync is fetching a changed amount, a query answers the stored one; after, the new one."""
    monkeypatch.setenv("DASHTAM_SYNC_HISTORY_DAYS", "30")  # one window per sync
    add_connection("brokerage", TOKEN)
    seen: list[list[str]] = []
    answer: dict[str, str | None] = {"amount": None}

    async def during(_request: httpx.Request) -> httpx.Response:
        if answer["amount"] is not None:
            found: list[Transaction] = []
            await query_transactions(
                load_settings(), QueryOptions(offline=True), OpenOptions(), found.extend
            )
            seen.append([str(t.amount) for t in found])
        return json_response("[" + transaction_text(1, net_amount=answer["amount"]) + "]")

    mock_connection_api(router, TOKEN, [FIRST], transactions=during)
    run_sync(router, clock=at(NOW))
    answer["amount"] = "-5.25"

    result = run_sync(router, clock=at(NOW + DAY))

    assert result.reports[0].changed == 1
    assert seen == [["-1215.95"]]
    assert [str(t.amount) for t in transactions()[0]] == ["-5.25"]


# --- snapshots and history ------------------------------------------------------------------------


async def _balances(vault: Vault) -> list[dict[str, Any]]:
    table = schema.balances
    async with vault.reading() as conn:
        rows = (await conn.execute(select(table))).all()
    return [
        json.loads(vault.unseal_text(table.name, r.id, "payload", r.payload, owner=r.account_id))
        for r in rows
    ]


@pytest.mark.usefixtures("brokerage")
def test_each_sync_writes_a_balance_snapshot_per_account(router: respx.MockRouter) -> None:
    """Two syncs of two accounts: four sealed snapshots, each with the sync's time and balances."""
    run_sync(router, clock=at(NOW))
    assert rows_in(schema.balances) == 2
    run_sync(router, clock=at(NOW + DAY))

    snapshots = with_vault(_balances)
    assert len(snapshots) == 4
    ids = ids_by_number()
    assert sorted((s["account_id"], s["at"]) for s in snapshots) == sorted(
        (account_id, moment.isoformat().replace("+00:00", "Z"))
        for account_id in ids.values()
        for moment in (NOW, NOW + DAY)
    )
    assert {s["cash"] for s in snapshots} == {"51420.89"}
    assert {s["buying_power"] for s in snapshots} == {"88853.04"}
    raw = raw_vault_bytes()
    assert b"51420.89" not in raw


# --- which connections ----------------------------------------------------------------------------


def test_only_new_syncs_only_connections_never_synced(router: respx.MockRouter) -> None:
    """Alpha was synced, beta never: only beta is fetched; with none new, nothing is."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST])
    run_sync(router, clock=at(NOW))
    add_connection("beta", "token-beta")
    mock_connection_api(router, "token-beta", [SECOND])
    router.reset()

    result = run_sync(router, clock=at(NOW), only_new=True)

    assert [r.connection for r in result.reports] == ["beta"]
    tokens = {c.request.headers["Authorization"] for c in router.calls}
    assert tokens == {"Bearer token-beta"}

    router.reset()
    again = run_sync(router, clock=at(NOW), only_new=True)
    assert again.reports == []
    assert router.calls.call_count == 0


def test_a_named_connection_only(router: respx.MockRouter) -> None:
    """--connection beta: only beta's token is used."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(router, "token-alpha", [FIRST])
    mock_connection_api(router, "token-beta", [SECOND])

    result = run_sync(router, clock=at(NOW), connections=("beta",))

    assert [r.connection for r in result.reports] == ["beta"]
    assert {c.request.headers["Authorization"] for c in router.calls} == {"Bearer token-beta"}


def _elsewhere(router: respx.MockRouter, numbers: Sequence[str]) -> list[tuple[str, list[str]]]:
    """connected_elsewhere for a new connection 'fresh' whose login lists ``numbers``."""
    fresh = add_connection("fresh", "token-fresh")
    mock_connection_api(router, "token-fresh", numbers)

    async def check(vault: Vault) -> list[tuple[str, list[str]]]:
        async with httpx.AsyncClient(transport=transport(router)) as client:
            return await connected_elsewhere(vault, client, fresh, "token-fresh")

    result: list[tuple[str, list[str]]] = with_vault(check)
    return result


def test_a_login_to_accounts_another_connection_holds_is_told(router: respx.MockRouter) -> None:
    """A new login that lists an account alpha holds: alpha and the masked number, no more."""
    add_connection("alpha", "token-alpha")
    mock_connection_api(router, "token-alpha", [FIRST, SECOND])
    run_sync(router, clock=at(NOW))

    assert _elsewhere(router, [SECOND, "33333333"]) == [("alpha", ["****2222"])]


def test_no_duplicate_check_request_without_synced_connections(router: respx.MockRouter) -> None:
    """Alpha never synced: nothing to compare with, no request sent."""
    add_connection("alpha", "token-alpha")

    assert _elsewhere(router, [FIRST]) == []
    assert router.calls.call_count == 0


def test_a_since_after_now_is_refused(router: respx.MockRouter) -> None:
    """--since in the future: a usage error, nothing fetched."""
    add_connection("brokerage", TOKEN)
    with pytest.raises(InputError):
        run_sync(router, clock=at(NOW), since=NOW + DAY)
    assert router.calls.call_count == 0


def test_a_since_after_the_sync_point_leaves_the_point_where_it_was(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """--since later than the last sync skips a stretch: the point must not jump over it.

    Synced on NOW, then 30 days later `--since` 2 days back: the 28 days
    between were never fetched, so the next plain sync still starts at the
    old point less the overlap. A --since at or before the point moves it.
    """
    run_sync(router, clock=at(NOW))
    later = NOW + 30 * DAY
    run_sync(router, clock=at(later), since=later - 2 * DAY)
    assert {p.through for p in points().values()} == {NOW}

    router.reset()
    run_sync(router, clock=at(later))
    assert starts(router) == dict.fromkeys(brokerage.values(), NOW - 7 * DAY)
    assert {p.through for p in points().values()} == {later}

    run_sync(router, clock=at(later + DAY), since=later - DAY)
    assert {p.through for p in points().values()} == {later + DAY}


def test_a_first_sync_with_a_since_sets_no_point(
    router: respx.MockRouter, brokerage: dict[str, str]
) -> None:
    """A first sync from --since a month back: the next plain sync still fetches the whole history."""
    run_sync(router, clock=at(NOW), since=NOW - 30 * DAY)
    assert rows_in(schema.transactions) == 4
    assert points() == {}

    router.reset()
    run_sync(router, clock=at(NOW + DAY))
    assert starts(router) == dict.fromkeys(brokerage.values(), NOW + DAY - 730 * DAY)


def test_an_interrupted_sync_keeps_what_completed(
    router: respx.MockRouter, brokerage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while one account is still fetching: the other's data and point stay; the lock goes.

    The next sync then fetches the unfinished account's whole history, and the
    finished one's from its point.
    """
    never = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if brokerage[SECOND] in request.url.path:
            await never.wait()  # still fetching when the sync is interrupted
        return json_response("[" + transaction_text(1) + "]")

    stuck = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    mock_connection_api(stuck, TOKEN, [FIRST, SECOND], transactions=answer)

    written = asyncio.Event()
    write_changes = store.write_changes

    async def spy(*args: Any, **kwargs: Any) -> store.Counts:
        counts = await write_changes(*args, **kwargs)
        written.set()  # the first account's batch is stored
        return counts

    monkeypatch.setattr(store, "write_changes", spy)

    async def interrupted() -> None:
        job = asyncio.ensure_future(
            sync(
                load_settings(),
                SyncOptions(transport=transport(stuck), clock=at(NOW)),
                OpenOptions(),
            )
        )
        await asyncio.wait_for(written.wait(), 60)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(interrupted())

    ids = ids_by_number()
    assert list(points()) == [ids["****1111"]]
    assert {t.account for t in transactions()[0]} == {"****1111"}

    later = NOW + DAY
    result = run_sync(router, clock=at(later))
    assert result.reports[0].result == "ok"
    assert starts(router) == {brokerage[FIRST]: NOW - 7 * DAY, brokerage[SECOND]: later - 730 * DAY}


def test_a_point_older_than_the_history_still_moves(
    router: respx.MockRouter, brokerage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history of 30 days, not synced for 40: the sync fetches 30 days and moves the point."""
    monkeypatch.setenv("DASHTAM_SYNC_HISTORY_DAYS", "30")
    run_sync(router, clock=at(NOW))
    router.reset()
    later = NOW + 40 * DAY

    run_sync(router, clock=at(later))

    assert starts(router) == dict.fromkeys(brokerage.values(), later - 30 * DAY)
    assert {p.through for p in points().values()} == {later}
