"""The sandbox's Plaid server over real HTTPS: keys, Link, sync over days, faults, login, CORS."""

from __future__ import annotations

import decimal
import json
import re
import ssl
from typing import TYPE_CHECKING, Any

import pytest
from plaid_sandbox_support import PlaidApi

from dashtam_cli.sandbox.plaid import PASSWORD, USERNAME, allowed_origin, dumps

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sandbox_support import RunningSandbox

DAY = 86_400
LISTENER = "https://127.0.0.1:8182"


@pytest.fixture
def plaid_for(start_sandbox: Callable[..., RunningSandbox]) -> Iterator[Callable[..., PlaidApi]]:
    """Start a sandbox with ``SandboxConfig`` overrides and return a Plaid client of it."""
    clients: list[PlaidApi] = []

    def make(**overrides: Any) -> PlaidApi:
        client = PlaidApi(start_sandbox(**overrides))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def plaid(plaid_for: Callable[..., PlaidApi]) -> PlaidApi:
    """A Plaid client of a sandbox with small data and no faults."""
    return plaid_for(transactions_per_account=40)


def _state(
    pages: list[dict[str, Any]], state: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Apply pages as a client does: added, then modified, then removed."""
    state = dict(state or {})
    for page in pages:
        for item in page["added"] + page["modified"]:
            state[item["transaction_id"]] = item
        for item in page["removed"]:
            state.pop(item["transaction_id"], None)
    return state


# -- keys, headers, errors ------------------------------------------------------------------


def test_wrong_or_missing_keys_are_refused_in_plaids_error_shape(plaid: PlaidApi) -> None:
    """A wrong secret is INVALID_API_KEYS, none is MISSING_FIELDS; both in Plaid's error JSON."""
    wrong = plaid.raw(
        "/sandbox/public_token/create",
        {"client_id": plaid.running.config.plaid_client_id, "secret": "wrong", "institution_id": "ins_109508",
         "initial_products": ["transactions"]},
        keys=False,
    )  # fmt: skip
    assert wrong.status_code == 400
    body = wrong.json()
    assert body["error_code"] == "INVALID_API_KEYS"
    assert body["error_type"] == "INVALID_INPUT"
    assert re.fullmatch(r"[A-Za-z0-9]{15}", body["request_id"])
    assert set(body) >= {
        "error_type",
        "error_code",
        "error_message",
        "display_message",
        "request_id",
    }
    missing = plaid.raw("/item/get", {"access_token": "x"}, keys=False)
    assert missing.json()["error_code"] == "MISSING_FIELDS"


def test_keys_in_headers_are_accepted(plaid: PlaidApi) -> None:
    """PLAID-CLIENT-ID and PLAID-SECRET headers stand in for the body's client_id and secret."""
    config = plaid.running.config
    answer = plaid.raw(
        "/sandbox/public_token/create",
        {"institution_id": "ins_109508", "initial_products": ["transactions"]},
        keys=False,
        headers={"PLAID-CLIENT-ID": config.plaid_client_id, "PLAID-SECRET": config.plaid_secret},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["public_token"].startswith("public-sandbox-")


def test_another_plaid_version_is_refused(plaid: PlaidApi) -> None:
    """Plaid-Version 2020-09-14 is served; another version is refused, not silently accepted."""
    answer = plaid.raw("/item/get", {"access_token": "x"}, headers={"Plaid-Version": "2019-05-29"})
    assert answer.json()["error_code"] == "INVALID_HEADERS"


# -- Link, public token, item -----------------------------------------------------------------


def _link_token(plaid: PlaidApi, **extra: Any) -> str:
    body = {
        "client_name": "dashtam",
        "language": "en",
        "country_codes": ["US"],
        "user": {"client_user_id": "dashtam-user"},
        "products": ["transactions"],
        **extra,
    }
    token: str = plaid.call("/link/token/create", body)["link_token"]
    return token


def _stand_in(
    plaid: PlaidApi, link_token: str, password: str = PASSWORD, origin: str = LISTENER
) -> Any:
    return plaid.http.post(
        plaid.root + "/link/stand-in/complete",
        json={"link_token": link_token, "username": USERNAME, "password": password, "institution_id": "ins_109509"},
        headers={"Origin": origin},
    )  # fmt: skip


def test_stand_in_link_makes_a_public_token_that_exchanges_once(plaid: PlaidApi) -> None:
    """Link token, stand-in login with user_good/pass_good, exchange once; a second exchange fails."""
    link = _link_token(plaid)
    assert link.startswith("link-sandbox-")
    assert _stand_in(plaid, link, password="wrong").status_code == 400
    answer = _stand_in(plaid, link)
    assert answer.status_code == 200, answer.text
    assert answer.json()["institution"] == {
        "name": "First Gingham Credit Union",
        "institution_id": "ins_109509",
    }
    public = answer.json()["public_token"]
    exchanged = plaid.call("/item/public_token/exchange", {"public_token": public})
    assert exchanged["access_token"].startswith("access-sandbox-")
    item = plaid.call("/item/get", {"access_token": exchanged["access_token"]})["item"]
    assert item["item_id"] == exchanged["item_id"]
    assert item["institution_id"] == "ins_109509"
    plaid.error("/item/public_token/exchange", {"public_token": public}, "INVALID_PUBLIC_TOKEN")


def test_link_token_needs_its_required_fields(plaid: PlaidApi) -> None:
    """/link/token/create without client_name, or without products outside update mode, fails."""
    plaid.error("/link/token/create", {"language": "en", "country_codes": ["US"],
                "user": {"client_user_id": "u"}, "products": ["transactions"]}, "MISSING_FIELDS")  # fmt: skip
    with pytest.raises(AssertionError, match="INVALID_FIELD"):
        _link_token(plaid, products=None)


def test_item_remove_revokes_the_access_token(plaid: PlaidApi) -> None:
    """After /item/remove, the access token is INVALID_ACCESS_TOKEN everywhere."""
    token, _item = plaid.link()
    assert set(plaid.call("/item/remove", {"access_token": token})) == {"request_id"}
    plaid.error("/accounts/get", {"access_token": token}, "INVALID_ACCESS_TOKEN")
    plaid.error("/item/get", {"access_token": token}, "INVALID_ACCESS_TOKEN")


def test_reset_login_requires_update_mode_and_keeps_the_item(plaid: PlaidApi) -> None:
    """reset_login makes data calls ITEM_LOGIN_REQUIRED until Link in update mode completes.

    The item, its accounts and its transactions stay the same across the repair.
    """
    token, item_id = plaid.link()
    before = plaid.call("/accounts/get", {"access_token": token})["accounts"]
    assert plaid.call("/sandbox/item/reset_login", {"access_token": token})["reset_login"] is True
    error = plaid.error("/accounts/get", {"access_token": token}, "ITEM_LOGIN_REQUIRED")
    assert error["error_type"] == "ITEM_ERROR"
    plaid.error("/transactions/sync", {"access_token": token}, "ITEM_LOGIN_REQUIRED")
    assert plaid.call("/item/get", {"access_token": token})["item"]["error"]["error_code"] == (
        "ITEM_LOGIN_REQUIRED"
    )
    update = _link_token(plaid, access_token=token, products=None)
    answer = _stand_in(plaid, update)
    assert answer.status_code == 200, answer.text
    after = plaid.call("/accounts/get", {"access_token": token})
    assert after["item"]["item_id"] == item_id
    assert after["item"]["error"] is None
    assert [a["account_id"] for a in after["accounts"]] == [a["account_id"] for a in before]


# -- transactions/sync ------------------------------------------------------------------------


def test_sync_pages_with_count_has_more_and_next_cursor(plaid: PlaidApi) -> None:
    """Pages of at most ``count`` until has_more is false; together they hold every transaction once.

    With nothing new, the last cursor answers empty lists and itself again.
    """
    token, _item = plaid.link()
    pages, cursor = plaid.sync_all(token, count=25)
    assert len(pages) > 3
    assert all(len(p["added"]) <= 25 for p in pages)
    assert [p["has_more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    ids = [t["transaction_id"] for p in pages for t in p["added"]]
    assert len(ids) == len(set(ids))
    assert len(ids) == 40 * 2 + 8 * 3 + 6  # checking and card, three small accounts, 6 pending
    again = plaid.call("/transactions/sync", {"access_token": token, "cursor": cursor})
    assert (again["added"], again["modified"], again["removed"]) == ([], [], [])
    assert again["next_cursor"] == cursor
    assert again["has_more"] is False
    for bad in (0, 501, "10"):
        plaid.error("/transactions/sync", {"access_token": token, "count": bad}, "INVALID_FIELD")
    plaid.error(
        "/transactions/sync", {"access_token": token, "cursor": "not-a-cursor"}, "INVALID_FIELD"
    )


def test_sync_over_days_posts_pending_modifies_and_removes(plaid: PlaidApi) -> None:
    """The next morning: pending ones removed and posted under new ids, one modified, one removed.

    Each posted transaction names its pending one in ``pending_transaction_id``;
    the modified one differs only in amount; the state a client builds equals
    a fresh full sync's.
    """
    token, _item = plaid.link()
    pages, cursor = plaid.sync_all(token)
    state = _state(pages)
    pending = {t["transaction_id"] for t in state.values() if t["pending"]}
    assert len(pending) == 6
    same_day, _ = plaid.sync_all(token, cursor)
    assert same_day[0]["added"] == []
    plaid.running.clock.advance(2 * DAY)  # past 06:00 UTC the next day, whatever the hour now
    later, _ = plaid.sync_all(token, cursor)
    added = [t for p in later for t in p["added"]]
    modified = [t for p in later for t in p["modified"]]
    removed = {t["transaction_id"] for p in later for t in p["removed"]}
    assert {t["pending_transaction_id"] for t in added} == pending
    assert all(not t["pending"] and t["transaction_id"] not in pending for t in added)
    assert pending < removed
    (gone,) = removed - pending
    assert gone in state
    (changed,) = modified
    old = state[changed["transaction_id"]]
    assert changed["amount"] - old["amount"] == decimal.Decimal("1.25")
    assert {k: v for k, v in changed.items() if k != "amount"} == {
        k: v for k, v in old.items() if k != "amount"
    }
    fresh, _ = plaid.sync_all(token)
    assert _state(later, state) == _state(fresh)


def test_a_cursor_can_be_replayed(plaid: PlaidApi) -> None:
    """The same cursor answers the same page again (a client that crashed before saving retries)."""
    token, _item = plaid.link()
    first = plaid.call("/transactions/sync", {"access_token": token, "count": 30})
    second = plaid.call(
        "/transactions/sync", {"access_token": token, "cursor": first["next_cursor"], "count": 30}
    )
    again = plaid.call(
        "/transactions/sync", {"access_token": token, "cursor": first["next_cursor"], "count": 30}
    )
    strip = ("request_id",)
    assert {k: v for k, v in second.items() if k not in strip} == {
        k: v for k, v in again.items() if k not in strip
    }


def test_mutation_during_pagination_once_then_restart_succeeds(
    plaid_for: Callable[..., PlaidApi],
) -> None:
    """The ``mutation`` fault fails the second page once; restarting from the first cursor works.

    The restarted paging also carries the transaction whose arrival the error reported.
    """
    plaid = plaid_for(transactions_per_account=40, plaid_faults=("mutation",))
    token, _item = plaid.link()
    first = plaid.call("/transactions/sync", {"access_token": token, "count": 50})
    assert first["has_more"] is True
    error = plaid.error(
        "/transactions/sync",
        {"access_token": token, "cursor": first["next_cursor"], "count": 50},
        "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
    )
    assert error["error_type"] == "TRANSACTIONS_ERROR"
    pages, _ = plaid.sync_all(token, "", count=50)
    names = [t["name"] for p in pages for t in p["added"]]
    assert "CORNER COFFEE LATE ARRIVAL" in names
    assert len(names) == 40 * 2 + 8 * 3 + 6 + 1


def test_rate_limit_and_server_error_faults_come_once_each(
    plaid_for: Callable[..., PlaidApi],
) -> None:
    """``rate-limit`` answers 429 RATE_LIMIT_EXCEEDED, ``server-error`` 500 API_ERROR, then data."""
    plaid = plaid_for(transactions_per_account=5, plaid_faults=("server-error", "rate-limit"))
    token, _item = plaid.link()
    limited = plaid.error("/accounts/get", {"access_token": token}, "RATE_LIMIT_EXCEEDED", 429)
    assert limited["error_type"] == "RATE_LIMIT_EXCEEDED"
    failed = plaid.error(
        "/transactions/sync", {"access_token": token}, "INTERNAL_SERVER_ERROR", 500
    )
    assert failed["error_type"] == "API_ERROR"
    assert plaid.call("/accounts/get", {"access_token": token})["accounts"]


def test_unknown_fault_names_are_refused(plaid_for: Callable[..., PlaidApi]) -> None:
    """A misspelt fault name is an error at start, not a silently fault-free sandbox."""
    with pytest.raises(ValueError, match="unknown plaid_faults: mutations"):
        plaid_for(plaid_faults=("mutations",))


# -- amounts and currencies -----------------------------------------------------------------


def test_amounts_are_exact_decimal_text_that_floats_would_round(plaid: PlaidApi) -> None:
    """Amounts are JSON numbers whose digits a float loses; a non-USD and an unofficial currency.

    The crypto wallet has ``unofficial_currency_code`` BTC and no ISO code; the
    euro account is EUR; some amounts have 18 decimals.
    """
    token, _item = plaid.link()
    answer = plaid.raw("/accounts/get", {"access_token": token})
    accounts = {a["name"]: a for a in plaid.parse(answer)["accounts"]}
    wallet = accounts["Crypto Wallet"]["balances"]
    assert (wallet["iso_currency_code"], wallet["unofficial_currency_code"]) == (None, "BTC")
    assert accounts["Euro Savings"]["balances"]["iso_currency_code"] == "EUR"
    assert isinstance(wallet["current"], decimal.Decimal)
    assert decimal.Decimal(repr(float(wallet["current"]))) != wallet["current"]
    assert format(wallet["current"], "f") in answer.text
    pages, _ = plaid.sync_all(token)
    btc = [t["amount"] for p in pages for t in p["added"] if t["unofficial_currency_code"] == "BTC"]
    assert btc
    assert all(-t.as_tuple().exponent == 18 for t in btc if isinstance(t.as_tuple().exponent, int))


def test_dumps_writes_decimals_digit_for_digit() -> None:
    """The sandbox's JSON writer keeps every digit of a Decimal and writes it as a number."""
    text = dumps({"a": [decimal.Decimal("0.123456789012345678901"), None, True, "x"]})
    assert text == '{"a":[0.123456789012345678901,null,true,"x"]}'
    assert json.loads(text, parse_float=decimal.Decimal)["a"][0] == decimal.Decimal(
        "0.123456789012345678901"
    )


# -- investments ------------------------------------------------------------------------------


def test_holdings_with_securities_and_cost_basis(plaid: PlaidApi) -> None:
    """Holdings name securities the answer lists; each has a cost basis; only investment accounts."""
    token, _item = plaid.link()
    body = plaid.call("/investments/holdings/get", {"access_token": token})
    securities = {s["security_id"] for s in body["securities"]}
    assert body["holdings"]
    assert all(h["security_id"] in securities for h in body["holdings"])
    assert all(isinstance(h["cost_basis"], decimal.Decimal) for h in body["holdings"])
    assert {a["type"] for a in body["accounts"]} == {"investment"}


def test_investment_transactions_page_with_offset_and_count(
    plaid_for: Callable[..., PlaidApi],
) -> None:
    """Pages by offset and count add up to total_investment_transactions; count over 500 fails."""
    plaid = plaid_for(transactions_per_account=60)
    token, _item = plaid.link()
    query = {"access_token": token, "start_date": "2000-01-01", "end_date": "2100-01-01"}
    seen: list[str] = []
    total = None
    while total is None or len(seen) < total:
        body = plaid.call(
            "/investments/transactions/get", {**query, "options": {"count": 5, "offset": len(seen)}}
        )
        total = body["total_investment_transactions"]
        assert body["investment_transactions"]
        assert len(body["investment_transactions"]) <= 5
        seen += [t["investment_transaction_id"] for t in body["investment_transactions"]]
    assert total == 12
    assert len(set(seen)) == total
    plaid.error(
        "/investments/transactions/get", {**query, "options": {"count": 501}}, "INVALID_FIELD"
    )
    plaid.error(
        "/investments/transactions/get", {**query, "start_date": "2020-1-1"}, "INVALID_FIELD"
    )


def test_products_the_item_lacks_are_refused(plaid: PlaidApi) -> None:
    """An item linked for transactions only is refused /investments/holdings/get."""
    token, _item = plaid.link(("transactions",))
    plaid.error("/investments/holdings/get", {"access_token": token}, "PRODUCTS_NOT_SUPPORTED")


def test_same_seed_same_data(plaid_for: Callable[..., PlaidApi]) -> None:
    """Two sandboxes of one seed give their first items the same account and transaction ids."""
    found = []
    for _ in range(2):
        plaid = plaid_for(transactions_per_account=10, seed=11)
        token, item_id = plaid.link()
        pages, _ = plaid.sync_all(token)
        found.append((item_id, sorted(t["transaction_id"] for p in pages for t in p["added"])))
    assert found[0] == found[1]


# -- the stand-in Link ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [LISTENER, "https://127.0.0.1:1", "https://[::1]:65535"])
def test_stand_in_allows_the_listeners_origins(plaid: PlaidApi, origin: str) -> None:
    """The preflight and the answer echo a loopback listener's https origin, and only it."""
    preflight = plaid.http.options(
        plaid.root + "/link/stand-in/complete",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    answer = _stand_in(plaid, _link_token(plaid), origin=origin)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8182",
        "https://localhost:8182",
        "https://evil.example",
        "https://127.0.0.1.evil.example:8182",
        "https://127.0.0.1:8182.evil.example",
        "https://127.0.0.1:99999",
        "https://127.0.0.1:0",
        "https://127.0.0.1",
        "https://127.0.0.2:8182",
        "null",
        "*",
        "https://127.0.0.1:8182\r\nX-Injected: 1",
    ],
)
def test_stand_in_refuses_other_origins(plaid: PlaidApi, origin: str) -> None:
    """Any other origin gets 403 without an Access-Control-Allow-Origin, preflight or not."""
    assert not allowed_origin(origin)
    if "\r" in origin:
        return  # not sendable as a header; allowed_origin above is what the server applies
    link = _link_token(plaid)
    preflight = plaid.http.options(
        plaid.root + "/link/stand-in/complete", headers={"Origin": origin}
    )
    answer = _stand_in(plaid, link, origin=origin)
    for response in (preflight, answer):
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    # The refused attempt made no item: the token still works for the listener's origin.
    assert _stand_in(plaid, link).status_code == 200
    assert len(plaid.running.sandbox.plaid.items) == 1


def test_stand_in_script_defines_plaid_create_and_loads_nothing_else(plaid: PlaidApi) -> None:
    """The script is JavaScript that defines window.Plaid and names no URL but the sandbox's own."""
    answer = plaid.http.get(plaid.root + "/link/v2/stable/link-initialize.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/javascript")
    script = answer.text
    assert "window.Plaid = {create: create}" in script
    assert "onSuccess" in script
    assert "onExit" in script
    assert set(re.findall(r"https?://[^\"' ]+", script)) == {plaid.root}
    for loader in (
        "innerHTML",
        "import(",
        'createElement("script',
        "src",
        "eval(",
        "XMLHttpRequest",
    ):
        assert loader not in script


def _drive(
    plaid: PlaidApi, tmp_path: Any, page: bytes, *, update: bool = False
) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """complete_link against a stand-in listener serving ``page``: its result and the requests."""
    import asyncio
    import threading

    from dashtam_cli.sandbox.http import HttpServer, Response
    from dashtam_cli.sandbox.plaid import complete_link
    from dashtam_cli.sandbox.tls import make_sandbox_tls

    seen: list[tuple[str, str, bytes]] = []

    async def listener(request: Any) -> Response:
        seen.append((request.method, request.path, request.body))
        if request.method == "GET":
            return Response(200, page, content_type="text/html")
        return Response(200, b'{"ok":true}')

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    context, ca = make_sandbox_tls(tmp_path)
    server = HttpServer(listener, ssl_context=context)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        result = complete_link(
            f"https://127.0.0.1:{server.port}/link?state=S-123",
            plaid_url=plaid.root,
            client_id=plaid.running.config.plaid_client_id,
            secret=plaid.running.config.plaid_secret,
            sandbox_verify=ssl.create_default_context(cafile=plaid.running.ca_path),
            listener_verify=ssl.create_default_context(cafile=ca),
            update=update,
        )
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    return result, seen


def test_complete_link_drives_a_hosted_page_without_a_browser(
    plaid: PlaidApi, tmp_path: Any
) -> None:
    """complete_link GETs the page, makes a public token and posts state and fields to /link/done."""
    result, seen = _drive(plaid, tmp_path, b"<html>Plaid.create({token: 'link-sandbox-00'})</html>")
    assert result == {"status": 200, "ok": True}
    assert [(m, p) for m, p, _ in seen] == [("GET", "/link"), ("POST", "/link/done")]
    posted = json.loads(seen[1][2])
    assert posted["state"] == "S-123"
    assert posted["fields"]["institution"] == "First Platypus Bank"
    exchanged = plaid.call(
        "/item/public_token/exchange", {"public_token": posted["fields"]["public_token"]}
    )
    assert exchanged["access_token"].startswith("access-sandbox-")


def test_complete_link_in_update_mode_repairs_the_items_login(
    plaid: PlaidApi, tmp_path: Any
) -> None:
    """With update, complete_link uses the page's link token: the item answers data calls again."""
    token, item_id = plaid.link()
    plaid.call("/sandbox/item/reset_login", {"access_token": token})
    link = _link_token(plaid, access_token=token, products=None)
    page = f"<html><script>Plaid.create({{token: {json.dumps(link)}}})</script></html>"
    result, seen = _drive(plaid, tmp_path, page.encode(), update=True)
    assert result == {"status": 200, "ok": True}
    assert json.loads(seen[1][2])["state"] == "S-123"
    assert plaid.call("/accounts/get", {"access_token": token})["item"]["item_id"] == item_id
    assert len(plaid.running.sandbox.plaid.items) == 1  # repaired, not a second item


# -- the stand-in Link's OAuth institution ------------------------------------------------------

OAUTH_BANK = "ins_127287"
RETURN_URI = LISTENER + "/link"


def _post(plaid: PlaidApi, path: str, body: dict[str, Any]) -> Any:
    return plaid.http.post(plaid.root + path, json=body, headers={"Origin": LISTENER})


def _hand_off(plaid: PlaidApi, link: str) -> str:
    """The stand-in sends the window to the OAuth bank; the bank sends it back: that address."""
    answer = _post(
        plaid, "/link/stand-in/oauth", {"link_token": link, "institution_id": OAUTH_BANK}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == LISTENER
    bank = answer.json()["oauth_url"]
    assert bank.startswith(plaid.root + "/link/stand-in/bank?oauth_state_id=")
    back = plaid.http.get(bank)
    assert back.status_code == 302
    location: str = back.headers["location"]
    assert location == RETURN_URI + "?oauth_state_id=" + bank.split("oauth_state_id=", 1)[1]
    return location


def test_an_oauth_institution_sends_the_window_back_and_link_finishes_once(plaid: PlaidApi) -> None:
    """Hand-off, the bank's redirect to the redirect_uri, then Link again with that address.

    The public token is for a new item at the OAuth bank; the same
    oauth_state_id cannot finish a second time, nor send the window back again.
    """
    link = _link_token(plaid, redirect_uri=RETURN_URI)
    location = _hand_off(plaid, link)
    done = _post(
        plaid, "/link/stand-in/complete", {"link_token": link, "received_redirect_uri": location}
    )
    assert done.status_code == 200, done.text
    assert done.json()["institution"] == {
        "name": "Platypus OAuth Bank",
        "institution_id": OAUTH_BANK,
    }
    exchanged = plaid.call(
        "/item/public_token/exchange", {"public_token": done.json()["public_token"]}
    )
    item = plaid.call("/item/get", {"access_token": exchanged["access_token"]})["item"]
    assert item["institution_id"] == OAUTH_BANK
    again = _post(
        plaid, "/link/stand-in/complete", {"link_token": link, "received_redirect_uri": location}
    )
    assert again.status_code == 400
    assert again.json()["error_code"] == "OAUTH_STATE_ID_ALREADY_PROCESSED"
    bank = plaid.root + "/link/stand-in/bank?" + location.split("?", 1)[1]
    assert plaid.http.get(bank).status_code == 400
    assert len(plaid.running.sandbox.plaid.items) == 1


@pytest.mark.parametrize(
    ("received", "code"),
    [
        (RETURN_URI + "?oauth_state_id=0123456789abcdef", "OAUTH_STATE_ID_NOT_FOUND"),
        (RETURN_URI, "OAUTH_STATE_ID_NOT_FOUND"),
        ("{location}&oauth_state_id=other", "OAUTH_STATE_ID_NOT_FOUND"),
        ("https://127.0.0.1:9999/link?{query}", "INVALID_FIELD"),
        (LISTENER + "/other?{query}", "INVALID_FIELD"),
        ("other token", "INCORRECT_LINK_TOKEN"),
    ],
)
def test_a_wrong_return_ends_link_with_an_oauth_error(
    plaid: PlaidApi, received: str, code: str
) -> None:
    """An unknown or doubled id, another address or another link token: Plaid's error fields, no item."""
    link = _link_token(plaid, redirect_uri=RETURN_URI)
    location = _hand_off(plaid, link)
    token = link
    if received == "other token":
        token, received = _link_token(plaid, redirect_uri=RETURN_URI), location
    received = received.format(location=location, query=location.split("?", 1)[1])
    answer = _post(
        plaid, "/link/stand-in/complete", {"link_token": token, "received_redirect_uri": received}
    )
    assert answer.status_code == 400
    error = answer.json()
    assert error["error_type"] == "OAUTH_ERROR"
    assert error["error_code"] == code
    assert error["display_message"]
    assert plaid.running.sandbox.plaid.items == {}


def test_an_oauth_institution_needs_a_redirect_uri_and_its_own_site(plaid: PlaidApi) -> None:
    """No redirect_uri in the link token: no hand-off; no password login at the OAuth bank either."""
    link = _link_token(plaid)
    answer = _post(
        plaid, "/link/stand-in/oauth", {"link_token": link, "institution_id": OAUTH_BANK}
    )
    assert answer.status_code == 400
    assert "redirect_uri" in answer.json()["error"]
    with_uri = _link_token(plaid, redirect_uri=RETURN_URI)
    plain = _post(
        plaid, "/link/stand-in/oauth", {"link_token": with_uri, "institution_id": "ins_109508"}
    )
    assert plain.status_code == 400
    password = _post(
        plaid,
        "/link/stand-in/complete",
        {
            "link_token": with_uri,
            "username": USERNAME,
            "password": PASSWORD,
            "institution_id": OAUTH_BANK,
        },
    )
    assert password.status_code == 400
    assert plaid.running.sandbox.plaid.items == {}
