"""`dashtam accounts|positions|transactions` through the CLI, with the Schwab API mocked by respx."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import respx
from schwab_support import (
    API,
    BASE_URL,
    CORRELATION,
    OPTION_SYMBOL,
    REPO,
    TOKEN_URL,
    TRANSACTIONS_PATH,
    add_connection,
    json_response,
    mock_connection_api,
    transaction_text,
)

from dashtam_cli.core.models import KINDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

FIRST, SECOND = "11111111", "22222222"
# The field names are an interface scripts depend on: pinned here.
ACCOUNT_FIELDS = [
    "id",
    "connection",
    "provider",
    "name",
    "type",
    "number",
    "currency",
    "cash",
    "market_value",
    "total_value",
    "buying_power",
    "fetched_at",
    "synced_at",
    "institution",
]
POSITION_FIELDS = [
    "account_id",
    "account",
    "symbol",
    "description",
    "asset_type",
    "quantity",
    "average_price",
    "market_value",
    "day_profit_loss",
    "cost_basis",
    "unrealized_gain",
]
TRANSACTION_FIELDS = [
    "id",
    "account_id",
    "account",
    "time",
    "trade_date",
    "settlement_date",
    "type",
    "kind",
    "description",
    "amount",
    "symbol",
    "quantity",
    "price",
    "fees",
    "status",
]
OFFSET_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
WIDE = {"COLUMNS": "220"}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """Schwab's API at https://schwab.test, mocked for every HTTP client the CLI makes."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def brokerage(api: respx.MockRouter) -> dict[str, str]:
    """One connection, 'brokerage', with two accounts answered from the fixtures."""
    add_connection("brokerage", "token-b")
    return mock_connection_api(api, "token-b", [FIRST, SECOND])


@pytest.fixture
def india_time() -> Iterator[None]:
    """Local time is UTC+05:30, so dates given on the command line must be converted to UTC."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


def ok(cli: CliCall, *args: str, env: dict[str, str] | None = None) -> str:
    """Run dashtam, expect exit 0 and a quiet stderr, and return stdout."""
    result = cli(*args, env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def assert_no_json_numbers_for_money(stdout: str, fields: tuple[str, ...]) -> None:
    """Money fields are never printed as JSON numbers."""
    for field in fields:
        assert re.search(rf'"{field}": ?-?\d', stdout) is None, field


# --- accounts ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("brokerage")
def test_accounts_list_json(cli: CliCall) -> None:
    """A JSON array of accounts: stable fields, decimal strings, ISO times, masked numbers."""
    stdout = ok(cli, "accounts", "list", "--format", "json")

    rows = json.loads(stdout)
    assert [list(row) for row in rows] == [ACCOUNT_FIELDS, ACCOUNT_FIELDS]
    # In order of connection, then name.
    assert [row["name"] for row in rows] == ["Contributory", "Trading Brokerage"]
    first = rows[1]
    assert first["number"] == "****1111"
    assert first["name"] == "Trading Brokerage"  # its nickname, from user_preferences.json
    assert first["connection"] == "brokerage"
    assert first["cash"] == "51420.89"
    assert first["total_value"] == "50946.39"
    assert first["buying_power"] == "88853.04"
    assert first["market_value"] == "-474.50"
    assert OFFSET_TIME.match(first["fetched_at"])
    assert dt.datetime.fromisoformat(first["fetched_at"]).tzinfo is not None
    assert OFFSET_TIME.match(first["synced_at"])  # synced first: a connection never synced
    assert rows[0]["number"] == "****2222"
    assert FIRST not in stdout
    assert SECOND not in stdout
    assert_no_json_numbers_for_money(stdout, ("cash", "total_value", "buying_power"))


@pytest.mark.usefixtures("brokerage")
def test_accounts_list_jsonl_and_csv(cli: CliCall) -> None:
    """JSON lines: one object per account; CSV: a header of the field names, then one row each."""
    lines = ok(cli, "accounts", "list", "--format", "jsonl").splitlines()
    assert [json.loads(line)["number"] for line in lines] == ["****2222", "****1111"]
    assert json.loads(lines[1])["cash"] == "51420.89"

    text = ok(cli, "accounts", "list", "--format", "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == ACCOUNT_FIELDS
    rows = list(reader)
    assert [row["number"] for row in rows] == ["****2222", "****1111"]
    assert rows[1]["cash"] == "51420.89"
    assert OFFSET_TIME.match(rows[1]["fetched_at"])
    assert FIRST not in text


@pytest.mark.usefixtures("brokerage")
def test_accounts_list_table(cli: CliCall) -> None:
    """A table for people: nicknames, masked numbers and balances."""
    stdout = ok(cli, "accounts", "list", "--format", "table", env=WIDE)
    assert "Trading Brokerage" in stdout
    assert "Contributory" in stdout
    assert "****1111" in stdout
    assert "****2222" in stdout
    assert "51420.89" in stdout
    assert FIRST not in stdout


def test_accounts_print_without_their_nicknames(cli: CliCall, api: respx.MockRouter) -> None:
    """A failing userPreference: every account still prints, by type and number, and one warning."""
    add_connection("brokerage", "token-b")
    api.get(f"{API}/userPreference").mock(
        return_value=json_response('{"message":"Internal error","errors":["boom"]}', 500)
    )
    mock_connection_api(api, "token-b", [FIRST, SECOND])

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == [
        "Margin ****1111",
        "Margin ****2222",
    ]
    assert result.stderr.count("nicknames are unavailable") == 1
    assert "brokerage" in result.stderr
    assert "HTTP 500" in result.stderr
    assert FIRST not in result.stderr


@pytest.mark.usefixtures("brokerage")
def test_accounts_show_by_last_digits_and_by_id(cli: CliCall) -> None:
    """`accounts show 1111` and `accounts show <id>` print the same single account."""
    by_digits = json.loads(ok(cli, "accounts", "show", "1111", "--format", "json"))
    assert isinstance(by_digits, dict)
    assert by_digits["number"] == "****1111"

    by_id = json.loads(ok(cli, "accounts", "show", by_digits["id"], "--format", "json"))
    assert by_id["id"] == by_digits["id"]
    assert by_id["number"] == "****1111"

    other = json.loads(ok(cli, "accounts", "show", "2222", "--format", "json"))
    assert other["number"] == "****2222"
    assert other["id"] != by_digits["id"]


def test_accounts_show_ambiguous_and_unknown(cli: CliCall, api: respx.MockRouter) -> None:
    """Digits matching two accounts, or none, are usage errors (exit 2) that say what to do."""
    add_connection("brokerage", "token-b")
    mock_connection_api(api, "token-b", ["11111111", "21111111"])

    ambiguous = cli("accounts", "show", "1111", "--format", "json")
    assert ambiguous.exit_code == 2
    assert ambiguous.stdout == ""
    assert "'1111' matches 2 accounts" in ambiguous.stderr
    assert "more digits" in ambiguous.stderr

    unknown = cli("accounts", "show", "9999", "--format", "json")
    assert unknown.exit_code == 2
    assert unknown.stdout == ""
    assert "no account matches '9999'" in unknown.stderr
    assert "dashtam accounts list" in unknown.stderr


# --- positions --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("brokerage")
def test_positions_list_for_one_account(cli: CliCall) -> None:
    """--account 1111: that account's ten positions, signed quantities, symbols with spaces."""
    stdout = ok(cli, "positions", "list", "--account", "1111", "--format", "json")

    rows = json.loads(stdout)
    assert len(rows) == 10
    assert all(list(row) == POSITION_FIELDS for row in rows)
    assert {row["account"] for row in rows} == {"****1111"}
    by_symbol = {row["symbol"]: row for row in rows}
    assert by_symbol["META  250131P00525000"]["quantity"] == "-1.0"
    assert by_symbol[OPTION_SYMBOL]["quantity"] == "1.0"
    assert by_symbol["META  250131P00525000"]["average_price"] == "2.7733"
    assert by_symbol["META  250131P00525000"]["market_value"] == "-75.00"
    # Short a put sold for 277.33 (2.7733 x 100), now -75.00: Schwab's open profit 202.33.
    assert by_symbol["META  250131P00525000"]["unrealized_gain"] == "202.33"
    assert by_symbol["META  250131P00525000"]["cost_basis"] == "-277.33"
    assert_no_json_numbers_for_money(stdout, ("quantity", "average_price", "market_value"))

    text = ok(cli, "positions", "list", "--account", "1111", "--format", "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == POSITION_FIELDS
    assert OPTION_SYMBOL in {row["symbol"] for row in reader}


@pytest.mark.usefixtures("brokerage")
def test_positions_list_table_and_jsonl(cli: CliCall) -> None:
    """Every account's positions, as JSON lines and as a table."""
    lines = ok(cli, "positions", "list", "--format", "jsonl").splitlines()
    assert len(lines) == 20
    assert {json.loads(line)["account"] for line in lines} == {"****1111", "****2222"}

    table = ok(cli, "positions", "list", "--account", "2222", "--format", "table", env=WIDE)
    assert "META 01/31/2025 $510 Put" in table  # the option as people write it
    assert OPTION_SYMBOL not in table
    assert "****2222" in table
    assert "****1111" not in table


# --- transactions -----------------------------------------------------------------------------------


def shaped(
    activity_id: int, time: str, kind: str = "TRADE", symbol: str = OPTION_SYMBOL
) -> dict[str, object]:
    """transaction_single.json with another activityId, time, type and instrument symbol."""
    item: dict[str, object] = json.loads(transaction_text(activity_id))
    item["time"] = time
    item["type"] = kind
    items = item["transferItems"]
    assert isinstance(items, list)
    items[0]["instrument"]["symbol"] = symbol
    return item


# Local dates at +05:30: 2025-01-01 starts at 2024-12-31T18:30Z; 2025-01-31 ends at 2025-01-31T18:30Z.
FILTERED = [
    shaped(1, "2024-12-31T18:29:59+0000"),  # a second before the first local day
    shaped(2, "2024-12-31T18:30:00+0000"),  # its first second
    shaped(3, "2025-01-31T18:29:59+0000"),  # the last second of the last local day
    shaped(4, "2025-01-31T18:30:01+0000"),  # after it
    shaped(5, "2025-01-15T12:00:00+0000", symbol="MRVL  250321C00155000"),  # another symbol
    shaped(6, "2025-01-15T12:00:00+0000", kind="DIVIDEND_OR_INTEREST"),  # another type
]


@pytest.mark.usefixtures("india_time")
def test_transactions_list_with_filters(cli: CliCall, api: respx.MockRouter) -> None:
    """Local dates become UTC instants; --type and --symbol select in the vault, not at Schwab."""
    add_connection("brokerage", "token-b")
    mock_connection_api(api, "token-b", [FIRST, SECOND], transactions=json.dumps(FILTERED))

    stdout = ok(
        cli,
        "transactions",
        "list",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-31",
        "--type",
        "TRADE",
        "--symbol",
        OPTION_SYMBOL.lower(),
        "--format",
        "json",
    )

    calls = [c for c in api.calls if TRANSACTIONS_PATH.match(c.request.url.path)]
    # The first sync fetched every type and symbol; the filters were applied to the vault.
    assert calls
    assert all("symbol" not in c.request.url.params for c in calls)
    rows = json.loads(stdout)
    assert all(list(row) == TRANSACTION_FIELDS for row in rows)
    # Newest first: the last second of January in each account, then the first.
    assert [row["time"] for row in rows] == [
        "2025-01-31T18:29:59+00:00",
        "2025-01-31T18:29:59+00:00",
        "2024-12-31T18:30:00+00:00",
        "2024-12-31T18:30:00+00:00",
    ]
    assert sorted(row["account"] for row in rows[:2]) == ["****1111", "****2222"]
    assert sorted(row["account"] for row in rows[2:]) == ["****1111", "****2222"]
    assert_no_json_numbers_for_money(stdout, ("amount", "fees", "price", "quantity"))
    first = rows[0]
    assert first["amount"] == "-1215.95"
    assert '"amount": "-1215.95"' in stdout
    assert first["fees"] == "0.95"
    assert first["type"] == "TRADE"
    assert first["kind"] == "trade"
    assert first["symbol"] == OPTION_SYMBOL
    assert FIRST not in stdout


@pytest.mark.usefixtures("brokerage")
def test_transactions_list_for_one_account_in_every_format(
    cli: CliCall, api: respx.MockRouter
) -> None:
    """--account 2222: jsonl, csv and table carry the same rows; only the first run fetched."""
    args = ("transactions", "list", "--account", "2222", "--since", "2025-01-01")

    lines = ok(cli, *args, "--format", "jsonl").splitlines()
    rows = [json.loads(line) for line in lines]
    # The two share one time: their order is the vault's (newest first, then by id), every time.
    amounts = [row["amount"] for row in rows]
    assert sorted(amounts) == ["-1215.95", "854.95"]
    assert {row["account"] for row in rows} == {"****2222"}
    assert all(OFFSET_TIME.match(row["time"]) for row in rows)
    fetched = api.calls.call_count  # the first sync, of both accounts
    assert fetched > 0

    reader = csv.DictReader(io.StringIO(ok(cli, *args, "--format", "csv")))
    assert reader.fieldnames == TRANSACTION_FIELDS
    assert [row["amount"] for row in reader] == amounts

    table = ok(cli, *args, "--format", "table", env=WIDE)
    assert "-1215.95" in table
    assert "MRVL 03/21/2025 $170 Call" in table

    assert api.calls.call_count == fetched  # the later runs read the vault


def test_unknown_type_is_a_usage_error(cli: CliCall, api: respx.MockRouter) -> None:
    """--type FOO: exit 2 naming the kinds it takes, before any request."""
    add_connection("brokerage", "token-b")

    result = cli("transactions", "list", "--type", "TRADE", "--type", "FOO")

    assert result.exit_code == 2
    assert "unknown type FOO" in result.stderr
    said = " ".join(result.stderr.split())  # as one line, however the usage box wraps it
    for kind in KINDS:
        assert kind in said
    assert result.stdout == ""
    assert api.calls.call_count == 0


# --- failures ---------------------------------------------------------------------------------------


def test_one_failing_connection_exits_3(cli: CliCall, api: respx.MockRouter) -> None:
    """Connection alpha's rows on stdout, beta's failure (status, correlation id) on stderr, exit 3."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(api, "token-alpha", [FIRST])
    api.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"}).mock(
        return_value=json_response('{"message":"Internal Server Error","errors":[]}', 500, "c-500")
    )

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 3
    rows = json.loads(result.stdout)
    assert [(row["connection"], row["number"]) for row in rows] == [("alpha", "****1111")]
    assert "beta" in result.stderr
    assert "HTTP 500" in result.stderr
    assert "c-500" in result.stderr
    assert "alpha:" not in result.stderr
    assert "Traceback" not in result.stderr
    # Said once: beta's own line, then a summary that names it without repeating it.
    assert result.stderr.count("HTTP 500") == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: 1 of 2 connections failed (beta)"]


@pytest.mark.parametrize(
    "command", [["accounts", "list"], ["positions", "list"], ["transactions", "list"]]
)
def test_every_connection_failing_prints_no_data_and_one_error(
    cli: CliCall, api: respx.MockRouter, command: list[str]
) -> None:
    """Both connections fail: exit 1, nothing on stdout (not even []), one error line naming both."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    api.get(url__startswith=API).mock(
        return_value=json_response('{"message":"Internal Server Error","errors":[]}', 500, "c-500")
    )

    result = cli(*command, "--format", "json")

    assert result.exit_code == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "alpha:" in errors[0]
    assert "beta:" in errors[0]
    assert result.stderr.count("HTTP 500") == 2
    assert "Traceback" not in result.stderr


def test_connection_option_limits_the_calls(cli: CliCall, api: respx.MockRouter) -> None:
    """--connection alpha: only alpha is asked; an unknown name exits 1, as in every command."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta")
    mock_connection_api(api, "token-alpha", [FIRST])
    beta = api.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"}).mock(
        return_value=json_response("[]", 500)
    )

    rows = json.loads(ok(cli, "accounts", "list", "--connection", "alpha", "--format", "json"))
    assert [row["connection"] for row in rows] == ["alpha"]
    assert beta.call_count == 0

    unknown = cli("accounts", "list", "--connection", "gamma")
    assert unknown.exit_code == 1
    assert "no connection named 'gamma'" in unknown.stderr


def test_a_dead_refresh_token_exits_4_with_the_connect_command(
    cli: CliCall, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired access token, refused refresh token: exit 4 and the exact command to log in again."""
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)
    add_connection("brokerage", "token-b", access_in=dt.timedelta(minutes=-5))
    api.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_grant", "error_description": "expired"}
        )
    )

    result = cli("positions", "list", "--format", "json")

    assert result.exit_code == 4
    assert "dashtam connect schwab --name brokerage" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("vault", [False, True], ids=["no-vault", "empty-vault"])
def test_no_connections_says_to_connect(cli: CliCall, api: respx.MockRouter, vault: bool) -> None:
    """No connection yet (with or without a vault): exit 1 and the connect command."""
    if vault:
        assert cli("vault", "init", "--format", "json").exit_code == 0

    result = cli("accounts", "list")

    assert result.exit_code == 1
    assert "there are no connections yet" in result.stderr
    assert "dashtam connect" in result.stderr
    assert result.stdout == ""
    assert api.calls.call_count == 0


def test_a_body_that_is_not_json_is_one_line(cli: CliCall, api: respx.MockRouter) -> None:
    """A 200 whose body is not JSON: exit 1, one error line with status and correlation id."""
    add_connection("brokerage", "token-b")
    api.get(url__startswith=API).mock(
        return_value=httpx.Response(
            200,
            content=b"<html><body>Service maintenance</body></html>",
            headers={"Content-Type": "text/html", CORRELATION: "c-html"},
        )
    )

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "HTTP 200" in errors[0]
    assert "not JSON" in errors[0]
    assert "c-html" in errors[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no empty list when nothing was fetched


@pytest.mark.parametrize(
    "dates",
    [("--since", "2025-02-01", "--until", "2025-01-01"), ("--since", "January")],
    ids=["since-after-until", "not-a-date"],
)
def test_bad_dates_are_usage_errors(
    cli: CliCall, api: respx.MockRouter, dates: tuple[str, ...]
) -> None:
    """A date that is not one, or --since after --until: exit 2 before any request."""
    add_connection("brokerage", "token-b")

    result = cli("transactions", "list", *dates)

    assert result.exit_code == 2
    assert ("January" if "January" in dates else "--since: must be before --until") in result.stderr
    assert api.calls.call_count == 0


# --- docs/data.md ------------------------------------------------------------------------------------

DOC = REPO / "docs" / "data.md"


@pytest.mark.parametrize(
    ("heading", "fields"),
    [
        ("### Account", ACCOUNT_FIELDS),
        ("### Position", POSITION_FIELDS),
        ("### Transaction", TRANSACTION_FIELDS),
    ],
)
def test_the_documented_fields_are_the_printed_ones(heading: str, fields: list[str]) -> None:
    """docs/data.md lists each record's fields, in the order the machine formats print them."""
    section = DOC.read_text(encoding="utf-8").split(heading + "\n", 1)[1].split("\n#", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert documented == fields
