"""`dashtam doctor`: one verdict and fix per check, exit 0/1/4, and never a crash."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
from typing import TYPE_CHECKING, Any

import keyring
import pytest
import trustme
from entry_probe import probe_main
from fake_keyrings import MemoryKeyring, PlaintextFileKeyring
from oauth_fixtures import free_port
from token_support import add_connection, token_set

from dashtam_cli.core.vault.migrations import LATEST

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import CliCall
    from oauth_server import OAuthServer


def _doctor(cli: CliCall, **env: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run `dashtam doctor` (JSON, not a terminal): exit code, checks by name, all output."""
    result = cli("doctor", env=env or None)
    assert "Traceback" not in result.stdout + result.stderr
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    for check in checks.values():
        assert list(check) == ["check", "status", "verdict", "fix"]
    return result.exit_code, checks, result.stdout + result.stderr


def _vault(home: Path) -> Path:
    return home / "data" / "vault.sqlite3"


@pytest.fixture
def healthy(cli: CliCall, oauth: OAuthServer) -> OAuthServer:
    """A vault in the (trusted) keyring, credentials in the environment, a local TLS provider."""
    assert cli("vault", "init").exit_code == 0
    return oauth


def test_a_healthy_setup_exits_0(cli: CliCall, healthy: OAuthServer) -> None:
    """Every check passes: exit 0, the TLS server verifies, and no secret is printed."""
    now = dt.datetime.now(dt.UTC)
    add_connection("main", token_set(now, access_in=dt.timedelta(minutes=20)))
    code, checks, output = _doctor(cli)
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert "dashtam" in checks["versions"]["verdict"]
    assert "MemoryKeyring" in checks["key source"]["verdict"]
    assert checks["vault integrity"]["verdict"] == "integrity_check: ok"
    assert f"up to {LATEST}" in checks["schema"]["verdict"]
    assert "opens it" in checks["vault key"]["verdict"]
    assert checks["schwab credentials"]["verdict"] == "from SCHWAB_API_KEY and SCHWAB_API_SECRET"
    assert "is free" in checks["schwab redirect URI"]["verdict"]
    assert "verifies" in checks["schwab TLS"]["verdict"]
    assert "tokens ok" in checks["connection main"]["verdict"]
    assert "last fetch never" in checks["connection main"]["verdict"]
    for secret in (healthy.client_id, healthy.client_secret, "A0.stored-access@"):
        assert secret not in output


def test_loose_vault_modes_are_broken(
    cli: CliCall, healthy: OAuthServer, isolated_env: Path
) -> None:
    """A vault others may read: exit 1, with the chmod that fixes it."""
    del healthy
    _vault(isolated_env).chmod(0o644)
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["vault files"]["status"] == "broken"
    assert "chmod 600" in checks["vault files"]["fix"]
    assert checks["schwab TLS"]["status"] == "ok"  # the other checks still run


def test_a_missing_key_is_broken(
    cli: CliCall, healthy: OAuthServer, memory_keyring: MemoryKeyring
) -> None:
    """The keyring entry gone: the key check is broken and says how to restore it."""
    del healthy
    memory_keyring.entries.clear()
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["vault key"]["status"] == "broken"
    assert "not in" in checks["vault key"]["verdict"]
    assert "restore the key" in checks["vault key"]["fix"]


def test_a_wrong_key_is_broken(cli: CliCall, healthy: OAuthServer) -> None:
    """Another key in DASHTAM_MASTER_KEY: the vault key check names it as not this vault's."""
    del healthy
    other = base64.urlsafe_b64encode(os.urandom(32)).decode()
    code, checks, output = _doctor(cli, DASHTAM_MASTER_KEY=other)
    assert code == 1
    assert "is not this vault's key" in checks["vault key"]["verdict"]
    assert other not in output


def test_a_schema_too_new_is_broken(cli: CliCall, healthy: OAuthServer, isolated_env: Path) -> None:
    """A vault from a newer dashtam: the schema check says so, exit 1."""
    del healthy
    with contextlib.closing(sqlite3.connect(_vault(isolated_env))) as conn, conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (?, 'from the future', '2030-01-01')", (LATEST + 1,)
        )
    conn.close()
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["schema"]["status"] == "broken"
    assert f"schema version {LATEST + 1}" in checks["schema"]["verdict"]


def test_a_bad_config_file_is_broken_and_the_rest_still_runs(
    cli: CliCall, isolated_env: Path
) -> None:
    """Invalid TOML: the config check is broken (exit 1); versions and the rest are reported."""
    config = isolated_env / "config"
    config.mkdir(parents=True, mode=0o700)
    (config / "config.toml").write_text("key_store = [unclosed\n")
    (config / "config.toml").chmod(0o600)
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["config"]["status"] == "broken"
    assert "not valid TOML" in checks["config"]["verdict"]
    assert checks["versions"]["status"] == "ok"
    assert "schwab credentials" in checks


def test_missing_credentials_of_a_provider_in_use_are_broken(
    cli: CliCall, healthy: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials anywhere: a warning with no connection, broken once a connection needs them."""
    del healthy
    monkeypatch.delenv("SCHWAB_API_KEY")
    monkeypatch.delenv("SCHWAB_API_SECRET")
    code, checks, _ = _doctor(cli)
    assert code == 0
    assert checks["schwab credentials"]["status"] == "warning"
    assert "providers configure schwab" in checks["schwab credentials"]["fix"]
    now = dt.datetime.now(dt.UTC)
    add_connection("main", token_set(now, access_in=dt.timedelta(minutes=20)))
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["schwab credentials"]["status"] == "broken"


def test_half_set_credentials_are_broken(cli: CliCall, healthy: OAuthServer) -> None:
    """Only one of the two variables set: broken, naming the missing one (not any value)."""
    del healthy
    code, checks, _ = _doctor(cli, SCHWAB_API_SECRET="")
    assert code == 1
    assert "SCHWAB_API_SECRET is not" in checks["schwab credentials"]["verdict"]


def test_a_redirect_port_in_use_is_reported(
    cli: CliCall, healthy: OAuthServer, redirect_uri: str
) -> None:
    """Something listening on the redirect URI's port: the check says it is in use."""
    del healthy
    port = int(redirect_uri.rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", port)):
        _, checks, _ = _doctor(cli)
    assert checks["schwab redirect URI"]["status"] == "warning"
    assert f"port {port} is in use" in checks["schwab redirect URI"]["verdict"]


def test_a_localhost_redirect_is_broken(cli: CliCall, healthy: OAuthServer) -> None:
    """A redirect URI the login would refuse is broken here too, with the same hint."""
    del healthy
    code, checks, _ = _doctor(cli, SCHWAB_REDIRECT_URI="https://localhost:8182")
    assert code == 1
    assert checks["schwab redirect URI"]["status"] == "broken"


def test_an_expired_login_exits_4(cli: CliCall, healthy: OAuthServer) -> None:
    """A connection whose refresh token has expired, nothing else wrong: exit 4 and the fix."""
    del healthy
    now = dt.datetime.now(dt.UTC)
    tokens = token_set(now, access_in=-dt.timedelta(hours=2), refresh_in=-dt.timedelta(minutes=1))
    add_connection("old", tokens)
    code, checks, _ = _doctor(cli)
    assert code == 4, checks
    assert checks["connection old"]["status"] == "relogin"
    assert "dashtam connect schwab --name old" in checks["connection old"]["fix"]


def test_an_untrusted_certificate_is_broken(
    cli: CliCall, healthy: OAuthServer, tmp_path: Path
) -> None:
    """A CA bundle that does not sign the provider's certificate: broken, naming the host."""
    del healthy
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    code, checks, _ = _doctor(cli, SSL_CERT_FILE=str(other))
    assert code == 1
    assert checks["schwab TLS"]["status"] == "broken"
    assert (
        "the TLS certificate of 127.0.0.1 could not be verified" in checks["schwab TLS"]["verdict"]
    )
    assert "SSL_CERT_FILE" in checks["schwab TLS"]["fix"]


def test_an_unreachable_provider_is_a_warning(cli: CliCall, healthy: OAuthServer) -> None:
    """Nothing listening at the provider's address: 'unreachable', not a failure of dashtam."""
    del healthy
    url = f"https://127.0.0.1:{free_port()}"
    code, checks, _ = _doctor(cli, DASHTAM_SCHWAB_BASE_URL=url)
    assert code == 0
    assert checks["schwab TLS"]["status"] == "warning"
    assert "unreachable" in checks["schwab TLS"]["verdict"]


def test_a_refused_keyring_backend_is_named(cli: CliCall) -> None:
    """A plain-text keyring backend: the key source check is broken and names it."""
    keyring.set_keyring(PlaintextFileKeyring())
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["key source"]["status"] == "broken"
    assert "keyrings.alt.file.PlaintextKeyring" in checks["key source"]["verdict"]


def test_a_vault_that_is_not_a_database_does_not_crash_it(cli: CliCall, isolated_env: Path) -> None:
    """Garbage in vault.sqlite3: the integrity check is broken, exit 1, no traceback."""
    vault = _vault(isolated_env)
    vault.parent.mkdir(parents=True, mode=0o700)
    vault.write_bytes(b"not a database at all" * 100)
    vault.chmod(0o600)
    code, checks, _ = _doctor(cli)
    assert code == 1
    assert checks["vault integrity"]["status"] == "broken"


def test_dashtam_help_does_not_import_doctor() -> None:
    """`dashtam --help` lists doctor without importing its modules (start-up cost)."""
    result = probe_main(
        ["--help"], after="print(sorted(m for m in sys.modules if 'doctor' in m), file=sys.stderr)"
    )
    assert "doctor" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_a_passphrase_vault_is_asked_for_once(isolated_env: Path) -> None:
    """At a prompt, the key check and the connection checks share one passphrase answer."""
    import asyncio

    from dashtam_cli.core.doctor import run_checks
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault.vault import OpenOptions, open_vault

    passphrase = "a passphrase long enough"

    async def create() -> None:
        options = OpenOptions(
            create=True, key_store="passphrase", environ={"DASHTAM_PASSPHRASE": passphrase}
        )
        async with open_vault(load_settings(), options):
            pass

    asyncio.run(create())
    asked: list[bool] = []

    def prompt(confirm: bool) -> str:
        asked.append(confirm)
        return passphrase

    checks = asyncio.run(run_checks(OpenOptions(prompt=prompt), environ=dict(os.environ)))
    by_name = {c.check: c for c in checks}
    assert by_name["vault key"].status == "ok"
    assert by_name["connections"].verdict == "no connections yet"
    assert asked == [False]
    assert isolated_env.exists()


# --- a shared vault on PostgreSQL ----------------------------------------------------------------


@pytest.mark.usefixtures("oauth")
def test_a_shared_vault_is_checked_in_its_database(
    cli: CliCall,
    pg_server: Any,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    isolated_env: Path,
) -> None:
    """With DASHTAM_DATABASE_URL: no vault yet is a warning; then the database, schema and key.

    The local vault file is never looked for (there is none), the password in
    the URL is never printed, and the stored credentials and connections are
    read from the database.
    """
    import urllib.parse

    from postgres_support import PASSWORD, PASSWORD_ROLE

    name = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    url = pg_server.url(name, user=PASSWORD_ROLE, password=PASSWORD)
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())

    code, checks, output = _doctor(cli)
    assert code == 0, checks
    assert checks["vault"]["status"] == "warning"
    assert checks["vault"]["verdict"].startswith("no vault in the shared database postgresql")
    assert "***" in checks["vault"]["verdict"]
    assert "vault init" in checks["vault"]["fix"]

    assert cli("vault", "init").exit_code == 0
    now = dt.datetime.now(dt.UTC)
    add_connection("main", token_set(now, access_in=dt.timedelta(minutes=20)))
    code, checks, output = _doctor(cli)
    assert code == 0, checks
    assert "vault files" not in checks
    assert "vault integrity" not in checks
    assert checks["vault database"]["status"] == "ok"
    assert "***" in checks["vault database"]["verdict"]
    assert f"up to {LATEST}" in checks["schema"]["verdict"]
    assert "DASHTAM_MASTER_KEY" in checks["vault key"]["verdict"]
    assert "tokens ok" in checks["connection main"]["verdict"]
    assert PASSWORD not in output
    assert not _vault(isolated_env).exists()


@pytest.mark.usefixtures("oauth")
def test_a_shared_vault_with_another_key_is_broken(
    cli: CliCall, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine's key does not open the shared vault: the key check says so, exit 1."""
    monkeypatch.setenv("DASHTAM_DATABASE_URL", pg_database)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    assert cli("vault", "init").exit_code == 0
    other = base64.urlsafe_b64encode(os.urandom(32)).decode()
    code, checks, _ = _doctor(cli, DASHTAM_MASTER_KEY=other)
    assert code == 1
    assert checks["vault database"]["status"] == "ok"
    assert checks["vault key"]["status"] == "broken"
    assert "not this vault's key" in checks["vault key"]["verdict"]


@pytest.mark.usefixtures("oauth")
def test_an_unreachable_shared_vault_is_one_broken_check(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens at the URL: the vault check is broken, masked, with a hint; the rest runs."""
    url = f"postgresql+asyncpg://alice:hunter2-pw@127.0.0.1:{free_port()}/money"
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    code, checks, output = _doctor(cli)
    assert code == 1
    assert checks["vault"]["status"] == "broken"
    assert "alice:***@" in checks["vault"]["verdict"]
    assert checks["vault"]["fix"]
    assert "hunter2-pw" not in output
    assert checks["schwab credentials"]["status"] == "ok"  # the checks after it still ran
