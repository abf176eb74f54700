"""The real CLI against a hostile provider: no secret in any form reaches output or the vault.

Each test runs dashtam in-process against :mod:`hostile_server` over real
TLS, then looks for every secret of the run (app credentials, tokens,
account numbers, Schwab hashes) in every form it travelled in (raw,
percent-encoded, form-encoded, base64, the Basic header) in stdout, stderr,
the audit table, and the raw bytes of the vault file and its WAL.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING

import pytest
from hostile_server import (
    HostileServer,
    deep,
    echo,
    gzip_bomb,
    html,
    huge,
    json_answer,
)
from schwab_support import account_numbers_body, accounts_body, hash_of, user_preference_body
from token_support import add_connection, token_set

from dashtam_cli.core import redact
from dashtam_cli.core.http import ACCOUNTS_BODY_LIMIT, MiB
from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import trustme
    from conftest import CliCall, Result

# Secrets with characters that every encoding changes: '/', '+', '=', '@'.
CLIENT_ID = "hostile/client+id=0042"
CLIENT_SECRET = "hostile/secret+0042="
ACCESS = "I0.hostile/access+token=@"
REFRESH = "R0.hostile/refresh+token=@"
NUMBERS = ("11112222", "33334444")
HASHES = tuple(hash_of(n) for n in NUMBERS)


def forms(secret: str) -> set[str]:
    """The forms a secret travels in, computed here independently of dashtam's code."""
    raw = secret.encode()
    found = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return {f for f in found if len(f) >= 6}


def basic_header() -> str:
    """The Basic credentials dashtam sends to the token endpoint."""
    return base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


SECRETS = (CLIENT_ID, CLIENT_SECRET, ACCESS, REFRESH, *NUMBERS, *HASHES)
ALL_FORMS = {form for secret in SECRETS for form in forms(secret)} | {basic_header()}


@pytest.fixture
def hostile(
    ca: trustme.CA, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HostileServer]:
    """A hostile server, with dashtam's Schwab settings and app credentials pointing at it."""
    with HostileServer(ca) as server:
        monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", server.base_url)
        monkeypatch.setenv("SCHWAB_API_KEY", CLIENT_ID)
        monkeypatch.setenv("SCHWAB_API_SECRET", CLIENT_SECRET)
        yield server
    del ca_file


def connect(*, access_in: dt.timedelta = dt.timedelta(minutes=30)) -> None:
    """Store the connection "brokerage" holding ACCESS and REFRESH."""
    now = dt.datetime.now(dt.UTC)
    add_connection("brokerage", token_set(now, access_in=access_in, access=ACCESS, refresh=REFRESH))


def answer_accounts(server: HostileServer) -> None:
    """Answer the account list, the accounts and their nicknames with fixture-shaped bodies."""
    server.answers["account_numbers"] = json_answer(
        account_numbers_body(list(zip(NUMBERS, HASHES, strict=True)))
    )
    server.answers["accounts"] = json_answer(accounts_body(NUMBERS))
    server.answers["user_preference"] = json_answer(
        user_preference_body(dict.fromkeys(NUMBERS, "Roth IRA"))
    )


def audit_text() -> str:
    """Every column of every audit row, as text, read straight from the database."""
    path = load_settings().paths.vault_file
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT * FROM audit_log").fetchall()
    return "\n".join(" | ".join(str(value) for value in row) for row in rows)


def stored_bytes() -> bytes:
    """The raw bytes of the vault file and its WAL (whatever is in them now)."""
    path = load_settings().paths.vault_file
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def assert_no_secret(*results: Result) -> None:
    """No form of any secret in the outputs, the audit table or the vault's raw bytes."""
    places = {
        "stdout": "".join(r.stdout for r in results),
        "stderr": "".join(r.stderr for r in results),
        "audit": audit_text(),
    }
    raw = stored_bytes()
    for form in ALL_FORMS:
        for place, text in places.items():
            assert form not in text, (form, place)
        assert form.encode() not in raw, (form, "vault bytes")


@pytest.mark.parametrize("part", ["body", "decoded", "authorization", "credentials"])
def test_an_echoed_token_request_shows_no_credential_or_token(
    hostile: HostileServer, cli: CliCall, part: str
) -> None:
    """The token endpoint echoes the refresh request (form body, Basic header): all masked.

    The echo does reach the user and the audit log (the marker shows it), so
    the masking is what keeps the secrets out.
    """
    connect(access_in=dt.timedelta(minutes=-1))
    hostile.answers["token"] = echo(403, extra="MARKER-echoed", parts=[part])

    result = cli("tokens", "refresh", "--format", "json")

    assert result.exit_code != 0
    sent = hostile.requests_to("token")[0]
    assert urllib.parse.quote_plus(REFRESH) in sent.body.decode()  # as it travelled
    assert sent.headers["Authorization"] == f"Basic {basic_header()}"
    shown = result.stderr + result.stdout + audit_text()
    assert f"MARKER-echoed; {part}: " in shown.replace("Authorization:", "authorization:")
    assert "***" in shown
    assert_no_secret(result)


def test_an_echoed_api_error_shows_no_token_number_or_hash(
    hostile: HostileServer, cli: CliCall
) -> None:
    """A 404 echoing the bearer token, the hash in the path and the account number: all masked.

    The first sync stores the accounts (and no transactions); the second, a
    new process that knows only what it reads from the vault, gets the echo
    from every transactions call. Its failures, on stderr, mask every secret.
    """
    connect()
    answer_accounts(hostile)
    hostile.answers["transactions"] = json_answer([])
    first = cli("sync", "--format", "json")
    assert first.exit_code == 0, first.stderr
    before = len(hostile.seen)
    hostile.answers["transactions"] = echo(404, extra=f"account {NUMBERS[0]} not found")
    redact.forget_secrets()  # a new process: it knows only what it reads from the vault

    result = cli("sync", "--format", "json")

    assert result.exit_code == 3  # the accounts were stored, their transactions failed
    endpoints = [s.endpoint for s in hostile.seen[before:]]
    assert "transactions" in endpoints
    assert "HTTP 404" in result.stderr
    assert "***" in result.stderr
    assert "\x1b" not in result.stderr
    assert_no_secret(first, result)


def test_an_echo_before_the_numbers_are_stored_is_masked(
    hostile: HostileServer, cli: CliCall
) -> None:
    """The accounts call fails echoing a number only the account list (same moment) carried."""
    connect()
    answer_accounts(hostile)
    hostile.answers["accounts"] = echo(
        400, extra=f"accounts {NUMBERS[0]}, {NUMBERS[1]} and {HASHES[1]} are not yours"
    )

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "HTTP 400" in result.stderr
    assert_no_secret(result)


def test_an_html_page_with_escapes_is_one_clean_line(hostile: HostileServer, cli: CliCall) -> None:
    """A gateway's HTML page with terminal escapes becomes one line, without them or any secret."""
    connect()
    answer_accounts(hostile)
    hostile.answers["accounts"] = html(403)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "an HTML page" in result.stderr
    assert not any(ch in result.stderr for ch in "\x1b\x07\x00\r")
    assert_no_secret(result)


def test_a_huge_body_is_refused_early_with_a_clear_message(
    hostile: HostileServer, cli: CliCall
) -> None:
    """A 200 MB answer: exit 1 with a one-line message; dashtam stopped reading near the limit."""
    connect()
    answer_accounts(hostile)
    size = 200 * MiB
    hostile.answers["accounts"] = huge(size)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "answered with more than 64 MiB" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    # What the socket buffers held beyond the limit, at most: far from the whole body.
    assert hostile.settled()
    assert hostile.sent["accounts"] < ACCOUNTS_BODY_LIMIT + 32 * MiB
    assert_no_secret(result)


def test_a_declared_huge_body_is_refused_before_reading(
    hostile: HostileServer, cli: CliCall
) -> None:
    """A Content-Length over the limit is refused at once: hardly a byte of the body is read."""
    connect()
    answer_accounts(hostile)
    hostile.answers["account_numbers"] = huge(200 * MiB, declare=True)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "Schwab account numbers answered with more than 1 MiB" in result.stderr
    assert hostile.settled()
    assert hostile.sent["account_numbers"] < 200 * MiB


def test_a_gzip_bomb_is_refused(hostile: HostileServer, cli: CliCall) -> None:
    """A small gzip body that expands to 64 MiB: refused past the 1 MiB limit of its endpoint."""
    connect()
    answer_accounts(hostile)
    hostile.answers["account_numbers"] = gzip_bomb(64 * MiB)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "Schwab account numbers answered with more than 1 MiB" in result.stderr


def test_deeply_nested_json_is_a_clear_error(hostile: HostileServer, cli: CliCall) -> None:
    """JSON nested 100,000 deep: a one-line error naming the nesting, not a RecursionError."""
    connect()
    answer_accounts(hostile)
    hostile.answers["accounts"] = deep(100_000)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "nested more than 64 levels deep" in result.stderr
    assert "internal error" not in result.stderr
    assert "RecursionError" not in result.stderr


def test_a_deep_error_body_is_still_a_clear_error(hostile: HostileServer, cli: CliCall) -> None:
    """An error answer nested too deep still gives its HTTP status, not a crash."""
    connect()
    answer_accounts(hostile)
    hostile.answers["accounts"] = deep(5_000, status=400)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    assert "HTTP 400" in result.stderr
    assert "internal error" not in result.stderr


def test_an_absurdly_long_error_message_is_bounded(hostile: HostileServer, cli: CliCall) -> None:
    """A 5000-digit number and 100 KB of text in an error become one bounded line."""
    connect()
    answer_accounts(hostile)
    message = "too many: " + "9" * 5000 + " " + "word " * 20_000
    hostile.answers["accounts"] = json_answer({"message": message}, 400)

    result = cli("accounts", "list", "--format", "json")

    assert result.exit_code == 1
    error_line = next(line for line in result.stderr.splitlines() if "HTTP 400" in line)
    assert len(error_line) < 400
    assert "9999999" not in result.stderr
    assert len(audit_text()) < 4000
