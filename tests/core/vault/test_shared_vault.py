"""A shared vault on PostgreSQL: its URL, what it shows, its key across machines, copies.

Against a real PostgreSQL server (``pg_server``: one started from Debian's
binaries, or DASHTAM_TEST_POSTGRES_URL); without one these tests are skipped,
saying why. The vault, token and sync suites also run whole on PostgreSQL
(DASHTAM_TEST_BACKEND=postgresql, as .ci/run does).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from typing import TYPE_CHECKING

import keyring
import pytest
from fake_keyrings import MemoryKeyring
from postgres_support import PASSWORD, PASSWORD_ROLE, Server
from raw_vault import raw_vault_bytes
from sqlalchemy import inspect
from vault_seed import Seeded, assert_reads_back, seed

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.database import masked_url
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import CliCall, Result


def write_config(home: Path, text: str) -> None:
    """Write the config file of DASHTAM_HOME ``home``."""
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True, mode=0o700)
    (config / "config.toml").write_text(text)


def seeded_vault(**options: object) -> Seeded:
    """Create the vault named by the environment and fill every sealed table."""

    async def job() -> Seeded:
        async with open_vault(load_settings(), OpenOptions(create=True, **options)) as vault:  # type: ignore[arg-type]
            return await seed(vault, transactions=50)

    return asyncio.run(job())


def reads_back(seeded: Seeded) -> None:
    """The vault named by the environment opens and holds exactly what was seeded."""

    async def job() -> None:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, seeded)

    asyncio.run(job())


def one_error(result: Result) -> list[str]:
    """Stderr as lines; no traceback."""
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()


# --- the URL ----------------------------------------------------------------------------------


def test_the_url_comes_from_the_environment_or_the_config_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DASHTAM_DATABASE_URL wins over [database] url; neither set: the local file."""
    monkeypatch.delenv("DASHTAM_DATABASE_URL", raising=False)
    assert load_settings().database_url is None
    write_config(isolated_env, '[database]\nurl = "postgresql+asyncpg://alice@db.lan/money"\n')
    settings = load_settings()
    assert settings.database_url == "postgresql+asyncpg://alice@db.lan/money"
    assert settings.sources["database_url"] == "config"
    monkeypatch.setenv("DASHTAM_DATABASE_URL", "postgresql+asyncpg://bob@db2.lan:5433/vault")
    settings = load_settings()
    assert settings.database_url == "postgresql+asyncpg://bob@db2.lan:5433/vault"
    assert settings.sources["database_url"] == "env"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite:///x/vault.sqlite3", "leave the database URL unset"),
        ("mysql://u:hunter2-pw@h/db", "is not PostgreSQL"),
        ("postgresql+asyncpg://u:hunter2-pw@h", "names no database"),
        ("postgresql+asyncpg://u:hunter2-pw@h:port/db", "port is not a number"),
        ("postgresql+asyncpg://u:hunter2-pw@h/db\x07", "control characters"),
    ],
)
def test_a_bad_url_is_one_line_that_never_repeats_it(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """A URL that cannot be a shared vault: exit 1 (config), its reason, never the URL's password."""
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    with pytest.raises(ConfigError, match=reason):
        load_settings()
    result = cli("vault", "status")
    assert result.exit_code == 1, result.stderr
    first, hint = one_error(result)
    assert reason in first
    assert hint.startswith("hint:")
    assert "hunter2-pw" not in result.stderr + result.stdout


def test_a_password_is_masked_wherever_the_url_is_shown() -> None:
    """In the authority and as a password= parameter; user, host, database and TLS stay."""
    url = "postgresql+asyncpg://alice:s%3Acret@db.lan:5432/money?sslmode=verify-full&password=x2"
    shown = masked_url(url)
    assert shown == (
        "postgresql+asyncpg://alice:***@db.lan:5432/money?sslmode=verify-full&password=***"
    )
    assert masked_url("postgresql+asyncpg://alice@db.lan/money") == (
        "postgresql+asyncpg://alice@db.lan/money"
    )


def test_an_unreachable_server_is_one_line_and_changes_nothing(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """Nothing listens on the URL's port: exit 1, the masked URL, a hint; no file made."""
    from oauth_fixtures import free_port

    url = f"postgresql+asyncpg://alice:hunter2-pw@127.0.0.1:{free_port()}/money"
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "C" * 43)
    result = cli("vault", "init")
    assert result.exit_code == 1, result.stderr
    first, hint = one_error(result)
    assert first.startswith("error: cannot use the shared vault at postgresql+asyncpg://alice:***@")
    assert "pgpass" in hint
    assert "hunter2-pw" not in result.stderr + result.stdout
    assert not (isolated_env / "data" / "vault.sqlite3").exists()


# --- against a server ----------------------------------------------------------------------------


@pytest.fixture
def shared(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """DASHTAM_DATABASE_URL set to a fresh database (the superuser's, no password)."""
    monkeypatch.setenv("DASHTAM_DATABASE_URL", pg_database)
    return pg_database


def test_status_and_paths_name_the_shared_vault_never_its_password(
    cli: CliCall, pg_server: Server, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password in the URL opens the vault and never reaches stdout, stderr or the audit."""
    name = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    url = pg_server.url(name, user=PASSWORD_ROLE, password=PASSWORD)
    monkeypatch.setenv("DASHTAM_DATABASE_URL", url)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "D" * 43)
    outputs = [cli("vault", "init"), cli("vault", "status"), cli("paths"), cli("audit", "list")]
    for result in outputs:
        assert result.exit_code == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    status = json.loads(outputs[1].stdout)
    assert status["state"] == "ok"
    assert status["path"] is None
    assert status["database"] == masked_url(url)
    assert "***" in status["database"]
    assert status["size_bytes"] > 0
    assert f"the vault is the shared vault at {masked_url(url)}" in outputs[2].stderr
    assert PASSWORD.encode() not in raw_vault_bytes()


def test_the_password_may_come_from_a_pgpass_file(
    cli: CliCall,
    pg_server: Server,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """No password in the URL: PGPASSFILE's line logs in; a wrong one is a one-line error."""
    name = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    monkeypatch.setenv("DASHTAM_DATABASE_URL", pg_server.url(name, user=PASSWORD_ROLE))
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "E" * 43)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{pg_server.host}:{pg_server.port}:{name}:{PASSWORD_ROLE}:wrong-one\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    refused = cli("vault", "init")
    assert refused.exit_code == 1
    assert "password authentication failed" in one_error(refused)[0]
    assert "wrong-one" not in refused.stderr
    passfile.write_text(f"{pg_server.host}:{pg_server.port}:{name}:{PASSWORD_ROLE}:{PASSWORD}\n")
    created = cli("vault", "init")
    assert created.exit_code == 0, created.stderr
    assert json.loads(created.stdout)["created"] is True


@pytest.mark.usefixtures("shared")
def test_the_revisions_build_schema_py_on_postgresql(master_key: bytes) -> None:
    """The same Alembic revisions give PostgreSQL every table, column and index schema.py declares."""
    del master_key
    seeded_vault()

    async def tables() -> dict[str, tuple[dict[str, str], set[str]]]:
        async with open_vault(load_settings()) as vault, vault.engine.connect() as conn:

            def read(sync: object) -> dict[str, tuple[dict[str, str], set[str]]]:
                found = inspect(sync)
                return {
                    name: (
                        {c["name"]: str(c["type"]) for c in found.get_columns(name)},
                        {i["name"] for i in found.get_indexes(name)},
                    )
                    for name in found.get_table_names()
                }

            return await conn.run_sync(read)

    found = asyncio.run(tables())
    types = {"TEXT": "TEXT", "BLOB": "BYTEA", "BYTEA": "BYTEA", "INTEGER": "INTEGER"}
    for table in schema.metadata.sorted_tables:
        columns, indexes = found[table.name]
        declared = {c.name: types[str(c.type.compile())] for c in table.columns}
        assert columns == declared, table.name
        assert {i.name for i in table.indexes} <= indexes, table.name
    assert "alembic_version" in found


def test_the_key_moves_between_machines_only_when_it_opens_the_vault(
    cli: CliCall,
    shared: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Machine A exports; B (its own home and keyring) is refused until it imports that very key.

    A key of another vault, a damaged line, a stale key: each refused, B's keyring still empty.
    After a rotation on A, B's old key is a clear error naming import-key, never garbage.
    """
    del shared
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    keyring_a, keyring_b = MemoryKeyring(), MemoryKeyring()
    exported = tmp_path / "key.txt"

    def on(machine: Path, ring: MemoryKeyring) -> None:
        monkeypatch.setenv("DASHTAM_HOME", str(machine))
        keyring.set_keyring(ring)

    on(machine_a, keyring_a)
    seeded = seeded_vault()
    done = cli("vault", "export-key", "--output", str(exported))
    assert done.exit_code == 0, done.stderr
    assert oct(exported.stat().st_mode & 0o777) == "0o600"
    line = exported.read_text().strip()
    assert line.startswith("dashtam-vault-key:v1:")
    assert line.split(":")[3] not in done.stdout + done.stderr
    assert cli("vault", "export-key", "--output", str(exported)).exit_code == 1  # never overwritten

    on(machine_b, keyring_b)
    missing = cli("accounts", "list")
    assert missing.exit_code == 1
    first, hint = one_error(missing)
    assert "master key is not in" in first
    assert "dashtam vault import-key" in hint
    vault_id = line.split(":")[2]
    for bad, reason in (
        (line[:-4] + ("AAAA" if not line.endswith("AAAA") else "BBBB"), "does not open this vault"),
        (line.replace(vault_id, "00000000-0000-4000-8000-000000000000"), "another vault"),
        ("dashtam-vault-key:v1:x:!!!", "damaged"),
        ("hello", "not a key exported"),
    ):
        refused = cli("vault", "import-key", input=bad)
        assert refused.exit_code in {1, 2}, refused.stderr
        assert reason in one_error(refused)[0]
        assert bad.split(":")[-1] not in refused.stderr
        assert keyring_b.entries == {}
    imported = cli("vault", "import-key", "--input", str(exported))
    assert imported.exit_code == 0, imported.stderr
    assert json.loads(imported.stdout)["vault_id"] == vault_id
    reads_back(seeded)

    on(machine_a, keyring_a)
    assert cli("vault", "rotate-key").exit_code == 0
    on(machine_b, keyring_b)
    stale = cli("accounts", "list")
    assert stale.exit_code == 1
    first, hint = one_error(stale)
    assert "is not this vault's key" in first
    assert "import-key" in hint
    stale_import = cli("vault", "import-key", "--input", str(exported))
    assert stale_import.exit_code == 1
    assert "does not open this vault" in one_error(stale_import)[0]
    on(machine_a, keyring_a)
    exported.unlink()
    assert cli("vault", "export-key", "--output", str(exported)).exit_code == 0
    on(machine_b, keyring_b)
    assert cli("vault", "import-key", "--input", str(exported)).exit_code == 0
    reads_back(seeded)


def test_a_vault_copies_to_postgresql_and_back_sealed_and_whole(
    cli: CliCall,
    pg_server: Server,
    master_key: bytes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """SQLite -> PostgreSQL -> SQLite: every sealed value reads back, counts match, nothing clear.

    A destination that holds a vault already is refused and left as it was.
    """
    del master_key
    monkeypatch.delenv("DASHTAM_DATABASE_URL", raising=False)
    seeded = seeded_vault()
    target = pg_server.url(pg_server.new_database())
    copied = cli("vault", "copy", "--to", target)
    assert copied.exit_code == 0, copied.stderr
    counts = json.loads(copied.stdout)["counts"]
    assert {k: v for k, v in counts.items() if k in seeded.counts} == seeded.counts
    assert "counts match" in copied.stderr

    again = cli("vault", "copy", "--to", target)
    assert again.exit_code == 1
    assert "holds a vault already" in one_error(again)[0]

    monkeypatch.setenv("DASHTAM_DATABASE_URL", target)
    reads_back(seeded)
    dump = raw_vault_bytes()
    for plain in seeded.plaintexts.values():
        assert plain not in dump

    back = tmp_path / "back" / "vault.sqlite3"
    returned = cli("vault", "copy", "--to", str(back))
    assert returned.exit_code == 0, returned.stderr
    assert oct(back.stat().st_mode & 0o777) == "0o600"
    assert oct(back.parent.stat().st_mode & 0o777) == "0o700"
    monkeypatch.delenv("DASHTAM_DATABASE_URL")
    monkeypatch.setenv("DASHTAM_HOME", str(tmp_path / "elsewhere"))
    os.environ.pop("DASHTAM_DATABASE_URL", None)
    settings = load_settings()
    moved = settings.paths.data_dir
    moved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    back.parent.rename(moved)
    reads_back(seeded)


# --- the edges ---------------------------------------------------------------------------------


def test_destroy_drops_the_shared_vaults_tables_and_this_machines_key(
    cli: CliCall, shared: str, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    """`vault destroy --yes` on a shared vault: its tables and this machine's key go; the database stays."""
    del shared
    monkeypatch.delenv("DASHTAM_MASTER_KEY", raising=False)
    assert cli("vault", "init").exit_code == 0
    assert memory_keyring.entries
    done = cli("vault", "destroy", "--yes")
    assert done.exit_code == 0, done.stderr
    assert "table(s) of the shared vault at" in done.stderr
    assert memory_keyring.entries == {}
    status = json.loads(cli("vault", "status").stdout)
    assert status["state"] == "absent"
    again = cli("vault", "destroy", "--yes")
    assert again.exit_code == 0
    assert "there is no vault in the shared database at" in again.stderr


def test_a_passphrase_machine_keeps_its_copy_of_the_key_in_its_key_file(
    cli: CliCall, shared: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`vault init --key-store passphrase` on a shared vault: the key file here; destroy removes it."""
    del shared
    monkeypatch.setenv("DASHTAM_PASSPHRASE", "a long enough passphrase")
    created = cli("vault", "init", "--key-store", "passphrase")
    assert created.exit_code == 0, created.stderr
    key_file = load_settings().paths.key_file
    assert key_file.exists()
    exported = tmp_path / "key.txt"
    assert cli("vault", "export-key", "--output", str(exported)).exit_code == 0
    other = tmp_path / "other"
    monkeypatch.setenv("DASHTAM_HOME", str(other))
    monkeypatch.setenv("DASHTAM_KEY_STORE", "passphrase")
    imported = cli("vault", "import-key", "--input", str(exported))
    assert imported.exit_code == 0, imported.stderr
    assert "key file" in json.loads(imported.stdout)["key_source"]
    assert load_settings().paths.key_file.exists()
    assert cli("vault", "destroy", "--yes").exit_code == 0
    assert not load_settings().paths.key_file.exists()


def test_a_failed_creation_takes_back_the_key_it_stored(
    shared: str, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    """Creation dies after the key is stored but before the vault records it: the key goes too."""
    from dashtam_cli.core.vault import vault as vault_module

    del shared
    monkeypatch.delenv("DASHTAM_MASTER_KEY", raising=False)

    async def broken(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vault_module, "_write_meta", broken)
    with pytest.raises(OSError, match="No space"):
        seeded_vault()
    assert memory_keyring.entries == {}


def test_import_key_refusals_write_nothing(
    cli: CliCall, shared: str, master_key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No vault yet; a key the environment already gives; a line that is not base64: each refused."""
    del shared
    from dashtam_cli.core.vault.vault import key_text

    line = key_text("00000000-0000-4000-8000-000000000000", master_key)
    empty = cli("vault", "import-key", input=line)
    assert empty.exit_code == 1
    assert "holds no vault yet" in one_error(empty)[0]
    assert cli("vault", "init").exit_code == 0
    exported = tmp_path / "key.txt"
    assert cli("vault", "export-key", "--output", str(exported)).exit_code == 0
    from_env = cli("vault", "import-key", "--input", str(exported))
    assert from_env.exit_code == 1
    assert "DASHTAM_MASTER_KEY" in one_error(from_env)[0]
    monkeypatch.delenv("DASHTAM_MASTER_KEY")
    garbled = cli("vault", "import-key", input="dashtam-vault-key:v1:id:é")
    assert garbled.exit_code == 2
    assert "damaged (not base64)" in one_error(garbled)[0]
    unreadable = cli("vault", "import-key", "--input", str(tmp_path / "nowhere"))
    assert unreadable.exit_code == 2
    assert "cannot read" in one_error(unreadable)[0]


@pytest.mark.parametrize(
    ("target", "reason", "code"),
    [
        ("postgresql+asyncpg://alice@db.lan", "names no database", 2),
        ("postgresql+asyncpg://alice:pw-in-argv@db.lan/x", "holds a password", 2),
        ("copy.txt", "neither a PostgreSQL URL nor an SQLite file", 2),
        ("elsewhere/other.sqlite3", "an SQLite copy is named vault.sqlite3", 2),
        ("occupied/vault.sqlite3", "there is a file at", 1),
        ("SELF", "the copy's destination is the vault itself", 1),
    ],
)
def test_copy_refuses_a_destination_it_cannot_use(  # noqa: PLR0913, PLR0917 - the case and its fixtures
    cli: CliCall,
    master_key: bytes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    target: str,
    reason: str,
    code: int,
) -> None:
    """A bad --to is one line with a hint, and nothing is written anywhere."""
    del master_key
    monkeypatch.delenv("DASHTAM_DATABASE_URL", raising=False)
    seeded_vault()
    occupied = tmp_path / "occupied" / "vault.sqlite3"
    occupied.parent.mkdir()
    occupied.write_bytes(b"someone's file")
    if target == "SELF":
        target = str(load_settings().paths.vault_file)
    elif not target.startswith("postgresql"):
        target = str(tmp_path / target)
    refused = cli("vault", "copy", "--to", target)
    assert refused.exit_code == code, refused.stderr
    assert reason in one_error(refused)[0]
    assert "pw-in-argv" not in refused.stderr
    assert occupied.read_bytes() == b"someone's file"
    assert not (tmp_path / "elsewhere").exists()


def test_the_password_may_come_from_the_keyring(  # noqa: PLR0913, PLR0917 - its fixtures
    cli: CliCall,
    pg_server: Server,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    """`vault db-password` keeps it in the keyring (from stdin); with no pgpass line it logs in.

    A wrong one is said at once; a URL that holds a password is refused; no
    output ever holds it.
    """
    name = urllib.parse.urlsplit(pg_database).path.lstrip("/")
    monkeypatch.setenv("DASHTAM_DATABASE_URL", pg_server.url(name, user=PASSWORD_ROLE))
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "F" * 43)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    without = cli("vault", "init")
    assert without.exit_code == 1
    assert "password authentication failed" in one_error(without)[0]
    wrong = cli("vault", "db-password", input="not-it\n")
    assert wrong.exit_code == 1
    assert "password authentication failed" in one_error(wrong)[0]
    stored = cli("vault", "db-password", input=PASSWORD + "\n")
    assert stored.exit_code == 0, stored.stderr
    entry = f"database-{PASSWORD_ROLE}@{pg_server.host}:{pg_server.port}/{name}"
    assert memory_keyring.entries[("dashtam", entry)] == PASSWORD
    created = cli("vault", "init")
    assert created.exit_code == 0, created.stderr
    for result in (without, wrong, stored, created):
        assert PASSWORD not in result.stdout + result.stderr
    monkeypatch.setenv(
        "DASHTAM_DATABASE_URL", pg_server.url(name, user=PASSWORD_ROLE, password=PASSWORD)
    )
    refused = cli("vault", "db-password", input=PASSWORD + "\n")
    assert refused.exit_code == 2
    assert "holds a password already" in one_error(refused)[0]


def test_tls_settings_in_the_url_reach_the_driver(
    cli: CliCall, pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The URL's sslmode and sslrootcert are not dropped on the way to the driver.

    sslmode=require against this server (no TLS) is refused; verify-full with
    a missing root certificate is refused; both in one line. sslmode=disable works.
    """
    monkeypatch.setenv("DASHTAM_MASTER_KEY", "G" * 43)
    for query in ("sslmode=require", f"sslmode=verify-full&sslrootcert={tmp_path}/none.pem"):
        monkeypatch.setenv("DASHTAM_DATABASE_URL", f"{pg_database}?{query}")
        refused = cli("vault", "init")
        assert refused.exit_code == 1, refused.stderr
        assert one_error(refused)[0].startswith("error: cannot use the shared vault at")
    monkeypatch.setenv("DASHTAM_DATABASE_URL", f"{pg_database}?sslmode=disable")
    assert cli("vault", "init").exit_code == 0
