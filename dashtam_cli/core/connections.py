"""Connections (one login to one provider) and their sealed tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.models import ConnectionInfo, ConnectionState
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.vault import db, schema
from dashtam_cli.core.vault.errors import RecordDamaged
from dashtam_cli.core.vault.vault import open_vault, vault_absent

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from sqlalchemy import Select
    from sqlalchemy.engine import Row
    from sqlalchemy.ext.asyncio import AsyncConnection

    from dashtam_cli.core.oauth.tokens import TokenSet
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "ConnectionNotFound",
    "connection_exists",
    "disconnect",
    "list_connections",
    "listing",
    "load_tokens",
    "remove_connection",
    "save_login",
    "save_secret_login",
    "set_status",
    "store_tokens",
]


class ConnectionNotFound(DashtamError):
    """No connection has that name: exit 1 in every command, with the command that lists them."""

    @classmethod
    def named(cls, name: str) -> ConnectionNotFound:
        """The one message for a name no connection has, whichever command was given it."""
        return cls(f"no connection named {name!r}", hint="see: dashtam connections list")


def _stored_time(
    table: str, row_id: str | None, field: str, value: object, *, hint: str
) -> dt.datetime | None:
    """A time column as written by ``db.utcnow_text``; damage is a RecordDamaged naming the row."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    raise RecordDamaged(table, str(row_id), field, hint=hint)


def _relogin_hint(provider: str, name: str) -> str:
    from dashtam_cli.core.providers import relogin_command

    return (
        f"log in again to replace its tokens: {relogin_command(provider, name)} "
        f"(or remove the connection: dashtam disconnect {name})"
    )


def _info(row: Row[tuple[object, ...]], *, strict: bool = True) -> ConnectionInfo:
    """A connection's row and its token lifetimes; ``strict=False`` reads damaged times as None."""
    m = row._mapping  # noqa: SLF001 - SQLAlchemy's public row API

    def when(table: str, row_id: str | None, field: str) -> dt.datetime | None:
        try:
            return _stored_time(table, row_id, field, m[field], hint="")
        except RecordDamaged:
            if strict:
                # The hint names the provider's login: made (and its package loaded) only here.
                hint = _relogin_hint(str(m["provider"]), str(m["name"]))
                raise RecordDamaged(table, str(row_id), field, hint=hint) from None
            return None

    c, t = schema.connections.name, schema.tokens.name
    created = when(c, m["id"], "created_at")
    updated = when(c, m["id"], "updated_at")
    epoch = dt.datetime.fromtimestamp(0, dt.UTC)
    return ConnectionInfo(
        id=m["id"],
        name=m["name"],
        provider=m["provider"],
        status=m["status"],
        created_at=created or epoch,
        updated_at=updated or epoch,
        access_expires_at=when(t, m["token_row_id"], "access_expires_at"),
        refresh_expires_at=when(t, m["token_row_id"], "refresh_expires_at"),
    )


def _query() -> Select[Any]:
    c, t = schema.connections, schema.tokens
    return (
        select(
            c.c.id,
            c.c.name,
            c.c.provider,
            c.c.status,
            c.c.created_at,
            c.c.updated_at,
            t.c.id.label("token_row_id"),
            t.c.access_expires_at,
            t.c.refresh_expires_at,
        )
        .select_from(c.outerjoin(t, t.c.connection_id == c.c.id))
        .order_by(c.c.name)
    )


async def list_connections(vault: Vault, *, name: str | None = None) -> list[ConnectionInfo]:
    """Every connection (or the one named), with its token lifetimes.

    A name no connection has is :class:`ConnectionNotFound`, raised here for
    every command that takes one.
    """
    query = _query()
    if name is not None:
        query = query.where(schema.connections.c.name == name)
    async with vault.reading() as conn:
        rows = (await conn.execute(query)).all()
    if name is not None and not rows:
        raise ConnectionNotFound.named(name)
    return [_info(row) for row in rows]


async def connection_exists(vault: Vault, name: str) -> bool:
    """Whether a connection has this name."""
    async with vault.reading() as conn:
        found = await conn.scalar(
            select(schema.connections.c.id).where(schema.connections.c.name == name)
        )
    return found is not None


async def _write_tokens(
    vault: Vault, conn: AsyncConnection, connection_id: str, tokens: TokenSet
) -> None:

    table = schema.tokens
    existing = await conn.scalar(select(table.c.id).where(table.c.connection_id == connection_id))
    row_id = existing or str(uuid.uuid4())
    values = {
        "access_token": vault.seal(
            table.name, row_id, "access_token", tokens.access_token, owner=connection_id
        ),
        "refresh_token": (
            None
            if tokens.refresh_token is None
            else vault.seal(
                table.name, row_id, "refresh_token", tokens.refresh_token, owner=connection_id
            )
        ),
        "token_type": tokens.token_type,
        "issued_at": db.utcnow_text(tokens.issued_at),
        "access_expires_at": db.utcnow_text(tokens.access_expires_at),
        "refresh_expires_at": (
            None if tokens.refresh_expires_at is None else db.utcnow_text(tokens.refresh_expires_at)
        ),
        "updated_at": db.utcnow_text(),
    }
    stmt = db.insert(conn, table).values(id=row_id, connection_id=connection_id, **values)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


async def _upsert_connection(conn: AsyncConnection, *, provider: str, name: str) -> str:
    """The id of the connection ``name`` of ``provider``, created or marked active.

    A name that belongs to another provider is refused: a login never takes
    over another provider's connection.
    """
    c = schema.connections
    now = db.utcnow_text()
    row = (await conn.execute(select(c.c.id, c.c.provider).where(c.c.name == name))).one_or_none()
    if row is None:
        connection_id = str(uuid.uuid4())
        await conn.execute(
            c.insert().values(
                id=connection_id,
                provider=provider,
                name=name,
                status=ConnectionState.ACTIVE,
                created_at=now,
                updated_at=now,
            )
        )
        return connection_id
    if row.provider != provider:
        raise DashtamError(
            f"the connection {name!r} belongs to {row.provider}, not {provider}",
            hint="choose another name with --name",
        )
    await conn.execute(
        c.update().where(c.c.id == row.id).values(status=ConnectionState.ACTIVE, updated_at=now)
    )
    return str(row.id)


async def save_login(vault: Vault, *, provider: str, name: str, tokens: TokenSet) -> ConnectionInfo:
    """Create the connection, or replace an existing one's tokens, in one transaction.

    The old tokens stay until this commit, so a failed or abandoned re-login
    leaves the existing connection working.
    """
    async with vault.writing() as conn:
        connection_id = await _upsert_connection(conn, provider=provider, name=name)
        await _write_tokens(vault, conn, connection_id, tokens)
    (info,) = await list_connections(vault, name=name)
    return info


async def save_secret_login(
    vault: Vault, *, provider: str, name: str, secret: str
) -> ConnectionInfo:
    """Create the connection with its credential record, or replace an existing one's, at once.

    For providers whose login yields an opaque record that does not expire
    (a pasted token's claim). The record is sealed in ``connections.secret``
    (bound to the connection's id); the old record stays until this commit,
    so a failed re-login leaves the connection working.
    """
    c = schema.connections
    async with vault.writing() as conn:
        connection_id = await _upsert_connection(conn, provider=provider, name=name)
        sealed = vault.seal(c.name, connection_id, "secret", secret, owner=connection_id)
        await conn.execute(c.update().where(c.c.id == connection_id).values(secret=sealed))
    (info,) = await list_connections(vault, name=name)
    return info


async def store_tokens(vault: Vault, connection_id: str, tokens: TokenSet) -> None:
    """Replace a connection's tokens (after a refresh) and mark it active, in one transaction."""
    c = schema.connections
    async with vault.writing() as conn:
        await _write_tokens(vault, conn, connection_id, tokens)
        await conn.execute(
            c.update()
            .where(c.c.id == connection_id)
            .values(status=ConnectionState.ACTIVE, updated_at=db.utcnow_text())
        )


async def set_status(vault: Vault, connection_id: str, status: ConnectionState) -> None:
    """Record a connection's status."""
    c = schema.connections
    async with vault.writing() as conn:
        await conn.execute(
            c.update()
            .where(c.c.id == connection_id)
            .values(status=status, updated_at=db.utcnow_text())
        )


async def load_tokens(vault: Vault, name: str) -> tuple[ConnectionInfo, TokenSet]:
    """A connection and its tokens, opened."""
    # Imported here: it brings httpx, which a query of the vault never needs.
    from dashtam_cli.core.oauth.tokens import TokenSet
    from dashtam_cli.core.providers import relogin_command

    t = schema.tokens
    info = (await list_connections(vault, name=name))[0]
    async with vault.reading() as conn:
        row = (await conn.execute(select(t).where(t.c.connection_id == info.id))).one_or_none()
    if row is None:
        raise ConnectionNotFound(
            f"the connection {name!r} has no tokens",
            hint=f"log in again: {relogin_command(info.provider, name)}",
        )
    owner = row.connection_id
    access = vault.unseal_text(t.name, row.id, "access_token", row.access_token, owner=owner)
    refresh = (
        None
        if row.refresh_token is None
        else vault.unseal_text(t.name, row.id, "refresh_token", row.refresh_token, owner=owner)
    )
    register_secret(access)
    register_secret(refresh)
    hint = _relogin_hint(info.provider, info.name)
    issued = _stored_time(t.name, row.id, "issued_at", row.issued_at, hint=hint)
    access_expires = _stored_time(
        t.name, row.id, "access_expires_at", row.access_expires_at, hint=hint
    )
    if issued is None or access_expires is None:  # NOT NULL columns: only damage gets here
        raise RecordDamaged(t.name, row.id, "issued_at", hint=hint)
    tokens = TokenSet(
        access_token=access,
        refresh_token=refresh,
        token_type=row.token_type if isinstance(row.token_type, str) else "Bearer",
        issued_at=issued,
        access_expires_at=access_expires,
        refresh_expires_at=_stored_time(
            t.name, row.id, "refresh_expires_at", row.refresh_expires_at, hint=hint
        ),
    )
    return info, tokens


async def _find(vault: Vault, name: str) -> ConnectionInfo:
    """The connection ``name``, its damaged times read as None (removing it is a way out)."""
    async with vault.reading() as conn:
        rows = (await conn.execute(_query().where(schema.connections.c.name == name))).all()
    infos = [_info(row, strict=False) for row in rows]
    if not infos:
        raise ConnectionNotFound.named(name)
    return infos[0]


async def remove_connection(vault: Vault, name: str) -> ConnectionInfo:
    """Delete a connection, its tokens and its cached data (foreign keys cascade).

    Damaged times in its rows do not stand in the way: removing it is a way out.
    """
    info = await _find(vault, name)
    async with vault.writing() as conn:
        await conn.execute(delete(schema.connections).where(schema.connections.c.id == info.id))
    return info


async def listing(settings: Settings, options: OpenOptions) -> list[ConnectionInfo]:
    """Every connection; none when there is no vault yet."""
    if await vault_absent(settings):
        return []
    async with open_vault(settings, options) as vault:
        return await list_connections(vault)


def _ignore(_message: str) -> None:
    return None


async def disconnect(
    settings: Settings,
    name: str,
    options: OpenOptions,
    *,
    notify: Callable[[str], None] = _ignore,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ConnectionInfo:
    """Remove a connection with its tokens and cached data, and audit it.

    The provider is first asked to forget the login when it has a way to
    (:meth:`ProviderSession.revoke`); a failure of that is audited and
    passed to ``notify``, and the connection is removed all the same.
    """
    from dashtam_cli.core import audit

    if await vault_absent(settings):
        raise ConnectionNotFound.named(name)  # no vault, no connection of any name
    async with open_vault(settings, options) as vault:
        await _revoke(settings, vault, await _find(vault, name), notify, transport)
        info = await remove_connection(vault, name)
        await audit.record(
            vault,
            operation="connection.remove",
            outcome="ok",
            provider=info.provider,
            connection_id=info.id,
            connection_name=info.name,
        )
        return info


async def _revoke(
    settings: Settings,
    vault: Vault,
    info: ConnectionInfo,
    notify: Callable[[str], None],
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """Ask the connection's provider to forget the login; report, never raise, a failure."""
    from dashtam_cli.core import audit
    from dashtam_cli.core.errors import InputError
    from dashtam_cli.core.http import make_client
    from dashtam_cli.core.providers import provider
    from dashtam_cli.core.providers.base import CallRecord
    from dashtam_cli.core.sync import session_context
    from dashtam_cli.core.tokens import TokenManager

    try:
        instance = provider(info.provider)
    except InputError:  # a provider not installed here: nothing to ask
        return

    async def record(call: CallRecord) -> None:
        await audit.record(vault, **audit.call_fields(info, call))

    try:
        async with make_client(settings, transport=transport) as client:
            manager = TokenManager(vault, client=client, lock_dir=settings.paths.data_dir / "locks")
            context = session_context(manager, info, record=record)
            revoked = await instance.session(context).revoke()
    except DashtamError as exc:  # the HTTP client's settings, the provider, the network
        await record(CallRecord("revoke", "failed", None, 0, None, exc.message))
        notify(
            f"warning: {instance.display_name} was not told to forget the login of "
            f"{info.name!r} ({exc.message}); it is removed here all the same"
        )
        return
    if revoked:
        notify(f"{instance.display_name} forgot the login of {info.name!r}")
    elif instance.unrevoked_advice:
        notify(instance.unrevoked_advice)
