"""The audit log: every provider operation appended, written at once or in background batches."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, Required, Self, TypedDict, Unpack

from sqlalchemy import select

from dashtam_cli.core.models import AuditEntry
from dashtam_cli.core.redact import redact, sanitize
from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.providers.base import CallRecord
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = ["AuditWriter", "Fields", "audit_listing", "call_fields", "list_audit", "record"]

_MAX_DETAIL = 500


def _clean(value: str | None) -> str | None:
    return None if value is None else redact(value)[:_MAX_DETAIL]


def _untrusted(value: str | None) -> str | None:
    """A detail or correlation id, which may carry a provider's text: sanitized whole."""
    return None if value is None else sanitize(value, limit=_MAX_DETAIL)


class Fields(TypedDict, total=False):
    """The columns a caller gives for one entry (``operation`` and ``outcome`` are required)."""

    operation: Required[str]
    outcome: Required[str]
    connection_id: str | None
    connection_name: str | None
    provider: str | None
    http_status: int | None
    duration_ms: int | None
    correlation_id: str | None
    detail: str | None
    at: dt.datetime | None


def call_fields(info: ConnectionInfo, call: CallRecord) -> Fields:
    """The entry of one provider request of a connection (``schwab.accounts``, ...)."""
    return Fields(
        operation=f"{info.provider}.{call.operation.replace(' ', '_')}",
        outcome=call.outcome,
        provider=info.provider,
        connection_id=info.id,
        connection_name=info.name,
        http_status=call.http_status,
        duration_ms=call.duration_ms,
        correlation_id=call.correlation_id,
        detail=call.detail,
    )


def _row(fields: Fields) -> dict[str, Any]:
    """One audit row, redacted and stamped now (not when it reaches the disk)."""
    return {
        "id": str(uuid.uuid4()),
        "at": db.utcnow_text(fields.get("at")),
        "connection_id": fields.get("connection_id"),
        "connection_name": _clean(fields.get("connection_name")),
        "provider": _clean(fields.get("provider")),
        "operation": _clean(fields["operation"]),
        "outcome": _clean(fields["outcome"]),
        "http_status": fields.get("http_status"),
        "duration_ms": fields.get("duration_ms"),
        "correlation_id": _untrusted(fields.get("correlation_id")),
        "detail": _untrusted(fields.get("detail")),
    }


async def record(vault: Vault, **fields: Unpack[Fields]) -> str:
    """Append one entry to the audit log and return its id.

    Every text field passes through the secret registry first, so a token or
    client secret that slips into a detail string is stored as ``***``; the
    detail and the correlation id, which may carry a provider's text, are
    sanitized (one bounded line, no control characters, account identifiers
    masked too).
    Callers pass operation names and outcomes, never URLs with query strings
    or request bodies.
    """
    row = _row(fields)
    async with vault.writing() as conn:
        await conn.execute(schema.audit_log.insert(), [row])
    return str(row["id"])


class AuditWriter:
    """Audit entries written by a background task, many per transaction.

    A burst of API calls would otherwise queue one fsync'd write transaction
    per call in front of the responses that wait for them. ``add`` only
    stamps, redacts and queues the row; the writer takes everything queued
    so far in one write, then the next lot. Leaving the ``async with`` block
    writes whatever is left and raises the first write's error, if any. A
    process killed outright loses at most the rows not yet written, which
    are the last few milliseconds' worth.
    """

    def __init__(self, vault: Vault) -> None:
        """Write to ``vault``'s audit log."""
        self._vault = vault
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.written = 0

    async def __aenter__(self) -> Self:
        """Start accepting entries."""
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Write what is left, then raise the first write's error, if any."""
        await self.flush()

    def add(self, **fields: Unpack[Fields]) -> None:
        """Queue one entry (the keywords of :func:`record`); it is written shortly."""
        self._pending.append(_row(fields))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._pending and self._error is None:
            batch, self._pending = self._pending, []
            try:
                async with self._vault.writing() as conn:
                    await conn.execute(schema.audit_log.insert(), batch)
            except Exception as exc:  # noqa: BLE001 - kept and raised by flush()
                self._error = exc
                return
            self.written += len(batch)

    async def flush(self) -> None:
        """Wait until every queued entry is written; raise the first write's error, if any."""
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._drain()
        if self._error is not None:
            error, self._error = self._error, None
            self._pending.clear()
            raise error


async def _require_name(conn: AsyncConnection, name: str) -> None:
    """Raise ConnectionNotFound unless a connection, or an audit entry, has this name."""
    from dashtam_cli.core.connections import ConnectionNotFound

    connections, table = schema.connections, schema.audit_log
    known = await conn.scalar(select(connections.c.id).where(connections.c.name == name).limit(1))
    if known is None:
        known = await conn.scalar(
            select(table.c.id).where(table.c.connection_name == name).limit(1)
        )
    if known is None:
        raise ConnectionNotFound.named(name)


async def list_audit(
    vault: Vault,
    *,
    connection: str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Return audit entries, newest first, optionally for one connection name and after a time.

    A ``connection`` that neither exists nor ever had an entry is
    ``ConnectionNotFound``, as in every command; a removed connection's
    entries stay readable under its name.
    """
    table = schema.audit_log
    query = select(table).order_by(table.c.at.desc(), table.c.id)
    if connection is not None:
        query = query.where(table.c.connection_name == connection)
    if since is not None:
        query = query.where(table.c.at >= db.utcnow_text(since))
    if limit is not None:
        query = query.limit(limit)
    async with vault.reading() as conn:
        rows = (await conn.execute(query)).all()
        if connection is not None and not rows:
            await _require_name(conn, connection)
    return [
        AuditEntry(
            id=row.id,
            time=dt.datetime.fromisoformat(row.at),
            connection=row.connection_name,
            provider=row.provider,
            operation=row.operation,
            outcome=row.outcome,
            http_status=row.http_status,
            duration_ms=row.duration_ms,
            correlation_id=row.correlation_id,
            detail=row.detail,
        )
        for row in rows
    ]


async def audit_listing(
    settings: Settings,
    options: OpenOptions,
    *,
    connection: str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """`dashtam audit list`: open the vault and list its entries (see :func:`list_audit`).

    Without a vault there is no connection: a name given is ``ConnectionNotFound``,
    as in every command.
    """
    from dashtam_cli.core.connections import ConnectionNotFound
    from dashtam_cli.core.vault.vault import open_vault, vault_absent

    if connection is not None and await vault_absent(settings):
        raise ConnectionNotFound.named(connection)
    async with open_vault(settings, options) as vault:
        return await list_audit(vault, connection=connection, since=since, limit=limit)
