"""Net worth now and over time, and cash flow: answers worked out from the vault alone.

Amounts in different currencies are never added together: every figure is
per currency (a custom currency, such as airline miles, is one of its own).
The same account reached through two connections (same provider, same
account) counts once, its newest copy; each command says so on stderr.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import InputError
from dashtam_cli.core.models import CashFlow, Kind, NetWorth, NetWorthPoint, Total

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from dashtam_cli.core.models import Account, Balance, Position, Transaction
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

__all__ = [
    "CASHFLOW_GROUPS",
    "INTERVALS",
    "NETWORTH_GROUPS",
    "Insight",
    "cashflow",
    "networth",
    "networth_history",
    "period_of",
    "totals",
]

NETWORTH_GROUPS: Final = ("connection", "institution", "account", "kind", "asset-type", "currency")
CASHFLOW_GROUPS: Final = ("kind", "account")
INTERVALS: Final = ("day", "week", "month")
TOTAL: Final = "total"
TRANSFERS: Final = "transfers between your accounts"
TRADES: Final = "trades"
# Two sides of a transfer between the user's own accounts post within this many days.
TRANSFER_DAYS: Final = 4
# Kinds a side of a transfer between two of the user's accounts can have.
_TRANSFER_KINDS: Final = frozenset(
    {Kind.TRANSFER, Kind.PAYMENT, Kind.DEPOSIT, Kind.WITHDRAWAL, Kind.OTHER}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Insight:
    """An answer, and the notes for stderr (accounts counted once, ...)."""

    rows: list[NetWorth] | list[NetWorthPoint] | list[CashFlow] | list[Total]
    notes: list[str]


def period_of(day: dt.date, interval: str) -> dt.date:
    """The first day of the interval holding ``day``: itself, its week's Monday, its month's 1st."""
    if interval == "day":
        return day
    if interval == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_period(start: dt.date, interval: str) -> dt.date:
    if interval == "day":
        return start + dt.timedelta(days=1)
    if interval == "week":
        return start + dt.timedelta(days=7)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _check(value: str | None, allowed: Sequence[str], option: str) -> None:
    if value is not None and value not in allowed:
        raise InputError(
            f"{option}: {value!r} is not one of {', '.join(allowed)}",
            hint=f"choose one of: {', '.join(allowed)}",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Vault:
    """What the insights read: accounts counted once, and why the others are not."""

    accounts: list[Account]
    institutions: Mapping[str, str]
    notes: list[str]
    dropped: frozenset[str]
    # The account ids each note is about.
    note_ids: list[frozenset[str]] = dataclasses.field(default_factory=list)
    # Each account id reached twice -> the id of the copy counted.
    same: Mapping[str, str] = dataclasses.field(default_factory=dict)
    currencies: Mapping[str, str] = dataclasses.field(default_factory=dict)


async def _accounts(settings: Settings, open_options: OpenOptions) -> _Vault:
    """Every stored account, each reached twice counted once (its newest copy)."""
    from dashtam_cli.core import store
    from dashtam_cli.core.providers import institution_of
    from dashtam_cli.core.queries import QueryOptions, query_accounts
    from dashtam_cli.core.vault.vault import open_vault

    accounts, _ = await query_accounts(settings, QueryOptions(offline=True), open_options)
    async with open_vault(settings, open_options) as vault:
        keys = await store.account_keys(vault)
    copies: dict[tuple[str, str], list[Account]] = collections.defaultdict(list)
    for account in accounts:
        key = keys.get(account.id)
        copies[key or ("", account.id)].append(account)
    notes: list[str] = []
    note_ids: list[frozenset[str]] = []
    same: dict[str, str] = {}
    dropped: set[str] = set()
    for found in copies.values():
        if len(found) > 1:
            found.sort(key=lambda a: a.fetched_at, reverse=True)
            kept, *others = found
            dropped.update(a.id for a in others)
            names = ", ".join(repr(a.connection) for a in found)
            notes.append(
                f"note: account {kept.number} is reached through {names}; counted once "
                f"(from {kept.connection!r}, synced last)"
            )
            note_ids.append(frozenset(a.id for a in found))
            same.update((a.id, kept.id) for a in found)

    kept_accounts = [a for a in accounts if a.id not in dropped]
    return _Vault(
        kept_accounts,
        {a.id: institution_of(a) for a in kept_accounts},
        notes,
        frozenset(dropped),
        note_ids,
        same,
        {a.id: a.currency for a in accounts},
    )


def _group_of(by: str | None, account: Account, institutions: Mapping[str, str]) -> str:
    if by is None:
        return TOTAL
    return {
        "connection": account.connection,
        "institution": institutions[account.id],
        "account": f"{account.name} {account.number}",
        "kind": account.type,
        "currency": account.currency,
    }[by]


def _worth(balance_total: Decimal | None, cash: Decimal | None) -> Decimal | None:
    return balance_total if balance_total is not None else cash


class _Sums:
    """Amounts per group and currency, the accounts counted, the newest balance."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], list[Decimal]] = collections.defaultdict(list)
        self.counted: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self.newest: dict[tuple[str, str], dt.datetime] = {}

    def add(
        self, group: str, currency: str, amount: Decimal, account_id: str, when: dt.datetime
    ) -> None:
        key = (group, currency)
        self.sums[key].append(amount)
        self.counted[key].add(account_id)
        self.newest[key] = max(self.newest.get(key, when), when)

    def rows(self) -> list[NetWorth]:
        return [
            NetWorth(
                group=group,
                currency=currency,
                total=sum(amounts, Decimal(0)),
                accounts=len(self.counted[(group, currency)]),
                as_of=self.newest.get((group, currency)),
            )
            for (group, currency), amounts in sorted(self.sums.items(), key=_currency_order)
        ]


async def _by_asset_type(
    settings: Settings, open_options: OpenOptions, data: _Vault, sums: _Sums
) -> None:
    """Positions by their asset type; what the account holds beside them as cash."""
    from dashtam_cli.core.queries import QueryOptions, query_positions

    positions, _ = await query_positions(settings, QueryOptions(offline=True), open_options)
    held: dict[str, list[Position]] = collections.defaultdict(list)
    for position in positions:
        held[position.account_id].append(position)
    for account in data.accounts:
        invested = Decimal(0)
        for position in held.get(account.id, ()):
            if position.market_value is not None:
                sums.add(
                    position.asset_type.lower(),
                    account.currency,
                    position.market_value,
                    account.id,
                    account.fetched_at,
                )
                invested += position.market_value
        value = _worth(account.total_value, account.cash)
        if value is not None:
            sums.add("cash", account.currency, value - invested, account.id, account.fetched_at)


async def networth(
    settings: Settings,
    open_options: OpenOptions,
    *,
    by: str | None = None,
    at: dt.datetime | None = None,
) -> Insight:
    """The total worth now (or at ``at``, from balance snapshots), grouped, per currency."""
    _check(by, NETWORTH_GROUPS, "--by")
    if by == "asset-type" and at is not None:
        raise InputError(
            "--by asset-type shows the current positions only",
            hint="drop --at, or group by another key",
        )
    data = await _accounts(settings, open_options)
    sums = _Sums()
    if at is not None:
        snapshots = await _snapshots(settings, open_options, data.accounts, until=at)
        by_id = {a.id: a for a in data.accounts}
        for account_id, snapshot in snapshots.items():
            value = _worth(snapshot.total_value, snapshot.cash)
            if value is not None:
                group = _group_of(by, by_id[account_id], data.institutions)
                sums.add(group, snapshot.currency, value, account_id, snapshot.at)
    elif by == "asset-type":
        await _by_asset_type(settings, open_options, data, sums)
    else:
        for account in data.accounts:
            value = _worth(account.total_value, account.cash)
            if value is not None:
                group = _group_of(by, account, data.institutions)
                sums.add(group, account.currency, value, account.id, account.fetched_at)
    return Insight(sums.rows(), data.notes)


def _currency_order(item: tuple[tuple[str, str], object]) -> tuple[bool, str, str]:
    """Real currencies first, custom ones (URLs) after; then by group."""
    (group, currency), _ = item
    return ("/" in currency, currency, group)


async def _snapshots(
    settings: Settings,
    open_options: OpenOptions,
    accounts: Sequence[Account],
    *,
    until: dt.datetime,
) -> dict[str, Balance]:
    """Each account's last balance snapshot at or before ``until``."""
    from dashtam_cli.core import store
    from dashtam_cli.core.vault.vault import open_vault

    async with open_vault(settings, open_options) as vault:
        found = await store.balance_snapshots(vault, [a.id for a in accounts], until=until)
    last: dict[str, Balance] = {}
    for snapshot in found:  # oldest first: the last one stands
        last[snapshot.account_id] = snapshot
    return last


async def networth_history(  # noqa: PLR0913 - the command's options, keyword-only
    settings: Settings,
    open_options: OpenOptions,
    *,
    since: dt.date | None = None,
    interval: str = "month",
    by: str | None = None,
    today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
) -> Insight:
    """The worth at the end of each interval: each account's last snapshot in it, summed.

    An interval in which no account of a group has a snapshot is a gap
    (``total`` None), never a zero; ``accounts`` says how many were summed.
    """
    from dashtam_cli.core import store
    from dashtam_cli.core.vault.vault import open_vault

    _check(interval, INTERVALS, "--interval")
    _check(by, tuple(g for g in NETWORTH_GROUPS if g != "asset-type"), "--by")
    data = await _accounts(settings, open_options)
    by_id = {a.id: a for a in data.accounts}
    async with open_vault(settings, open_options) as vault:
        snapshots = await store.balance_snapshots(vault, list(by_id))
    last: dict[tuple[dt.date, str], Balance] = {}
    for snapshot in snapshots:
        day = snapshot.at.astimezone(dt.UTC).date()
        if since is not None and day < since:
            continue
        last[(period_of(day, interval), snapshot.account_id)] = snapshot
    points: dict[tuple[dt.date, str, str], list[Decimal]] = collections.defaultdict(list)
    series: set[tuple[str, str]] = set()
    for (period, account_id), snapshot in last.items():
        value = _worth(snapshot.total_value, snapshot.cash)
        if value is None:
            continue
        group = _group_of(by, by_id[account_id], data.institutions)
        points[(period, group, snapshot.currency)].append(value)
        series.add((group, snapshot.currency))
    rows: list[NetWorthPoint] = []
    if points:
        first = min(p for p, _, _ in points) if since is None else period_of(since, interval)
        end = period_of(today(), interval)
        period = first
        while period <= end:
            for group, currency in sorted(series, key=lambda s: ("/" in s[1], s[1], s[0])):
                values = points.get((period, group, currency))
                rows.append(
                    NetWorthPoint(
                        period=period,
                        group=group,
                        currency=currency,
                        total=None if values is None else sum(values, Decimal(0)),
                        accounts=0 if values is None else len(values),
                    )
                )
            period = _next_period(period, interval)
    return Insight(rows, data.notes)


def _transfer_pairs(transactions: Sequence[Transaction], currency: Mapping[str, str]) -> set[str]:
    """The ids of transactions that are one side of a transfer between two of the user's accounts.

    Two transactions pair when they are in different accounts, in one
    currency, of opposite amounts, within :data:`TRANSFER_DAYS` of each other,
    and both of a kind a transfer can have (not a purchase, a trade, a dividend).
    """
    waiting: dict[tuple[str, Decimal], list[Transaction]] = collections.defaultdict(list)
    paired: set[str] = set()
    window = dt.timedelta(days=TRANSFER_DAYS)
    for txn in sorted(transactions, key=lambda t: (t.time, t.id)):
        if txn.kind not in _TRANSFER_KINDS or not txn.amount:
            continue
        unit = currency[txn.account_id]
        match_key = (unit, -txn.amount)
        candidates = waiting.get(match_key, [])
        found = next(
            (
                c
                for c in candidates
                if c.account_id != txn.account_id and txn.time - c.time <= window
            ),
            None,
        )
        if found is not None:
            candidates.remove(found)
            paired.update((found.id, txn.id))
            continue
        waiting[(unit, txn.amount)].append(txn)
    return paired


async def cashflow(
    settings: Settings,
    open_options: OpenOptions,
    *,
    since: dt.date | None = None,
    interval: str = "month",
    by: str | None = None,
) -> Insight:
    """Money in and out per interval from posted transactions, per currency.

    Transfers between two of the user's accounts (both sides found) and
    trades are not income or spending: each is a group of its own.
    """
    from dashtam_cli.core.queries import QueryOptions, query_transactions

    _check(interval, INTERVALS, "--interval")
    _check(by, CASHFLOW_GROUPS, "--by")
    data = await _accounts(settings, open_options)
    by_id = {a.id: a for a in data.accounts}
    found: list[Transaction] = []

    def keep(batch: Iterable[Transaction]) -> None:
        found.extend(t for t in batch if t.account_id in by_id and t.status != "PENDING")

    start = dt.datetime.combine(since, dt.time(), dt.UTC) if since else None
    await query_transactions(settings, QueryOptions(offline=True, since=start), open_options, keep)
    currency = {a.id: a.currency for a in data.accounts}
    transfers = _transfer_pairs(found, currency)
    flows: dict[tuple[dt.date, str, str], list[Decimal]] = collections.defaultdict(list)
    for txn in found:
        if txn.id in transfers:
            group = TRANSFERS
        elif txn.kind is Kind.TRADE:
            group = TRADES
        elif by == "kind":
            group = txn.kind.value
        elif by == "account":
            account = by_id[txn.account_id]
            group = f"{account.name} {account.number}"
        else:
            group = TOTAL
        period = period_of(txn.time.astimezone(dt.UTC).date(), interval)
        flows[(period, group, currency[txn.account_id])].append(txn.amount)
    rows = []
    for (period, group, unit), amounts in sorted(
        flows.items(), key=lambda i: (i[0][0], "/" in i[0][2], i[0][2], i[0][1])
    ):
        inflow = sum((a for a in amounts if a > 0), Decimal(0))
        outflow = sum((a for a in amounts if a < 0), Decimal(0))
        rows.append(
            CashFlow(
                period=period,
                group=group,
                currency=unit,
                inflow=inflow,
                outflow=outflow,
                net=inflow + outflow,
                transactions=len(amounts),
            )
        )
    return Insight(rows, data.notes)


def _add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if b is None:
        return a
    return b if a is None else a + b


async def totals(
    settings: Settings,
    open_options: OpenOptions,
    *,
    accounts: Sequence[Account] = (),
    positions: Sequence[Position] = (),
) -> Insight:
    """Per currency, the sum of the accounts listed (or of the positions listed), each account once.

    An account listed twice (reached through two connections) is summed from
    its newest copy only, and a note says so; so are its positions.
    """
    data = await _accounts(settings, open_options)
    per: dict[str, list[Decimal | None]] = {}
    rows: dict[str, int] = collections.defaultdict(int)
    counted: set[str] = set()
    for account in accounts:
        one = data.same.get(account.id, account.id)
        if one in counted:
            continue  # listed twice: through two connections
        counted.add(one)
        sums = per.setdefault(account.currency, [None, None, None, None])
        sums[0] = _add(sums[0], account.cash)
        sums[1] = _add(sums[1], account.market_value)
        sums[2] = _add(sums[2], account.total_value)
        rows[account.currency] += 1
    holders: dict[str, str] = {}  # the account each position's holdings are counted from
    for position in positions:
        one = data.same.get(position.account_id, position.account_id)
        if holders.setdefault(one, position.account_id) != position.account_id:
            continue  # the same holdings listed through another connection
        unit = data.currencies.get(position.account_id, "USD")
        sums = per.setdefault(unit, [None, None, None, None])
        sums[1] = _add(sums[1], position.market_value)
        sums[3] = _add(sums[3], position.day_profit_loss)
        rows[unit] += 1
    result = [
        Total(
            label="total",
            currency=unit,
            cash=cash,
            market_value=market,
            total_value=total,
            day_profit_loss=day,
            rows=rows[unit],
        )
        for unit, (cash, market, total, day) in sorted(
            per.items(), key=lambda i: ("/" in i[0], i[0])
        )
    ]
    listed = {a.id for a in accounts} | {p.account_id for p in positions}
    notes = [n for n, ids in zip(data.notes, data.note_ids, strict=True) if len(ids & listed) > 1]
    return Insight(result, notes)
