"""Helpers for the sync and query tests: run a sync or a query with HTTP going to a respx router."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from dashtam_cli.core.queries import (
    QueryOptions,
    QueryResult,
    query_accounts,
    query_positions,
    query_transactions,
)
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.sync import SyncOptions, SyncResult, sync
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable

    import respx
    from sqlalchemy import Table

    from dashtam_cli.core.models import Account, Position, Transaction


def transport(router: respx.MockRouter | None) -> httpx.AsyncBaseTransport | None:
    """A transport that sends every request to ``router`` (None: no network at all)."""
    return None if router is None else httpx.MockTransport(router.async_handler)


def run_sync(router: respx.MockRouter, **options: Any) -> SyncResult:
    """Run `dashtam sync` with its HTTP going to ``router``."""
    opts = SyncOptions(transport=transport(router), **options)
    return asyncio.run(sync(load_settings(), opts, OpenOptions()))


def _query_options(router: respx.MockRouter | None, options: dict[str, Any]) -> QueryOptions:
    if router is None:
        options.setdefault("offline", True)
    return QueryOptions(transport=transport(router), **options)


def accounts(
    router: respx.MockRouter | None = None, **options: Any
) -> tuple[list[Account], QueryResult]:
    """`accounts list` from the vault (offline unless a router is given)."""
    opts = _query_options(router, options)
    return asyncio.run(query_accounts(load_settings(), opts, OpenOptions()))


def positions(
    router: respx.MockRouter | None = None, **options: Any
) -> tuple[list[Position], QueryResult]:
    """`positions list` from the vault (offline unless a router is given)."""
    opts = _query_options(router, options)
    return asyncio.run(query_positions(load_settings(), opts, OpenOptions()))


def transactions(
    router: respx.MockRouter | None = None, **options: Any
) -> tuple[list[Transaction], QueryResult]:
    """`transactions list` from the vault (offline unless a router is given), every batch joined."""
    found: list[Transaction] = []
    opts = _query_options(router, options)
    result = asyncio.run(query_transactions(load_settings(), opts, OpenOptions(), found.extend))
    return found, result


def rows_in(table: Table) -> int:
    """How many rows a vault table holds."""

    async def count() -> int:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)) or 0)

    return asyncio.run(count())


def utc(year: int, month: int, day: int) -> dt.datetime:
    """Midnight UTC of a date."""
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


# The moment the tests' syncs happen: after every fixture transaction (January 2025).
NOW = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)


def at(moment: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that always says ``moment``."""
    return lambda: moment
