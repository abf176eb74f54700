"""Schwab's session through `dashtam sync`: its calls, nicknames, and hostile or failing answers."""

from __future__ import annotations

import asyncio
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
    mock_connection_api,
    transactions_body,
    user_preference_body,
)
from sync_support import NOW, accounts, at, run_sync, transactions

from dashtam_cli.core import redact
from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.errors import ExitCode, PartialFailure
from dashtam_cli.core.http import CertificateNotVerified
from dashtam_cli.core.providers.schwab.client import ApiError
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from dashtam_cli.core.sync import SyncResult

FIRST, SECOND = "11111111", "22222222"
TOKEN: Final = "token-b"
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(autouse=True)
def schwab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Schwab call of these tests goes to the mocked origin."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def sync_now(router: respx.MockRouter) -> SyncResult:
    """One sync at NOW."""
    return run_sync(router, clock=at(NOW))


def count_rows(table_name: str) -> int:
    """How many rows a vault table holds."""
    from sync_support import rows_in

    return rows_in(getattr(schema, table_name))


# --- the calls ------------------------------------------------------------------------------------


def test_accounts_take_three_calls_and_transactions_one_per_window(
    router: respx.MockRouter,
) -> None:
    """A sync lists the numbers, the accounts and their nicknames once, then each window once."""
    add_connection("brokerage", TOKEN)
    mock_connection_api(router, TOKEN, [FIRST])

    result = run_sync(router, clock=at(NOW), since=NOW.replace(month=1))

    urls = sorted(str(c.request.url).split("?")[0] for c in router.calls)
    assert urls == [
        f"{API}/accounts",
        f"{API}/accounts/{hash_of(FIRST)}/transactions",
        f"{API}/accounts/accountNumbers",
        f"{API}/userPreference",
    ]
    assert result.reports[0].requests == 4


def test_the_nicknames_are_asked_for_alongside_the_accounts(router: respx.MockRouter) -> None:
    """The three account calls are in flight together: each answered once all three arrived."""
    add_connection("brokerage", TOKEN)
    mock_connection_api(router, TOKEN, [FIRST])
    arrived: set[str] = set()
    together = asyncio.Event()

    def held(route: respx.Route) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
        answer = route.return_value
        assert answer is not None

        async def respond(request: httpx.Request) -> httpx.Response:
            arrived.add(request.url.path)
            if len(arrived) == 3:  # numbers, accounts, nicknames
                together.set()
            # Called one after the other, the first call would wait here for ever.
            await asyncio.wait_for(together.wait(), timeout=30)
            return answer

        return respond

    for route in router.routes:
        if route.return_value is not None and "transactions" not in repr(route.pattern):
            route.side_effect = held(route)

    result = sync_now(router)

    assert result.outcome.failures == []
    assert [a.name for a in accounts()[0]] == ["Trading Brokerage"]
    assert len(arrived) == 3


@pytest.mark.parametrize(
    ("nicknames", "expected"),
    [
        ({FIRST: "Roth IRA", SECOND: "Joint"}, ["Roth IRA", "Joint"]),
        ({FIRST: "Roth IRA"}, ["Roth IRA", "Margin ****2222"]),  # SECOND not listed
        ({FIRST: None, SECOND: ""}, ["Margin ****1111", "Margin ****2222"]),  # no nickName
        ({FIRST: "  \x1b[31mRoth\x1b[0m\u202e IRA\n"}, ["Roth IRA", "Margin ****2222"]),
        ({FIRST: "IRA 11111111", SECOND: "22222222"}, ["IRA ***", "Margin ****2222"]),
        (
            {FIRST: "Rollover IRA " + "word " * 20},  # cut to 40 characters
            ["Rollover IRA word word word word word w…", "Margin ****2222"],
        ),
    ],
    ids=["both", "one-missing", "no-nickname", "control-characters", "the-number", "long"],
)
def test_accounts_are_named_by_their_nicknames(
    router: respx.MockRouter, nicknames: dict[str, str | None], expected: list[str]
) -> None:
    """An account's nickName names it; else its type and masked number. No control, no number."""
    add_connection("brokerage", TOKEN)
    mock_connection_api(router, TOKEN, [FIRST, SECOND], nicknames=nicknames)

    assert sync_now(router).outcome.failures == []

    found = sorted(accounts()[0], key=lambda a: a.number)
    assert [a.name for a in found] == expected
    assert [a.number for a in found] == ["****1111", "****2222"]


def test_the_user_preference_as_the_spec_declares_it(router: respx.MockRouter) -> None:
    """The spec declares a list of preference objects (live sends one): both are read."""
    add_connection("brokerage", TOKEN)
    first = json.loads(user_preference_body({FIRST: "Roth IRA"}))
    second = json.loads(user_preference_body({SECOND: "Joint"}))
    router.get(f"{API}/userPreference").mock(
        return_value=json_response(json.dumps([first, second]))
    )
    mock_connection_api(router, TOKEN, [FIRST, SECOND])

    sync_now(router)

    assert sorted(a.name for a in accounts()[0]) == ["Joint", "Roth IRA"]


@pytest.mark.parametrize(
    "answer",
    [
        json_response('{"message":"Internal error","errors":["boom"]}', 500),
        json_response('{"errors":[{"status":403,"title":"Forbidden"}]}', 403),
        httpx.Response(403, content=b"<html><body>Access Denied</body></html>"),
        json_response('{"accounts": "none"}'),
        json_response('"nothing"'),
        json_response('{"accounts": [{"accountNumber": {"n": 1}, "nickName": "x"}]}'),
    ],
    ids=["500", "403", "html", "accounts-text", "text", "number-object"],
)
def test_accounts_are_synced_when_the_nicknames_fail(
    router: respx.MockRouter, answer: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    """Any failure of userPreference: the accounts, by type and number, and one warning."""
    add_connection("brokerage", TOKEN)
    router.get(f"{API}/userPreference").mock(return_value=answer)
    mock_connection_api(router, TOKEN, [FIRST, SECOND])

    with caplog.at_level("WARNING", logger="dashtam_cli"):
        result = sync_now(router)

    assert result.outcome.failures == []
    assert result.outcome.outcome() is None
    assert sorted(a.name for a in accounts()[0]) == ["Margin ****1111", "Margin ****2222"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "brokerage: the accounts' nicknames are unavailable" in warnings[0]
    assert "user preference" in warnings[0]
    assert FIRST not in warnings[0]


def test_the_numbers_of_the_preferences_are_masked_at_once(router: respx.MockRouter) -> None:
    """An account number only userPreference lists is registered as a secret as it arrives."""
    add_connection("brokerage", TOKEN)
    mock_connection_api(router, TOKEN, [FIRST], nicknames={FIRST: "Roth", "98765432": "Old"})
    assert redact.redact("98765432") == "98765432"

    sync_now(router)

    assert [a.name for a in accounts()[0]] == ["Roth"]
    assert redact.redact("account 98765432") == "account ***"


def test_a_failure_leaves_no_call_running(router: respx.MockRouter) -> None:
    """The numbers fail fast while the accounts are slow: all three calls are audited, once each."""
    add_connection("brokerage", TOKEN)
    numbers_failed = asyncio.Event()

    async def failing_numbers(_request: httpx.Request) -> httpx.Response:
        numbers_failed.set()
        return json_response('{"message":"Bad Request","errors":[]}', 400, "c-fast")

    async def slow_accounts(_request: httpx.Request) -> httpx.Response:
        await asyncio.wait_for(numbers_failed.wait(), 60)
        return json_response("[" + fixture_text("account.json") + "]", correlation="c-slow")

    router.get(f"{API}/accounts/accountNumbers").mock(side_effect=failing_numbers)
    router.get(f"{API}/accounts").mock(side_effect=slow_accounts)
    router.get(f"{API}/userPreference").mock(
        return_value=json_response(user_preference_body({}), correlation="c-names")
    )

    result = sync_now(router)

    assert [f.connection for f in result.outcome.failures] == ["brokerage"]
    assert result.reports[0].result == "failed"

    async def audited() -> set[tuple[str, str | None]]:
        async with open_vault(load_settings()) as vault:
            entries = await list_audit(vault, connection="brokerage")
        return {(e.operation, e.correlation_id) for e in entries}

    assert audited_now(audited) == {
        ("schwab.account_numbers", "c-fast"),
        ("schwab.accounts", "c-slow"),
        ("schwab.user_preference", "c-names"),
    }


def audited_now(job: Callable[[], Any]) -> Any:
    """Run an async job to its end."""
    return asyncio.run(job())


# --- hostile answers --------------------------------------------------------------------------------


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


def mock_api(
    router: respx.MockRouter,
    *,
    accounts: str,
    transactions: Callable[[httpx.Request], httpx.Response] | None = None,
) -> None:
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
    route = router.get(host="schwab.test", path__regex=TRANSACTIONS_PATH.pattern)
    if transactions is None:
        route.mock(return_value=json_response("[]"))
    else:
        route.mock(side_effect=transactions)


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
def test_a_wrong_type_in_an_account_fails_that_account_alone(
    router: respx.MockRouter, mutate: Mutation, field: str
) -> None:
    """A wrong type in an account: that account fails (exit 3), the other is stored and synced.

    When even its number cannot be read, the connection's answer fails whole
    (exit 1) and nothing is stored.
    """
    add_connection("brokerage", TOKEN)
    mock_api(router, accounts=mutated_accounts(mutate))

    result = sync_now(router)

    (failure,) = result.outcome.failures
    assert isinstance(failure.error, ApiError)
    error = failure.error
    assert error.message.startswith("Schwab accounts: field ")
    assert f"field {field} should be " in error.message
    assert "\n" not in error.message
    assert error.hint is not None
    outcome = result.outcome.outcome()
    assert outcome is not None
    if field in UNIDENTIFIED:
        assert failure.account is None
        assert outcome.exit_code == ExitCode.ERROR
        assert count_rows("accounts") == 0
    else:
        assert failure.account == "****1111"
        assert isinstance(outcome, PartialFailure)
        assert outcome.exit_code == ExitCode.PARTIAL
        assert result.reports[0].failed_accounts == ["****1111"]
        assert [a.number for a in accounts()[0]] == ["****2222"]
        assert count_rows("sync_points") == 1
    for text in (error.message, outcome.message, str(result.reports)):
        assert FIRST not in text


def test_money_sent_as_nan_is_refused(router: respx.MockRouter) -> None:
    """JSON's NaN (Python reads it) is not an amount: that account fails, naming the field."""
    body = mutated_accounts(_set("securitiesAccount.currentBalances.cashBalance", 424242.5))
    mock_api(router, accounts=body.replace("424242.5", "NaN"))
    add_connection("brokerage", TOKEN)

    (failure,) = sync_now(router).outcome.failures

    assert failure.account == "****1111"
    assert "cashBalance should be a finite amount, not a number" in failure.error.message


def first_account_bad(mutate: Mutation) -> Callable[[httpx.Request], httpx.Response]:
    """Transactions answers: the first account's has one bad item, the second's are fine."""

    def answer(request: httpx.Request) -> httpx.Response:
        if hash_of(FIRST) in request.url.path:
            return json_response(mutated_transactions(mutate))
        return json_response(transactions_body([7001, 7002]))

    return answer


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
def test_a_bad_transaction_fails_its_account_alone(
    router: respx.MockRouter, mutate: Mutation, field: str
) -> None:
    """A bad item in one account's transactions: none of that account's stored, the other's are.

    The failing account's sync point does not move, so the next sync asks for
    its whole window again; the error names the field, never the number.
    """
    add_connection("brokerage", TOKEN)
    mock_api(
        router, accounts=mutated_accounts(lambda _: None), transactions=first_account_bad(mutate)
    )

    result = sync_now(router)

    (failure,) = result.outcome.failures
    assert failure.account == "****1111"
    assert isinstance(failure.error, ApiError)
    message = failure.error.message
    assert message.startswith("Schwab transactions of ****1111: field ")
    assert f"field {field}" in message
    assert "\n" not in message
    if field != "activityId":
        assert "of activity 91176753939" in message
    assert FIRST not in message
    outcome = result.outcome.outcome()
    assert outcome is not None
    assert outcome.exit_code == ExitCode.PARTIAL
    stored, _ = transactions()
    assert {t.account for t in stored} == {"****2222"}
    assert len(stored) == 2
    assert count_rows("sync_points") == 1


def test_a_transaction_without_a_time_falls_back_to_its_trade_date(
    router: respx.MockRouter,
) -> None:
    """No time but a trade date: the transaction is kept, at midnight UTC of that date."""
    add_connection("brokerage", TOKEN)
    mock_api(
        router,
        accounts=mutated_accounts(lambda _: None),
        transactions=lambda _request: json_response(mutated_transactions(_drop("time"))),
    )

    result = sync_now(router)

    assert result.outcome.failures == []
    times = sorted({t.time for t in transactions(account="1111")[0]})
    assert [t.isoformat() for t in times] == [
        "2025-01-17T00:00:00+00:00",
        "2025-01-17T17:19:49+00:00",
    ]


def test_an_untrusted_certificate_fails_the_connection_and_keeps_the_vault(
    router: respx.MockRouter,
) -> None:
    """A certificate that does not verify: exit 1, said as such, nothing stored changes."""
    add_connection("brokerage", TOKEN)
    mock_connection_api(router, TOKEN, [FIRST])
    assert sync_now(router).outcome.failures == []
    before = transactions()[0]

    untrusted = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    untrusted.get(url__startswith=API).mock(
        side_effect=httpx.ConnectError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
        )
    )

    result = run_sync(untrusted, clock=at(NOW), full=True)

    (failure,) = result.outcome.failures
    assert isinstance(failure.error, CertificateNotVerified)
    assert "the TLS certificate of schwab.test could not be verified" in failure.error.message
    outcome = result.outcome.outcome()
    assert outcome is not None
    assert outcome.exit_code == ExitCode.ERROR
    assert result.reports[0].result == "failed"
    assert transactions()[0] == before


def test_a_huge_account_list_is_not_read_whole(router: respx.MockRouter) -> None:
    """An accountNumbers answer over its limit: the connection fails with one line, nothing stored."""
    add_connection("brokerage", TOKEN)
    huge = account_numbers_body([(FIRST, hash_of(FIRST))] * 20_000)
    assert len(huge) > 1024 * 1024
    router.get(f"{API}/accounts/accountNumbers").mock(return_value=json_response(huge))
    mock_connection_api(router, TOKEN, [FIRST])

    result = sync_now(router)

    (failure,) = result.outcome.failures
    assert "answered with more than 1 MiB" in failure.error.message
    assert "\n" not in failure.error.message
    assert count_rows("accounts") == 0
