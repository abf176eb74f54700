"""A fake provider, registered at run time, goes through connect, sync and every query.

Nothing generic names it: if this needed a change outside the fake's own
module, the provider interface would be wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from fake_provider import FakeAccount, FakeBank, FakeProvider

from dashtam_cli.core.providers import register, unregister
from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

SETUP = "fake-setup-token-0001"
CREDENTIAL = "fake-credential-9c2f7d"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _bank() -> FakeBank:
    checking = FakeAccount("90001111", "Everyday", Decimal("100.50"))
    checking.positions.append(("ACME", Decimal(10), Decimal("5.25")))
    day = dt.timedelta(days=1)
    checking.add("t1", "BUY", "-52.50", NOW - 5 * day, "ACME")
    checking.add("t2", "DIV", "1.25", NOW - 4 * day, "ACME")
    checking.add("t3", "ACH_IN", "500.00", NOW - 3 * day)
    checking.remove("t1")
    checking.add("t4", "CARD", "-20.00", NOW - 2 * day)
    savings = FakeAccount("90002222", "Rainy day", Decimal(1000))
    savings.add("s1", "ACH_IN", "1000.00", NOW - 6 * day)
    return FakeBank(
        accounts=[checking, savings],
        setup_tokens={SETUP: CREDENTIAL},
        failing="90002222",
    )


@pytest.fixture
def bank(master_key: bytes) -> Iterator[FakeBank]:
    """The fake bank, with its provider registered for the test (and a vault key)."""
    del master_key
    fake = _bank()
    register(FakeProvider(fake))
    yield fake
    unregister("fake")


def _sealed_secret(path: Path) -> bytes | None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (blob,) = db.execute("SELECT secret FROM connections").fetchone()
    return None if blob is None else bytes(blob)


def _json(text: str) -> Any:
    return json.loads(text)


def _queries(cli: CliCall) -> None:
    """Every query answers from the vault what the fake provider gave."""
    accounts = cli("accounts", "list", "--offline", "--format", "json")
    assert accounts.exit_code == 0, accounts.stderr
    by_number = {a["number"]: a for a in _json(accounts.stdout)}
    assert set(by_number) == {"****1111", "****2222"}
    assert Decimal(by_number["****1111"]["total_value"]) == Decimal("153.00")
    assert by_number["****1111"]["synced_at"] is not None
    assert by_number["****2222"]["synced_at"] is None  # its transactions failed
    assert "90001111" not in accounts.stdout

    shown = cli("accounts", "show", "1111", "--offline", "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    assert _json(shown.stdout)["name"] == "Everyday"

    positions = cli("positions", "list", "--offline", "--format", "json")
    assert positions.exit_code == 0, positions.stderr
    assert [(p["symbol"], Decimal(p["quantity"])) for p in _json(positions.stdout)] == [
        ("ACME", Decimal(10))
    ]

    listed = cli("transactions", "list", "--offline", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    types = sorted(t["type"] for t in _json(listed.stdout))
    assert types == ["ACH_IN", "CARD", "DIV"]  # t1 was removed by the provider
    deposits = cli("transactions", "list", "--offline", "--type", "deposit", "--format", "json")
    assert [t["kind"] for t in _json(deposits.stdout)] == ["deposit"]
    cards = cli("transactions", "list", "--offline", "--type", "CARD", "--format", "json")
    assert [(t["type"], t["kind"]) for t in _json(cards.stdout)] == [("CARD", "purchase")]


def _tokens(cli: CliCall) -> None:
    """The credential does not expire: nothing to refresh, nothing to do."""
    status = cli("tokens", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    (row,) = _json(status.stdout)
    assert (row["state"], row["action"]) == ("ok", "none")
    assert row["access_expires"] == row["refresh_expires"] == "does not expire"
    refreshed = cli("tokens", "refresh", "--format", "json")
    assert refreshed.exit_code == 0, refreshed.stderr
    (row,) = _json(refreshed.stdout)
    assert (row["result"], row["message"]) == ("skipped", "does not expire")


def test_a_fake_provider_runs_through_connect_sync_and_every_query(
    cli: CliCall, bank: FakeBank
) -> None:
    """Connect with a pasted token, sync (one account fails), query, tokens, disconnect."""
    connected = cli("connect", "fake", "--format", "json", input=f"{SETUP}\n")
    assert connected.exit_code == 0, connected.stderr
    assert _json(connected.stdout)["provider"] == "fake"
    assert _json(connected.stdout)["name"] == "fake"
    assert bank.setup_tokens == {}  # claimed, once
    vault = load_settings().paths.vault_file.read_bytes()
    assert b"fake-credential" not in vault  # the credential record is sealed
    assert _sealed_secret(load_settings().paths.vault_file) is not None
    assert SETUP not in connected.stdout + connected.stderr

    synced = cli("sync", "--format", "json")
    assert synced.exit_code == 3, synced.stderr  # one account failed, the rest stored
    (report,) = _json(synced.stdout)
    assert report["provider"] == "fake"
    assert report["accounts"] == 2
    assert (report["new"], report["removed"]) == (4, 1)
    assert report["failed_accounts"] == ["****2222"]
    assert "could not read this account" in synced.stderr
    assert ("90001111", None) in bank.cursors_seen

    _queries(cli)
    _tokens(cli)

    # Later: one new transaction; the next sync asks from the cursor it was given.
    bank.accounts[0].add("t5", "CARD", "-7.00", NOW - dt.timedelta(hours=1))
    again = cli("sync", "--format", "json")
    assert again.exit_code == 3, again.stderr
    assert ("90001111", "5") in bank.cursors_seen

    listed = cli("connections", "list", "--format", "json")
    assert [(c["name"], c["provider"], c["status"]) for c in _json(listed.stdout)] == [
        ("fake", "fake", "active")
    ]
    gone = cli("disconnect", "fake", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert _json(cli("connections", "list", "--format", "json").stdout) == []


def test_a_token_file_login_and_a_reconnect_replace_the_credential(
    cli: CliCall, bank: FakeBank, tmp_path: Path
) -> None:
    """--token-file logs in; a second login under the name swaps the record, same connection."""
    token_file = tmp_path / "token.txt"
    token_file.write_text(f"  {SETUP}\n", encoding="utf-8")
    first = cli("connect", "fake", "--name", "bank", "--token-file", str(token_file), "-f", "json")
    assert first.exit_code == 0, first.stderr
    before = _sealed_secret(load_settings().paths.vault_file)

    bank.setup_tokens["second-token"] = "fake-credential-second"
    bank.credentials.clear()  # the bank revoked the first credential
    second = cli("connect", "fake", "--name", "bank", "-f", "json", input="second-token")
    assert second.exit_code == 0, second.stderr
    assert _json(second.stdout)["id"] == _json(first.stdout)["id"]
    assert _sealed_secret(load_settings().paths.vault_file) != before
    synced = cli("sync", "--format", "json")  # works with the new credential only
    assert synced.exit_code == 3, synced.stderr
    assert _json(synced.stdout)[0]["accounts"] == 2


def test_a_refused_token_saves_nothing_and_is_audited(cli: CliCall, bank: FakeBank) -> None:
    """A token the provider refuses ends with exit 1; no connection is made; the audit says so."""
    bank.setup_tokens.clear()
    refused = cli("connect", "fake", input=f"{SETUP}\n")
    assert refused.exit_code == 1
    assert "already claimed or never issued" in refused.stderr
    assert SETUP not in refused.stderr + refused.stdout
    assert _json(cli("connections", "list", "--format", "json").stdout) == []
    audit = cli("audit", "list", "--format", "json")
    assert audit.exit_code == 0, audit.stderr
    steps = [(e["operation"], e["outcome"]) for e in _json(audit.stdout)]
    assert ("login.claim", "failed") in steps
    assert SETUP not in audit.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ((), "", "the input ended before one was read"),
        ((), "  \n", "no token was given"),
        ((), "a\x1bb", "with control characters"),
        (("--token-file", "/nonexistent/token"), None, "cannot read the token file"),
    ],
)
def test_a_missing_or_unusable_token_is_a_usage_error(
    cli: CliCall, bank: FakeBank, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    """No token, blanks, control characters or an unreadable file: exit 2, nothing claimed."""
    result = cli("connect", "fake", *args, input=stdin)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert bank.setup_tokens == {SETUP: CREDENTIAL}


def test_token_file_is_refused_for_a_provider_that_logs_in_with_oauth(
    cli: CliCall, bank: FakeBank, tmp_path: Path
) -> None:
    """--token-file with an OAuth provider is a usage error, before any listener opens."""
    del bank
    token_file = tmp_path / "token.txt"
    token_file.write_text("x", encoding="utf-8")
    result = cli("connect", "schwab", "--token-file", str(token_file))
    assert result.exit_code == 2
    assert "does not log in with a pasted token" in result.stderr


def test_a_credential_the_provider_refuses_needs_the_providers_relogin(
    cli: CliCall, bank: FakeBank
) -> None:
    """A refused record: sync exits 4 with the command, tokens status says so, a login fixes it."""
    assert cli("connect", "fake", input=SETUP).exit_code == 0
    bank.credentials.clear()  # revoked at the bank
    synced = cli("sync", "--format", "json")
    assert synced.exit_code == 4, synced.stderr
    assert "dashtam connect fake --name fake" in synced.stderr
    status = cli("tokens", "status", "--format", "json")
    assert status.exit_code == 4
    assert _json(status.stdout)[0]["state"] == "reauth_required"
    assert "fake: log in again: dashtam connect fake --name fake" in status.stderr

    bank.setup_tokens["again"] = "fake-credential-again"
    assert cli("connect", "fake", input="again").exit_code == 0
    status = cli("tokens", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    assert _json(status.stdout)[0]["state"] == "ok"


def test_a_second_token_login_to_the_same_accounts_is_warned_about(
    cli: CliCall, bank: FakeBank
) -> None:
    """The duplicate-login check works with a credential record as with an OAuth token."""
    assert cli("connect", "fake", "--name", "first", input=SETUP).exit_code == 0
    assert cli("sync").exit_code == 3  # the failing account
    bank.setup_tokens["other"] = "fake-credential-other"
    second = cli("connect", "fake", "--name", "second", input="other")
    assert second.exit_code == 0, second.stderr
    assert "already connected as 'first'" in second.stderr
    assert "****1111" in second.stderr
    assert "90001111" not in second.stderr


@pytest.mark.parametrize("option", ["--no-browser", "--manual"])
def test_browser_options_are_refused_for_a_pasted_token_login(
    cli: CliCall, bank: FakeBank, option: str
) -> None:
    """--no-browser and --manual mean nothing to a token login: a usage error, nothing claimed."""
    result = cli("connect", "fake", option, input=SETUP)
    assert result.exit_code == 2
    assert "logs in with a pasted token, not in a browser" in result.stderr
    assert bank.setup_tokens == {SETUP: CREDENTIAL}


@pytest.mark.parametrize("fails", [False, True], ids=["revoked", "provider-down"])
def test_disconnect_asks_the_provider_to_forget_the_login(
    cli: CliCall, bank: FakeBank, *, fails: bool
) -> None:
    """Disconnect revokes at the provider first; when that fails it warns and removes anyway."""
    assert cli("connect", "fake", input=SETUP).exit_code == 0
    bank.revoke_fails = fails
    gone = cli("disconnect", "fake", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert _json(cli("connections", "list", "--format", "json").stdout) == []
    assert bank.revoked == ([] if fails else [CREDENTIAL])
    expected = "was not told to forget the login" if fails else "Fake Bank forgot the login"
    assert expected in gone.stderr
    steps = [
        (e["operation"], e["outcome"]) for e in _json(cli("audit", "list", "-f", "json").stdout)
    ]
    assert ("fake.revoke", "failed" if fails else "ok") in steps
    assert ("connection.remove", "ok") in steps
    assert CREDENTIAL not in gone.stderr


def test_disconnect_works_when_the_http_client_cannot_be_made(
    cli: CliCall, bank: FakeBank, tmp_path: Path
) -> None:
    """A broken CA setting stops the revoke, not the removal: removing is a way out."""
    assert cli("connect", "fake", input=SETUP).exit_code == 0
    gone = cli("disconnect", "fake", "--yes", env={"DASHTAM_CA_BUNDLE": str(tmp_path / "none.pem")})
    assert gone.exit_code == 0, gone.stderr
    assert "was not told to forget the login" in gone.stderr
    assert bank.revoked == []
    assert _json(cli("connections", "list", "--format", "json").stdout) == []
