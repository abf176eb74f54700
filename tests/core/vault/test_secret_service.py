"""The master key in a real Secret Service (gnome-keyring over D-Bus): stored, reused, rotated, deleted.

These tests are skipped unless DASHTAM_TEST_SECRET_SERVICE=1; .ci/secret-service-tests
sets it inside a private D-Bus session with a throwaway, unlocked gnome-keyring.
With the variable set, a missing or locked Secret Service fails them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from typing import TYPE_CHECKING, Any

import keyring
import keyring.errors
import pytest
from vault_seed import Seeded, assert_reads_back, seed

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.crypto import key_id_of
from dashtam_cli.core.vault.files import sidecar_files
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import CliCall

pytestmark = pytest.mark.secret_service

BACKEND = "keyring.backends.SecretService.Keyring"


class InjectedFailure(Exception):
    """The failure a test injects into a rotation."""


def _vault_id(home: Path) -> str | None:
    """The vault id recorded in the vault file, read without dashtam (for clean-up)."""
    path = home / "data" / "vault.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT value FROM vault_meta WHERE key = 'vault_id'").fetchone()
    return None if row is None else bytes(row[0]).decode()


def _key_id(encoded: str | None) -> str | None:
    if encoded is None:
        return None
    return key_id_of(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))).hex()


@pytest.fixture
def secret_service(isolated_env: Path) -> Iterator[Any]:
    """The real Secret Service backend, installed as the keyring; fails if it is not there.

    Entries the test leaves in the Secret Service are deleted afterwards.
    """
    import secretstorage
    from keyring.backends import SecretService

    try:
        assert SecretService.Keyring.priority > 0  # connects to the bus, checks the service
        with contextlib.closing(secretstorage.dbus_init()) as bus:
            locked = secretstorage.get_default_collection(bus).is_locked()
    except (RuntimeError, secretstorage.exceptions.SecretStorageException) as exc:
        pytest.fail(f"no usable Secret Service on the session bus: {exc}")
    if locked:
        pytest.fail(
            "the Secret Service's default collection is locked (gnome-keyring-daemon --unlock)"
        )
    backend = SecretService.Keyring()
    keyring.set_keyring(backend)  # the autouse memory keyring fixture restores its own afterwards
    yield backend
    vault_id = _vault_id(isolated_env)
    if vault_id is not None:
        for user in (f"vault-{vault_id}", f"vault-{vault_id}-pending"):
            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                backend.delete_password("dashtam", user)


def _init(cli: CliCall) -> dict[str, Any]:
    result = cli("vault", "init", "--format", "json")
    assert result.exit_code == 0, result.stderr
    record: dict[str, Any] = json.loads(result.stdout)
    return record


def _fill() -> Seeded:
    async def run() -> Seeded:
        async with open_vault(load_settings()) as vault:
            return await seed(vault, transactions=20)

    return asyncio.run(run())


def _reopen_and_check(seeded: Seeded) -> str:
    async def run() -> str:
        async with open_vault(load_settings()) as vault:
            await assert_reads_back(vault, seeded)
            return vault.key_id

    return asyncio.run(run())


def test_init_stores_the_key_in_the_secret_service(secret_service: Any, cli: CliCall) -> None:
    """Init puts the key under dashtam/vault-<id>; status then reports the real backend."""
    record = _init(cli)
    assert record["created"] is True
    assert record["key_source"] == f"OS keyring ({BACKEND})"
    stored = secret_service.get_password("dashtam", f"vault-{record['vault_id']}")
    assert _key_id(stored) == record["key_id"]
    assert secret_service.get_password("dashtam", f"vault-{record['vault_id']}-pending") is None

    status = cli("vault", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    state = json.loads(status.stdout)
    assert (state["state"], state["keyring_backend"], state["key_id"]) == (
        "ok",
        BACKEND,
        record["key_id"],
    )


@pytest.mark.usefixtures("secret_service")
def test_reopen_reads_back_with_the_stored_key(cli: CliCall) -> None:
    """Data sealed after init opens again in a fresh open, with the key fetched from the service."""
    record = _init(cli)
    seeded = _fill()
    assert _reopen_and_check(seeded) == record["key_id"]
    again = _init(cli)
    assert (again["created"], again["key_id"]) == (False, record["key_id"])


def test_rotate_key_replaces_the_entry(secret_service: Any, cli: CliCall) -> None:
    """rotate-key leaves the new key in the entry, no pending entry, and every value readable."""
    record = _init(cli)
    seeded = _fill()
    result = cli("vault", "rotate-key", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rotation = json.loads(result.stdout)
    assert rotation["old_key_id"] == record["key_id"]
    assert rotation["fields_resealed"] == len(seeded.plaintexts)
    user = f"vault-{record['vault_id']}"
    assert _key_id(secret_service.get_password("dashtam", user)) == rotation["new_key_id"]
    assert secret_service.get_password("dashtam", f"{user}-pending") is None
    assert _reopen_and_check(seeded) == rotation["new_key_id"]


def test_rotation_stopped_after_commit_is_finished_on_open(
    secret_service: Any, cli: CliCall
) -> None:
    """A rotation that fails after its commit leaves a pending entry; the next open promotes it."""
    record = _init(cli)
    seeded = _fill()
    user = f"vault-{record['vault_id']}"

    def fail_after_commit(stage: str, _count: int) -> None:
        if stage == "committed":
            raise InjectedFailure(stage)

    async def rotate() -> None:
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            await vault.rotate_key(on_progress=fail_after_commit)

    with pytest.raises(InjectedFailure):
        asyncio.run(rotate())
    pending = _key_id(secret_service.get_password("dashtam", f"{user}-pending"))
    assert pending not in {None, record["key_id"]}
    assert _key_id(secret_service.get_password("dashtam", user)) == record["key_id"]

    assert _reopen_and_check(seeded) == pending
    assert _key_id(secret_service.get_password("dashtam", user)) == pending
    assert secret_service.get_password("dashtam", f"{user}-pending") is None


def test_destroy_deletes_the_entry(secret_service: Any, cli: CliCall, isolated_env: Path) -> None:
    """Destroy --yes removes the Secret Service entry and the files."""
    record = _init(cli)
    user = f"vault-{record['vault_id']}"
    assert secret_service.get_password("dashtam", user) is not None
    result = cli("vault", "destroy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert f"removed keyring entry dashtam/{user}" in result.stderr
    assert secret_service.get_password("dashtam", user) is None
    assert not any(f.exists() for f in sidecar_files(isolated_env / "data" / "vault.sqlite3"))


def test_open_with_create_makes_no_second_entry(secret_service: Any) -> None:
    """Opening an existing vault with create=True reuses the Secret Service key."""

    async def open_twice() -> tuple[str, str, str, str]:
        async with open_vault(load_settings(), OpenOptions(create=True)) as first:
            ids = (first.vault_id, first.key_id)
        async with open_vault(load_settings(), OpenOptions(create=True)) as second:
            return (*ids, second.vault_id, second.key_id)

    vault_id, key_id, vault_id_2, key_id_2 = asyncio.run(open_twice())
    assert (vault_id_2, key_id_2) == (vault_id, key_id)
    assert _key_id(secret_service.get_password("dashtam", f"vault-{vault_id}")) == key_id
