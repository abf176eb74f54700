"""`dashtam sync`, and the queries that read what it stored, through the CLI (Schwab mocked by respx)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from rich.console import Console
from schwab_support import (
    API,
    BASE_URL,
    TOKEN_URL,
    TRANSACTIONS_PATH,
    add_connection,
    json_response,
    mock_connection_api,
    transaction_text,
)

from dashtam_cli.cli import sync as sync_cli
from dashtam_cli.cli.output import Renderer
from dashtam_cli.core.models import KINDS, Transaction
from dashtam_cli.core.queries import QueryOptions, query_transactions
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, sync
from dashtam_cli.core.vault.vault import OpenOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import CliCall, Result

FIRST, SECOND = "11111111", "22222222"
SERVER_ERROR = '{"message":"Internal Server Error","errors":[]}'
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """Schwab's API at https://schwab.test, mocked for every HTTP client the CLI makes."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def answers(api: respx.MockRouter) -> list[str]:
    """One connection, 'brokerage', of two accounts; its transactions body is ``answers[0]``."""
    body = [json.dumps([shaped(1, "2025-01-17T17:19:49+0000")])]
    add_connection("brokerage", "token-b")
    mock_connection_api(
        api, "token-b", [FIRST, SECOND], transactions=lambda _request: json_response(body[0])
    )
    return body


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stderr counts as a terminal (the runner's is not one)."""
    monkeypatch.setattr(sync_cli, "on_terminal", lambda: True)


def shaped(  # noqa: PLR0913 - every field a test varies
    activity_id: int,
    time: str,
    kind: str = "TRADE",
    *,
    description: str | None = None,
    net_amount: str | None = None,
    symbol: str | None = None,
) -> dict[str, Any]:
    """transaction_single.json with another activityId, time, type (and description, amount)."""
    item: dict[str, Any] = json.loads(transaction_text(activity_id, net_amount=net_amount))
    item["time"] = time
    item["type"] = kind
    if description is not None:
        item["description"] = description
    if symbol is not None:
        item["transferItems"][0]["instrument"]["symbol"] = symbol
    return item


def ok(result: Result) -> str:
    """Expect exit 0 and a quiet stderr; return stdout."""
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def errors_of(stderr: str) -> list[str]:
    """The ``error:`` lines of stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def requests_to(api: respx.MockRouter) -> int:
    """How many requests reached the mocked API."""
    return api.calls.call_count


# --- exit codes ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("answers")
def test_a_sync_that_stores_everything_exits_0(cli: CliCall, api: respx.MockRouter) -> None:
    """Every account and transaction fetched and stored: exit 0, the summary on stdout."""
    result = cli("sync", "--format", "json")

    (report,) = json.loads(ok(result))
    assert report["connection"] == "brokerage"
    assert report["result"] == "ok"
    assert report["accounts"] == 2
    assert report["new"] == 2  # one transaction in each account
    assert report["failed_accounts"] == []
    assert report["requests"] == requests_to(api)


def test_a_failing_connection_exits_3_and_the_rest_is_stored(
    cli: CliCall, api: respx.MockRouter
) -> None:
    """Beta answers 500: alpha is stored and queryable offline, beta's failure is on stderr, exit 3."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(api, "token-alpha", [FIRST])
    api.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"}).mock(
        return_value=json_response(SERVER_ERROR, 500, "c-500")
    )

    result = cli("sync", "--format", "json")

    assert result.exit_code == 3
    reports = {r["connection"]: r for r in json.loads(result.stdout)}
    assert reports["alpha"]["result"] == "ok"
    assert reports["beta"]["result"] == "failed"
    assert "beta: " in result.stderr
    assert "HTTP 500" in result.stderr
    assert errors_of(result.stderr) == ["error: 1 of 2 connections failed (beta)"]
    stored = cli("accounts", "list", "--offline", "--connection", "alpha", "--format", "json")
    assert [row["number"] for row in json.loads(ok(stored))] == ["****1111"]


def test_a_login_to_renew_exits_4_with_the_command(
    cli: CliCall, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired access token and a refused refresh token: exit 4, the exact command printed."""
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)
    add_connection("brokerage", "token-b", access_in=dt.timedelta(minutes=-5))
    api.post(TOKEN_URL).mock(
        return_value=httpx.Response(400, json={"error": "invalid_grant", "error_description": "x"})
    )

    result = cli("sync", "--format", "json")

    assert result.exit_code == 4
    assert "dashtam connect schwab --name brokerage" in result.stderr
    (report,) = json.loads(result.stdout)
    assert report["result"] == "reauth_required"
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("answers")
def test_an_unknown_connection_exits_1_before_any_request(
    cli: CliCall, api: respx.MockRouter
) -> None:
    """`sync --connection gamma`: exit 1, the same message as every command, no request."""
    result = cli("sync", "--connection", "gamma")

    assert result.exit_code == 1
    assert "no connection named 'gamma'" in result.stderr
    assert "dashtam connections list" in result.stderr
    assert result.stdout == ""
    assert requests_to(api) == 0


# --- progress, --quiet and the summary ---------------------------------------------------------------


@pytest.mark.usefixtures("answers")
def test_progress_is_shown_on_a_terminal_only_and_never_with_quiet(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a terminal: no display; a terminal: one; a terminal with --quiet: none."""
    made: list[object] = []
    real = sync_cli._live

    def spy(ctx: Any, progress: Any) -> Any:
        made.append(progress)
        return real(ctx, progress)

    monkeypatch.setattr(sync_cli, "_live", spy)
    piped = cli("sync", "--full", "--format", "json")
    assert piped.exit_code == 0, piped.stderr
    assert made == []
    assert "syncing" not in piped.stderr

    monkeypatch.setattr(sync_cli, "on_terminal", lambda: True)
    assert cli("sync", "--full", "--format", "json").exit_code == 0
    assert len(made) == 1
    progress: Any = made[0]
    # The display read the counters the sync kept up to date.
    assert (progress.connections_done, progress.accounts_done) == (1, 2)

    quiet = cli("sync", "--full", "--quiet")
    assert quiet.exit_code == 0, quiet.stderr
    assert len(made) == 1


@pytest.mark.usefixtures("answers")
def test_quiet_prints_nothing_on_success_unless_a_format_is_given(cli: CliCall) -> None:
    """`sync --quiet` (for cron) is silent; `--quiet --format json` still prints the summary."""
    assert ok(cli("sync", "--quiet")) == ""

    (report,) = json.loads(ok(cli("sync", "--quiet", "--format", "json")))
    assert report["connection"] == "brokerage"


def test_the_json_summary_counts_new_changed_and_unchanged(
    cli: CliCall, answers: list[str]
) -> None:
    """First sync: new; again: unchanged (the overlap); a corrected amount: changed, not new."""
    answers[0] = json.dumps(
        [shaped(1, "2025-01-17T17:19:49+0000"), shaped(2, "2025-01-16T17:19:49+0000")]
    )
    fields = ["connection", "accounts", "new", "changed", "unchanged", "failed_accounts"]

    def counts() -> list[Any]:
        (report,) = json.loads(ok(cli("sync", "--full", "--format", "json")))
        return [report[f] for f in fields]

    assert counts() == ["brokerage", 2, 4, 0, 0, []]
    assert counts() == ["brokerage", 2, 0, 0, 4, []]
    answers[0] = json.dumps(
        [
            shaped(1, "2025-01-17T17:19:49+0000", net_amount="-1216.95"),
            shaped(2, "2025-01-16T17:19:49+0000"),
        ]
    )
    assert counts() == ["brokerage", 2, 0, 2, 2, []]
    stored = json.loads(ok(cli("transactions", "list", "--offline", "--format", "json")))
    assert len(stored) == 4  # updated in place, never duplicated
    assert sorted(row["amount"] for row in stored).count("-1216.95") == 2


@pytest.mark.usefixtures("answers")
def test_the_table_summary_names_the_connection_and_its_counts(cli: CliCall) -> None:
    """`--format table`: one line per connection with its result and counts."""
    table = ok(cli("sync", "--format", "table", env=WIDE))
    header = next(line for line in table.splitlines() if "connection" in line)
    for column in ("result", "accounts", "new", "changed"):
        assert column in header
    row = next(line for line in table.splitlines() if "brokerage" in line)
    assert row.split()[:4] == ["brokerage", "ok", "2", "2"]


# --- queries read the vault ---------------------------------------------------------------------------


@pytest.mark.usefixtures("answers")
def test_after_a_sync_queries_make_no_request(cli: CliCall, api: respx.MockRouter) -> None:
    """`sync`, then every query (with and without --offline) reads the vault only."""
    assert cli("sync", "--quiet").exit_code == 0
    sent = requests_to(api)

    for command in (["accounts", "list"], ["positions", "list"], ["transactions", "list"]):
        assert json.loads(ok(cli(*command, "--offline", "--format", "json")))
        assert json.loads(ok(cli(*command, "--format", "json")))
    assert requests_to(api) == sent


@pytest.mark.usefixtures("answers")
def test_connect_then_accounts_list_just_works(cli: CliCall, api: respx.MockRouter) -> None:
    """A connection never synced is synced by the first query, which then answers from the vault."""
    rows = json.loads(ok(cli("accounts", "list", "--format", "json")))

    assert [row["number"] for row in rows] == ["****2222", "****1111"]
    assert all(row["synced_at"] for row in rows)
    assert any(TRANSACTIONS_PATH.match(c.request.url.path) for c in api.calls)
    # The transactions came with that first sync.
    sent = requests_to(api)
    assert len(json.loads(ok(cli("transactions", "list", "--format", "json")))) == 2
    assert requests_to(api) == sent


@pytest.mark.usefixtures("answers")
def test_offline_with_a_connection_never_synced_returns_nothing(
    cli: CliCall, api: respx.MockRouter
) -> None:
    """`--offline` never touches the network: nothing stored, so nothing printed, and a note."""
    for command in (["accounts", "list"], ["positions", "list"], ["transactions", "list"]):
        result = cli(*command, "--offline", "--format", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == []
        assert "never synced" in result.stderr
        assert "brokerage" in result.stderr
    assert requests_to(api) == 0


def test_sync_option_syncs_first(cli: CliCall, answers: list[str], api: respx.MockRouter) -> None:
    """`--sync` fetches again before answering, so a new transaction shows at once."""
    assert len(json.loads(ok(cli("transactions", "list", "--format", "json")))) == 2
    answers[0] = json.dumps(
        [shaped(1, "2025-01-17T17:19:49+0000"), shaped(7, "2025-01-18T17:19:49+0000")]
    )
    sent = requests_to(api)

    assert len(json.loads(ok(cli("transactions", "list", "--format", "json")))) == 2
    assert requests_to(api) == sent
    rows = json.loads(ok(cli("transactions", "list", "--sync", "--format", "json")))
    assert len(rows) == 4
    assert rows[0]["time"] == "2025-01-18T17:19:49+00:00"
    assert requests_to(api) > sent


@pytest.mark.parametrize(
    "command", [["accounts", "list"], ["positions", "list"], ["transactions", "list"]]
)
@pytest.mark.usefixtures("answers")
def test_offline_and_sync_together_are_a_usage_error(
    cli: CliCall, api: respx.MockRouter, command: list[str]
) -> None:
    """`--offline --sync` contradict each other: exit 2, before any request."""
    result = cli(*command, "--offline", "--sync")

    assert result.exit_code == 2
    assert "--offline and --sync cannot be given together" in result.stderr
    assert result.stdout == ""
    assert requests_to(api) == 0


def sync_at(moment: dt.datetime) -> None:
    """Run a sync whose clock says ``moment``: the data it stores was synced then."""
    options = SyncOptions(clock=lambda: moment)
    result = asyncio.run(sync(load_settings(), options, OpenOptions()))
    assert result.outcome.failures == []


@pytest.mark.usefixtures("answers")
def test_staleness_is_said_on_a_terminal_when_older_than_the_setting(
    cli: CliCall, terminal: None
) -> None:
    """Synced three days ago: a note on a terminal; none under a longer setting."""
    del terminal
    sync_at(dt.datetime.now(dt.UTC) - dt.timedelta(days=3, minutes=1))

    on_terminal = cli("accounts", "list", "--format", "json")
    assert on_terminal.exit_code == 0, on_terminal.stderr
    assert "note: this data was synced 3 d 0 h ago; refresh it with: dashtam sync" in (
        on_terminal.stderr
    )
    longer = cli(
        "transactions", "list", "--format", "json", env={"DASHTAM_STALE_AFTER_HOURS": "100"}
    )
    assert ok(longer)


@pytest.mark.usefixtures("answers")
def test_staleness_is_not_said_when_piped_or_fresh(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old data with stderr piped: no note; fresh data on a terminal: no note either."""
    sync_at(dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    assert ok(cli("positions", "list", "--format", "json"))

    assert cli("sync", "--quiet").exit_code == 0
    monkeypatch.setattr(sync_cli, "on_terminal", lambda: True)
    assert ok(cli("accounts", "list", "--format", "json"))


# --- transactions: the output streams, --limit, --type -----------------------------------------------


def stored_transactions() -> list[Transaction]:
    """Every stored transaction, newest first, as the core hands them on."""
    found: list[Transaction] = []
    query = QueryOptions(offline=True)
    asyncio.run(query_transactions(load_settings(), query, OpenOptions(), found.extend))
    return found


def rendered(fmt: str, write: Callable[[Renderer], None]) -> str:
    """What ``write`` prints through a renderer of ``fmt``."""
    stream = io.StringIO()
    write(Renderer(fmt=fmt, console=Console(file=stream), stream=stream))
    return stream.getvalue()


def many(count: int) -> str:
    """A transactions body of ``count`` items, a minute apart."""
    start = dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.UTC)
    return json.dumps(
        [
            shaped(100 + n, (start - dt.timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%S+0000"))
            for n in range(count)
        ]
    )


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_transactions_print_exactly_what_rows_would(
    cli: CliCall, answers: list[str], fmt: str
) -> None:
    """The streamed output is byte for byte what ``Renderer.rows`` prints for the same records."""
    answers[0] = many(5)
    assert cli("sync", "--quiet").exit_code == 0
    records = stored_transactions()
    assert len(records) == 10

    printed = ok(cli("transactions", "list", "--format", fmt))

    assert printed == rendered(fmt, lambda r: r.rows(Transaction, records))


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_several_batches_print_as_one(cli: CliCall, answers: list[str], fmt: str) -> None:
    """Emitting in batches (of 3, 3 and 4) prints the same as one batch, and as ``rows``."""
    answers[0] = many(5)
    assert cli("sync", "--quiet").exit_code == 0
    records = stored_transactions()

    def in_batches(renderer: Renderer) -> None:
        with renderer.streaming(Transaction) as emit:
            emit(records[:3])
            emit(records[3:6])
            emit(records[6:])

    def at_once(renderer: Renderer) -> None:
        with renderer.streaming(Transaction) as emit:
            emit(records)

    whole = rendered(fmt, lambda r: r.rows(Transaction, records))
    assert rendered(fmt, in_batches) == whole
    assert rendered(fmt, at_once) == whole


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_nothing_streamed_prints_what_rows_prints_for_nothing(fmt: str) -> None:
    """No record: ``[]`` for JSON, nothing for JSON lines, the header alone for CSV."""

    def empty(renderer: Renderer) -> None:
        with renderer.streaming(Transaction):
            pass

    assert rendered(fmt, empty) == rendered(fmt, lambda r: r.rows(Transaction, []))


def test_each_batch_is_written_before_the_next_is_read() -> None:
    """JSON lines and CSV rows reach the stream as each batch is emitted, not at the end."""
    record = Transaction.model_validate(
        {
            "id": "t-1",
            "account_id": "a-1",
            "account": "****1111",
            "time": "2025-01-17T17:19:49+00:00",
            "trade_date": "2025-01-17",
            "settlement_date": None,
            "type": "TRADE",
            "kind": "trade",
            "description": "x",
            "amount": "-1.00",
            "symbol": None,
            "quantity": None,
            "price": None,
            "fees": "0.00",
            "status": "VALID",
        }
    )
    for fmt, lines in (("jsonl", 1), ("csv", 2)):
        stream = io.StringIO()
        renderer = Renderer(fmt=fmt, console=Console(file=stream), stream=stream)
        with renderer.streaming(Transaction) as emit:
            emit([record])
            assert len(stream.getvalue().splitlines()) == lines
            emit([record])
            assert len(stream.getvalue().splitlines()) == lines + 1


def test_limit_keeps_the_newest(cli: CliCall, answers: list[str]) -> None:
    """`--limit 3`: the three newest transactions, newest first; `--limit 0` is a usage error."""
    answers[0] = many(4)
    every = json.loads(ok(cli("transactions", "list", "--format", "json")))
    assert len(every) == 8

    rows = json.loads(ok(cli("transactions", "list", "--limit", "3", "--format", "json")))
    assert rows == every[:3]
    lines = ok(cli("transactions", "list", "-n", "5", "--account", "1111", "--format", "jsonl"))
    assert [json.loads(line) for line in lines.splitlines()] == [
        row for row in every if row["account"] == "****1111"
    ][:4]
    assert cli("transactions", "list", "--limit", "0").exit_code == 2


def test_type_takes_a_kind_or_a_provider_type(cli: CliCall, answers: list[str]) -> None:
    """`--type dividend` (a kind), `--type TRADE` and `--type DIVIDEND_OR_INTEREST` (Schwab's)."""
    answers[0] = json.dumps(
        [
            shaped(1, "2025-01-17T17:19:49+0000"),
            shaped(
                2,
                "2025-01-16T17:19:49+0000",
                "DIVIDEND_OR_INTEREST",
                description="ORDINARY DIVIDEND",
            ),
            shaped(
                3, "2025-01-15T17:19:49+0000", "DIVIDEND_OR_INTEREST", description="INTEREST ADJ"
            ),
        ]
    )

    def kinds(*types: str) -> list[tuple[str, str]]:
        args = [a for t in types for a in ("--type", t)]
        text = ok(cli("transactions", "list", "--account", "1111", *args, "--format", "csv"))
        return [(row["type"], row["kind"]) for row in csv.DictReader(io.StringIO(text))]

    assert kinds("dividend") == [("DIVIDEND_OR_INTEREST", "dividend")]
    assert kinds("Interest") == [("DIVIDEND_OR_INTEREST", "interest")]
    assert kinds("trade") == [("TRADE", "trade")]
    assert kinds("TRADE") == [("TRADE", "trade")]
    assert kinds("dividend_or_interest") == [
        ("DIVIDEND_OR_INTEREST", "dividend"),
        ("DIVIDEND_OR_INTEREST", "interest"),
    ]
    assert kinds("interest", "TRADE") == [
        ("TRADE", "trade"),
        ("DIVIDEND_OR_INTEREST", "interest"),
    ]


@pytest.mark.usefixtures("answers")
def test_an_unknown_type_lists_the_kinds(cli: CliCall, api: respx.MockRouter) -> None:
    """`--type dividends`: exit 2, every kind named, no request."""
    result = cli("transactions", "list", "--type", "dividends")

    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "unknown type dividends" in said
    assert all(kind in said for kind in KINDS)
    assert requests_to(api) == 0


def test_a_sync_with_nothing_to_report_builds_no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """No failure and nothing ignored: stderr's rich console is never built (nor rich imported).

    With a failure, it is: the check is not blind.
    """
    from dashtam_cli.cli import runtime
    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.results import Failure, FetchResult

    built: list[object] = []

    def stderr(ctx: object) -> Console:
        built.append(ctx)
        return Console(file=io.StringIO())

    monkeypatch.setattr(runtime, "stderr", stderr)
    monkeypatch.setattr(runtime, "fail", lambda _ctx, _error: None)
    sync_cli.report_failures(object(), FetchResult(items=[], failures=[], succeeded=2))  # type: ignore[arg-type]
    assert built == []
    failed = Failure("beta", DashtamError("it broke"))
    sync_cli.report_failures(object(), FetchResult(items=[], failures=[failed], succeeded=1))  # type: ignore[arg-type]
    assert len(built) == 1
