"""Data commands when part of the answer fails, and how accounts, symbols and connections are named."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import httpx
import pytest
import respx
import trustme
from hostile_server import HostileServer
from schwab_support import (
    API,
    BASE_URL,
    TOKEN_URL,
    account_body,
    add_connection,
    fixture_text,
    hash_of,
    json_response,
    mock_connection_api,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

FIRST, SECOND = "11111111", "22222222"
SERVER_ERROR = '{"message":"Internal Server Error","errors":[]}'


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """Schwab's API at https://schwab.test, mocked for every HTTP client the CLI makes."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def app_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """App credentials in the environment, so that a refresh can be attempted."""
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)


def errors_of(stderr: str) -> list[str]:
    """The ``error:`` lines of stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def second_account_fails(request: httpx.Request) -> httpx.Response:
    """Transactions: the second account's hash answers 500, the first its transactions."""
    if hash_of(SECOND) in request.url.path:
        return json_response(SERVER_ERROR, 500, "c-500")
    return json_response(fixture_text("transactions.json"))


# --- one account fails alone --------------------------------------------------------------------------


def test_one_accounts_500_fails_that_account_not_its_connection(
    cli: CliCall, api: respx.MockRouter
) -> None:
    """Transactions of ****2222 answer 500: ****1111's rows print, ****2222 is named, exit 3."""
    add_connection("brokerage", "token-b")
    mock_connection_api(api, "token-b", [FIRST, SECOND], transactions=second_account_fails)

    result = cli("transactions", "list", "--format", "json")

    assert result.exit_code == 3, result.stderr
    rows = json.loads(result.stdout)
    assert rows
    assert {row["account"] for row in rows} == {"****1111"}
    assert "brokerage ****2222: Schwab transactions failed: HTTP 500" in result.stderr
    assert "c-500" in result.stderr
    assert errors_of(result.stderr) == ["error: 1 account failed (brokerage ****2222)"]
    assert SECOND not in result.stderr
    assert "Traceback" not in result.stderr


def test_the_only_account_failing_is_exit_1_naming_it(cli: CliCall, api: respx.MockRouter) -> None:
    """The one account of the one connection fails: nothing on stdout, exit 1, the account named."""
    add_connection("brokerage", "token-b")
    mock_connection_api(
        api,
        "token-b",
        [SECOND],
        transactions=lambda _request: json_response(SERVER_ERROR, 500, "c-500"),
    )

    result = cli("transactions", "list", "--format", "json")

    assert result.exit_code == 1
    assert result.stdout == ""
    (error,) = errors_of(result.stderr)
    assert error.startswith("error: ****2222: Schwab transactions failed: HTTP 500")


@pytest.mark.parametrize(
    ("command", "field"), [(["accounts", "list"], "number"), (["positions", "list"], "account")]
)
def test_an_unusable_account_fails_alone(
    cli: CliCall, api: respx.MockRouter, command: list[str], field: str
) -> None:
    """An account whose balances are unusable fails alone; the other account prints, exit 3."""
    add_connection("brokerage", "token-b")
    broken = json.loads(account_body(FIRST))
    broken["securitiesAccount"]["currentBalances"]["cashBalance"] = "lots"
    body = json.dumps([broken, json.loads(account_body(SECOND))])
    # Registered first, so it answers before the fixture's route for the same call.
    api.get(f"{API}/accounts", params={"fields": "positions"}).mock(
        return_value=json_response(body)
    )
    mock_connection_api(api, "token-b", [FIRST, SECOND])

    result = cli(*command, "--format", "json")

    assert result.exit_code == 3, result.stderr
    assert {row[field] for row in json.loads(result.stdout)} == {"****2222"}
    assert "brokerage ****1111: Schwab accounts: field" in result.stderr
    assert "cashBalance" in result.stderr
    assert errors_of(result.stderr) == ["error: 1 account failed (brokerage ****1111)"]


# --- logins to renew, and connections not needed ------------------------------------------------------


@pytest.mark.usefixtures("app_credentials")
def test_only_logins_to_renew_exit_4_after_the_rest(cli: CliCall, api: respx.MockRouter) -> None:
    """Connection alpha answers, beta needs a new login: alpha's rows print, then exit 4."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta", access_in=dt.timedelta(minutes=-5))
    mock_connection_api(api, "token-alpha", [FIRST])
    api.post(TOKEN_URL).mock(
        return_value=httpx.Response(400, json={"error": "invalid_grant", "error_description": "x"})
    )

    result = cli("positions", "list", "--format", "json")

    assert result.exit_code == 4, result.stderr
    assert {row["account"] for row in json.loads(result.stdout)} == {"****1111"}
    assert "dashtam connect schwab --name beta" in result.stderr
    assert errors_of(result.stderr) == [
        "error: 1 of 2 connections needs a new login (beta); the rest was printed"
    ]


@pytest.mark.usefixtures("app_credentials")
def test_a_login_to_renew_and_a_500_exit_3(cli: CliCall, api: respx.MockRouter) -> None:
    """Connection beta needs a login and gamma answers 500: not only logins failed, so exit 3."""
    add_connection("alpha", "token-alpha")
    add_connection("beta", "token-beta", access_in=dt.timedelta(minutes=-5))
    add_connection("gamma", "token-gamma")
    mock_connection_api(api, "token-alpha", [FIRST])
    api.post(TOKEN_URL).mock(
        return_value=httpx.Response(400, json={"error": "invalid_grant", "error_description": "x"})
    )
    api.get(url__startswith=API, headers={"Authorization": "Bearer token-gamma"}).mock(
        return_value=json_response(SERVER_ERROR, 500)
    )

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 3
    assert errors_of(result.stderr) == ["error: 2 of 3 connections failed (beta, gamma)"]


@pytest.mark.usefixtures("app_credentials")
@pytest.mark.parametrize("beta_fails", ["http-500", "login"])
def test_a_connection_not_needed_does_not_change_the_exit_code(
    cli: CliCall, api: respx.MockRouter, beta_fails: str
) -> None:
    """`accounts show 1111` found in alpha: beta's failure is a warning, the exit code 0."""
    add_connection("alpha", "token-alpha")
    expired = dt.timedelta(minutes=-5 if beta_fails == "login" else 30)
    add_connection("beta", "token-beta", access_in=expired)
    mock_connection_api(api, "token-alpha", [FIRST])
    api.post(TOKEN_URL).mock(
        return_value=httpx.Response(400, json={"error": "invalid_grant", "error_description": "x"})
    )
    api.get(url__startswith=API, headers={"Authorization": "Bearer token-beta"}).mock(
        return_value=json_response(SERVER_ERROR, 500)
    )

    result = cli("accounts", "show", "1111", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["number"] == "****1111"
    assert errors_of(result.stderr) == []
    assert "warning: beta:" in result.stderr

    positions = cli("positions", "list", "--account", "1111", "--format", "json")
    assert positions.exit_code == 0, positions.stderr
    assert {row["account"] for row in json.loads(positions.stdout)} == {"****1111"}


# --- naming accounts and symbols ----------------------------------------------------------------------


def test_accounts_are_named_as_the_tables_print_them(cli: CliCall, api: respx.MockRouter) -> None:
    """`****2222` (the masked number), `2222` and the id in upper case all name the account."""
    add_connection("brokerage", "token-b")
    mock_connection_api(api, "token-b", [FIRST, SECOND])

    masked = cli("accounts", "show", "****2222", "--format", "json")
    assert masked.exit_code == 0, masked.stderr
    account = json.loads(masked.stdout)
    assert account["number"] == "****2222"

    by_id = cli("accounts", "show", account["id"].upper(), "--format", "json")
    assert by_id.exit_code == 0, by_id.stderr
    assert json.loads(by_id.stdout)["id"] == account["id"]

    positions = cli("positions", "list", "-a", "****2222", "--format", "json")
    assert positions.exit_code == 0, positions.stderr
    assert {row["account"] for row in json.loads(positions.stdout)} == {"****2222"}

    stars = cli("accounts", "show", "****", "--format", "json")
    assert stars.exit_code == 2
    assert "names no account" in stars.stderr


def test_symbol_is_matched_without_regard_to_case(cli: CliCall, api: respx.MockRouter) -> None:
    """--symbol "mrvl  250321c00155000" finds the transactions of MRVL  250321C00155000."""
    add_connection("brokerage", "token-b")
    items = json.loads(fixture_text("transactions.json"))

    def by_symbol(request: httpx.Request) -> httpx.Response:
        # Schwab, like its sandbox, compares the symbol exactly.
        wanted = request.url.params.get("symbol")
        kept = [
            item
            for item in items
            if wanted is None
            or any(t["instrument"].get("symbol") == wanted for t in item["transferItems"])
        ]
        return json_response(json.dumps(kept))

    mock_connection_api(api, "token-b", [FIRST], transactions=by_symbol)

    result = cli("transactions", "list", "--symbol", "mrvl  250321c00155000", "--format", "json")

    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["symbol"] for row in rows] == ["MRVL  250321C00155000"]


# --- a connection that does not exist -----------------------------------------------------------------

UNKNOWN_NAME_COMMANDS = [
    ["accounts", "list", "-c", "nope"],
    ["accounts", "show", "1111", "-c", "nope"],
    ["positions", "list", "-c", "nope"],
    ["transactions", "list", "-c", "nope"],
    ["tokens", "status", "nope"],
    ["tokens", "refresh", "nope"],
    ["disconnect", "nope", "--yes"],
    ["audit", "list", "-c", "nope"],
]


@pytest.mark.parametrize("vault", [True, False], ids=["with-vault", "no-vault"])
@pytest.mark.parametrize("command", UNKNOWN_NAME_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_an_unknown_connection_is_one_message_and_exit_1_everywhere(
    cli: CliCall, api: respx.MockRouter, command: list[str], vault: bool
) -> None:
    """Every command given a name no connection has: exit 1, the same message and hint, no data."""
    if vault:
        add_connection("brokerage", "token-b")

    result = cli(*command, "--format", "json") if command[0] != "disconnect" else cli(*command)

    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    assert errors_of(result.stderr) == ["error: no connection named 'nope'"]
    assert "hint: see: dashtam connections list" in result.stderr
    assert api.calls.call_count == 0


def test_audit_of_a_removed_connection_stays_readable(cli: CliCall, api: respx.MockRouter) -> None:
    """A connection removed keeps its audit entries, readable by its name."""
    add_connection("brokerage", "token-b")
    mock_connection_api(api, "token-b", [FIRST])
    assert cli("accounts", "list", "--format", "json").exit_code == 0
    assert cli("disconnect", "brokerage", "--yes").exit_code == 0

    result = cli("audit", "list", "-c", "brokerage", "--format", "json")

    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert entries
    assert {entry["connection"] for entry in entries} == {"brokerage"}


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["audit", "list", "--limit", "0"], "--limit: '0' is not a whole number from 1 to 1,000,"),
        (["audit", "list", "-n", "many"], "--limit: 'many' is not a whole number from 1 to"),
        (["connect", "schwab", "--timeout", "inf"], "--timeout: 'inf' is not a number from 1 to"),
        (["transactions", "list", "--since", "2025-02-01", "--until", "2025-01-01"], "--since: "),
    ],
    ids=["limit-zero", "limit-text", "timeout-inf", "since-after-until"],
)
def test_option_errors_name_the_option_in_words_for_people(
    cli: CliCall, api: respx.MockRouter, command: list[str], words: str
) -> None:
    """A bad option value: exit 2, the option named, no validator's jargon."""
    add_connection("brokerage", "token-b")

    result = cli(*command)

    assert result.exit_code == 2
    flat = " ".join(result.stderr.replace("Invalid value for ", "").split())
    assert words in flat
    assert "Input should be" not in result.stderr
    assert api.calls.call_count == 0


# --- a certificate that does not verify ---------------------------------------------------------------


@pytest.fixture
def untrusted_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """Schwab's API over TLS with a certificate from a CA dashtam does not trust."""
    trusted = trustme.CA()  # SSL_CERT_FILE names this one; the server's is another
    bundle = tmp_path / "trusted.pem"
    trusted.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SCHWAB_API_KEY", "k" * 32)
    monkeypatch.setenv("SCHWAB_API_SECRET", "s" * 16)
    with HostileServer(trustme.CA()) as server:
        monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", server.base_url)
        yield server


@pytest.mark.parametrize(
    ("command", "access_in"),
    [
        (["accounts", "list"], 30),
        (["positions", "list"], 30),
        (["transactions", "list"], 30),
        (["tokens", "refresh", "--force"], 30),
        (["accounts", "list"], -5),  # the refresh goes first, to the token endpoint
    ],
    ids=["accounts", "positions", "transactions", "tokens-refresh", "accounts-after-refresh"],
)
def test_a_certificate_that_does_not_verify_is_said_at_once(
    cli: CliCall, untrusted_server: HostileServer, command: list[str], access_in: int
) -> None:
    """An untrusted certificate: exit 1 on every command, said as such, with the CA settings.

    Said at once: one attempt per call in the audit log, not five.
    """
    add_connection("brokerage", "token-b", access_in=dt.timedelta(minutes=access_in))

    result = cli(*command, "--format", "json")

    assert result.exit_code == 1, result.stderr
    flat = " ".join(result.stderr.split())
    assert "the TLS certificate of 127.0.0.1 could not be verified" in flat
    assert "ca_bundle" in flat
    assert "SSL_CERT_FILE" in flat
    assert "after 5 attempts" not in flat
    assert untrusted_server.seen == []  # no request got past the handshake
    if command[0] != "tokens" and access_in > 0:
        audit = json.loads(cli("audit", "list", "--format", "json").stdout)
        calls = [entry for entry in audit if entry["operation"].startswith("schwab.")]
        assert calls
        assert {entry["outcome"] for entry in calls} == {"certificate error"}
        assert len(calls) == len({entry["operation"] for entry in calls})  # once each
