"""Shell completion: `dashtam completion SHELL`, honest help pages, names and types completed."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keyring
import pytest
from oauth_fixtures import free_port
from token_support import add_connection, token_set

from dashtam_cli.core.completion import connection_names

if TYPE_CHECKING:
    from conftest import CliCall

DASHTAM = Path(sys.executable).parent / "dashtam"

SCRIPT_MARKS = {
    "bash": "complete -o default -F _dashtam_completion dashtam",
    "zsh": "#compdef dashtam",
    "fish": "complete --command dashtam",
}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_named_shells_script(cli: CliCall, shell: str) -> None:
    """Each shell gets its own script, calling dashtam back through _DASHTAM_COMPLETE."""
    result = cli("completion", shell)
    assert result.exit_code == 0, result.stderr
    assert SCRIPT_MARKS[shell] in result.stdout
    assert "_DASHTAM_COMPLETE" in result.stdout
    for other, mark in SCRIPT_MARKS.items():
        if other != shell:
            assert mark not in result.stdout


def test_completion_of_an_unknown_shell_is_a_usage_error(cli: CliCall) -> None:
    """`dashtam completion tcsh` exits 2 and names the shells it knows."""
    result = cli("completion", "tcsh")
    assert result.exit_code == 2
    assert "bash, zsh, fish" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [[], ["transactions"], ["transactions", "list"], ["vault", "status"], ["paths"], ["demo"]],
)
def test_help_pages_offer_no_completion_options_that_are_replaced(
    cli: CliCall, args: list[str]
) -> None:
    """No page advertises typer's --install-completion or --show-completion."""
    result = cli(*args, "--help")
    assert result.exit_code == 0
    assert "--install-completion" not in result.stdout
    assert "--show-completion" not in result.stdout
    assert cli(*args, "--show-completion").exit_code == 2  # and they do not exist


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash completion offers for the last word of ``words`` (a real dashtam process)."""
    parts = words.split(" ")
    result = subprocess.run(
        [str(DASHTAM)],
        env={
            **os.environ,
            **(env or {}),
            "_DASHTAM_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.split()


def test_transaction_types_complete() -> None:
    """--type DIV completes to DIVIDEND_OR_INTEREST; -t with nothing typed offers every type."""
    assert complete("dashtam transactions list --type DIV") == ["DIVIDEND_OR_INTEREST"]
    offered = complete("dashtam transactions list -t ")
    assert {"TRADE", "DIVIDEND_OR_INTEREST", "ACH_RECEIPT"} <= set(offered)


def test_connection_names_complete_without_the_key(isolated_env: Path) -> None:
    """-c completes the vault's connection names, in a process with no key and no prompt."""
    now = dt.datetime.now(dt.UTC)
    add_connection("brokerage", token_set(now, access_in=dt.timedelta(minutes=30)))
    add_connection("bank-ira", token_set(now, access_in=dt.timedelta(minutes=30)))
    env = {"DASHTAM_HOME": str(isolated_env)}
    assert complete("dashtam accounts list -c ", env) == ["bank-ira", "brokerage"]
    assert complete("dashtam transactions list --connection br", env) == ["brokerage"]
    assert complete("dashtam tokens status b", env) == ["bank-ira", "brokerage"]
    assert complete("dashtam audit list -c bank", env) == ["bank-ira"]


def test_no_vault_completes_no_names(tmp_path: Path) -> None:
    """Without a vault, or with a file that is not one, completion offers nothing, silently."""
    assert connection_names(tmp_path / "absent.db") == []
    broken = tmp_path / "vault.db"
    broken.write_bytes(b"not a database")
    assert connection_names(broken) == []


def _shared_vault_with(
    pg_server: Any, pg_database: str, monkeypatch: pytest.MonkeyPatch, *names: str
) -> str:
    """A shared vault in ``pg_database`` holding connections ``names``; its URL (with a password).

    Made through the password role, so that role may read it.
    """
    from postgres_support import PASSWORD, PASSWORD_ROLE

    database = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    url: str = pg_server.url(database, user=PASSWORD_ROLE, password=PASSWORD)
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "E" * 43)
    now = dt.datetime.now(dt.UTC)
    for name in names:
        add_connection(name, token_set(now, access_in=dt.timedelta(minutes=30)))
    return url


def test_a_shared_vault_s_names_complete_from_its_database(
    pg_server: Any, pg_database: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DASHTAM_DATABASE_URL, the names come from the database, in a process with no key.

    The local vault file is not there; a password in the URL is used, and
    the completion prints nothing else.
    """
    url = _shared_vault_with(pg_server, pg_database, monkeypatch, "brokerage", "bank-ira")
    # No key in the completing process (an empty variable is none).
    env = {"DASHTAM_HOME": str(isolated_env), "DASHTAM_DATABASE_URL": url, "DASHTAM_MASTER_KEY": ""}
    assert complete("dashtam accounts list -c ", env) == ["bank-ira", "brokerage"]
    assert complete("dashtam tokens status br", env) == ["brokerage"]
    assert not (isolated_env / "data" / "vault.sqlite3").exists()


def test_a_shared_vault_that_cannot_answer_completes_no_names(
    pg_server: Any, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No vault in the database yet, a login short of its password, unreachable: no names.

    The keyring is never asked for the password (a shell's completion must
    not wait on it): the keyring here holds it, and still nothing comes,
    while the same vault with the password in the URL completes.
    """
    from fake_keyrings import MemoryKeyring
    from postgres_support import PASSWORD, PASSWORD_ROLE

    from dashtam_cli.core.vault.database import keyring_entry

    absent = Path("/nonexistent")
    assert connection_names(absent, database_url=pg_database) == []  # no vault in it yet
    with_password = _shared_vault_with(pg_server, pg_database, monkeypatch, "brokerage")
    assert connection_names(absent, database_url=with_password) == ["brokerage"]
    name = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    no_password = pg_server.url(name, user=PASSWORD_ROLE)
    store = MemoryKeyring()
    store.set_password("dashtam", keyring_entry(no_password), PASSWORD)
    previous = keyring.get_keyring()
    keyring.set_keyring(store)
    try:
        assert connection_names(absent, database_url=no_password) == []
    finally:
        keyring.set_keyring(previous)
    unreachable = f"postgresql+asyncpg://alice:pw@127.0.0.1:{free_port()}/money"
    assert connection_names(absent, database_url=unreachable) == []
