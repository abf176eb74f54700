"""Records the core returns to its callers, as pydantic models with stable field names."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - pydantic resolves annotations at runtime
from pathlib import Path  # noqa: TC003

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AuditEntry",
    "ConnectionInfo",
    "KeyRotation",
    "PathEntry",
    "ProviderInfo",
    "Record",
    "VaultInit",
    "VaultStatus",
]


class Record(BaseModel):
    """Base of every record: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PathEntry(Record):
    """One directory or file dashtam uses."""

    name: str
    path: Path
    exists: bool


class AuditEntry(Record):
    """One provider operation, as the audit log recorded it (never with a secret)."""

    time: datetime
    connection: str | None
    provider: str | None
    operation: str
    outcome: str
    http_status: int | None
    duration_ms: int | None
    correlation_id: str | None
    detail: str | None
    id: str


class VaultStatus(Record):
    """What `dashtam vault status` reports; ``state`` is ok, absent or error."""

    state: str
    path: Path
    size_bytes: int | None
    schema_version: int | None
    vault_id: str | None
    key_store: str | None
    key_source: str | None
    keyring_backend: str | None
    key_id: str | None
    counts: dict[str, int] | None
    error: str | None
    hint: str | None


class VaultInit(Record):
    """The outcome of `dashtam vault init`."""

    created: bool
    path: Path
    vault_id: str
    key_source: str
    key_id: str


class KeyRotation(Record):
    """The outcome of `dashtam vault rotate-key`."""

    old_key_id: str
    new_key_id: str
    fields_resealed: int
    key_source: str


class ProviderInfo(Record):
    """A provider dashtam supports, and where its app credentials come from."""

    name: str
    display_name: str
    credentials: str | None
    base_url: str


class ConnectionInfo(Record):
    """One login to one provider, with its token lifetimes (never the tokens)."""

    name: str
    provider: str
    status: str
    created_at: datetime
    updated_at: datetime
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    id: str
