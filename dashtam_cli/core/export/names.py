"""Account names in the books: the default from institution and account, overrides, counters.

A book account name is colon-separated components, each starting with a
capital letter or a digit and holding only letters, digits and dashes: the
rule beancount enforces, and one that ledger and hledger read as is.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.models import Kind

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dashtam_cli.core.models import Account

__all__ = [
    "DEFAULT_COUNTERS",
    "LIABILITY_TYPES",
    "BookNames",
    "book_names",
    "component",
    "valid_name",
]

# Account types that are debts: their accounts go under Liabilities.
LIABILITY_TYPES: Final = frozenset({"CREDIT_CARD", "LOAN", "MORTGAGE", "LINE_OF_CREDIT"})
ROOTS: Final = ("Assets", "Liabilities", "Equity", "Income", "Expenses")
# Where the other side of a transaction goes, by kind; then by sign.
DEFAULT_COUNTERS: Final[dict[str, str]] = {
    Kind.TRADE.value: "Assets:Investments:Trades",
    Kind.TRANSFER.value: "Assets:Transfers",
    Kind.DIVIDEND.value: "Income:Dividends",
    Kind.INTEREST.value: "Income:Interest",
    Kind.FEE.value: "Expenses:Fees",
    Kind.TAX.value: "Expenses:Taxes",
    "income": "Income:Uncategorized",
    "expenses": "Expenses:Uncategorized",
    "opening": "Equity:Opening-Balances",
}
_NAME: Final = re.compile(
    r"^(?:Assets|Liabilities|Equity|Income|Expenses)(?::[A-Z0-9][A-Za-z0-9-]*)+$"
)


def valid_name(name: str) -> bool:
    """Whether ``name`` is a book account name every format reads (``Assets:Bank:Checking``)."""
    return bool(_NAME.match(name))


def component(text: str, *, fallback: str = "Account") -> str:
    """A name component from free text: ``Roth IRA`` -> ``RothIRA``, ``a.com`` -> ``ACom``."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    joined = "".join(w[:1].upper() + w[1:] for w in words)
    if not joined:
        return fallback
    return joined[:48]


@dataclasses.dataclass(frozen=True, slots=True)
class BookNames:
    """Each account's name in the books (by dashtam account id), and the counter accounts."""

    accounts: Mapping[str, str]
    counters: Mapping[str, str]
    overridden: frozenset[str]

    def counter(self, kind: str, amount_positive: bool) -> str:  # noqa: FBT001 - a fact, not a flag
        """The account on the other side of a transaction of ``kind``."""
        found = self.counters.get(kind)
        if found is not None:
            return found
        return self.counters["income" if amount_positive else "expenses"]


def _default(account: Account, institution: str) -> str:
    root = "Liabilities" if account.type.upper() in LIABILITY_TYPES else "Assets"
    digits = account.number.lstrip("*")[-4:]
    tail = f"-{component(digits, fallback='')}" if digits else ""
    return f"{root}:{component(institution, fallback='Bank')}:{component(account.name)}{tail}"


def book_names(
    accounts: Sequence[Account],
    config: Mapping[str, object],
    *,
    where: str,
    institutions: Mapping[str, str],
) -> BookNames:
    """Each account's book name: an ``[export.accounts]`` override (id or number), else a default.

    ``institutions`` names the institution of each account id (the account's
    own, else its provider's). Two accounts given one name are told apart
    by a counter, and an override that is not a valid name is a ConfigError
    naming ``where``.
    """
    overrides = _table(config, "accounts", where)
    counters = dict(DEFAULT_COUNTERS)
    for key, value in _table(config, "counter", where).items():
        if key not in counters and key not in {k.value for k in Kind}:
            raise ConfigError(
                f"unknown key {key!r} in [export.counter] of {where}",
                hint="the keys are the kinds (trade, transfer, dividend, ...), income, expenses "
                "and opening; see docs/export.md",
            )
        counters[key] = _checked(value, f"[export.counter] {key}", where)
    names: dict[str, str] = {}
    overridden: set[str] = set()
    taken: dict[str, int] = {}
    for account in accounts:
        given = overrides.get(account.id, overrides.get(account.number))
        if given is not None:
            name = _checked(given, f"[export.accounts] {account.id}", where)
            overridden.add(account.id)
        else:
            name = _default(account, institutions.get(account.id, account.provider))
            count = taken.get(name, 0)
            taken[name] = count + 1
            if count:
                name = f"{name}-{count + 1}"
        names[account.id] = name
    return BookNames(names, counters, frozenset(overridden))


def _table(config: Mapping[str, object], key: str, where: str) -> dict[str, object]:
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"invalid value for [export.{key}] in {where}: a table expected",
            hint="see docs/export.md",
        )
    return {str(k): v for k, v in value.items()}


def _checked(value: object, what: str, where: str) -> str:
    if not isinstance(value, str) or not valid_name(value):
        raise ConfigError(
            f"invalid account name for {what} in {where}: "
            "Root:Part:Part expected, the root one of " + ", ".join(ROOTS) + ", each part "
            "starting with a capital letter or digit and holding letters, digits and dashes",
            hint='e.g. "Assets:MyBank:Checking"; see docs/export.md',
        )
    return value
