"""What the dashboard shows, asked of the same core functions the CLI commands call."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from dashtam_cli.core.models import (
        Account,
        CashFlow,
        NetWorth,
        NetWorthPoint,
        Position,
        Transaction,
    )
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

__all__ = ["PAGE_SIZE", "Overview", "TransactionsPage", "overview", "transactions_page"]

# Transactions on one page of /transactions.
PAGE_SIZE: Final = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Overview:
    """The front page: `networth` (total and by institution), its monthly history, cash flow."""

    networth: list[NetWorth]
    by_institution: list[NetWorth]
    # `dashtam networth --by asset-type`: the positions by asset type, the rest as cash.
    allocation: list[NetWorth]
    history: list[NetWorthPoint]
    cashflow: list[CashFlow]
    accounts: list[Account]
    positions: list[Position]
    notes: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionsPage:
    """One page of transactions matching a search, newest first."""

    rows: list[Transaction]
    page: int
    pages: int
    matched: int
    query: str
    kind: str = ""
    account: str = ""


async def overview(settings: Settings, open_options: OpenOptions) -> Overview:
    """Every figure of the front page, from the vault alone (never a sync)."""
    from dashtam_cli.core.insights import cashflow, networth, networth_history
    from dashtam_cli.core.models import CashFlow, NetWorth, NetWorthPoint
    from dashtam_cli.core.queries import QueryOptions, query_accounts, query_positions

    total = await networth(settings, open_options)
    by_institution = await networth(settings, open_options, by="institution")
    allocation = await networth(settings, open_options, by="asset-type")
    history = await networth_history(settings, open_options, interval="month")
    flows = await cashflow(settings, open_options, interval="month")
    offline = QueryOptions(offline=True)
    accounts, _ = await query_accounts(settings, offline, open_options)
    positions, _ = await query_positions(settings, offline, open_options)
    return Overview(
        networth=[r for r in total.rows if isinstance(r, NetWorth)],
        by_institution=[r for r in by_institution.rows if isinstance(r, NetWorth)],
        allocation=[r for r in allocation.rows if isinstance(r, NetWorth)],
        history=[r for r in history.rows if isinstance(r, NetWorthPoint)],
        cashflow=[r for r in flows.rows if isinstance(r, CashFlow)],
        accounts=accounts,
        positions=positions,
        notes=list(dict.fromkeys(total.notes)),
    )


def _matches(txn: Transaction, needle: str) -> bool:
    fields = (txn.description, txn.account, txn.type, txn.kind.value, txn.symbol)
    return any(needle in field.casefold() for field in fields if field)


async def transactions_page(  # noqa: PLR0913 - the page's filters, keyword-only
    settings: Settings,
    open_options: OpenOptions,
    *,
    page: int = 1,
    query: str = "",
    kind: str = "",
    account: str = "",
    page_size: int | None = PAGE_SIZE,
) -> TransactionsPage:
    """Page ``page`` (from 1) of the transactions whose text holds ``query`` (any case).

    ``kind`` (a kind or a provider's type) and ``account`` (an id or the last
    digits of a number) filter as `transactions list --type` and `--account` do.

    The transactions stream through in batches: only the page asked for is
    kept. ``page_size`` None: one page of them all (for an export).
    """
    from dashtam_cli.core.queries import QueryOptions, query_transactions

    needle = query.strip().casefold()
    size = page_size or 0
    first = (max(page, 1) - 1) * size
    kept: list[Transaction] = []
    matched = 0

    def take(batch: list[Transaction]) -> None:
        nonlocal matched
        for txn in batch:
            if needle and not _matches(txn, needle):
                continue
            if page_size is None or first <= matched < first + size:
                kept.append(txn)
            matched += 1

    options = QueryOptions(
        offline=True,
        types=(kind.strip(),) if kind.strip() else (),
        account=account.strip() or None,
    )
    await query_transactions(settings, options, open_options, take)
    pages = 1 if page_size is None else max(1, -(-matched // page_size))
    return TransactionsPage(
        kept, max(page, 1), pages, matched, query.strip(), kind.strip(), account.strip()
    )
