"""The sandbox's SimpleFIN server over real HTTPS: claims, auth, ranges, budget, pending, shapes."""

from __future__ import annotations

import base64
import decimal
import json
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest

from dashtam_cli.sandbox.simplefin import CAP_WARNING, HOSTILE_MESSAGE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import httpx
    from sandbox_support import FakeClock, RunningSandbox

DAY = 86_400
ACCESS_URL = re.compile(r"^https://([0-9a-f]{32}):([0-9a-f]{64})@127\.0\.0\.1:(\d+)/simplefin$")
DECIMAL = re.compile(r"^-?\d+\.\d{2}$")


class Bridge:
    """A SimpleFIN client of one running sandbox, over HTTPS that verifies the sandbox's CA."""

    def __init__(self, running: RunningSandbox) -> None:
        """Talk to ``running``."""
        self.running = running
        self.http = running.client()

    @property
    def root(self) -> str:
        """The SimpleFIN root URL."""
        return self.running.base_url + "/simplefin"

    def claim_url(self) -> str:
        """A fresh setup token, decoded to its claim URL."""
        token = self.running.sandbox.simplefin_setup_token()
        return base64.b64decode(token, validate=True).decode()

    def claim(self) -> str:
        """Claim a fresh setup token; the access URL."""
        answer = self.http.post(self.claim_url())
        assert answer.status_code == 200, answer.text
        return answer.text

    def accounts(
        self, access: str | None, params: list[tuple[str, str | int]] | None = None
    ) -> httpx.Response:
        """GET /accounts with the access URL's credentials (none when ``access`` is None)."""
        auth = None
        if access is not None:
            parts = urllib.parse.urlsplit(access)
            auth = (parts.username or "", parts.password or "")
        query: list[tuple[str, str | int | float | bool | None]] = list(params or [])
        return self.http.get(self.root + "/accounts", params=query, auth=auth)

    def account_set(
        self, access: str, params: list[tuple[str, str | int]] | None = None
    ) -> dict[str, Any]:
        """The Account Set of a successful /accounts call."""
        answer = self.accounts(access, params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


@pytest.fixture
def bridge_for(
    start_sandbox: Callable[..., RunningSandbox],
) -> Iterator[Callable[..., Bridge]]:
    """Start a sandbox with ``SandboxConfig`` overrides and return a SimpleFIN client of it."""
    bridges: list[Bridge] = []

    def make(**overrides: Any) -> Bridge:
        bridge = Bridge(start_sandbox(**overrides))
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        bridge.http.close()


@pytest.fixture
def bridge(bridge_for: Callable[..., Bridge]) -> Bridge:
    """A SimpleFIN client of a default (version 2) sandbox."""
    return bridge_for()


def _credentials(access: str) -> tuple[str, str]:
    """The user and password of an access URL."""
    match = ACCESS_URL.match(access)
    assert match is not None, access
    return match[1], match[2]


def _now(clock: FakeClock) -> int:
    return int(clock())


def _by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in body["accounts"]}


def _without_time(accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The accounts without balance-date, which follows the clock from one call to the next."""
    return [{k: v for k, v in a.items() if k != "balance-date"} for a in accounts]


def _posted(body: dict[str, Any]) -> list[int]:
    return [t["posted"] for a in body["accounts"] for t in a["transactions"] if t["posted"]]


# -- setup token, claim, credentials -----------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_info_lists_the_served_version(bridge_for: Callable[..., Bridge], version: int) -> None:
    """GET /simplefin/info, without credentials, lists the protocol version the sandbox serves."""
    bridge = bridge_for(simplefin_version=version)
    answer = bridge.http.get(bridge.root + "/info")
    assert answer.status_code == 200
    assert answer.json() == {"versions": [f"{version}.0"]}


def test_create_page_shows_a_new_claimable_token_each_time(bridge: Bridge) -> None:
    """Each GET of /simplefin/create shows a new setup token (base64 of a claim URL) to paste."""
    tokens = []
    for _ in range(2):
        page = bridge.http.get(bridge.root + "/create")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "dashtam connect simplefin" in page.text
        match = re.search(r'<code id="setup-token"[^>]*>([A-Za-z0-9+/=]+)</code>', page.text)
        assert match is not None, page.text
        tokens.append(match[1])
    assert tokens[0] != tokens[1]
    for token in tokens:
        claim_url = base64.b64decode(token, validate=True).decode()
        assert claim_url.startswith(bridge.root + "/claim/")
        assert ACCESS_URL.match(bridge.http.post(claim_url).text)


def test_a_setup_token_is_claimed_once(bridge: Bridge) -> None:
    """The claim answers an access URL with 128-bit-plus random credentials once, then 403."""
    claim_url = bridge.claim_url()
    first = bridge.http.post(claim_url)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    match = ACCESS_URL.match(first.text)
    assert match is not None, first.text
    assert match[3] == bridge.running.base_url.rsplit(":", 1)[1]
    again = bridge.http.post(claim_url)
    assert again.status_code == 403
    assert match[2] not in again.text
    unknown = bridge.http.post(bridge.root + "/claim/" + "A" * 43)
    assert unknown.status_code == 403
    other = ACCESS_URL.match(bridge.claim())
    assert other is not None
    assert (other[1], other[2]) != (match[1], match[2])


def test_the_request_counts_do_not_keep_setup_tokens(bridge: Bridge) -> None:
    """The sandbox's per-path counts name claim paths without the token in them."""
    claim_url = bridge.claim_url()
    secret = claim_url.rsplit("/", 1)[1]
    bridge.http.post(claim_url)
    bridge.http.post(claim_url)
    counts = bridge.running.sandbox.counts
    assert counts["POST /simplefin/claim/*"] == 2
    assert not [key for key in counts if secret in key]


def test_accounts_need_the_access_urls_basic_credentials(bridge: Bridge) -> None:
    """/accounts is 403 without credentials, with a wrong password or user, and once revoked."""
    access = bridge.claim()
    user, password = _credentials(access)
    assert bridge.accounts(access).status_code == 200
    assert bridge.accounts(None).status_code == 403
    wrong_password = access.replace(password, "0" * 64)
    assert bridge.accounts(wrong_password).status_code == 403
    wrong_user = access.replace(user, "f" * 32)
    assert bridge.accounts(wrong_user).status_code == 403
    other = bridge.claim()  # another access's password does not open this one
    other_password = _credentials(other)[1]
    assert bridge.accounts(access.replace(password, other_password)).status_code == 403
    bridge.running.sandbox.simplefin.revoke(access)
    revoked = bridge.accounts(access)
    assert revoked.status_code == 403
    assert password not in revoked.text
    assert bridge.accounts(other).status_code == 200


# -- ranges and parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_a_range_over_90_days_is_cut_to_its_last_90_days_with_a_warning(
    bridge_for: Callable[..., Bridge], sandbox_clock: FakeClock, version: int
) -> None:
    """200 days asked: the last 90 days come back (as a 90-day request) plus the cap warning."""
    bridge = bridge_for(simplefin_version=version)
    access = bridge.claim()
    end = _now(sandbox_clock) - 5 * DAY
    capped = bridge.account_set(access, [("start-date", end - 200 * DAY), ("end-date", end)])
    exact = bridge.account_set(access, [("start-date", end - 90 * DAY), ("end-date", end)])
    older = bridge.account_set(
        access, [("start-date", end - 200 * DAY), ("end-date", end - 90 * DAY)]
    )
    posted = _posted(capped)
    assert posted
    assert min(posted) >= end - 90 * DAY
    assert max(posted) < end
    assert _posted(older)  # there was data in the part that was cut
    assert _without_time(capped["accounts"]) == _without_time(exact["accounts"])
    if version == 1:
        assert capped["errors"] == [CAP_WARNING]
        assert exact["errors"] == []
    else:
        assert capped["errlist"] == [{"code": "gen.warn", "msg": CAP_WARNING}]
        assert exact["errlist"] == []
    assert CAP_WARNING == "Requested date range exceeds limit of 90 days and was capped"


def test_end_date_is_exclusive_and_start_date_inclusive(
    bridge: Bridge, sandbox_clock: FakeClock
) -> None:
    """A transaction posted exactly at end-date is left out; one posted at start-date is in."""
    access = bridge.claim()
    now = _now(sandbox_clock)
    body = bridge.account_set(access, [("start-date", now - 80 * DAY), ("end-date", now)])
    account = next(a for a in body["accounts"] if a["transactions"])
    moment = account["transactions"][len(account["transactions"]) // 2]["posted"]
    ids_at = {t["id"] for t in account["transactions"] if t["posted"] == moment}

    def ids(start: int, end: int) -> set[str]:
        found = bridge.account_set(
            access, [("start-date", start), ("end-date", end), ("account", account["id"])]
        )
        (only,) = found["accounts"]
        return {t["id"] for t in only["transactions"]}

    assert ids_at <= ids(moment, moment + DAY)
    assert not ids_at & ids(moment - DAY, moment)
    assert ids_at <= ids(moment - DAY, moment + 1)


def test_pending_transactions_only_with_pending_1(bridge: Bridge, sandbox_clock: FakeClock) -> None:
    """pending=1 adds the checking and card pending transactions (posted 0); without, none."""
    access = bridge.claim()
    start = _now(sandbox_clock) - 10 * DAY
    without = _by_name(bridge.account_set(access, [("start-date", start)]))
    with_pending = _by_name(bridge.account_set(access, [("start-date", start), ("pending", 1)]))
    for name in ("Everyday Checking", "Sandbox Rewards Visa"):
        pending = [t for t in with_pending[name]["transactions"] if t.get("pending")]
        assert len(pending) == 3
        for item in pending:
            assert item["posted"] == 0
            assert _now(sandbox_clock) - 3 * DAY <= item["transacted_at"] <= _now(sandbox_clock)
        assert not [t for t in without[name]["transactions"] if t.get("pending")]
        assert all(t["posted"] > 0 for t in without[name]["transactions"])
        posted_ids = {t["id"] for t in without[name]["transactions"]}
        assert posted_ids == {t["id"] for t in with_pending[name]["transactions"]} - {
            t["id"] for t in pending
        }
    for name in ("High Yield Savings", "Individual Brokerage", "Example Air Miles"):
        assert not [t for t in with_pending[name]["transactions"] if t.get("pending")]


def test_balances_only_leaves_out_transactions(bridge: Bridge) -> None:
    """balances-only=1: the same accounts and balances, no transactions."""
    access = bridge.claim()
    full = _by_name(bridge.account_set(access, [("pending", 1)]))
    light = _by_name(bridge.account_set(access, [("pending", 1), ("balances-only", 1)]))
    assert set(full) == set(light)
    assert any(a["transactions"] for a in full.values())
    for name, account in light.items():
        assert account["transactions"] == []
        assert account["balance"] == full[name]["balance"]
        assert account["available-balance"] == full[name]["available-balance"]


def test_account_parameters_limit_the_answer_to_those_accounts(bridge: Bridge) -> None:
    """account=ID (repeatable) answers only those accounts; an unknown id adds nothing."""
    access = bridge.claim()
    everything = bridge.account_set(access)["accounts"]
    assert len(everything) == 5
    chosen = [everything[0]["id"], everything[3]["id"]]
    params: list[tuple[str, str | int]] = [("account", i) for i in chosen]
    some = bridge.account_set(access, [*params, ("account", "ACT-unknown")])
    assert [a["id"] for a in some["accounts"]] == chosen
    (one,) = bridge.account_set(access, [("account", everything[2]["id"])])["accounts"]
    assert _without_time([one]) == _without_time([everything[2]])


def test_a_start_date_that_is_not_a_number_is_refused(bridge: Bridge) -> None:
    """start-date must be epoch seconds: 400 with a plain-text reason."""
    access = bridge.claim()
    answer = bridge.accounts(access, [("start-date", "2025-01-01")])
    assert answer.status_code == 400
    assert "start-date" in answer.text
    later = bridge.accounts(access, [("start-date", 2000), ("end-date", 1000)])
    assert later.status_code == 400


# -- budget --------------------------------------------------------------------------------------


def test_budget_warns_past_the_warn_threshold_blocks_past_the_block_one_and_resets_daily(
    bridge_for: Callable[..., Bridge], sandbox_clock: FakeClock
) -> None:
    """Per access per UTC day: requests 4-5 warn (warn=3), the 6th is 429; the next day is fresh."""
    bridge = bridge_for(simplefin_budget_warn=3, simplefin_budget_block=5)
    noon = (_now(sandbox_clock) // DAY + 1) * DAY + 12 * 3600
    sandbox_clock.advance(noon - sandbox_clock())  # midday: the day cannot end mid-test
    access, other = bridge.claim(), bridge.claim()
    params: list[tuple[str, str | int]] = [("balances-only", 1)]
    for _ in range(3):
        assert bridge.account_set(access, params)["errlist"] == []
    for count in (4, 5):
        errlist = bridge.account_set(access, params)["errlist"]
        assert [e["code"] for e in errlist] == ["gen.warn"]
        assert f"{count} requests today" in errlist[0]["msg"]
    blocked = bridge.accounts(access, params)
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("text/plain")
    assert 0 < len(blocked.text) < 200
    assert bridge.account_set(other, params)["errlist"] == []  # counted per access
    sandbox_clock.advance(DAY)
    assert bridge.account_set(access, params)["errlist"] == []


def test_budget_warning_is_a_string_in_version_1(
    bridge_for: Callable[..., Bridge], sandbox_clock: FakeClock
) -> None:
    """Version 1 carries the budget warning as a string in errors."""
    bridge = bridge_for(simplefin_version=1, simplefin_budget_warn=1, simplefin_budget_block=9)
    sandbox_clock.advance((_now(sandbox_clock) // DAY + 1) * DAY + 12 * 3600 - sandbox_clock())
    access = bridge.claim()
    assert bridge.account_set(access)["errors"] == []
    (warning,) = bridge.account_set(access)["errors"]
    assert "2 requests today" in warning


# -- pending to posted ---------------------------------------------------------------------------


def test_pending_transactions_post_under_the_same_id_or_a_new_one_when_the_day_passes(
    bridge: Bridge, sandbox_clock: FakeClock
) -> None:
    """Two days on: every pending item is posted; most keep their id, one has a new id."""
    access = bridge.claim()
    start = _now(sandbox_clock) - 10 * DAY
    params: list[tuple[str, str | int]] = [("start-date", start), ("pending", 1)]
    before = _by_name(bridge.account_set(access, params))
    sandbox_clock.advance(2 * DAY)
    after = _by_name(bridge.account_set(access, params))
    for name in ("Everyday Checking", "Sandbox Rewards Visa"):
        pending = {t["id"]: t for t in before[name]["transactions"] if t.get("pending")}
        now_items = {t["id"]: t for t in after[name]["transactions"]}
        assert not [t for t in now_items.values() if t.get("pending") or t["posted"] == 0]
        kept = pending.keys() & now_items.keys()
        gone = pending.keys() - now_items.keys()
        assert len(kept) == 2
        assert len(gone) == 1
        for tid in kept:
            assert now_items[tid]["posted"] > pending[tid]["transacted_at"]
            assert now_items[tid]["transacted_at"] == pending[tid]["transacted_at"]
        assert any(now_items[t]["amount"] != pending[t]["amount"] for t in kept)  # a tip
        (old,) = (pending[t] for t in gone)
        new = [
            t
            for tid, t in now_items.items()
            if tid not in pending
            and t["transacted_at"] == old["transacted_at"]
            and t["description"] == old["description"]
        ]
        assert len(new) == 1
        assert new[0]["amount"] == old["amount"]
        assert new[0]["posted"] > 0
        # The balance moved by exactly what posted.
        final = [now_items[t]["amount"] for t in kept] + [new[0]["amount"]]
        moved = decimal.Decimal(after[name]["balance"]) - decimal.Decimal(before[name]["balance"])
        assert moved == sum((decimal.Decimal(a) for a in final), decimal.Decimal(0))


# -- shapes --------------------------------------------------------------------------------------


def test_version_2_shape(bridge: Bridge) -> None:
    """Version 2: errlist, connections, and accounts pointing into them by conn_id, no org."""
    body = bridge.account_set(bridge.claim(), [("pending", 1)])
    assert set(body) == {"errlist", "connections", "accounts"}
    connections = {c["conn_id"]: c for c in body["connections"]}
    assert len(connections) == 3
    for connection in connections.values():
        assert set(connection) == {"conn_id", "name", "org_id", "org_url", "sfin_url"}
        assert connection["sfin_url"] == bridge.root
    for account in body["accounts"]:
        assert account["conn_id"] in connections
        assert "org" not in account
    names = {connections[a["conn_id"]]["name"] for a in body["accounts"]}
    assert names == {"Sandbox Bank", "Sandbox Card Co", "Sandbox Brokerage"}


def test_version_1_shape(bridge_for: Callable[..., Bridge]) -> None:
    """Version 1: errors and accounts, each account with its org, no connections or conn_id."""
    bridge = bridge_for(simplefin_version=1)
    body = bridge.account_set(bridge.claim())
    assert set(body) == {"errors", "accounts"}
    for account in body["accounts"]:
        assert "conn_id" not in account
        assert set(account["org"]) == {"domain", "name", "sfin-url", "url", "id"}
        assert account["org"]["sfin-url"] == bridge.root


def test_accounts_are_a_bank_a_card_a_brokerage_and_miles(
    bridge: Bridge, sandbox_clock: FakeClock
) -> None:
    """Checking, savings, a card (negative balance, purchases negative), holdings, miles."""
    body = bridge.account_set(bridge.claim(), [("start-date", _now(sandbox_clock) - 90 * DAY)])
    accounts = _by_name(body)
    assert set(accounts) == {
        "Everyday Checking",
        "High Yield Savings",
        "Sandbox Rewards Visa",
        "Example Air Miles",
        "Individual Brokerage",
    }
    for account in accounts.values():
        assert isinstance(account["balance-date"], int)
        assert abs(account["balance-date"] - _now(sandbox_clock)) < 60
        ids = [t["id"] for t in account["transactions"]]
        assert len(ids) == len(set(ids))
    card = accounts["Sandbox Rewards Visa"]
    assert card["currency"] == "USD"
    assert card["balance"].startswith("-")
    assert any(t["description"].startswith("PAYMENT") for t in card["transactions"])
    purchases = [t for t in card["transactions"] if t["description"].split()[0] != "PAYMENT"]
    assert any(t["amount"].startswith("-") for t in purchases)
    assert all(
        not t["amount"].startswith("-")
        for t in card["transactions"]
        if t["description"].startswith("PAYMENT")
    )
    brokerage = accounts["Individual Brokerage"]
    assert len(brokerage["holdings"]) == 4
    for holding in brokerage["holdings"]:
        assert set(holding) == {
            "id",
            "created",
            "currency",
            "cost_basis",
            "description",
            "market_value",
            "purchase_price",
            "shares",
            "symbol",
        }
    miles = accounts["Example Air Miles"]
    assert miles["currency"] == bridge.root + "/currency/miles"
    document = bridge.http.get(miles["currency"])
    assert document.status_code == 200
    assert document.json() == {"name": "Example Airline Miles", "abbr": "miles"}


def test_two_years_of_history_with_stable_ids_for_the_same_seed(
    bridge_for: Callable[..., Bridge], sandbox_clock: FakeClock
) -> None:
    """The same seed gives the same ids and amounts; history reaches back about two years."""
    first, second = bridge_for(), bridge_for()
    now = _now(sandbox_clock)
    # From 740 days back: the two sandboxes started a moment apart, so their oldest
    # items may lie a second or two apart around 730 days.
    windows = [
        (now - 740 * DAY + 90 * DAY * i, now - 740 * DAY + 90 * DAY * (i + 1)) for i in range(9)
    ]
    seen: list[dict[str, Any]] = []
    for bridge in (first, second):
        access = bridge.claim()
        items = []
        for start, end in windows:
            body = bridge.account_set(access, [("start-date", start), ("end-date", end)])
            items += [
                (a["id"], t["id"], t["amount"]) for a in body["accounts"] for t in a["transactions"]
            ]
        seen.append({"items": sorted(items)})
    assert seen[0] == seen[1]
    assert len(seen[0]["items"]) > 200
    oldest = first.account_set(
        first.claim(), [("start-date", now - 730 * DAY), ("end-date", now - 640 * DAY)]
    )
    assert _posted(oldest)


def test_amounts_are_decimal_strings_in_the_json_text(bridge: Bridge) -> None:
    """Balances, transaction amounts and holding values are JSON strings, never numbers."""
    answer = bridge.accounts(bridge.claim(), [("pending", 1)])
    text = answer.text
    for field in ("balance", "available-balance", "amount", "cost_basis", "market_value"):
        assert f'"{field}":"' in text
        assert not re.search(rf'"{field}":\s*-?\d', text)
    body = answer.json()
    for account in body["accounts"]:
        shape = re.compile(r"^-?\d+$") if account["name"] == "Example Air Miles" else DECIMAL
        assert shape.match(account["balance"])
        assert shape.match(account["available-balance"])
        assert all(shape.match(t["amount"]) for t in account["transactions"])
        for holding in account.get("holdings", []):
            assert DECIMAL.match(holding["market_value"])
            assert DECIMAL.match(holding["cost_basis"])
            assert DECIMAL.match(holding["purchase_price"])


# -- injected errors and faults ------------------------------------------------------------------


def test_injected_account_and_connection_errors_in_version_2(
    bridge_for: Callable[..., Bridge],
) -> None:
    """act.failed drops the account, con.auth its connection's accounts, act.missingdata data."""
    clean = bridge_for()
    reference = {a["name"]: a for a in clean.account_set(clean.claim())["accounts"]}
    bridge = bridge_for(
        simplefin_failed_accounts=("savings",),
        simplefin_reauth_connections=("brokerage",),
        simplefin_missing_accounts=("card",),
    )
    body = bridge.account_set(bridge.claim())
    names = {a["name"] for a in body["accounts"]}
    assert names == {"Everyday Checking", "Sandbox Rewards Visa", "Example Air Miles"}
    by_code = {e["code"]: e for e in body["errlist"]}
    assert set(by_code) == {"act.failed", "con.auth", "act.missingdata"}
    connections = {c["name"]: c["conn_id"] for c in body["connections"]}
    assert by_code["con.auth"]["conn_id"] == connections["Sandbox Brokerage"]
    assert "account_id" not in by_code["con.auth"]
    assert by_code["act.failed"]["account_id"] == reference["High Yield Savings"]["id"]
    assert by_code["act.failed"]["conn_id"] == connections["Sandbox Bank"]
    assert by_code["act.missingdata"]["account_id"] == reference["Sandbox Rewards Visa"]["id"]
    card = next(a for a in body["accounts"] if a["name"] == "Sandbox Rewards Visa")
    assert card["transactions"] == []
    assert card["balance"] == reference["Sandbox Rewards Visa"]["balance"]


def test_injected_errors_are_strings_in_version_1(bridge_for: Callable[..., Bridge]) -> None:
    """Version 1 gives the same failures as human strings in errors."""
    bridge = bridge_for(
        simplefin_version=1,
        simplefin_failed_accounts=("savings",),
        simplefin_reauth_connections=("brokerage",),
    )
    body = bridge.account_set(bridge.claim())
    assert len(body["errors"]) == 2
    assert all(isinstance(e, str) for e in body["errors"])
    assert any("High Yield Savings" in e for e in body["errors"])
    assert any("Sandbox Brokerage" in e for e in body["errors"])
    assert len(body["accounts"]) == 3


def test_a_failed_access_has_gen_auth_and_no_accounts(bridge_for: Callable[..., Bridge]) -> None:
    """simplefin_access_failed: 200 with gen.auth, no accounts and no connections."""
    bridge = bridge_for(simplefin_access_failed=True)
    body = bridge.account_set(bridge.claim())
    assert body["accounts"] == []
    assert body["connections"] == []
    assert [e["code"] for e in body["errlist"]] == ["gen.auth"]


def test_the_hostile_message_reaches_the_client_unchanged(
    bridge_for: Callable[..., Bridge],
) -> None:
    """simplefin_hostile: a warning with escape sequences and 10,000+ characters, as sent."""
    bridge = bridge_for(simplefin_hostile=True)
    answer = bridge.accounts(bridge.claim())
    assert "\\u001b[31;1m" in answer.text  # JSON-escaped on the wire, raw once decoded
    messages = [e["msg"] for e in answer.json()["errlist"]]
    assert HOSTILE_MESSAGE in messages
    assert "\x1b]0;" in HOSTILE_MESSAGE
    assert "\x1b[31;1m" in HOSTILE_MESSAGE
    assert len(HOSTILE_MESSAGE) > 10_000


def test_error_rate_faults_accounts_but_not_claim_or_info(
    bridge_for: Callable[..., Bridge],
) -> None:
    """error_rate=1: every /accounts call is 429, 500 or 503; claim and info still answer."""
    bridge = bridge_for(error_rate=1.0, seed=3)
    assert bridge.http.get(bridge.root + "/info").status_code == 200
    access = bridge.claim()
    statuses = set()
    for _ in range(30):
        answer = bridge.accounts(access)
        statuses.add(answer.status_code)
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "1"
    assert statuses == {429, 500, 503}


def test_unknown_simplefin_paths_and_methods(bridge: Bridge) -> None:
    """Unknown paths are 404 and known paths with another method 405, in plain text."""
    assert bridge.http.get(bridge.root + "/nothing").status_code == 404
    assert bridge.http.post(bridge.root + "/accounts").status_code == 405
    assert bridge.http.get(bridge.root + "/claim/abc").status_code == 405


def test_json_bodies_are_utf8_json(bridge: Bridge) -> None:
    """The Account Set is served as application/json that parses as such."""
    answer = bridge.accounts(bridge.claim())
    assert answer.headers["content-type"].startswith("application/json")
    assert json.loads(answer.content.decode("utf-8")) == answer.json()
