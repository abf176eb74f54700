"""The sandbox over real HTTPS: Schwab's OAuth rules, the Trader API's validation, data, faults."""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from sandbox_support import SandboxApi, basic, transactions_query

from dashtam_cli.sandbox.app import Sandbox, SandboxConfig

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sandbox_support import FakeClock, RunningSandbox

OCC_SYMBOL = re.compile(r"^[A-Z]{1,5} {1,5}\d{6}[CP]\d{8}$")
YEAR = dt.timedelta(days=365)


def _error_shape(body: Any) -> None:
    """Schwab's Trader API error body: a message and a list of strings."""
    assert isinstance(body, dict)
    assert set(body) == {"message", "errors"}
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["errors"], list)
    assert body["errors"]
    assert all(isinstance(e, str) for e in body["errors"])


def _query(location: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)


def _window() -> tuple[dt.datetime, dt.datetime]:
    """The last year, ending a minute from now so the newest item is inside."""
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    return end - YEAR, end


def _expected(
    sandbox: RunningSandbox, index: int, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """The sandbox's own transactions of account ``index`` in ``[start, end)``."""
    return sandbox.sandbox.accounts[index].between(start, end)


# -- OAuth: authorize and consent ----------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        lambda _: {"client_id": "someone-else-app-key-000000000000"},
        lambda _: {"redirect_uri": "https://127.0.0.1:1"},
        lambda uri: {"redirect_uri": uri.replace("https://", "http://")},
        lambda uri: {"redirect_uri": uri + "/"},
        lambda uri: {"redirect_uri": uri.replace("127.0.0.1", "localhost")},
    ],
    ids=["unknown-client", "other-port", "http", "trailing-slash", "other-host"],
)
def test_authorize_refuses_an_unknown_client_or_redirect(
    api: SandboxApi, sandbox: RunningSandbox, override: Callable[[str], dict[str, str]]
) -> None:
    """Only the registered client and the exact registered redirect URI get a consent page."""
    answer = api.http.get(api.authorize_url(**override(sandbox.redirect_uri)))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert "location" not in answer.headers
    assert "consent" not in answer.text


def test_consent_page_has_approve_and_deny(api: SandboxApi) -> None:
    """The consent page is HTML with an Approve and a Deny button posting to the decision URL."""
    page = api.http.get(api.authorize_url())
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/v1/oauth/authorize/decision">' in page.text
    assert '<button name="decision" value="approve">Approve</button>' in page.text
    assert '<button name="decision" value="deny">Deny</button>' in page.text


def test_approve_redirects_with_a_code_ending_in_percent_40_and_the_state(
    api: SandboxApi, sandbox: RunningSandbox
) -> None:
    """Approve: 302 to the redirect URI; the raw code ends in %40 (an encoded @); state echoed."""
    answer = api.decide(api.consent(state="s t&ate/1"), "approve")
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(sandbox.redirect_uri + "/?")
    raw = dict(pair.split("=", 1) for pair in urllib.parse.urlsplit(location).query.split("&"))
    assert raw["code"].endswith("%40")
    assert "@" not in raw["code"]
    query = _query(location)
    assert query["code"][0].endswith("@")
    assert query["code"][0].startswith("C0.")
    assert query["state"] == ["s t&ate/1"]
    assert query["session"][0]
    assert "error" not in query


def test_deny_redirects_with_access_denied(api: SandboxApi, sandbox: RunningSandbox) -> None:
    """Deny: 302 to the redirect URI with error=access_denied, the state, and no code."""
    answer = api.decide(api.consent(state="xyz"), "deny")
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(sandbox.redirect_uri + "/?")
    query = _query(location)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["xyz"]
    assert "code" not in query


def test_a_consent_is_decided_once(api: SandboxApi) -> None:
    """A consent page's decision cannot be replayed: the second post is refused."""
    consent = api.consent()
    assert api.decide(consent, "approve").status_code == 302
    again = api.decide(consent, "approve")
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_request"


def test_auto_approve_redirects_at_once(start_sandbox: Callable[..., RunningSandbox]) -> None:
    """With auto-approve the authorize URL redirects straight away with a code (for scripts)."""
    running = start_sandbox(auto_approve=True)
    api = SandboxApi(running)
    try:
        answer = api.http.get(api.authorize_url(state="auto"))
        assert answer.status_code == 302
        query = _query(answer.headers["location"])
        assert query["state"] == ["auto"]
        assert api.exchange(query["code"][0]).status_code == 200
    finally:
        api.close()


def test_a_redirect_uri_with_a_path_is_used_as_registered(
    start_sandbox: Callable[..., RunningSandbox], redirect_uri: str
) -> None:
    """A callback registered with a path gets ``<path>?code=``, not ``<path>/?code=``."""
    registered = redirect_uri + "/callback"
    running = start_sandbox(redirect_uris=(registered,))
    api = SandboxApi(running)
    try:
        location = api.decide(api.consent(), "approve").headers["location"]
    finally:
        api.close()
    assert location.startswith(registered + "?code=")


# -- OAuth: token endpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic("dashtam-sandbox-app-key-00000000", "wrong-secret-000"),
        basic("someone-else", "sandbox-secret00"),
        "Basic not*base64",
        "Bearer something",
    ],
    ids=["none", "wrong-secret", "wrong-client", "garbled", "not-basic"],
)
def test_token_endpoint_requires_basic_client_auth(
    api: SandboxApi, authorization: str | None
) -> None:
    """Without the app's exact Basic credentials: 401 invalid_client, and the code is not spent."""
    code = api.code()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": api.running.redirect_uri,
    }
    answer = api.token(form, authorization=authorization)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert api.exchange(code).status_code == 200


def test_code_exchange_returns_schwab_shaped_tokens(api: SandboxApi) -> None:
    """The token response has Schwab's fields: Bearer, scope api, 1800 s, refresh and id tokens."""
    body = api.login()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api"
    assert body["expires_in"] == 1800
    assert body["access_token"]
    assert body["refresh_token"]
    assert body["id_token"]
    assert body["access_token"] != body["refresh_token"]


def test_a_code_works_once(api: SandboxApi) -> None:
    """The second exchange of one code is refused with invalid_grant."""
    code = api.code()
    assert api.exchange(code).status_code == 200
    again = api.exchange(code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("age", "status"), [(29, 200), (31, 400)])
def test_a_code_lasts_30_seconds(
    api: SandboxApi, sandbox_clock: FakeClock, age: float, status: int
) -> None:
    """A code exchanged 29 s after approval works; at 31 s it is invalid_grant."""
    code = api.code()
    sandbox_clock.advance(age)
    answer = api.exchange(code)
    assert answer.status_code == status
    if status == 400:
        assert answer.json()["error"] == "invalid_grant"


def test_a_code_is_bound_to_its_redirect_uri(api: SandboxApi) -> None:
    """Exchanging with another redirect URI than the login's is invalid_grant."""
    form = {
        "grant_type": "authorization_code",
        "code": api.code(),
        "redirect_uri": "https://127.0.0.1:1",
    }
    answer = api.token(form)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_unknown_grant_type_is_refused(api: SandboxApi) -> None:
    """A grant type other than authorization_code or refresh_token: unsupported_grant_type."""
    answer = api.token({"grant_type": "password", "username": "u", "password": "p"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_refresh_gives_a_new_access_token_and_keeps_the_refresh_token(api: SandboxApi) -> None:
    """A refresh answers a new, working access token and the same refresh token."""
    first = api.login()
    answer = api.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert answer.status_code == 200
    second = answer.json()
    assert second["refresh_token"] == first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 1800
    assert api.get("/accounts/accountNumbers", second["access_token"]).status_code == 200


def test_refresh_tokens_die_seven_days_after_the_login_whatever_the_refreshes(
    api: SandboxApi, sandbox_clock: FakeClock
) -> None:
    """Refreshing at day 6 works but does not extend the 7 days: after them, Schwab's error body."""
    tokens = api.login()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    sandbox_clock.advance(6 * 86400)
    assert api.token(form).status_code == 200
    sandbox_clock.advance(86400 + 1)
    answer = api.token(form)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "unsupported_token_type"
    assert "refresh_token_authentication_error" in body["error_description"]


def test_an_unknown_refresh_token_is_refused(api: SandboxApi) -> None:
    """A refresh token the sandbox never issued gets the same refusal as an expired one."""
    answer = api.token({"grant_type": "refresh_token", "refresh_token": "R0.made-up@"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_token_type"


# -- Trader API: authentication ------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "I0.not-a-token@"], ids=["missing", "unknown"])
def test_api_wants_a_valid_bearer_token(api: SandboxApi, token: str | None) -> None:
    """No bearer token, or one the sandbox did not issue: 401 in the Trader API's error shape."""
    answer = api.get("/accounts/accountNumbers", token)
    assert answer.status_code == 401
    _error_shape(answer.json())


@pytest.mark.parametrize(("minutes", "status"), [(29, 200), (31, 401)])
def test_access_tokens_last_30_minutes(
    api: SandboxApi, sandbox_clock: FakeClock, minutes: int, status: int
) -> None:
    """The access token works 29 minutes after issue and is refused after 31."""
    token = api.login()["access_token"]
    sandbox_clock.advance(minutes * 60)
    answer = api.get("/accounts/accountNumbers", token)
    assert answer.status_code == status
    if status == 401:
        _error_shape(answer.json())


def test_access_ttl_is_configurable(start_sandbox: Callable[..., RunningSandbox]) -> None:
    """--access-ttl sets expires_in and the real lifetime."""
    running = start_sandbox(access_ttl=60)
    api = SandboxApi(running)
    try:
        tokens = api.login()
        assert tokens["expires_in"] == 60
        running.clock.advance(61)
        assert api.get("/accounts/accountNumbers", tokens["access_token"]).status_code == 401
    finally:
        api.close()


def test_every_answer_carries_a_correlation_id(api: SandboxApi) -> None:
    """Schwab-Client-CorrelId is on answers of success and failure alike, and differs each time."""
    token = api.login()["access_token"]
    ids = {
        api.get("/accounts/accountNumbers", token).headers["schwab-client-correlid"],
        api.get("/accounts/accountNumbers", None).headers["schwab-client-correlid"],
        api.get("/accounts/NOPE", token).headers["schwab-client-correlid"],
    }
    assert len(ids) == 3


# -- Trader API: validation ----------------------------------------------------------------


@pytest.fixture
def token(api: SandboxApi) -> str:
    """A valid access token for the default sandbox."""
    return str(api.login()["access_token"])


@pytest.fixture
def first_hash(api: SandboxApi, token: str) -> str:
    """The hash of the sandbox's first account."""
    return api.hashes(token)[0]


@pytest.mark.parametrize("missing", ["types", "startDate", "endDate"])
def test_transactions_require_types_and_both_dates(
    api: SandboxApi, token: str, first_hash: str, missing: str
) -> None:
    """Leaving out types, startDate or endDate: 400 naming it, in Schwab's error shape."""
    end = dt.datetime.now(dt.UTC)
    query = "&".join(
        p
        for p in transactions_query(end - dt.timedelta(days=30), end).split("&")
        if not p.startswith(f"{missing}=")
    )
    answer = api.get(f"/accounts/{first_hash}/transactions", token, query)
    assert answer.status_code == 400
    body = answer.json()
    _error_shape(body)
    assert any(missing in e for e in body["errors"])


@pytest.mark.parametrize(
    "bad",
    [
        "2024-03-28T21:10:42.469502+00Z",  # microseconds and +00Z: live answers 400 (Schwabdev #35)
        "2024-03-28T21:10:42.469502Z",  # microseconds
        "2024-02-30T21:10:42.000Z",  # no such day
        "2024-03-28T21:10:42.000",  # no Z
        "2024-03-28T21:10:42.000+00:00",  # an offset instead of Z
        "2024-03-28",  # a bare date
        "2024-03-28 21:10:42.000Z",  # a space instead of T
    ],
)
@pytest.mark.parametrize("which", ["startDate", "endDate"])
def test_transactions_refuse_badly_formatted_dates(
    api: SandboxApi, token: str, first_hash: str, bad: str, which: str
) -> None:
    """Dates other than yyyy-MM-dd'T'HH:mm:ss.SSSZ (or without milliseconds) are refused: 400."""
    good = {"startDate": "2024-03-01T00:00:00.000Z", "endDate": "2024-03-28T21:10:42.000Z"}
    good[which] = bad
    query = urllib.parse.urlencode({**good, "types": "TRADE"})
    answer = api.get(f"/accounts/{first_hash}/transactions", token, query)
    assert answer.status_code == 400
    body = answer.json()
    _error_shape(body)
    assert body["message"] == "Invalid date format"


def test_transactions_take_dates_with_and_without_milliseconds(
    api: SandboxApi, token: str, sandbox: RunningSandbox
) -> None:
    """2024-03-28T21:10:42.000Z and 2024-03-28T21:10:42Z (schwab-py's form) mean the same."""
    account = sandbox.sandbox.accounts[0]
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    start = end - dt.timedelta(days=365)
    documented = transactions_query(start, end)
    assert ".000Z" in urllib.parse.unquote(documented)
    schwab_py = urllib.parse.urlencode(
        {
            "startDate": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDate": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "types": "TRADE",
        }
    )
    path = f"/accounts/{account.hash_value}/transactions"
    answers = [api.get(path, token, query) for query in (documented, schwab_py)]
    assert [a.status_code for a in answers] == [200, 200]
    items = answers[1].json()
    assert items
    assert items == answers[0].json()
    assert items == [i for i in account.between(start, end) if i["type"] == "TRADE"]


@pytest.mark.parametrize(
    ("span", "status"),
    [(YEAR, 200), (YEAR + dt.timedelta(seconds=1), 400), (-dt.timedelta(days=1), 400)],
    ids=["one-year", "over-a-year", "reversed"],
)
def test_transactions_cover_at_most_a_year(
    api: SandboxApi, token: str, first_hash: str, span: dt.timedelta, status: int
) -> None:
    """A range of exactly a year is served; a second more, or an end before the start, is 400."""
    end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    query = transactions_query(end - span, end)
    answer = api.get(f"/accounts/{first_hash}/transactions", token, query)
    assert answer.status_code == status
    if status == 400:
        body = answer.json()
        _error_shape(body)
        assert body["message"] == "Invalid date range"


def test_unknown_types_are_refused(api: SandboxApi, token: str, first_hash: str) -> None:
    """A type outside Schwab's list is 400, even next to a valid one."""
    end = dt.datetime.now(dt.UTC)
    query = transactions_query(end - dt.timedelta(days=30), end, types="TRADE,BOGUS")
    answer = api.get(f"/accounts/{first_hash}/transactions", token, query)
    assert answer.status_code == 400
    body = answer.json()
    _error_shape(body)
    assert "BOGUS" in body["errors"][0]


@pytest.mark.parametrize("suffix", ["", "/transactions", "/transactions/1"])
def test_unknown_account_hash_is_404(api: SandboxApi, token: str, suffix: str) -> None:
    """Calls under an account hash the sandbox does not know: 404 in the error shape."""
    end = dt.datetime.now(dt.UTC)
    query = transactions_query(end - dt.timedelta(days=30), end) if suffix else ""
    answer = api.get(f"/accounts/0000DEADBEEF{suffix}", token, query)
    assert answer.status_code == 404
    _error_shape(answer.json())


def test_plain_account_numbers_are_not_accepted_as_hashes(api: SandboxApi, token: str) -> None:
    """Every account call takes the hashValue: the plain number is an unknown account."""
    number = api.get("/accounts/accountNumbers", token).json()[0]["accountNumber"]
    answer = api.get(f"/accounts/{number}", token, "fields=positions")
    assert answer.status_code == 404
    _error_shape(answer.json())


# -- Trader API: what is served ------------------------------------------------------------


def test_accounts_list_positions_only_when_asked(api: SandboxApi, token: str) -> None:
    """fields=positions adds positions; without it, balances only (as Schwab does)."""
    without = api.get("/accounts", token).json()
    with_positions = api.get("/accounts", token, "fields=positions").json()
    assert all("positions" not in a["securitiesAccount"] for a in without)
    assert all(a["securitiesAccount"]["positions"] for a in with_positions)
    assert all("currentBalances" in a["securitiesAccount"] for a in without)


def test_one_account_by_hash(api: SandboxApi, token: str, sandbox: RunningSandbox) -> None:
    """/accounts/{hash} answers that account: its number matches the hash's pair."""
    pairs = api.get("/accounts/accountNumbers", token).json()
    for pair in pairs:
        body = api.get(f"/accounts/{pair['hashValue']}", token, "fields=positions").json()
        assert body["securitiesAccount"]["accountNumber"] == pair["accountNumber"]
    assert [p["accountNumber"] for p in pairs] == [a.number for a in sandbox.sandbox.accounts]


def test_one_transaction_by_id(api: SandboxApi, token: str, sandbox: RunningSandbox) -> None:
    """/transactions/{activityId} answers a list holding that transaction."""
    account = sandbox.sandbox.accounts[0]
    wanted = account.transactions[5]
    answer = api.get(f"/accounts/{account.hash_value}/transactions/{wanted['activityId']}", token)
    assert answer.status_code == 200
    assert answer.json() == [wanted]


def test_types_filter_keeps_only_those_types(
    api: SandboxApi, token: str, sandbox: RunningSandbox
) -> None:
    """types=A,B answers exactly the transactions of those types in the range."""
    start, end = _window()
    types = "DIVIDEND_OR_INTEREST,ACH_RECEIPT"
    account = sandbox.sandbox.accounts[0]
    query = transactions_query(start, end, types=types)
    items = api.get(f"/accounts/{account.hash_value}/transactions", token, query).json()
    expected = [i for i in _expected(sandbox, 0, start, end) if i["type"] in types.split(",")]
    assert items == expected
    assert {i["type"] for i in items} == set(types.split(","))
    everything = api.get(
        f"/accounts/{account.hash_value}/transactions",
        token,
        transactions_query(
            start, end, types=",".join(sorted({i["type"] for i in account.transactions}))
        ),
    ).json()
    assert len(everything) > len(items)


def _option_symbol_in(items: list[dict[str, Any]]) -> str:
    for item in items:
        for transfer in item["transferItems"]:
            if transfer["instrument"]["assetType"] == "OPTION":
                return str(transfer["instrument"]["symbol"])
    msg = "no option trade in the window"
    raise AssertionError(msg)


@pytest.mark.parametrize("kind", ["equity", "option"])
def test_symbol_filter_keeps_only_that_symbol(
    api: SandboxApi, token: str, sandbox: RunningSandbox, kind: str
) -> None:
    """symbol=X answers only transactions moving X; an option symbol's spaces travel as %20."""
    start, end = _window()
    account = sandbox.sandbox.accounts[0]
    in_window = _expected(sandbox, 0, start, end)
    symbol = _option_symbol_in(in_window) if kind == "option" else "AAPL"
    query = transactions_query(start, end, types="TRADE,DIVIDEND_OR_INTEREST", symbol=symbol)
    if kind == "option":
        assert " " in symbol
        assert "%20" in query
    items = api.get(f"/accounts/{account.hash_value}/transactions", token, query).json()
    expected = [
        i
        for i in in_window
        if i["type"] in {"TRADE", "DIVIDEND_OR_INTEREST"}
        and any(t["instrument"].get("symbol") == symbol for t in i["transferItems"])
    ]
    assert items
    assert items == expected
    assert len(items) < len(in_window)


def test_dates_bound_the_transactions(api: SandboxApi, token: str, sandbox: RunningSandbox) -> None:
    """Only transactions with startDate <= time < endDate come back, all of them."""
    account = sandbox.sandbox.accounts[1]
    middle = account.times[len(account.times) // 2]
    start, end = middle - dt.timedelta(days=60), middle + dt.timedelta(days=60)
    types = ",".join(sorted({i["type"] for i in account.transactions}))
    query = transactions_query(start, end, types=types)
    items = api.get(f"/accounts/{account.hash_value}/transactions", token, query).json()
    times = [dt.datetime.strptime(i["time"], "%Y-%m-%dT%H:%M:%S%z") for i in items]
    assert items
    assert all(start <= t < end for t in times)
    assert len(items) == sum(1 for t in account.times if start <= t < end)
    assert len(items) < len(account.transactions)


def test_at_most_3000_transactions_per_answer(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    """A range holding more than 3000 transactions answers 3000 of them, the newest."""
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    running = start_sandbox(accounts=1, transactions_per_account=7000, now=now)
    account = running.sandbox.accounts[0]
    end = now + dt.timedelta(seconds=1)
    start = end - YEAR
    in_range = account.between(start, end)
    assert len(in_range) > 3000
    api = SandboxApi(running)
    try:
        token = api.login()["access_token"]
        types = ",".join(sorted({i["type"] for i in account.transactions}))
        query = transactions_query(start, end, types=types)
        items = api.get(f"/accounts/{account.hash_value}/transactions", token, query).json()
    finally:
        api.close()
    assert len(items) == 3000
    assert items == in_range[-3000:]


# -- Generated data ------------------------------------------------------------------------

FIXED_NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def _made(tmp_path: Path, **fields: Any) -> Sandbox:
    """A sandbox's generated data, without serving it."""
    return Sandbox(
        SandboxConfig(**{"accounts": 3, "transactions_per_account": 300, **fields}), tmp_path
    )


def _snapshot(box: Sandbox) -> list[tuple[str, str, Any, list[dict[str, Any]]]]:
    return [(a.number, a.hash_value, a.body, a.transactions) for a in box.accounts]


def test_same_seed_same_data(tmp_path: Path) -> None:
    """The same seed and clock give identical numbers, hashes, positions, balances, transactions."""
    first = _made(tmp_path, seed=11, now=FIXED_NOW)
    second = _made(tmp_path, seed=11, now=FIXED_NOW)
    assert _snapshot(first) == _snapshot(second)
    assert len(first.accounts) == 3


def test_different_seed_different_data(tmp_path: Path) -> None:
    """Another seed gives other account numbers, positions and transactions."""
    first = _made(tmp_path, seed=11, now=FIXED_NOW)
    other = _made(tmp_path, seed=12, now=FIXED_NOW)
    assert {a.number for a in first.accounts}.isdisjoint({a.number for a in other.accounts})
    assert first.accounts[0].body != other.accounts[0].body
    amounts = [[t["netAmount"] for t in a.transactions] for a in first.accounts]
    assert amounts != [[t["netAmount"] for t in a.transactions] for a in other.accounts]


def test_sizes_follow_the_options(tmp_path: Path) -> None:
    """accounts=5 and transactions_per_account=3000 make exactly that many, ids unique.

    Five accounts of 3,000 check what 20 of 10,000 did (exact counts, ids unique
    across accounts, both account types) in a thirteenth of the time: the ids
    are sequential within an account's own range, so size adds nothing here.
    """
    box = _made(tmp_path, accounts=5, transactions_per_account=3_000, now=FIXED_NOW)
    assert len(box.accounts) == 5
    assert [len(a.transactions) for a in box.accounts] == [3_000] * 5
    assert len({a.number for a in box.accounts}) == 5
    ids = {t["activityId"] for a in box.accounts for t in a.transactions}
    assert len(ids) == 15_000
    assert {a.body["securitiesAccount"]["type"] for a in box.accounts} == {"MARGIN", "CASH"}


def test_data_has_what_live_schwab_data_has(
    api: SandboxApi, token: str, sandbox: RunningSandbox
) -> None:
    """Option symbols with spaces, +0000 times, short positions, CURRENCY fee lines, all kinds."""
    accounts = api.get("/accounts", token, "fields=positions").json()
    positions = [p for a in accounts for p in a["securitiesAccount"]["positions"]]
    options = [p for p in positions if p["instrument"]["assetType"] == "OPTION"]
    assert options
    assert all(OCC_SYMBOL.match(p["instrument"]["symbol"]) for p in options)
    assert all(" " in p["instrument"]["symbol"] for p in options)
    shorts = [p for p in positions if p["settledShortQuantity"] < 0]
    assert shorts
    assert all(p["shortQuantity"] > 0 and p["marketValue"] < 0 for p in shorts)

    start, end = _window()
    account = sandbox.sandbox.accounts[0]
    types = ",".join(sorted({i["type"] for i in account.transactions}))
    items = api.get(
        f"/accounts/{account.hash_value}/transactions", token, transactions_query(start, end, types)
    ).json()
    assert items
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", i["time"]) for i in items)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", i["tradeDate"]) for i in items)
    assert {"TRADE", "DIVIDEND_OR_INTEREST", "ACH_RECEIPT", "ACH_DISBURSEMENT", "JOURNAL"} <= {
        i["type"] for i in items
    }
    fees = [
        t
        for i in items
        if i["type"] == "TRADE"
        for t in i["transferItems"]
        if t["instrument"]["assetType"] == "CURRENCY"
    ]
    assert fees
    assert all(t["instrument"]["symbol"] == "CURRENCY_USD" for t in fees)
    # Most carry a feeType; some, as live, do not (option trades' exchange fee).
    assert any(t.get("feeType") == "COMMISSION" for t in fees)
    assert any("feeType" not in t for t in fees)
    option_trades = [
        t["instrument"]["symbol"]
        for i in items
        for t in i["transferItems"]
        if t["instrument"]["assetType"] == "OPTION"
    ]
    assert option_trades
    assert all(OCC_SYMBOL.match(s) for s in option_trades)
    assert {a["securitiesAccount"]["type"] for a in accounts} == {"MARGIN", "CASH"}


# -- Fault injection and latency -----------------------------------------------------------


def test_error_rate_one_answers_only_injected_faults(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    """error_rate=1.0: every API call is 429 (with Retry-After), 500 or 503, all three seen."""
    running = start_sandbox(error_rate=1.0, seed=3)
    api = SandboxApi(running)
    try:
        token = api.login()["access_token"]
        answers = [api.get("/accounts/accountNumbers", token) for _ in range(40)]
    finally:
        api.close()
    statuses = {a.status_code for a in answers}
    assert statuses == {429, 500, 503}
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["retry-after"].isdigit()
            _error_shape(answer.json())
        elif answer.status_code == 500:
            _error_shape(answer.json())
        else:
            assert "faultstring" in answer.json()["fault"]


def test_error_rate_zero_injects_nothing(api: SandboxApi, token: str) -> None:
    """error_rate=0 (the default): every valid call succeeds."""
    answers = [api.get("/accounts/accountNumbers", token) for _ in range(40)]
    assert {a.status_code for a in answers} == {200}


def test_latency_delays_each_answer(start_sandbox: Callable[..., RunningSandbox]) -> None:
    """latency_ms=200 holds an answer back at least 0.2 s (a behaviour check, not a speed limit)."""
    running = start_sandbox(latency_ms=200)
    api = SandboxApi(running)
    try:
        api.http.get("/trader/v1/accounts/accountNumbers")  # the TLS connection, set up first
        started = time.monotonic()
        answer = api.http.get("/trader/v1/accounts/accountNumbers")
        elapsed = time.monotonic() - started
    finally:
        api.close()
    assert answer.status_code == 401
    assert elapsed >= 0.2


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_malformed_content_length_is_answered_400(sandbox: RunningSandbox, length: str) -> None:
    """A Content-Length that is not a count gets 400 and a closed connection, not silence."""
    host, port = sandbox.base_url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=sandbox.ca_path)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(
            f"POST /v1/oauth/token HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer
