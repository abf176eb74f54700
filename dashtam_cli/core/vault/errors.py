"""Errors of the vault, each naming the file, record or key source involved (never a secret)."""

from __future__ import annotations

from dashtam_cli.core.errors import DashtamError

__all__ = [
    "KeyMissing",
    "KeyringTimeout",
    "KeyringUnavailable",
    "NoKeySource",
    "RecordDamaged",
    "RecordTampered",
    "SchemaTooNew",
    "UnsafeFiles",
    "VaultBusy",
    "VaultCorrupt",
    "VaultError",
    "VaultNotFound",
    "WeakPassphrase",
    "WrongKey",
    "WrongPassphrase",
]

KEY_OPTIONS_HINT = (
    "dashtam needs a place for its master key: set DASHTAM_MASTER_KEY (base64url of 32 bytes), "
    "run a keyring service (GNOME Keyring, KWallet, macOS Keychain, Windows Credential Manager), "
    "or use a passphrase-protected key file: dashtam vault init --key-store passphrase"
)


class VaultError(DashtamError):
    """Base of every vault error."""


class VaultNotFound(VaultError):
    """There is no vault yet where one was expected."""


class UnsafeFiles(VaultError):
    """The vault's directory or files are open to other users, or owned by another user."""


class SchemaTooNew(VaultError):
    """The vault was written by a newer dashtam; this one refuses to touch it."""


class VaultBusy(VaultError):
    """Another process held the vault's write lock for longer than the busy timeout."""


class VaultCorrupt(VaultError):
    """The vault file is not a readable SQLite database."""


class NoKeySource(VaultError):
    """No usable place to keep or find the master key."""


class KeyringUnavailable(NoKeySource):
    """The OS keyring is missing, refused as unsafe, locked or failing."""


class KeyringTimeout(KeyringUnavailable):
    """The OS keyring did not answer in time (a locked or hung Secret Service)."""


class KeyMissing(VaultError):
    """The vault holds data but its master key is not where the vault says it is."""


class WrongKey(VaultError):
    """A master key was found but it is not the key this vault was sealed with."""


class WeakPassphrase(VaultError):
    """A new passphrase is too short to protect the key file."""


class WrongPassphrase(VaultError):
    """The passphrase does not unlock the key file."""


class RecordTampered(VaultError):
    """A sealed field failed its integrity check: altered, corrupted, or moved from elsewhere."""

    def __init__(self, table: str, row_id: str, field: str) -> None:
        """Name the record, never its contents."""
        super().__init__(
            f"record {table}/{row_id} (field {field}) failed its integrity check",
            hint=(
                "the record was altered, corrupted or copied from another row; the rest of the "
                "vault is intact. Delete the record's connection and fetch again, or restore "
                "the vault from a backup"
            ),
        )
        self.table = table
        self.row_id = row_id
        self.field = field


class RecordDamaged(VaultError):
    """A plain column holds a value of the wrong type or form (a time that is not a time)."""

    def __init__(self, table: str, row_id: str, field: str, *, hint: str | None = None) -> None:
        """Name the record and the field, never the value."""
        super().__init__(
            f"record {table}/{row_id} (field {field}) is damaged: not a readable value",
            hint=hint
            or (
                "the record was altered or corrupted; the rest of the vault is intact. Delete "
                "the record's connection and fetch again, or restore the vault from a backup"
            ),
        )
        self.table = table
        self.row_id = row_id
        self.field = field
