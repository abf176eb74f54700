"""Account, position and transaction JSON with wrong types or bad times: one clear error, nothing stored."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import respx
from schwab_support import (
    API,
    BASE_URL,
    TRANSACTIONS_PATH,
    account_body,
    account_numbers_body,
    add_connection,
    fixture_text,
    hash_of,
    json_response,
    user_preference_body,
)
from sqlalchemy import func, select

from dashtam_cli.core.errors import ExitCode
from dashtam_cli.core.portfolio import (
    FetchOptions,
    FetchResult,
    fetch_accounts,
    fetch_positions,
    fetch_transactions,
)
from dashtam_cli.core.providers.schwab_api import ApiError
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from conftest import CliCall
    from sqlalchemy import Table

FIRST, SECOND = "11111111", "22222222"
TOKEN: Final = "token-b"
SINCE: Final = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
UNTIL: Final = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def mutated_accounts(mutate: Mutation) -> str:
    """GET /accounts of two fixture accounts, the first changed by ``mutate``."""
    first = json.loads(account_body(FIRST))
    mutate(first)
    return json.dumps([first, json.loads(account_body(SECOND))])


def mutated_transactions(mutate: Mutation) -> str:
    """A transactions answer of two fixture-shaped items, the second changed by ``mutate``."""
    items = [json.loads(fixture_text("transaction_single.json")) for _ in range(2)]
    items[1]["activityId"] = 91176753939
    mutate(items[1])
    return json.dumps(items)


def mock_api(router: respx.MockRouter, *, accounts: str, transactions: str | None = None) -> None:
    """One connection's answers: the account numbers, these accounts and these transactions."""
    pairs = [(FIRST, hash_of(FIRST)), (SECOND, hash_of(SECOND))]
    router.get(f"{API}/accounts/accountNumbers").mock(
        return_value=json_response(account_numbers_body(pairs))
    )
    router.get(f"{API}/accounts", params={"fields": "positions"}).mock(
        return_value=json_response(accounts)
    )
    router.get(f"{API}/userPreference").mock(
        return_value=json_response(user_preference_body({FIRST: "Roth IRA", SECOND: None}))
    )
    router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern).mock(
        return_value=json_response(transactions or "[]")
    )


def fetch(job: Callable[..., Any], router: respx.MockRouter, **options: Any) -> FetchResult[Any]:
    """Run one of the fetch functions with its HTTP going to ``router``."""
    opts = FetchOptions(transport=httpx.MockTransport(router.async_handler), **options)
    result: FetchResult[Any] = asyncio.run(job(load_settings(), opts, OpenOptions()))
    return result


def rows_in(table: Table) -> int:
    """How many rows a cache table holds."""

    async def count() -> int:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)) or 0)

    return asyncio.run(count())


def only_error(result: FetchResult[Any]) -> ApiError:
    """The one connection's failure, which must be an ApiError (exit 1)."""
    assert result.items == []
    (failure,) = result.failures
    assert isinstance(failure.error, ApiError)
    assert failure.error.exit_code == ExitCode.ERROR
    assert "\n" not in failure.error.message
    return failure.error


def first_account_error(result: FetchResult[Any]) -> ApiError:
    """The first account's failure (exit 1), alone: the second account is still there."""
    (failure,) = result.failures
    assert failure.account == "****1111"
    assert isinstance(failure.error, ApiError)
    assert failure.error.exit_code == ExitCode.ERROR
    assert "\n" not in failure.error.message
    assert result.items
    assert {getattr(item, "number", None) or item.account for item in result.items} == {"****2222"}
    return failure.error


def _set(path: str, value: object) -> Mutation:
    """A mutation that sets the field at ``path`` (dots and list indexes) to ``value``."""
    *parents, last = path.split(".")

    def mutate(item: dict[str, Any]) -> None:
        target: Any = item
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _drop(key: str) -> Mutation:
    def mutate(item: dict[str, Any]) -> None:
        del item[key]

    return mutate


ACCOUNT_CASES = [
    pytest.param(_set("securitiesAccount", ["x"]), "[0].securitiesAccount", id="account-list"),
    pytest.param(
        _set("securitiesAccount.positions", {"a": 1}),
        "[0].securitiesAccount.positions",
        id="positions-object",
    ),
    pytest.param(
        _set("securitiesAccount.positions.0", "META"),
        "[0].securitiesAccount.positions[0]",
        id="position-text",
    ),
    pytest.param(
        _set("securitiesAccount.positions.0.instrument", "META"),
        "[0].securitiesAccount.positions[0].instrument",
        id="instrument-text",
    ),
    pytest.param(
        _set("securitiesAccount.positions.0.instrument.description", 42),
        "[0].securitiesAccount.positions[0].instrument.description",
        id="description-number",
    ),
    pytest.param(
        _set("securitiesAccount.positions.0.longQuantity", value=True),
        "[0].securitiesAccount.positions[0].longQuantity",
        id="quantity-boolean",
    ),
    pytest.param(
        _set("securitiesAccount.currentBalances.cashBalance", "lots"),
        "[0].securitiesAccount.currentBalances.cashBalance",
        id="cash-text",
    ),
    pytest.param(
        _set("securitiesAccount.currentBalances.cashBalance", {"usd": 1}),
        "[0].securitiesAccount.currentBalances.cashBalance",
        id="cash-object",
    ),
    pytest.param(
        _set("securitiesAccount.currentBalances.liquidationValue", 1e300),
        "[0].securitiesAccount.currentBalances.liquidationValue",
        id="total-1e300",
    ),
    pytest.param(
        _set("securitiesAccount.currentBalances", [1, 2]),
        "[0].securitiesAccount.currentBalances",
        id="balances-list",
    ),
    pytest.param(_set("securitiesAccount.type", 7), "[0].securitiesAccount.type", id="type-number"),
    pytest.param(
        _set("securitiesAccount.accountNumber", {"n": FIRST}),
        "[0].securitiesAccount.accountNumber",
        id="number-object",
    ),
]


# Fields without which an account's number cannot be read.
UNIDENTIFIED = frozenset({"[0].securitiesAccount", "[0].securitiesAccount.accountNumber"})


@pytest.mark.parametrize(("mutate", "field"), ACCOUNT_CASES)
@pytest.mark.parametrize("job", [fetch_accounts, fetch_positions], ids=["accounts", "positions"])
def test_a_wrong_type_in_an_account_is_one_error_naming_the_field(
    router: respx.MockRouter, job: Callable[..., Any], mutate: Mutation, field: str
) -> None:
    """A wrong type anywhere in an account: that account fails (all, if its number is unreadable).

    Nothing of it is cached; the other account is printed and cached.
    """
    add_connection("brokerage", TOKEN)
    mock_api(router, accounts=mutated_accounts(mutate))

    result = fetch(job, router)

    if field in UNIDENTIFIED:
        # Which account it is cannot be read: the connection's answer fails whole.
        error = only_error(result)
        assert rows_in(schema.accounts) == 0
    else:
        error = first_account_error(result)
        assert rows_in(schema.accounts) == 1
    assert error.message.startswith("Schwab accounts: field ")
    assert f"field {field} should be " in error.message
    assert FIRST not in error.message
    assert error.hint is not None


def test_money_sent_as_nan_is_refused(router: respx.MockRouter) -> None:
    """JSON's NaN (Python reads it) is not an amount: one error naming the field."""
    body = mutated_accounts(_set("securitiesAccount.currentBalances.cashBalance", 424242.5))
    mock_api(router, accounts=body.replace("424242.5", "NaN"))
    add_connection("brokerage", TOKEN)

    error = first_account_error(fetch(fetch_accounts, router))

    assert "cashBalance should be a finite amount, not a number" in error.message


TRANSACTION_CASES = [
    pytest.param(_set("time", "2025-13-45T99:00:00+0000"), "time", id="time-garbage"),
    pytest.param(_set("time", 1737134389), "time", id="time-number"),
    pytest.param(_set("time", "0001-01-01T00:00:00+0100"), "time", id="time-before-year-1-utc"),
    pytest.param(_set("time", "9999-12-31T23:59:59-0100"), "time", id="time-after-year-9999-utc"),
    pytest.param(_set("time", "1066-10-14T09:00:00+0000"), "time", id="time-1066"),
    pytest.param(_set("tradeDate", "yesterday"), "tradeDate", id="trade-date-text"),
    pytest.param(_set("transferItems", {"a": 1}), "transferItems", id="items-object"),
    pytest.param(
        _set("transferItems.0.instrument", "MRVL"),
        "transferItems[0].instrument",
        id="instrument-text",
    ),
    pytest.param(_set("transferItems.1.cost", "free"), "transferItems[1].cost", id="fee-text"),
    pytest.param(_set("description", 12), "description", id="description-number"),
    pytest.param(_set("netAmount", "lots"), "netAmount", id="amount-text"),
    pytest.param(_set("status", ["VALID"]), "status", id="status-list"),
    pytest.param(_set("activityId", {"id": 1}), "activityId", id="activity-object"),
    pytest.param(_drop("activityId"), "activityId", id="activity-missing"),
]


@pytest.mark.parametrize(("mutate", "field"), TRANSACTION_CASES)
def test_a_bad_transaction_is_one_error_naming_the_field(
    router: respx.MockRouter, mutate: Mutation, field: str
) -> None:
    """A bad time or a wrong type in one transaction: exit 1, the field named, none of them stored."""
    add_connection("brokerage", TOKEN)
    mock_api(
        router, accounts=mutated_accounts(lambda _: None), transactions=mutated_transactions(mutate)
    )

    error = only_error(fetch(fetch_transactions, router, account="1111", since=SINCE, until=UNTIL))

    assert error.message.startswith("Schwab transactions of ****1111: field ")
    assert f"field {field}" in error.message
    if field != "activityId":
        assert "of activity 91176753939" in error.message
    assert FIRST not in error.message
    assert rows_in(schema.transactions) == 0


def test_a_transaction_without_a_time_falls_back_to_its_trade_date(
    router: respx.MockRouter,
) -> None:
    """No time but a trade date: the transaction is kept, at midnight UTC of that date."""
    add_connection("brokerage", TOKEN)
    mock_api(
        router,
        accounts=mutated_accounts(lambda _: None),
        transactions=mutated_transactions(_drop("time")),
    )

    result = fetch(fetch_transactions, router, account="1111", since=SINCE, until=UNTIL)

    assert result.failures == []
    times = sorted(t.time for t in result.items)
    assert times == [
        dt.datetime(2025, 1, 17, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC),
    ]


def test_the_cli_prints_one_line_and_exits_1(cli: CliCall) -> None:
    """`transactions list` with a transaction whose time is unreadable: one line, exit 1."""
    add_connection("brokerage", TOKEN)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        mock_api(
            router,
            accounts=mutated_accounts(lambda _: None),
            transactions=mutated_transactions(_set("time", "2025-13-45T99:00:00+0000")),
        )
        result = cli("transactions", "list", "--since", "2025-01-01", "--format", "json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert "field time of activity 91176753939 should be a readable date-time" in result.stderr
