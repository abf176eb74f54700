"""The SimpleFIN protocol module: setup tokens, the access URL, the claim, Account Sets, the budget."""

from __future__ import annotations

import asyncio
import base64
import decimal
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

from dashtam_cli.core.errors import ConfigError, InputError, ProviderError
from dashtam_cli.core.http import TOKEN_BODY_LIMIT
from dashtam_cli.core.providers.simplefin.protocol import (
    DEFAULT_DAILY_REQUESTS,
    MAX_EPOCH,
    MESSAGE_LIMIT,
    Access,
    AccountSet,
    claim,
    claim_url,
    daily_limit,
    parse_account_set,
)
from dashtam_cli.core.redact import register_secret

if TYPE_CHECKING:
    from collections.abc import Iterator

CLAIM = "https://bridge.simplefin.test/simplefin/claim/0123abcd"
ACCESS = "https://user123:pass456@bridge.simplefin.test/simplefin"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _message(exc: pytest.ExceptionInfo[Any]) -> str:
    """An error's message and hint, as the user would see them."""
    return f"{exc.value.message} {exc.value.hint}"


# -- setup tokens -----------------------------------------------------------------------------


def _spaced(text: str) -> str:
    """Base64 of ``text`` broken by spaces and newlines, as a terminal may paste it."""
    token = _b64(text)
    return " " + "\n ".join(token[i : i + 8] for i in range(0, len(token), 8)) + "\n"


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(_b64, id="standard"),
        pytest.param(lambda u: _b64(u).rstrip("="), id="no-padding"),
        pytest.param(_spaced, id="whitespace"),
    ],
)
def test_a_setup_token_decodes_to_its_claim_url(encode: Any) -> None:
    """Standard base64 with or without padding, and with whitespace inside, gives the claim URL."""
    url = CLAIM + "e"  # 57 characters: base64 with padding
    assert _b64(url).endswith("=")
    assert claim_url(encode(url)) == url


def test_a_url_safe_setup_token_decodes_too() -> None:
    """The URL-safe alphabet ('-', '_') without padding decodes to the same URL."""
    url = "https://bridge.simplefin.test/simplefin/claim/~~~xy~"
    standard = _b64(url)
    assert "+" in standard  # '~' encodes with '+' in the standard alphabet
    assert standard.endswith("=")
    token = standard.replace("+", "-").replace("/", "_").rstrip("=")
    assert claim_url(token) == url


@pytest.mark.parametrize(
    ("token", "why"),
    [
        pytest.param("not base64 at all!", "not base64", id="not-base64"),
        pytest.param(_b64("\xff\xfe"), "not base64", id="not-ascii"),
        pytest.param(_b64("http://bridge.simplefin.test/claim/x"), "not an https", id="http"),
        pytest.param(
            _b64("https://user:pw@bridge.simplefin.test/claim/x"), "user name", id="credentials"
        ),
        pytest.param(_b64("https://bridge.simplefin.test/claim/x?a=1"), "query", id="query"),
        pytest.param(_b64("https://bridge.simplefin.test/claim/x#f"), "fragment", id="fragment"),
        pytest.param(_b64("https://bridge.simplefin.test/cl\x1baim"), "no URL", id="control"),
        pytest.param(_b64("https://bridge.simplefin.test/a b"), "no URL", id="space"),
        pytest.param(_b64("https:///claim/x"), "no host", id="no-host"),
    ],
)
def test_a_bad_setup_token_is_an_input_error_that_never_repeats_it(token: str, why: str) -> None:
    """Each unusable token: an InputError (exit 2) saying why, holding neither token nor URL."""
    with pytest.raises(InputError) as caught:
        claim_url(token)
    text = _message(caught)
    assert why in text
    assert token.strip() not in text
    assert "bridge.simplefin.test" not in text
    assert caught.value.exit_code == 2


# -- the access URL ---------------------------------------------------------------------------


def test_the_access_url_splits_into_an_origin_and_basic_credentials() -> None:
    """The URL without credentials is where requests go; user and password only in the header."""
    access = Access.parse(f"  {ACCESS}/ \n")
    assert access.url == "https://bridge.simplefin.test/simplefin"
    assert (access.username, access.password) == ("user123", "pass456")
    assert "pass456" not in repr(access)
    request = httpx.Request("GET", access.url)
    flow = access.auth.sync_auth_flow(request)
    sent = next(flow)
    assert sent.headers["Authorization"] == "Basic " + _b64("user123:pass456")


def test_percent_encoded_credentials_are_decoded_and_a_port_kept() -> None:
    """``%40`` in the user and ``%3A`` in the password are the characters they encode."""
    access = Access.parse("https://me%40home:p%3Ass%2Fw@bridge.simplefin.test:8443/sf")
    assert (access.username, access.password) == ("me@home", "p:ss/w")
    assert access.url == "https://bridge.simplefin.test:8443/sf"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("https://bridge.simplefin.test/simplefin", "no user name", id="no-user"),
        pytest.param("https://onlyuser@bridge.simplefin.test/sf", "no user name", id="no-pass"),
        pytest.param("http://user123:pass456@bridge.simplefin.test/sf", "not an https", id="http"),
        pytest.param("https://user123:pass456@bridge.simplefin.test/sf?x=1", "query", id="query"),
        pytest.param(
            "https://user123:pass456@bridge.simplefin.test:99999/", "malformed", id="port"
        ),
        pytest.param("https://user123:pass\x07456@bridge.simplefin.test/", "control", id="bell"),
    ],
)
def test_an_unusable_access_url_is_refused_without_repeating_it(text: str, why: str) -> None:
    """A ProviderError saying why; neither the URL nor its user or password in it."""
    with pytest.raises(ProviderError) as caught:
        Access.parse(text)
    message = _message(caught)
    assert why in message
    for part in ("user123", "pass456", "onlyuser", "bridge.simplefin.test"):
        assert part not in message


# -- the claim --------------------------------------------------------------------------------


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A respx router for an httpx client made with its transport."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mocked:
        yield mocked


def _claim(router: respx.MockRouter, token: str) -> str:
    async def run() -> str:
        transport = httpx.MockTransport(router.async_handler)
        async with httpx.AsyncClient(transport=transport) as client:
            return await claim(client, token)

    return asyncio.run(run())


def test_a_claim_posts_once_and_returns_the_access_url_as_a_json_record(
    router: respx.MockRouter,
) -> None:
    """200 with the access URL as text: the record to seal, the body sent empty."""
    route = router.post(CLAIM).mock(return_value=httpx.Response(200, text=ACCESS + "\n"))
    record = _claim(router, _b64(CLAIM))
    assert json.loads(record) == {"version": 1, "access_url": ACCESS}
    assert route.call_count == 1
    assert route.calls.last.request.content == b""


def test_a_claim_refused_with_403_warns_that_the_token_may_be_compromised(
    router: respx.MockRouter,
) -> None:
    """403: a ProviderError (exit 1) saying to treat the token as compromised and disable it."""
    router.post(CLAIM).mock(return_value=httpx.Response(403, text="Forbidden"))
    token = _b64(CLAIM)
    with pytest.raises(ProviderError) as caught:
        _claim(router, token)
    text = _message(caught)
    assert "compromised" in text
    assert "disable" in text
    assert token not in text
    assert CLAIM not in text
    assert caught.value.exit_code == 1


def test_a_claim_failing_with_500_says_so_with_the_answer_sanitised(
    router: respx.MockRouter,
) -> None:
    """500: a ProviderError naming the status and the server's text, escapes removed."""
    router.post(CLAIM).mock(return_value=httpx.Response(500, text="\x1b[31mdown\x1b[0m today"))
    with pytest.raises(ProviderError) as caught:
        _claim(router, _b64(CLAIM))
    assert "HTTP 500, down today" in caught.value.message
    assert "\x1b" not in caught.value.message


def test_a_claim_answer_over_the_limit_is_refused(router: respx.MockRouter) -> None:
    """A 200 body larger than the token limit is not read as an access URL."""
    body = ACCESS + "/" + "a" * TOKEN_BODY_LIMIT
    router.post(CLAIM).mock(return_value=httpx.Response(200, text=body))
    with pytest.raises(ProviderError) as caught:
        _claim(router, _b64(CLAIM))
    assert "user123" not in _message(caught)


def test_a_claim_answering_no_access_url_is_refused(router: respx.MockRouter) -> None:
    """A 200 whose text is not an https access URL with credentials is an error, not a record."""
    router.post(CLAIM).mock(return_value=httpx.Response(200, text="<html>welcome</html>"))
    with pytest.raises(ProviderError, match="access URL is not usable"):
        _claim(router, _b64(CLAIM))


def test_a_claim_that_gets_no_answer_is_not_retried(router: respx.MockRouter) -> None:
    """A connection error: one POST only (a claim works once), and an error saying so."""
    route = router.post(CLAIM).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ProviderError) as caught:
        _claim(router, _b64(CLAIM))
    assert route.call_count == 1
    assert "got no answer (ConnectError)" in caught.value.message
    assert CLAIM not in _message(caught)


# -- Account Sets -----------------------------------------------------------------------------


def _set(body: dict[str, Any] | str) -> AccountSet:
    return parse_account_set(body.encode() if isinstance(body, str) else json.dumps(body).encode())


def _account(key: str = "A1", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": key,
        "name": f"Checking {key}",
        "currency": "USD",
        "balance": "100.00",
        "available-balance": "90.00",
        "balance-date": 1_700_000_000,
        "transactions": [],
    }
    base.update(fields)
    return base


def test_a_version_1_account_set_reads_errors_and_org() -> None:
    """Version 1: ``errors`` as text, the institution from each account's ``org``."""
    body = {
        "errors": ["Connection to Chase may need attention", "  "],
        "accounts": [
            _account(org={"domain": "chase.com", "name": "Chase", "sfin-url": "https://x"}),
            _account("A2", org={"domain": "ally.com"}),
        ],
    }
    answer = _set(body)
    assert answer.version == 1
    assert [p.message for p in answer.problems] == ["Connection to Chase may need attention"]
    assert answer.problems[0].code is None
    assert [a.institution for a in answer.accounts] == ["Chase", "ally.com"]
    assert answer.accounts[0].balance == decimal.Decimal("100.00")
    assert answer.accounts[0].available == decimal.Decimal("90.00")


def test_a_version_2_account_set_reads_errlist_connections_and_conn_id() -> None:
    """Version 2: ``errlist`` objects with code and subject, institutions from ``connections``."""
    body = {
        "errlist": [
            {"code": "con.auth", "msg": "log in again", "conn_id": "CON-2"},
            {"code": "act.failed", "msg": "try later", "account_id": "A2"},
            {"code": "gen.warn", "msg": "capped"},
        ],
        "connections": [
            {"conn_id": "CON-1", "name": "Chase", "org_id": "o1", "org_url": "https://chase.com"},
            {"conn_id": "CON-2", "org_id": "o2", "org_url": "https://ally.com"},
        ],
        "accounts": [_account(conn_id="CON-1"), _account("A2", conn_id="CON-2")],
    }
    answer = _set(body)
    assert answer.version == 2
    assert answer.institutions == {"CON-1": "Chase", "CON-2": "https://ally.com"}
    assert [(a.id, a.conn_id, a.institution) for a in answer.accounts] == [
        ("A1", "CON-1", "Chase"),
        ("A2", "CON-2", "https://ally.com"),
    ]
    auth, failed, warn = answer.problems
    assert (auth.code, auth.conn_id, auth.needs_login, auth.account_failed) == (
        "con.auth",
        "CON-2",
        True,
        False,
    )
    assert (failed.account_id, failed.account_failed, failed.needs_login) == ("A2", True, False)
    assert (warn.code, warn.message, warn.needs_login, warn.account_failed) == (
        "gen.warn",
        "capped",
        False,
        False,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[]", id="list"),
        pytest.param("not json", id="text"),
        pytest.param('{"accounts": {}}', id="accounts-object"),
    ],
)
def test_an_answer_that_is_no_account_set_is_a_provider_error(body: str) -> None:
    """Not an object with an ``accounts`` list: one ProviderError for the whole answer."""
    with pytest.raises(ProviderError, match="not an Account Set"):
        _set(body)


def test_money_is_decimal_from_strings_and_from_json_numbers_without_float() -> None:
    """``"0.1"`` and a bare ``0.1`` both give Decimal("0.1"): the JSON text, no float step."""
    text = (
        '{"accounts": [{"id": "A1", "name": "n", "balance": 0.1, "available-balance": "0.1",'
        ' "transactions": [{"id": "t1", "posted": 1700000000, "amount": 1234567.8912345678},'
        ' {"id": "t2", "posted": 1700000000, "amount": "-0.30"}, '
        '{"id": "t3", "posted": 1700000000, "amount": 7}]}]}'
    )
    (account,) = _set(text).accounts
    assert account.balance == decimal.Decimal("0.1")
    assert str(account.balance) == "0.1"
    assert account.available == decimal.Decimal("0.1")
    amounts = [str(t.amount) for t in account.transactions]
    assert amounts == ["1234567.8912345678", "-0.30", "7"]
    assert all(isinstance(t.amount, decimal.Decimal) for t in account.transactions)


@pytest.mark.parametrize(
    ("balance", "amount"),
    [
        pytest.param('"NaN"', '"1.00"', id="balance-nan"),
        pytest.param('"Infinity"', '"1.00"', id="balance-infinity"),
        pytest.param("1e400", '"1.00"', id="balance-1e400"),
        pytest.param('""', '"1.00"', id="balance-empty"),
        pytest.param("NaN", '"1.00"', id="balance-json-nan"),
        pytest.param('"-Infinity"', '"1.00"', id="balance-minus-infinity"),
        pytest.param('"1.00"', '"NaN"', id="amount-nan"),
        pytest.param('"1.00"', "1e400", id="amount-1e400"),
        pytest.param('"1.00"', '""', id="amount-empty"),
        pytest.param('"1.00"', "Infinity", id="amount-json-infinity"),
        pytest.param('"1.00"', "true", id="amount-bool"),
    ],
)
def test_an_impossible_amount_makes_that_account_unreadable_and_the_others_stand(
    balance: str, amount: str
) -> None:
    """NaN, Infinity, 1e400 or "" as a balance or an amount: that account out, the other in."""
    bad = (
        f'{{"id": "BAD", "name": "bad", "balance": {balance}, "transactions": '
        f'[{{"id": "t1", "posted": 1700000000, "amount": {amount}}}]}}'
    )
    good = json.dumps(_account("GOOD"))
    answer = _set(f'{{"accounts": [{bad}, {good}]}}')
    assert [a.id for a in answer.accounts] == ["GOOD"]
    assert list(answer.unreadable) == ["BAD"]
    assert "balance" in answer.unreadable["BAD"] or "amount" in answer.unreadable["BAD"]


def test_epoch_fields_zero_is_pending_digits_are_read_and_out_of_range_is_unreadable() -> None:
    """``posted`` 0 is pending; "1700000000" a time; past year 9999 or negative: unreadable."""
    body = {
        "accounts": [
            _account(
                transactions=[
                    {"id": "p", "posted": 0, "amount": "-1.00", "transacted_at": "1700000000"},
                    {"id": "s", "posted": " 1700000000 ", "amount": "-2.00"},
                    {"id": "f", "posted": 1700000000, "amount": "-3.00", "pending": True},
                ]
            ),
            _account("LATE", **{"balance-date": MAX_EPOCH + 1}),
            _account("NEG", transactions=[{"id": "n", "posted": -5, "amount": "1"}]),
            _account("TEXT", transactions=[{"id": "x", "posted": "yesterday", "amount": "1"}]),
            _account("EDGE", **{"balance-date": MAX_EPOCH}),
        ]
    }
    answer = _set(body)
    assert sorted(answer.unreadable) == ["LATE", "NEG", "TEXT"]
    first, edge = answer.accounts
    assert edge.balance_date is not None
    assert edge.balance_date.year == 9999
    pending, posted, flagged = first.transactions
    assert (pending.pending, pending.posted) == (True, None)
    assert pending.transacted_at is not None
    assert int(pending.transacted_at.timestamp()) == 1_700_000_000
    assert posted.pending is False
    assert posted.posted is not None
    assert int(posted.posted.timestamp()) == 1_700_000_000
    assert (flagged.pending, flagged.posted) == (True, None)  # "pending": true wins


def test_custom_currency_urls_are_kept_and_codes_upper_cased() -> None:
    """A currency given as a URL is kept as given; an ISO code is upper-cased; junk is unreadable."""
    body = {
        "accounts": [
            _account("MILES", currency="https://www.example.com/flight-miles.json"),
            _account("EUR", currency="eur"),
            _account("NONE", currency=""),
            _account("JUNK", currency="dollars"),
        ]
    }
    answer = _set(body)
    assert {a.id: a.currency for a in answer.accounts} == {
        "MILES": "https://www.example.com/flight-miles.json",
        "EUR": "EUR",
        "NONE": "USD",
    }
    assert list(answer.unreadable) == ["JUNK"]


HOSTILE = [
    pytest.param("\x1b[31mred\x1b[0m alert\x07", "red alert", id="sgr-bell"),
    pytest.param("\x1b]0;pwned\x07title", "title", id="osc"),
    pytest.param("\x1b]8;;https://evil.test\x1b\\click\x1b]8;;\x1b\\", "click", id="osc8-link"),
    pytest.param("abc\u202edcba\u2066x\u2069", "abcdcbax", id="bidi"),
    pytest.param("hidden\rshown\n\tnext", "hidden shown next", id="cr-lf-tab"),
]


@pytest.mark.parametrize(("raw", "shown"), HOSTILE)
@pytest.mark.parametrize("version", [1, 2])
def test_hostile_server_messages_are_sanitised(raw: str, shown: str, version: int) -> None:
    """Escape sequences, OSC, bidi overrides and control characters never reach a message."""
    body: dict[str, Any] = {"accounts": []}
    if version == 1:
        body["errors"] = [raw]
    else:
        body["errlist"] = [{"code": "gen.warn", "msg": raw}]
    (problem,) = _set(body).problems
    assert problem.message == shown
    assert problem.message.isprintable()


@pytest.mark.parametrize("version", [1, 2])
def test_a_100_kb_message_is_bounded_and_a_registered_secret_echoed_is_masked(
    version: int,
) -> None:
    """A 100 KB message is cut to the limit; the access's password in a message is masked."""
    register_secret("s3cretPassw0rd")
    huge = "\x1b[2J" + "spam " * 20_000
    echoed = "bad credentials for s3cretPassw0rd at the bridge"
    body: dict[str, Any] = {"accounts": []}
    if version == 1:
        body["errors"] = [huge, echoed]
    else:
        body["errlist"] = [{"code": "gen.warn", "msg": m} for m in (huge, echoed)]
    long, secret = _set(body).problems
    assert len(long.message) <= MESSAGE_LIMIT
    assert long.message.startswith("spam spam")
    assert long.message.endswith("…")
    assert "s3cretPassw0rd" not in secret.message
    assert secret.message == "bad credentials for *** at the bridge"


def test_names_and_descriptions_from_the_server_are_made_plain() -> None:
    """An account name and a description with escapes are kept as one printable line."""
    body = {
        "accounts": [
            _account(
                name="\x1b[1mChecking\x1b[0m\n(1234)",
                transactions=[
                    {
                        "id": "t",
                        "posted": 1_700_000_000,
                        "amount": "1",
                        "description": "a\x1b]0;x\x07b",
                    }
                ],
            )
        ]
    }
    (account,) = _set(body).accounts
    assert account.name == "Checking (1234)"
    assert account.transactions[0].description == "ab"


# -- the daily budget -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(None, DEFAULT_DAILY_REQUESTS, id="default"),
        pytest.param((1, "env"), 1, id="one"),
        pytest.param((96, "env"), 96, id="ninety-six"),
        pytest.param((" 30 ", "env"), 30, id="text"),
    ],
)
def test_daily_limit_reads_1_to_96_and_defaults_to_24(
    given: tuple[object, str] | None, expected: int
) -> None:
    """No setting: 24; a whole number from 1 to 96 (an int or its text): that number."""
    options = {} if given is None else {"daily_requests": given}
    assert daily_limit(options) == expected


@pytest.mark.parametrize("raw", [True, False, 0, 97, -1, "x", "", "2.5", 2.5])
def test_daily_limit_refuses_anything_else_naming_where_it_was_set(raw: object) -> None:
    """Bools, 0, 97, text that is no whole number: a ConfigError naming the setting's source."""
    where = "DASHTAM_SIMPLEFIN_DAILY_REQUESTS (environment)"
    with pytest.raises(ConfigError) as caught:
        daily_limit({"daily_requests": (raw, where)})
    assert where in caught.value.message
    assert "1 to 96" in caught.value.message
