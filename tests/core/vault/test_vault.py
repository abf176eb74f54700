"""Opening the vault: keys found, refused or missing; tampering; migrations; nothing plain on disk."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import keyring
import pytest
from fake_keyrings import HungKeyring, MemoryKeyring, PlaintextFileKeyring
from keyring.backends import fail, null
from sqlalchemy import select
from vault_seed import UNDO_MIGRATION_4

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import db, keys, migrations, schema
from dashtam_cli.core.vault.errors import (
    KeyMissing,
    KeyringTimeout,
    KeyringUnavailable,
    NoKeySource,
    RecordTampered,
    SchemaTooNew,
    VaultNotFound,
    WrongKey,
)
from dashtam_cli.core.vault.vault import OpenOptions, Vault, open_vault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from dashtam_cli.core.settings import Settings

SECRETS = ("access-tok-5a1e7f0c9d", "refresh-tok-7b2e8c1d4f", "client-secret-0f9e8d7c")
ACCOUNT_NUMBER = "98765432"
AMOUNTS = ("31337.42", "-271828.18")


def run(settings: Settings, job: Callable[[Vault], Awaitable[Any]], **options: Any) -> Any:
    """Open the vault with ``options`` and run ``job`` on it."""

    async def scenario() -> Any:
        async with open_vault(settings, OpenOptions(**options)) as vault:
            return await job(vault)

    return asyncio.run(scenario())


async def fill(vault: Vault) -> dict[str, str]:
    """Write a connection with tokens, credentials, an account and transactions; return the ids."""
    now = db.utcnow_text()
    ids = {name: str(uuid.uuid4()) for name in ("conn", "tok", "cred", "acct", "tx1", "tx2")}
    async with vault.writing() as conn:
        await conn.execute(
            schema.connections.insert().values(
                id=ids["conn"],
                provider="schwab",
                name="main",
                status="ok",
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            schema.tokens.insert().values(
                id=ids["tok"],
                connection_id=ids["conn"],
                access_token=vault.seal(
                    "tokens", ids["tok"], "access_token", SECRETS[0], owner=ids["conn"]
                ),
                refresh_token=vault.seal(
                    "tokens", ids["tok"], "refresh_token", SECRETS[1], owner=ids["conn"]
                ),
                token_type="Bearer",
                issued_at=now,
                access_expires_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            schema.provider_credentials.insert().values(
                id=ids["cred"],
                provider="schwab",
                client_id=vault.seal(
                    "provider_credentials",
                    ids["cred"],
                    "client_id",
                    "app-key-123456",
                    owner="schwab",
                ),
                client_secret=vault.seal(
                    "provider_credentials", ids["cred"], "client_secret", SECRETS[2], owner="schwab"
                ),
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            schema.accounts.insert().values(
                id=ids["acct"],
                connection_id=ids["conn"],
                number=vault.seal(
                    "accounts", ids["acct"], "number", ACCOUNT_NUMBER, owner=ids["conn"]
                ),
                payload=vault.seal(
                    "accounts", ids["acct"], "payload", '{"cash": "1000.00"}', owner=ids["conn"]
                ),
                fetched_at=now,
            )
        )
        for tx, amount in zip(("tx1", "tx2"), AMOUNTS, strict=True):
            await conn.execute(
                schema.transactions.insert().values(
                    id=ids[tx],
                    account_id=ids["acct"],
                    occurred_at=now,
                    payload=vault.seal(
                        "transactions",
                        ids[tx],
                        "payload",
                        f'{{"amount": "{amount}"}}',
                        owner=ids["acct"],
                    ),
                    fetched_at=now,
                )
            )
    return ids


async def read_token(vault: Vault, token_id: str) -> str:
    """Open the access token of one tokens row."""
    async with vault.reading() as conn:
        row = (
            await conn.execute(select(schema.tokens).where(schema.tokens.c.id == token_id))
        ).one()
    return vault.unseal_text(
        "tokens", row.id, "access_token", row.access_token, owner=row.connection_id
    )


def raw_sql(settings: Settings, statement: str, *params: Any) -> list[Any]:
    """Run SQL on the vault file behind dashtam's back, as an attacker or a bit flip would."""
    with sqlite3.connect(settings.paths.vault_file) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_no_secret_or_amount_in_the_raw_files(master_key: bytes) -> None:
    """Known secrets, account number and amounts appear nowhere in the database or its WAL."""
    settings = load_settings()
    seen: dict[str, bytes] = {}

    async def job(vault: Vault) -> None:
        await fill(vault)
        # Read the files while the vault is open, so the WAL still holds the writes.
        for path in settings.paths.data_dir.iterdir():
            seen[path.name] = path.read_bytes()

    run(settings, job, create=True)
    assert "vault.sqlite3-wal" in seen
    assert len(seen["vault.sqlite3-wal"]) > 0
    seen["after close"] = settings.paths.vault_file.read_bytes()
    needles = [*SECRETS, ACCOUNT_NUMBER, *AMOUNTS, "1000.00"]
    encoded = base64.urlsafe_b64encode(master_key)
    for name, data in seen.items():
        for needle in needles:
            assert needle.encode() not in data, f"{needle} found in {name}"
        assert master_key not in data
        assert encoded.rstrip(b"=") not in data
    # The plain-text columns are what the issue allows: ids, names, times.
    assert b"schwab" in seen["after close"]


@pytest.mark.usefixtures("master_key")
def test_reopen_reads_back() -> None:
    """A vault closed and opened again gives back what was sealed."""
    settings = load_settings()
    ids = run(settings, fill, create=True)
    assert run(settings, lambda v: read_token(v, ids["tok"])) == SECRETS[0]


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_wrong_key_is_refused_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another key is 'the wrong key' (not tampering), names its source, and changes nothing."""
    settings = load_settings()
    run(settings, fill, create=True)
    before = hashlib.sha256(settings.paths.vault_file.read_bytes()).digest()
    other = base64.urlsafe_b64encode(bytes(32)).decode()
    monkeypatch.setenv("DASHTAM_MASTER_KEY", other)
    with pytest.raises(WrongKey) as caught:
        run(settings, fill)
    assert "DASHTAM_MASTER_KEY" in caught.value.message
    assert "restore the key" in (caught.value.hint or "")
    assert hashlib.sha256(settings.paths.vault_file.read_bytes()).digest() == before


def test_missing_key_never_makes_a_new_one(memory_keyring: MemoryKeyring) -> None:
    """With the keyring entry gone, opening fails with restore advice, even with create=True."""
    settings = load_settings()
    ids = run(settings, fill, create=True)
    (entry,) = [k for k in memory_keyring.entries if k[0] == "dashtam"]
    saved = memory_keyring.entries.pop(entry)
    for create in (False, True):
        with pytest.raises(KeyMissing) as caught:
            run(settings, fill, create=create)
        assert "holds data" in caught.value.message
        assert f"dashtam/{entry[1]}" in (caught.value.hint or "")
        assert entry not in memory_keyring.entries
    memory_keyring.entries[entry] = saved
    assert run(settings, lambda v: read_token(v, ids["tok"])) == SECRETS[0]


def test_keyring_holds_the_key_under_the_vault_id(memory_keyring: MemoryKeyring) -> None:
    """The key is stored as base64url under service 'dashtam', user 'vault-<vault id>'."""
    settings = load_settings()
    vault_id, key_id = run(
        settings, lambda v: asyncio.sleep(0, (v.vault_id, v.key_id)), create=True
    )
    stored = memory_keyring.entries[("dashtam", f"vault-{vault_id}")]
    key = keys.decode_env_key(stored)
    from dashtam_cli.core.vault import crypto

    assert crypto.key_id_of(key).hex() == key_id


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_tampered_record_is_named_and_the_rest_still_works() -> None:
    """A flipped byte fails that record only, naming table, row and field, never the contents."""
    settings = load_settings()
    ids = run(settings, fill, create=True)
    (blob,) = raw_sql(settings, "SELECT access_token FROM tokens WHERE id = ?", ids["tok"])[0]
    altered = bytearray(blob)
    altered[-1] ^= 0x40
    raw_sql(settings, "UPDATE tokens SET access_token = ? WHERE id = ?", bytes(altered), ids["tok"])
    with pytest.raises(RecordTampered) as caught:
        run(settings, lambda v: read_token(v, ids["tok"]))
    assert (
        caught.value.message
        == f"record tokens/{ids['tok']} (field access_token) failed its integrity check"
    )
    assert SECRETS[0] not in str(caught.value) + (caught.value.hint or "")

    async def other_rows(vault: Vault) -> str:
        async with vault.reading() as conn:
            row = (await conn.execute(select(schema.accounts))).one()
        return vault.unseal_text("accounts", row.id, "number", row.number, owner=row.connection_id)

    assert run(settings, other_rows) == ACCOUNT_NUMBER


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_ciphertext_swapped_between_rows_fails() -> None:
    """A transaction's sealed payload copied onto another transaction does not open there."""
    settings = load_settings()
    ids = run(settings, fill, create=True)
    (blob,) = raw_sql(settings, "SELECT payload FROM transactions WHERE id = ?", ids["tx1"])[0]
    raw_sql(settings, "UPDATE transactions SET payload = ? WHERE id = ?", blob, ids["tx2"])

    async def read(vault: Vault, tx: str) -> str:
        async with vault.reading() as conn:
            row = (
                await conn.execute(
                    select(schema.transactions).where(schema.transactions.c.id == tx)
                )
            ).one()
        return vault.unseal_text(
            "transactions", row.id, "payload", row.payload, owner=row.account_id
        )

    assert AMOUNTS[0] in run(settings, lambda v: read(v, ids["tx1"]))
    with pytest.raises(RecordTampered, match=f"transactions/{ids['tx2']}"):
        run(settings, lambda v: read(v, ids["tx2"]))


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_tampered_key_check_is_not_called_a_wrong_key() -> None:
    """With the right key but an altered key-check value, the error is integrity, not wrong key."""
    settings = load_settings()
    run(settings, fill, create=True)
    (blob,) = raw_sql(settings, "SELECT value FROM vault_meta WHERE key = 'key_check'")[0]
    raw_sql(
        settings,
        "UPDATE vault_meta SET value = ? WHERE key = 'key_check'",
        blob[:-1] + bytes([blob[-1] ^ 1]),
    )
    with pytest.raises(RecordTampered, match="vault_meta"):
        run(settings, fill)


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_newer_schema_is_refused_untouched() -> None:
    """A vault from a newer dashtam is refused with an upgrade hint, and not one byte changes."""
    settings = load_settings()
    run(settings, fill, create=True)
    raw_sql(settings, "INSERT INTO schema_version VALUES (99, 'from the future', '2030-01-01')")
    path = settings.paths.vault_file
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(SchemaTooNew) as caught:
        run(settings, fill)
    assert "schema version 99" in caught.value.message
    assert "upgrade dashtam" in (caught.value.hint or "")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_migrations_replayed_match_the_declared_schema() -> None:
    """Every table and column of schema.py exists after the migrations, and no other."""
    settings = load_settings()
    run(settings, lambda _vault: asyncio.sleep(0), create=True)
    for table in schema.metadata.sorted_tables:
        columns = {row[1] for row in raw_sql(settings, f"PRAGMA table_info({table.name})")}
        assert columns == {c.name for c in table.columns}, table.name
    tables = {r[0] for r in raw_sql(settings, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {*schema.metadata.tables, "alembic_version"}
    versions = raw_sql(settings, "SELECT version FROM schema_version")
    assert versions == [(v,) for v in range(1, migrations.LATEST + 1)]
    assert raw_sql(settings, "SELECT version_num FROM alembic_version") == [(migrations.HEAD,)]


def test_every_sealed_column_is_registered() -> None:
    """Each binary column outside vault_meta is listed in SEALED_FIELDS, so rotation re-seals it."""
    from sqlalchemy import LargeBinary

    declared = {
        (table.name, column.name)
        for table in schema.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, LargeBinary) and table.name != "vault_meta"
    }
    listed = {(t, f) for t, fields in schema.SEALED_FIELDS.items() for f in fields}
    assert declared == listed


@pytest.mark.usefixtures("master_key")
@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_a_version_1_vault_gains_the_account_reference_column_and_keeps_its_data() -> None:
    """Migration 2 on a vault as version 1 left it: the column appears, nothing is lost."""
    settings = load_settings()
    ids = run(settings, fill, create=True)
    # Make it what version 1 wrote: no provider_ref column, no later version rows.
    for statement in UNDO_MIGRATION_4:
        raw_sql(settings, statement)
    raw_sql(settings, "DROP INDEX ix_accounts_connection")
    raw_sql(settings, "ALTER TABLE accounts DROP COLUMN provider_ref")
    raw_sql(settings, "DELETE FROM schema_version WHERE version >= 2")
    before = raw_sql(settings, "SELECT id, number, payload FROM accounts")
    assert before

    assert run(settings, lambda v: read_token(v, ids["tok"])) == SECRETS[0]

    assert "provider_ref" in {row[1] for row in raw_sql(settings, "PRAGMA table_info(accounts)")}
    assert raw_sql(settings, "SELECT id, number, payload FROM accounts") == before
    assert raw_sql(settings, "SELECT provider_ref FROM accounts") == [(None,)] * len(before)
    assert raw_sql(settings, "SELECT max(version) FROM schema_version") == [(migrations.LATEST,)]


def test_no_vault_is_not_created_by_readers() -> None:
    """Opening without create on a fresh home fails with the init hint and creates nothing."""
    settings = load_settings()
    with pytest.raises(VaultNotFound) as caught:
        run(settings, fill)
    assert caught.value.hint == "create one with: dashtam vault init"
    assert not settings.paths.data_dir.exists()


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (fail.Keyring(), "no OS keyring service is available"),
        (null.Keyring(), "no OS keyring service is available"),
        (PlaintextFileKeyring(), "refusing keyring backend keyrings.alt.file.PlaintextKeyring"),
    ],
)
def test_unsafe_or_absent_keyrings_are_refused(backend: Any, message: str) -> None:
    """Null, fail and plain-text backends store no key; the hint lists all three key options."""
    keyring.set_keyring(backend)
    settings = load_settings()
    with pytest.raises(KeyringUnavailable) as caught:
        run(settings, fill, create=True)
    assert message in caught.value.message
    hint = caught.value.hint or ""
    for option in ("DASHTAM_MASTER_KEY", "keyring", "--key-store passphrase"):
        assert option in hint
    assert caught.value.exit_code == 1
    if isinstance(backend, PlaintextFileKeyring):
        assert backend.entries == {}


def test_unknown_backend_is_refused() -> None:
    """A backend dashtam cannot vouch for is refused by name."""

    class Homemade(MemoryKeyring):
        """Not on the trusted list."""

    keyring.set_keyring(Homemade())
    with pytest.raises(KeyringUnavailable, match="cannot vouch"):
        run(load_settings(), fill, create=True)


def test_hung_keyring_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyring that never answers gives a clear error within the timeout, not a hang."""
    backend = HungKeyring()
    keyring.set_keyring(backend)
    monkeypatch.setenv("DASHTAM_KEYRING_TIMEOUT", "0.2")
    started = time.monotonic()
    try:
        with pytest.raises(KeyringTimeout) as caught:
            run(load_settings(), fill, create=True)
    finally:
        backend.release.set()
    assert time.monotonic() - started < 10
    assert "did not answer within 0.2 s" in caught.value.message
    assert "DASHTAM_KEYRING_TIMEOUT" in (caught.value.hint or "")


def test_keyring_errors_are_translated() -> None:
    """A backend that raises gives a one-line vault error naming the failure."""

    class Broken(MemoryKeyring):
        def get_password(self, service: str, username: str) -> str | None:
            raise RuntimeError("org.freedesktop.Secret.Error.IsLocked")

    keys.trust_keyring_backend(Broken)
    keyring.set_keyring(Broken())
    with pytest.raises(KeyringUnavailable, match="IsLocked"):
        run(load_settings(), fill, create=True)


@pytest.mark.parametrize("padded", [True, False])
def test_env_key_decoding(padded: bool) -> None:
    """DASHTAM_MASTER_KEY is base64url of 32 bytes, with or without '=' padding."""
    key = bytes(range(32))
    text = base64.urlsafe_b64encode(key).decode()
    assert keys.decode_env_key(text if padded else text.rstrip("=")) == key


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not base64 !!",
        base64.urlsafe_b64encode(bytes(16)).decode(),
        base64.urlsafe_b64encode(bytes(33)).decode(),
    ],
)
def test_bad_env_key_is_refused(raw: str) -> None:
    """Malformed or wrong-size keys are refused with a hint showing how to make one."""
    with pytest.raises(NoKeySource) as caught:
        keys.decode_env_key(raw)
    assert "urlsafe_b64encode(os.urandom(32))" in (caught.value.hint or "")


@pytest.mark.usefixtures("master_key")
def test_vault_made_with_env_key_asks_for_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault created with DASHTAM_MASTER_KEY says so when the variable is gone."""
    settings = load_settings()
    run(settings, fill, create=True)
    monkeypatch.delenv("DASHTAM_MASTER_KEY")
    with pytest.raises(KeyMissing, match="created with DASHTAM_MASTER_KEY"):
        run(settings, fill)


def test_passphrase_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The passphrase store writes a 0600 key file; a wrong passphrase is its own error."""
    from dashtam_cli.core.vault.errors import WrongPassphrase

    monkeypatch.setenv("DASHTAM_PASSPHRASE", "correct horse battery staple")
    settings = load_settings()
    ids = run(settings, fill, create=True, key_store="passphrase")
    key_file = settings.paths.key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"correct horse" not in key_file.read_bytes()
    assert run(settings, lambda v: read_token(v, ids["tok"])) == SECRETS[0]
    monkeypatch.setenv("DASHTAM_PASSPHRASE", "wrong horse")
    with pytest.raises(WrongPassphrase):
        run(settings, fill)
    monkeypatch.delenv("DASHTAM_PASSPHRASE")
    with pytest.raises(NoKeySource, match="needs a passphrase"):
        run(settings, fill)
    prompts: list[bool] = []

    def prompt(confirm: bool) -> str:
        prompts.append(confirm)
        return "correct horse battery staple"

    assert run(settings, lambda v: read_token(v, ids["tok"]), prompt=prompt) == SECRETS[0]
    assert prompts == [False]


_UNANSWERED_PROMPT = """
import asyncio, pathlib, sys, threading, time
from dashtam_cli.core.vault.errors import NoKeySource
from dashtam_cli.core.vault.keys import PassphraseKeySource

def prompt(confirm):
    threading.Event().wait()  # nobody ever types

source = PassphraseKeySource(pathlib.Path(sys.argv[1]), environ={}, prompt=prompt, timeout=0.3)

async def main():
    try:
        await source.save(bytes(32))  # a new key file: asks for the passphrase
    except NoKeySource as exc:
        print(exc.message, "|", exc.hint)

started = time.monotonic()
asyncio.run(main())
print(f"returned after {time.monotonic() - started:.1f} s", flush=True)
"""


def test_an_unanswered_passphrase_prompt_times_out_and_lets_the_process_exit(
    tmp_path: Path,
) -> None:
    """The prompt's thread is abandoned at its timeout: one clear error, and the process ends."""
    key_file = tmp_path / "key.json"
    done = subprocess.run(
        [sys.executable, "-c", _UNANSWERED_PROMPT, str(key_file)],
        capture_output=True,
        text=True,
        # Far above the 0.3 s timeout: only a process held by the prompt's thread gets here.
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no passphrase was typed within 0.3 s" in done.stdout
    assert "DASHTAM_PASSPHRASE" in done.stdout
    assert "returned after" in done.stdout
    assert not key_file.exists()


def test_two_processes_creating_at_once_agree_on_one_key() -> None:
    """Concurrent first use never leaves two keys: all openers end with the vault's one key id."""
    settings = load_settings()

    async def scenario() -> set[str]:
        async def one() -> str:
            async with open_vault(settings, OpenOptions(create=True)) as vault:
                return vault.key_id

        return set(await asyncio.gather(*(one() for _ in range(4))))

    assert len(asyncio.run(scenario())) == 1
