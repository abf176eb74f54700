"""`dashtam tokens status|refresh` through the CLI: every format, exit codes, stderr messages."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from token_support import (
    SCHWAB_REFUSALS,
    SERVER_ERROR,
    add_connection,
    audit_of,
    refresh_requests,
    stored,
    token_set,
)

from dashtam_cli.core.models import RefreshResult, TokenStatus

if TYPE_CHECKING:
    from conftest import CliCall
    from oauth_server import OAuthServer

STATUS_FIELDS = list(TokenStatus.model_fields)
REFRESH_FIELDS = list(RefreshResult.model_fields)
MIN, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def connect(name: str, *, access_in: dt.timedelta, refresh_in: dt.timedelta = 5 * DAY) -> str:
    """Store a connection NAME whose tokens expire as given (from now); return its refresh token."""
    refresh = f"R0.{name}-refresh@"
    add_connection(
        name,
        token_set(
            _now(),
            access_in=access_in,
            refresh_in=refresh_in,
            access=f"A0.{name}-access@",
            refresh=refresh,
        ),
    )
    return refresh


def _parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time that must carry its offset."""
    moment = dt.datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text
    return moment


def _close(seconds: int, expected: dt.timedelta) -> bool:
    """Seconds remaining as the command saw them a moment ago."""
    return 0 <= expected.total_seconds() - seconds <= 30


# --- tokens status ------------------------------------------------------------------------------


@pytest.fixture
def two_connections() -> None:
    """'alpha' fresh for 20 min with 5 days to go; 'beta' expired, its login ending in 10 h."""
    connect("alpha", access_in=20 * MIN, refresh_in=5 * DAY)
    connect("beta", access_in=-3 * MIN, refresh_in=10 * HOUR)


@pytest.mark.usefixtures("two_connections")
def test_status_json_has_machine_times_seconds_and_states(cli: CliCall) -> None:
    """JSON: ISO times with offset, integer seconds remaining, a state per connection, exit 0."""
    result = cli("tokens", "status", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    rows = json.loads(result.stdout)
    assert [list(row) for row in rows] == [STATUS_FIELDS, STATUS_FIELDS]
    alpha, beta = rows
    assert (alpha["connection"], alpha["provider"], alpha["state"]) == ("alpha", "schwab", "ok")
    assert beta["state"] == "refresh_expiring"
    assert "+00:00" in alpha["access_expires_at"]
    for row in rows:
        assert isinstance(row["access_expires_in_seconds"], int)
        assert isinstance(row["refresh_expires_in_seconds"], int)
        access_at = _parse_time(row["access_expires_at"])
        refresh_at = _parse_time(row["refresh_expires_at"])
        assert refresh_at > access_at
    assert _close(alpha["access_expires_in_seconds"], 20 * MIN)
    assert _close(alpha["refresh_expires_in_seconds"], 5 * DAY)
    assert _close(beta["refresh_expires_in_seconds"], 10 * HOUR)
    assert -200 <= beta["access_expires_in_seconds"] <= -180
    assert alpha["access_expires"] in {"in 19 min", "in 20 min"}
    assert beta["refresh_expires"] in {"in 9 h 59 min", "in 10 h 0 min"}
    assert beta["access_expires"] == "3 min ago"
    assert alpha["action"] == "none"
    assert beta["action"] == "log in again soon: dashtam connect schwab --name beta"


@pytest.mark.usefixtures("two_connections")
def test_status_csv(cli: CliCall) -> None:
    """CSV: a header of every field, one row per connection, times with their offset."""
    result = cli("tokens", "status", "--format", "csv")

    assert result.exit_code == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert reader.fieldnames == STATUS_FIELDS
    rows = list(reader)
    assert [(r["connection"], r["state"]) for r in rows] == [
        ("alpha", "ok"),
        ("beta", "refresh_expiring"),
    ]
    assert _close(int(rows[0]["access_expires_in_seconds"]), 20 * MIN)
    _parse_time(rows[1]["refresh_expires_at"])


@pytest.mark.usefixtures("two_connections")
def test_status_jsonl(cli: CliCall) -> None:
    """JSON lines: one object per connection per line, the same fields as JSON."""
    result = cli("tokens", "status", "--format", "jsonl")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [(r["connection"], r["state"]) for r in rows] == [
        ("alpha", "ok"),
        ("beta", "refresh_expiring"),
    ]
    assert all(list(r) == STATUS_FIELDS for r in rows)


@pytest.mark.usefixtures("two_connections")
def test_status_table(cli: CliCall) -> None:
    """The table for people: the connection, state, remaining time in words and the action."""
    result = cli("tokens", "status", "--format", "table", env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("connection" in line and "state" in line for line in lines)
    (alpha,) = [line for line in lines if "alpha" in line]
    (beta,) = [line for line in lines if "beta" in line]
    assert " ok " in alpha
    assert "in 4 d 23 h" in alpha
    assert "refresh_expiring" in beta
    assert "3 min ago" in beta
    assert "dashtam connect schwab --name beta" in beta
    assert "A0." not in result.stdout  # never a token


def test_status_exits_4_when_a_connection_needs_a_login(cli: CliCall) -> None:
    """A dead refresh token: state reauth_required, exit 4, and the command on stderr."""
    connect("alpha", access_in=20 * MIN)
    connect("old", access_in=-2 * HOUR, refresh_in=-1 * HOUR)

    result = cli("tokens", "status", "--format", "json")

    assert result.exit_code == 4
    states = {r["connection"]: r["state"] for r in json.loads(result.stdout)}
    assert states == {"alpha": "ok", "old": "reauth_required"}
    assert "old: log in again: dashtam connect schwab --name old" in result.stderr
    assert "alpha" not in result.stderr


@pytest.mark.usefixtures("two_connections")
def test_status_of_one_connection(cli: CliCall) -> None:
    """`tokens status NAME` shows that connection only."""
    result = cli("tokens", "status", "beta", "--format", "json")

    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["connection"] == "beta"


def test_status_of_one_connection_needing_a_login_exits_4(cli: CliCall) -> None:
    """Exit 4 concerns the connections shown: NAME alone decides it."""
    connect("alpha", access_in=20 * MIN)
    connect("old", access_in=-2 * HOUR, refresh_in=-1 * HOUR)

    assert cli("tokens", "status", "alpha", "--format", "json").exit_code == 0
    assert cli("tokens", "status", "old", "--format", "json").exit_code == 4


@pytest.mark.usefixtures("two_connections")
def test_status_of_an_unknown_connection_exits_1(cli: CliCall) -> None:
    """An unknown NAME is an error (exit 1) with a hint, and no data."""
    result = cli("tokens", "status", "nope", "--format", "json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no connection named 'nope'" in result.stderr
    assert "dashtam connections list" in result.stderr


def test_status_without_a_vault_shows_nothing(cli: CliCall) -> None:
    """Before any login there is nothing to show, and nothing is wrong."""
    result = cli("tokens", "status", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


# --- tokens refresh -----------------------------------------------------------------------------


def _results(stdout: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(stdout)
    assert all(list(row) == REFRESH_FIELDS for row in rows)
    return {row["connection"]: row for row in rows}


def test_refresh_refreshes_what_needs_it_and_leaves_fresh_tokens(
    oauth: OAuthServer, cli: CliCall
) -> None:
    """A token expiring in 2 minutes is refreshed; one with 20 minutes left is 'fresh'; exit 0."""
    expiring = connect("expiring", access_in=2 * MIN)
    connect("fresh", access_in=20 * MIN)

    result = cli("tokens", "refresh", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    rows = _results(result.stdout)
    assert {name: row["result"] for name, row in rows.items()} == {
        "expiring": "refreshed",
        "fresh": "fresh",
    }
    (request,) = refresh_requests(oauth)
    assert request.form["refresh_token"] == expiring
    (issued,) = oauth.issued
    assert stored("expiring")[1].access_token == issued["access_token"]
    assert stored("fresh")[1].access_token == "A0.fresh-access@"
    new_expiry = _parse_time(rows["expiring"]["access_expires_at"])
    assert 25 * MIN < new_expiry - _now() <= 30 * MIN
    assert audit_of("expiring")[0].outcome == "ok"
    assert audit_of("fresh") == []


def test_refresh_force_refreshes_fresh_tokens(oauth: OAuthServer, cli: CliCall) -> None:
    """--force refreshes every connection, fresh or not."""
    connect("a", access_in=20 * MIN)
    connect("b", access_in=25 * MIN)

    result = cli("tokens", "refresh", "--force", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert {n: r["result"] for n, r in _results(result.stdout).items()} == {
        "a": "refreshed",
        "b": "refreshed",
    }
    assert len(refresh_requests(oauth)) == 2


def test_refresh_of_one_connection(oauth: OAuthServer, cli: CliCall) -> None:
    """`tokens refresh NAME` touches that connection only."""
    connect("a", access_in=2 * MIN)
    other = connect("b", access_in=2 * MIN)

    result = cli("tokens", "refresh", "a", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert list(_results(result.stdout)) == ["a"]
    assert [r.form["refresh_token"] for r in refresh_requests(oauth)] == ["R0.a-refresh@"]
    assert stored("b")[1].refresh_token == other
    assert stored("b")[1].access_token == "A0.b-access@"


def test_refresh_quiet_prints_nothing_on_success(oauth: OAuthServer, cli: CliCall) -> None:
    """--quiet: nothing on stdout or stderr when all went well, and the refresh did happen."""
    connect("a", access_in=2 * MIN)

    result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""
    assert stored("a")[1].access_token == oauth.issued[0]["access_token"]


@pytest.mark.parametrize("refusal", list(SCHWAB_REFUSALS))
def test_refresh_exits_4_with_the_login_command_when_refused(
    oauth: OAuthServer, cli: CliCall, refusal: str
) -> None:
    """A refused refresh token: exit 4, and stderr names the exact command, even with --quiet."""
    refresh = connect("brokerage", access_in=-1 * MIN)
    oauth.behaviour.refresh_answers[refresh] = SCHWAB_REFUSALS[refusal]

    result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 4
    assert result.stdout == ""
    assert "dashtam connect schwab --name brokerage" in result.stderr
    assert "brokerage: the connection 'brokerage' needs a new login" in result.stderr
    assert refresh not in result.stderr
    after = json.loads(cli("tokens", "status", "--format", "json").stdout)
    assert [r["state"] for r in after] == ["reauth_required"]


def test_refresh_exits_3_when_only_some_connections_refresh(
    oauth: OAuthServer, cli: CliCall
) -> None:
    """One connection's refresh fails with a 500, the other's works: exit 3, the failure on stderr."""
    broken = connect("broken", access_in=1 * MIN)
    connect("working", access_in=1 * MIN)
    oauth.behaviour.refresh_answers[broken] = SERVER_ERROR

    result = cli("tokens", "refresh", "--format", "json")

    assert result.exit_code == 3
    rows = _results(result.stdout)
    assert {n: r["result"] for n, r in rows.items()} == {"broken": "failed", "working": "refreshed"}
    assert "HTTP 500" in rows["broken"]["message"]
    assert "broken: Charles Schwab's token endpoint failed (HTTP 500)" in result.stderr
    assert "working" not in result.stderr
    assert json.loads(cli("tokens", "status", "broken", "--format", "json").stdout)[0]["state"] == (
        "ok"  # its refresh token is fine: only the provider failed
    )


def test_refresh_exits_1_when_every_refresh_fails(oauth: OAuthServer, cli: CliCall) -> None:
    """When no connection ends with a valid token and none needs a login: exit 1."""
    refresh = connect("broken", access_in=1 * MIN)
    oauth.behaviour.refresh_answers[refresh] = SERVER_ERROR

    result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 1
    assert "HTTP 500" in result.stderr


def test_refresh_reauth_wins_over_partial(oauth: OAuthServer, cli: CliCall) -> None:
    """A refusal and a success together: exit 4, since a person must act."""
    refused = connect("refused", access_in=1 * MIN)
    connect("working", access_in=1 * MIN)
    oauth.behaviour.refresh_answers[refused] = SCHWAB_REFUSALS["400-invalid_grant"]

    result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 4
    assert "dashtam connect schwab --name refused" in result.stderr


def test_refresh_warns_a_day_before_the_refresh_token_expires(
    oauth: OAuthServer, cli: CliCall
) -> None:
    """A refresh token expiring within 24 h: a warning with the command on stderr, still exit 0."""
    connect("ending", access_in=20 * MIN, refresh_in=10 * HOUR)
    connect("lasting", access_in=20 * MIN, refresh_in=3 * DAY)

    result = cli("tokens", "refresh", "--quiet")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("warning: the refresh token of 'ending' expires at ")
    assert warning.endswith("log in again before: dashtam connect schwab --name ending")
    assert oauth.token_requests == []


def test_refresh_name_and_all_is_a_usage_error(cli: CliCall) -> None:
    """NAME and --all contradict each other: exit 2, nothing done."""
    result = cli("tokens", "refresh", "alpha", "--all")

    assert result.exit_code == 2
    assert "not both" in result.stderr
    assert result.stdout == ""


def test_refresh_of_an_unknown_connection_exits_1(oauth: OAuthServer, cli: CliCall) -> None:
    """An unknown NAME is an error with a hint, not an empty success."""
    connect("alpha", access_in=20 * MIN)

    result = cli("tokens", "refresh", "nope")

    assert result.exit_code == 1
    assert "no connection named 'nope'" in result.stderr
    assert oauth.token_requests == []


# --- the jobs docs/tokens.md gives --------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tokens.md"
CRON_JOB = re.compile(r"^(?:\S+\s+){5}(?P<command>dashtam .*)$")


def _blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/tokens.md in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with /bin/sh, the installed dashtam first on PATH, as cron would."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.usefixtures("master_key")
def test_the_documented_cron_and_systemd_jobs_do_what_the_docs_say(oauth: OAuthServer) -> None:
    """docs/tokens.md's crontab lines and systemd check, run by sh with the installed dashtam.

    The refresh job refreshes and prints nothing (its 24-hour warning is
    filtered out); the daily job prints only the connection whose login ends
    within 24 hours; the systemd check fails for it and passes once every
    login has more than a day left.
    """
    oauth.behaviour.rotate_refresh = False  # Schwab: the refresh token and its deadline stay
    connect("ending", access_in=2 * MIN, refresh_in=10 * HOUR)
    connect("lasting", access_in=20 * MIN, refresh_in=5 * DAY)
    (crontab,) = _blocks("crontab")
    jobs = [m["command"] for line in crontab.splitlines() if (m := CRON_JOB.match(line))]
    refresh_job, daily_job = jobs
    (check_unit,) = [unit for unit in _blocks("ini") if "tokens status" in unit]
    (exec_start,) = [line for line in check_unit.splitlines() if line.startswith("ExecStart=")]
    check = shlex.split(exec_start.removeprefix("ExecStart="))
    assert check[:2] == ["/bin/sh", "-c"]
    check_command = check[2].replace("%h/.local/bin/dashtam", "dashtam")

    # cron ignores exit codes (here grep's): what it mails is the output.
    refreshed = _sh(refresh_job)
    assert (refreshed.stdout, refreshed.stderr) == ("", "")
    assert stored("ending")[1].access_token == oauth.issued[0]["access_token"]
    assert len(refresh_requests(oauth)) == 1
    unfiltered = _sh(refresh_job.split(" 2>&1 |")[0])  # the warning the filter drops
    assert unfiltered.returncode == 0
    assert unfiltered.stderr.startswith("warning: the refresh token of 'ending' expires at ")
    assert len(refresh_requests(oauth)) == 1  # fresh now: nothing sent

    daily = _sh(daily_job)
    (line,) = daily.stdout.splitlines()
    assert (json.loads(line)["connection"], json.loads(line)["state"]) == (
        "ending",
        "refresh_expiring",
    )
    failing = _sh(check_command)
    assert failing.returncode != 0
    assert '"connection":"ending"' in failing.stdout

    connect("ending", access_in=30 * MIN, refresh_in=7 * DAY)  # the weekly login, done
    passing = _sh(check_command)
    assert (passing.returncode, passing.stdout) == (0, "")
