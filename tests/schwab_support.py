"""Helpers for the Schwab data tests: the reference fixtures, bodies shaped like them, connections."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from dashtam_cli.core.connections import save_login
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import respx

    from dashtam_cli.core.models import ConnectionInfo

# Copies of Schwab's reference fixtures and spec, kept in the repository (see its README).
REPO: Final = Path(__file__).resolve().parents[1]
REFERENCE: Final = REPO / "tests" / "reference" / "schwab"
FIXTURES: Final = REFERENCE / "fixtures"

BASE_URL: Final = "https://schwab.test"
API: Final = BASE_URL + "/trader/v1"
TOKEN_URL: Final = BASE_URL + "/v1/oauth/token"
CORRELATION: Final = "Schwab-Client-CorrelId"

# The number account.json carries, and the hashes account_numbers.json carries.
FIXTURE_NUMBER: Final = "11111111"
FIXTURE_HASHES: Final = tuple(
    item["hashValue"]
    for item in json.loads((FIXTURES / "account_numbers.json").read_text(encoding="utf-8"))
)
OPTION_SYMBOL: Final = "META  250131P00510000"
TRANSACTIONS_PATH: Final = re.compile(r"^/trader/v1/accounts/([^/]+)/transactions$")


@functools.cache
def fixture_text(name: str) -> str:
    """The exact text of one of the reference fixtures."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def hash_of(number: str) -> str:
    """A hashValue shaped like Schwab's: 64 upper-case hex digits."""
    return hashlib.sha256(number.encode()).hexdigest().upper()


def account_body(number: str = FIXTURE_NUMBER) -> str:
    """account.json, byte for byte, with its account number replaced by ``number``."""
    text = fixture_text("account.json")
    old = f'"accountNumber": "{FIXTURE_NUMBER}"'
    assert text.count(old) == 1
    return text.replace(old, f'"accountNumber": "{number}"')


# The balances of a cash account as the spec declares them (CashAccount:
# CashInitialBalance, then CashBalance for current and projected), none of
# them a buyingPower.
CASH_INITIAL: Final = {
    "accruedInterest": 0.0,
    "cashAvailableForTrading": 12040.55,
    "cashAvailableForWithdrawal": 11890.55,
    "cashBalance": 12040.55,
    "bondValue": 0.0,
    "cashReceipts": 0.0,
    "liquidationValue": 63475.41,
    "longOptionMarketValue": 0.0,
    "longStockValue": 51434.86,
    "moneyMarketFund": 0.0,
    "mutualFundValue": 0.0,
    "shortOptionMarketValue": 0.0,
    "shortStockValue": 0.0,
    "isInCall": False,
    "unsettledCash": 150.0,
    "cashDebitCallValue": 0.0,
    "pendingDeposits": 0.0,
    "accountValue": 63475.41,
}
CASH_CURRENT: Final = {
    "cashAvailableForTrading": 12190.55,
    "cashAvailableForWithdrawal": 12040.55,
    "cashCall": 0.0,
    "longNonMarginableMarketValue": 51434.86,
    "totalCash": 12190.55,
    "cashDebitCallValue": 0.0,
    "unsettledCash": 150.0,
}


def cash_account_body(number: str, *, current: dict[str, Any] | None = None) -> str:
    """account.json made a CASH account (an IRA), its balances shaped as the spec's CashAccount."""
    account = json.loads(account_body(number))
    sec = account["securitiesAccount"]
    sec["type"] = "CASH"
    sec["initialBalances"] = CASH_INITIAL
    sec["currentBalances"] = CASH_CURRENT if current is None else current
    sec["projectedBalances"] = {
        "cashAvailableForTrading": 12190.55,
        "cashAvailableForWithdrawal": 12040.55,
    }
    return json.dumps(account, indent=2)


def accounts_body(numbers: Sequence[str]) -> str:
    """The body of GET /accounts?fields=positions: a list of account.json objects."""
    return "[" + ",\n".join(account_body(n) for n in numbers) + "]"


def account_numbers_body(pairs: Sequence[tuple[str, str]]) -> str:
    """The body of GET /accounts/accountNumbers, shaped as account_numbers.json."""
    return json.dumps([{"accountNumber": n, "hashValue": h} for n, h in pairs], indent=2)


def transaction_text(activity_id: int, *, net_amount: str | None = None) -> str:
    """transaction_single.json, byte for byte, with another activityId (and netAmount)."""
    text = fixture_text("transaction_single.json")
    assert text.count('"activityId": 91176753938') == 1
    text = text.replace('"activityId": 91176753938', f'"activityId": {activity_id}')
    if net_amount is not None:
        assert text.count('"netAmount": -1215.95') == 1
        text = text.replace('"netAmount": -1215.95', f'"netAmount": {net_amount}')
    return text


def transactions_body(activity_ids: Sequence[int]) -> str:
    """A transactions answer of fixture-shaped items with these activityIds."""
    return "[" + ",\n".join(transaction_text(i) for i in activity_ids) + "]"


# The nicknames user_preferences.json gives its two accounts, handed out in turn.
FIXTURE_NICKNAMES: Final = ("Trading Brokerage", "Contributory")


def user_preference_body(nicknames: dict[str, str | None]) -> str:
    """GET /userPreference as user_preferences.json, its accounts these numbers and nicknames.

    Each account is the fixture's first, with ``accountNumber``,
    ``displayAcctId`` and ``nickName`` replaced (a None nickname leaves the key out).
    """
    body = json.loads(fixture_text("user_preferences.json"))
    template = body["accounts"][0]
    accounts = []
    for number, nickname in nicknames.items():
        account = {**template, "accountNumber": number, "displayAcctId": "..." + number[-3:]}
        if nickname is None:
            del account["nickName"]
        else:
            account["nickName"] = nickname
        accounts.append(account)
    body["accounts"] = accounts
    return json.dumps(body, indent=2)


def json_response(text: str, status: int = 200, correlation: str = "corr-0001") -> httpx.Response:
    """A Schwab-like answer: a JSON body sent as text, with a correlation id header."""
    return httpx.Response(
        status,
        content=text.encode(),
        headers={"Content-Type": "application/json", CORRELATION: correlation},
    )


def token_set(
    access: str,
    *,
    access_in: dt.timedelta = dt.timedelta(minutes=30),
    refresh_in: dt.timedelta = dt.timedelta(days=6),
) -> TokenSet:
    """Tokens that are valid now (or expired, with a negative ``access_in``)."""
    now = dt.datetime.now(dt.UTC)
    return TokenSet(
        access_token=access,
        refresh_token=f"refresh-for-{access}",
        token_type="Bearer",
        issued_at=now + access_in - dt.timedelta(minutes=30),
        access_expires_at=now + access_in,
        refresh_expires_at=now + refresh_in,
    )


def add_connection(
    name: str, access: str, *, access_in: dt.timedelta = dt.timedelta(minutes=30)
) -> ConnectionInfo:
    """Store a Schwab connection whose access token is ``access`` (creating the vault)."""

    async def save() -> ConnectionInfo:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await save_login(
                vault, provider="schwab", name=name, tokens=token_set(access, access_in=access_in)
            )

    return asyncio.run(save())


def mock_connection_api(  # noqa: PLR0913 - every body of a connection's answers can be given
    router: respx.Router,
    token: str,
    numbers: Sequence[str],
    *,
    transactions: str | Callable[[httpx.Request], Any] | None = None,
    accounts: str | None = None,
    nicknames: dict[str, str | None] | None = None,
) -> dict[str, str]:
    """Answer one connection's calls (matched by its bearer token) with fixture bodies.

    Returns the hashValue of each number. ``transactions`` is the body every
    transactions call gets (transactions.json by default), or a side effect
    that answers each call; ``accounts`` the body of the accounts call
    (account.json for each number by default); ``nicknames`` the accounts'
    nicknames in the user-preference answer (by default the fixture's, in turn).
    """
    hashes = {n: hash_of(n) for n in numbers}
    bearer = {"Authorization": f"Bearer {token}"}
    router.get(f"{API}/accounts/accountNumbers", headers=bearer).mock(
        return_value=json_response(account_numbers_body(list(hashes.items())))
    )
    router.get(f"{API}/accounts", params={"fields": "positions"}, headers=bearer).mock(
        return_value=json_response(accounts if accounts is not None else accounts_body(numbers))
    )
    if nicknames is None:
        nicknames = {
            n: FIXTURE_NICKNAMES[i % len(FIXTURE_NICKNAMES)] for i, n in enumerate(numbers)
        }
    router.get(f"{API}/userPreference", headers=bearer).mock(
        return_value=json_response(user_preference_body(nicknames))
    )
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern, headers=bearer)
    if callable(transactions):
        route.mock(side_effect=transactions)
    else:
        body = transactions if transactions is not None else fixture_text("transactions.json")
        route.mock(return_value=json_response(body))
    return hashes


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` that fall in any half-open interval ``window`` long."""
    ordered = sorted(times)
    return max(
        (sum(1 for t in ordered if start <= t < start + window) for start in ordered), default=0
    )
