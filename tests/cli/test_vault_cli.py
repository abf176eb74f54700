"""`dashtam vault ...` and `dashtam audit list` through the CLI: output, exit codes, refusals."""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import io
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import keyring
import keyring.backends.fail
import pytest
from fake_keyrings import MemoryKeyring, PlaintextFileKeyring
from vault_seed import Seeded, seed

from dashtam_cli.core import audit
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import migrations, schema
from dashtam_cli.core.vault.crypto import key_id_of
from dashtam_cli.core.vault.files import sidecar_files
from dashtam_cli.core.vault.keys import PassphraseKeySource
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from conftest import CliCall

    from dashtam_cli.core.vault.vault import Vault

KEY_OPTIONS = ("DASHTAM_MASTER_KEY", "keyring", "--key-store passphrase")
STATUS_FIELDS = [
    "state",
    "path",
    "database",
    "size_bytes",
    "schema_version",
    "vault_id",
    "key_store",
    "key_source",
    "keyring_backend",
    "key_id",
    "counts",
    "error",
    "hint",
]
AUDIT_FIELDS = [
    "time",
    "connection",
    "provider",
    "operation",
    "outcome",
    "http_status",
    "duration_ms",
    "correlation_id",
    "detail",
    "id",
]


def _with_vault(job: Callable[[Vault], Awaitable[Any]]) -> Any:
    """Open the test's vault (creating it if needed) in-process and run ``job`` on it."""

    async def run() -> Any:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(run())


def _init(cli: CliCall) -> dict[str, Any]:
    """Run `vault init` and return its JSON record."""
    result = cli("vault", "init", "--format", "json")
    assert result.exit_code == 0, result.stderr
    record: dict[str, Any] = json.loads(result.stdout)
    return record


def _vault_file(home: Path) -> Path:
    return home / "data" / "vault.sqlite3"


def _no_traceback(*texts: str) -> None:
    for value in texts:
        assert "Traceback" not in value


# vault init


def test_init_creates_then_changes_nothing(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """The first init creates vault and key; the second says so, keeps the key, and exits 0."""
    first = cli("vault", "init")
    assert first.exit_code == 0, first.stderr
    assert "created the vault" in first.stderr
    record = json.loads(first.stdout)  # not a terminal: JSON by default
    assert record["created"] is True
    assert record["path"] == str(_vault_file(isolated_env))
    stored = memory_keyring.entries[("dashtam", f"vault-{record['vault_id']}")]
    assert key_id_of(base64.urlsafe_b64decode(stored)).hex() == record["key_id"]

    second = cli("vault", "init")
    assert second.exit_code == 0, second.stderr
    assert "nothing changed" in second.stderr
    assert "created the vault" not in second.stderr
    again = json.loads(second.stdout)
    assert again["created"] is False
    assert (again["vault_id"], again["key_id"]) == (record["vault_id"], record["key_id"])
    assert list(memory_keyring.entries) == [("dashtam", f"vault-{record['vault_id']}")]


def test_init_without_a_usable_keyring_lists_the_three_options(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """With keyring's fail backend, init exits 1 naming every key option, without a traceback.

    The failure leaves no vault file; once a keyring is there, init succeeds.
    """
    keyring.set_keyring(keyring.backends.fail.Keyring())
    result = cli("vault", "init")
    assert result.exit_code == 1
    assert "no OS keyring service is available" in result.stderr
    for option in KEY_OPTIONS:
        assert option in result.stderr
    assert result.stdout == ""
    _no_traceback(result.stderr, result.stdout)
    assert not (isolated_env / "data" / "vault.key").exists()
    assert not _vault_file(isolated_env).exists()

    keyring.set_keyring(memory_keyring)
    retry = cli("vault", "init", "--format", "json")
    assert retry.exit_code == 0, retry.stderr
    record = json.loads(retry.stdout)
    assert record["created"] is True
    assert list(memory_keyring.entries) == [("dashtam", f"vault-{record['vault_id']}")]


def test_init_refuses_a_plaintext_keyring(cli: CliCall, isolated_env: Path) -> None:
    """A plain-text file backend (keyrings.alt) is refused by name and is given nothing."""
    backend = PlaintextFileKeyring()
    keyring.set_keyring(backend)
    result = cli("vault", "init")
    assert result.exit_code == 1
    assert "keyrings.alt.file.PlaintextKeyring" in result.stderr
    for option in KEY_OPTIONS:
        assert option in result.stderr
    _no_traceback(result.stderr, result.stdout)
    assert backend.entries == {}
    assert not (isolated_env / "data" / "vault.key").exists()


def test_init_with_passphrase_key_file(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """--key-store passphrase writes a 0600 key file that holds the key only wrapped."""
    passphrase = "correct horse battery staple"
    result = cli(
        "vault", "init", "--key-store", "passphrase", env={"DASHTAM_PASSPHRASE": passphrase}
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    key_file = isolated_env / "data" / "vault.key"
    assert record["key_source"] == f"passphrase-protected key file {key_file}"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert memory_keyring.entries == {}

    source = PassphraseKeySource(key_file, environ={"DASHTAM_PASSPHRASE": passphrase}, prompt=None)
    key = asyncio.run(source.load())
    assert key is not None
    assert key_id_of(key).hex() == record["key_id"]
    content = key_file.read_bytes()
    for form in (
        key,
        key.hex().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key),
        base64.urlsafe_b64encode(key).rstrip(b"="),
    ):
        assert form not in content
    assert passphrase.encode() not in content
    assert json.loads(content)["kdf"]["name"] == "scrypt"


def test_init_with_passphrase_but_none_given_stores_nothing(
    cli: CliCall, isolated_env: Path
) -> None:
    """Without a terminal or DASHTAM_PASSPHRASE, the passphrase store fails and writes no key."""
    result = cli("vault", "init", "--key-store", "passphrase")
    assert result.exit_code == 1
    assert "DASHTAM_PASSPHRASE" in result.stderr
    _no_traceback(result.stderr)
    assert not (isolated_env / "data" / "vault.key").exists()


# vault status


@pytest.fixture
def seeded_vault(cli: CliCall) -> tuple[dict[str, Any], Seeded]:
    """A vault made by `vault init`, with rows in every table and three audit entries."""
    record = _init(cli)

    async def fill(vault: Vault) -> Seeded:
        seeded = await seed(vault, transactions=5, positions_per_account=1)
        for n in range(3):
            await audit.record(vault, operation=f"op-{n}", outcome="ok")
        return seeded

    return record, _with_vault(fill)


def _expected_counts(seeded: Seeded) -> dict[str, int]:
    return {**seeded.counts, "audit_log": 3}


def _status_rows(cli: CliCall, fmt: str) -> tuple[int, dict[str, Any], str]:
    """Run `vault status` in ``fmt`` and return the exit code, the record and stderr."""
    result = cli("vault", "status", "--format", fmt)
    if fmt == "json":
        record = json.loads(result.stdout)
    elif fmt == "jsonl":
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        record = json.loads(lines[0])
    else:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert len(rows) == 1
        assert list(rows[0]) == STATUS_FIELDS
        record = {
            k: (json.loads(v) if k in {"counts", "schema_version", "size_bytes"} and v else v)
            for k, v in rows[0].items()
        }
        record = {k: (None if v == "" else v) for k, v in record.items()}
    return result.exit_code, record, result.stderr


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_status_ok_in_every_machine_format(
    cli: CliCall, isolated_env: Path, seeded_vault: tuple[dict[str, Any], Seeded], fmt: str
) -> None:
    """Status names the state, key source, MemoryKeyring backend, schema 1 and every table's rows."""
    init, seeded = seeded_vault
    code, record, stderr = _status_rows(cli, fmt)
    assert code == 0, stderr
    assert list(record) == STATUS_FIELDS
    assert record["state"] == "ok"
    assert record["path"] == str(_vault_file(isolated_env))
    assert int(record["size_bytes"]) > 0
    assert record["schema_version"] == migrations.LATEST
    assert record["vault_id"] == init["vault_id"]
    assert record["key_store"] == "keyring"
    assert record["key_source"] == "OS keyring (fake_keyrings.MemoryKeyring)"
    assert record["keyring_backend"] == "fake_keyrings.MemoryKeyring"
    assert record["key_id"] == init["key_id"]
    assert record["counts"] == _expected_counts(seeded)
    assert list(record["counts"]) == list(schema.TABLES)
    assert record["error"] is None
    assert record["hint"] is None


def test_status_table(cli: CliCall, seeded_vault: tuple[dict[str, Any], Seeded]) -> None:
    """The table shows the same facts, one labelled line each."""
    init, seeded = seeded_vault
    result = cli("vault", "status", "--format", "table", env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.stderr
    lines = {
        line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
        for line in result.stdout.splitlines()
        if "  " in line
    }
    assert lines["state"] == "ok"
    assert lines["schema version"] == str(migrations.LATEST)
    assert lines["keyring backend"] == "fake_keyrings.MemoryKeyring"
    assert lines["key source"] == "OS keyring (fake_keyrings.MemoryKeyring)"
    assert lines["key id"] == init["key_id"]
    assert json.loads(lines["counts"]) == _expected_counts(seeded)


def test_status_without_a_vault_is_absent(cli: CliCall, isolated_env: Path) -> None:
    """No vault: state absent, the init hint, exit 0, and nothing created."""
    result = cli("vault", "status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "absent"
    assert record["hint"] == "create one with: dashtam vault init"
    assert record["counts"] is None
    assert not _vault_file(isolated_env).exists()


def test_status_with_the_wrong_key_reports_and_exits_1(
    cli: CliCall, seeded_vault: tuple[dict[str, Any], Seeded]
) -> None:
    """A wrong DASHTAM_MASTER_KEY: the record still has path, schema and counts; exit 1."""
    _, seeded = seeded_vault
    wrong = base64.urlsafe_b64encode(os.urandom(32)).decode()
    result = cli("vault", "status", "--format", "json", env={"DASHTAM_MASTER_KEY": wrong})
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["state"] == "error"
    assert "is not this vault's key" in record["error"]
    assert "DASHTAM_MASTER_KEY" in record["error"]
    assert record["key_id"] is None
    assert record["schema_version"] == migrations.LATEST
    assert record["counts"] == _expected_counts(seeded)
    assert f"error: {record['error']}" in result.stderr
    assert "hint: restore the key" in result.stderr
    assert wrong not in result.stdout + result.stderr
    _no_traceback(result.stderr)


def test_status_with_the_key_missing_says_so(
    cli: CliCall, memory_keyring: MemoryKeyring, seeded_vault: tuple[dict[str, Any], Seeded]
) -> None:
    """With the keyring entry gone, status explains where the key should be, and exits 1."""
    init, _ = seeded_vault
    del memory_keyring.entries[("dashtam", f"vault-{init['vault_id']}")]
    result = cli("vault", "status", "--format", "json")
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["state"] == "error"
    assert "holds data but its master key is not in OS keyring" in record["error"]
    assert f"dashtam/vault-{init['vault_id']}" in record["hint"]
    assert memory_keyring.entries == {}  # no new key was made over the vault


def test_status_refuses_a_readable_database(cli: CliCall, isolated_env: Path) -> None:
    """A vault file readable by others: state error, exit 1, and the chmod 600 that fixes it."""
    _init(cli)
    path = _vault_file(isolated_env)
    path.chmod(0o644)
    result = cli("vault", "status", "--format", "json")
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["state"] == "error"
    assert "other users may read it" in record["error"]
    assert "chmod 600" in record["hint"]
    assert "chmod 600" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # reported, not silently changed


# vault rotate-key


def test_rotate_key_changes_the_key_and_status_stays_ok(
    cli: CliCall, memory_keyring: MemoryKeyring, seeded_vault: tuple[dict[str, Any], Seeded]
) -> None:
    """rotate-key re-seals every sealed field; the keyring then holds only the new key."""
    init, seeded = seeded_vault
    result = cli("vault", "rotate-key", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rotation = json.loads(result.stdout)
    assert rotation["old_key_id"] == init["key_id"]
    assert rotation["new_key_id"] != init["key_id"]
    assert rotation["fields_resealed"] == len(seeded.plaintexts)
    assert f"re-sealed {len(seeded.plaintexts)} fields" in result.stderr

    assert list(memory_keyring.entries) == [("dashtam", f"vault-{init['vault_id']}")]
    stored = next(iter(memory_keyring.entries.values()))
    assert key_id_of(base64.urlsafe_b64decode(stored)).hex() == rotation["new_key_id"]

    status = cli("vault", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["state"] == "ok"
    assert record["key_id"] == rotation["new_key_id"]
    assert record["counts"] == _expected_counts(seeded)


# vault destroy


def test_destroy_without_yes_on_a_pipe_deletes_nothing(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """No terminal and no --yes: exit 2, and the vault and its key are still there."""
    init = _init(cli)
    before = dict(memory_keyring.entries)
    result = cli("vault", "destroy", input="y\n")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert _vault_file(isolated_env).exists()
    assert memory_keyring.entries == before
    status = json.loads(cli("vault", "status", "--format", "json").stdout)
    assert (status["state"], status["key_id"]) == ("ok", init["key_id"])


def test_destroy_with_yes_removes_the_files_and_the_key(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """--yes deletes the database, its sidecar files and the keyring entry."""
    init = _init(cli)
    _with_vault(lambda vault: audit.record(vault, operation="x", outcome="ok"))
    result = cli("vault", "destroy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"removed keyring entry dashtam/vault-{init['vault_id']}" in result.stderr
    assert not any(f.exists() for f in sidecar_files(_vault_file(isolated_env)))
    assert memory_keyring.entries == {}
    status = json.loads(cli("vault", "status", "--format", "json").stdout)
    assert status["state"] == "absent"


def test_destroy_of_a_vault_with_loose_modes_still_removes_the_key(
    cli: CliCall, isolated_env: Path, memory_keyring: MemoryKeyring
) -> None:
    """A vault file made world-readable is refused for use, but destroy still finds its key."""
    init = _init(cli)
    vault_file = _vault_file(isolated_env)
    vault_file.chmod(0o644)
    assert cli("vault", "status", "--format", "json").exit_code != 0  # refused for use
    result = cli("vault", "destroy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"removed keyring entry dashtam/vault-{init['vault_id']}" in result.stderr
    assert not vault_file.exists()
    assert memory_keyring.entries == {}


# audit list

UTC = dt.UTC
# Three days apart, so a --since date means the same whatever the machine's time zone.
_ENTRIES = [
    ("alpha", dt.datetime(2024, 3, 1, tzinfo=UTC), "accounts.fetch", "ok", 200, 120, "c-1"),
    ("beta", dt.datetime(2024, 3, 4, tzinfo=UTC), "token.refresh", "error", 401, 80, "c-2"),
    ("alpha", dt.datetime(2024, 3, 7, tzinfo=UTC), "transactions.fetch", "ok", 200, 300, "c-3"),
    ("beta", dt.datetime(2024, 3, 10, tzinfo=UTC), "accounts.fetch", "ok", 200, 95, "c-4"),
]


@pytest.fixture
def audited(cli: CliCall) -> None:
    """A vault with four audit entries written through dashtam_cli.core.audit.record."""
    _init(cli)

    async def write(vault: Vault) -> None:
        # Written out of time order: the listing must sort, not trust insertion order.
        for name, at, operation, outcome, status, ms, corr in [*_ENTRIES[1:][::-1], _ENTRIES[0]]:
            await audit.record(
                vault,
                connection_name=name,
                provider="schwab",
                at=at,
                operation=operation,
                outcome=outcome,
                http_status=status,
                duration_ms=ms,
                correlation_id=corr,
            )

    _with_vault(write)


FILTERS = [
    ((), ["c-4", "c-3", "c-2", "c-1"]),
    (("--connection", "alpha"), ["c-3", "c-1"]),
    (("--since", "2024-03-06"), ["c-4", "c-3"]),
    (("--since", "2024-03-07T00:00:00+00:00"), ["c-4", "c-3"]),
    (("--since", "2024-03-06T20:00:00-05:00"), ["c-4"]),
    (("--limit", "2"), ["c-4", "c-3"]),
    (("--connection", "beta", "--since", "2024-03-02"), ["c-4", "c-2"]),
    (("--connection", "beta", "--limit", "1"), ["c-4"]),
    # A connection with no entry after --since: empty. (A name no connection or entry
    # has is an error: see test_an_unknown_connection_is_one_message_and_exit_1_everywhere.)
    (("--connection", "alpha", "--since", "2024-03-20"), []),
]


@pytest.mark.usefixtures("audited")
@pytest.mark.parametrize(("args", "expected"), FILTERS)
def test_audit_list_json(cli: CliCall, args: tuple[str, ...], expected: list[str]) -> None:
    """Filters by connection, date, ISO time (with offset) and limit; newest first."""
    result = cli("audit", "list", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["correlation_id"] for row in rows] == expected
    by_corr = {e[-1]: e for e in _ENTRIES}
    for row in rows:
        assert list(row) == AUDIT_FIELDS
        name, at, operation, outcome, status, ms, _ = by_corr[row["correlation_id"]]
        assert dt.datetime.fromisoformat(row["time"]) == at
        assert row["time"].endswith("+00:00")
        assert (row["connection"], row["provider"], row["operation"]) == (
            name,
            "schwab",
            operation,
        )
        assert (row["outcome"], row["http_status"], row["duration_ms"]) == (outcome, status, ms)


@pytest.mark.usefixtures("audited")
@pytest.mark.parametrize(("args", "expected"), FILTERS)
def test_audit_list_csv(cli: CliCall, args: tuple[str, ...], expected: list[str]) -> None:
    """CSV carries the same rows in the same order, under the stable header."""
    result = cli("audit", "list", *args, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    rows = list(reader)
    assert reader.fieldnames == AUDIT_FIELDS
    assert [row["correlation_id"] for row in rows] == expected
    by_corr = {e[-1]: e for e in _ENTRIES}
    for row in rows:
        _, at, _, outcome, status, _, _ = by_corr[row["correlation_id"]]
        assert row["time"] == at.isoformat()
        assert (row["outcome"], row["http_status"], row["detail"]) == (outcome, str(status), "")


@pytest.mark.parametrize("since", ["yesterday", "2024-13-01", "03/07/2024"])
def test_audit_list_bad_since_is_a_usage_error(cli: CliCall, since: str) -> None:
    """A --since that is neither a date nor an ISO time exits 2 with a message."""
    result = cli("audit", "list", "--since", since)
    assert result.exit_code == 2
    assert "not a date (YYYY-MM-DD) or an ISO 8601 time" in result.stderr
    assert result.stdout == ""


def test_registered_secret_in_audit_detail_is_stored_masked(
    cli: CliCall, isolated_env: Path
) -> None:
    """A secret registered with the redactor is stored as *** and is nowhere in the raw files."""
    secret = "rt-live-7f3c9a1e5b2d4c6e8a0f"
    register_secret(secret)
    _init(cli)

    async def write(vault: Vault) -> None:
        await audit.record(
            vault,
            connection_name="alpha",
            operation="token.refresh",
            outcome="error",
            correlation_id=f"corr-{secret}",
            detail=f"provider rejected refresh token {secret} (invalid_grant)",
        )

        async with vault.reading() as conn:
            row = (await conn.execute(schema.audit_log.select())).one()
        assert row.detail == "provider rejected refresh token *** (invalid_grant)"
        assert row.correlation_id == "corr-***"

    _with_vault(write)

    result = cli("audit", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["detail"] == "provider rejected refresh token *** (invalid_grant)"
    raw = b"".join(f.read_bytes() for f in sidecar_files(_vault_file(isolated_env)) if f.exists())
    assert b"invalid_grant" in raw  # the scan reads the audit log's bytes
    assert secret.encode() not in raw
