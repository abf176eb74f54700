"""The audit log: one function appends every provider operation, one lists them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from dashtam_cli.core.models import AuditEntry
from dashtam_cli.core.redact import redact
from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from dashtam_cli.core.vault.vault import Vault

__all__ = ["list_audit", "record"]

_MAX_DETAIL = 500


async def record(  # noqa: PLR0913 - one keyword per audit column
    vault: Vault,
    *,
    operation: str,
    outcome: str,
    connection_id: str | None = None,
    connection_name: str | None = None,
    provider: str | None = None,
    http_status: int | None = None,
    duration_ms: int | None = None,
    correlation_id: str | None = None,
    detail: str | None = None,
    at: dt.datetime | None = None,
) -> str:
    """Append one entry to the audit log and return its id.

    Every text field passes through the secret registry first, so a token or
    client secret that slips into a detail string is stored as ``***``.
    Callers pass operation names and outcomes, never URLs with query strings
    or request bodies.
    """
    entry_id = str(uuid.uuid4())

    def clean(value: str | None) -> str | None:
        return None if value is None else redact(value)[:_MAX_DETAIL]

    async with vault.writing() as conn:
        await conn.execute(
            schema.audit_log.insert().values(
                id=entry_id,
                at=db.utcnow_text(at),
                connection_id=connection_id,
                connection_name=clean(connection_name),
                provider=clean(provider),
                operation=clean(operation),
                outcome=clean(outcome),
                http_status=http_status,
                duration_ms=duration_ms,
                correlation_id=clean(correlation_id),
                detail=clean(detail),
            )
        )
    return entry_id


async def list_audit(
    vault: Vault,
    *,
    connection: str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Return audit entries, newest first, optionally for one connection name and after a time."""
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
