"""The sandbox's answers validate against Schwab's OpenAPI spec and have the live fixtures' keys.

The spec (``tests/reference/schwab/openapi/account_orders_openapi.yaml``) is
OpenAPI 3.0. It is turned into JSON Schema (2020-12) by :func:`to_json_schema`
(``nullable``, ``discriminator`` mappings, ``$ref`` siblings) and then patched
by :data:`PATCHES`, one entry per difference between the spec and live data
that the reference README lists, each removing exactly that constraint. Date
formats are checked (RFC 3339 ``date-time``), so the date patches are real.
``test_each_patch_is_needed`` shows that dropping any one patch makes the
sandbox's answers fail, so none is a blanket switch-off.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import referencing
import yaml
from referencing.jsonschema import DRAFT202012
from sandbox_support import SandboxApi, transactions_query
from schwab_support import FIXTURES, REFERENCE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sandbox_support import RunningSandbox

SPEC_FILE = REFERENCE / "openapi" / "account_orders_openapi.yaml"

SPEC_URI = "urn:schwab:trader-api"
TYPES = (
    "TRADE,RECEIVE_AND_DELIVER,DIVIDEND_OR_INTEREST,ACH_RECEIPT,ACH_DISBURSEMENT,CASH_RECEIPT,"
    "CASH_DISBURSEMENT,ELECTRONIC_FUND,WIRE_OUT,WIRE_IN,JOURNAL,MEMORANDUM,MARGIN_CALL,"
    "MONEY_MARKET,SMA_ADJUSTMENT"
)

# -- OpenAPI 3.0 to JSON Schema ------------------------------------------------------------

_OPENAPI_ONLY = frozenset({"discriminator", "xml", "example", "externalDocs"})


def to_json_schema(node: Any) -> Any:
    """Convert an OpenAPI 3.0 schema node to JSON Schema 2020-12.

    - ``$ref`` replaces its siblings (OpenAPI 3.0 ignores them);
    - ``nullable: true`` also allows ``null``;
    - ``oneOf`` with a ``discriminator`` mapping picks the schema the
      discriminating property names, as OpenAPI means it; plain JSON Schema
      ``oneOf`` would fail whenever two loose schemas both match;
    - OpenAPI-only keywords (``discriminator`` elsewhere, ``xml``, ``example``)
      are dropped.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}
    result = {k: to_json_schema(v) for k, v in node.items() if k not in _OPENAPI_ONLY}
    discriminator = node.get("discriminator")
    if "oneOf" in node and isinstance(discriminator, dict) and discriminator.get("mapping"):
        prop, mapping = discriminator["propertyName"], discriminator["mapping"]
        del result["oneOf"]
        result.setdefault("required", []).append(prop)
        result.setdefault("properties", {})[prop] = {"enum": list(mapping)}
        result["allOf"] = [
            *result.get("allOf", []),
            *(
                {
                    "if": {"properties": {prop: {"const": value}}, "required": [prop]},
                    "then": {"$ref": target},
                }
                for value, target in mapping.items()
            ),
        ]
    if result.pop("nullable", False) is True:
        return {"anyOf": [result, {"type": "null"}]}
    return result


# -- The known differences between the spec and live data (reference README) ---------------


def _schemas(spec: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = spec["components"]["schemas"]
    return schemas


def _instrument_name_not_required(spec: dict[str, Any]) -> None:
    """``instrument.name`` is required by the spec, absent from live data."""
    for name in ("TransactionBaseInstrument", "AccountsBaseInstrument"):
        schema = _schemas(spec)[name]
        schema["required"] = [r for r in schema["required"] if r != "name"]


def _is_in_call_boolean(spec: dict[str, Any]) -> None:
    """``isInCall`` is a number in the spec, a boolean in live data."""
    for name in ("MarginInitialBalance", "MarginBalance", "CashInitialBalance"):
        _schemas(spec)[name]["properties"]["isInCall"] = {"type": ["number", "boolean"]}


def _times_with_plus_0000(spec: dict[str, Any]) -> None:
    """``time`` comes as ``2025-01-17T17:19:49+0000`` (no colon), not an RFC 3339 date-time."""
    del _schemas(spec)["Transaction"]["properties"]["time"]["format"]


def _bare_dates(spec: dict[str, Any]) -> None:
    """``tradeDate`` (and the sandbox's ``settlementDate``, alike) come as bare dates."""
    for field in ("tradeDate", "settlementDate"):
        del _schemas(spec)["Transaction"]["properties"][field]["format"]


def _aggregated_balance(spec: dict[str, Any]) -> None:
    """``aggregatedBalance`` is missing from the spec's Account: declare it (numbers)."""
    _schemas(spec)["Account"]["properties"]["aggregatedBalance"] = {
        "type": "object",
        "properties": {
            "currentLiquidationValue": {"type": "number"},
            "liquidationValue": {"type": "number"},
        },
    }


def _types_as_a_list(spec: dict[str, Any]) -> None:
    """``types`` is one enum value in the spec; Schwab takes a comma-separated list of them."""
    enum = _schemas(spec)["TransactionType"]["enum"]
    one = "(?:" + "|".join(enum) + ")"
    get = spec["paths"]["/accounts/{accountNumber}/transactions"]["get"]
    (types,) = [p for p in get["parameters"] if p["name"] == "types"]
    types["schema"] = {"type": "string", "pattern": f"^{one}(?:,{one})*$"}


PATCHES: dict[str, Callable[[dict[str, Any]], None]] = {
    "instrument.name": _instrument_name_not_required,
    "isInCall": _is_in_call_boolean,
    "time +0000": _times_with_plus_0000,
    "bare dates": _bare_dates,
    "aggregatedBalance": _aggregated_balance,
    "types list": _types_as_a_list,
}

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time, as JSON Schema's ``format: date-time`` means."""
    if not isinstance(value, str):
        return True  # formats constrain strings only
    if not _RFC3339.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value.upper())  # a real date and time, not 2024-02-30
    except ValueError:
        return False
    return True


RAW_SPEC: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))


def spec_with(patches: list[str]) -> dict[str, Any]:
    """The spec with the named patches applied, converted to JSON Schema."""
    spec = copy.deepcopy(RAW_SPEC)
    for name in patches:
        PATCHES[name](spec)
    converted: dict[str, Any] = to_json_schema(spec)
    return converted


def validator(schema: dict[str, Any], spec: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in ``spec``."""
    resource = DRAFT202012.create_resource(spec)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(SPEC_URI, resource)
    return jsonschema.Draft202012Validator(
        {"$ref": SPEC_URI + schema["$ref"]} if schema.get("$ref", "").startswith("#") else schema,
        registry=registry,
        format_checker=FORMATS,
    )


def array_of(name: str) -> dict[str, Any]:
    """``{"type": "array", "items": {"$ref": ...}}`` resolving in the spec."""
    return {"type": "array", "items": {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}}


def one(name: str) -> dict[str, Any]:
    """A reference to one schema of the spec."""
    return {"$ref": f"#/components/schemas/{name}"}


PATCHED = spec_with(list(PATCHES))


def errors_of(schema: dict[str, Any], body: Any, spec: dict[str, Any] = PATCHED) -> list[str]:
    """Every validation error, as ``path: message`` lines."""
    found = validator(schema, spec).iter_errors(body)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found)


def response_schema(path: str, status: str = "200") -> dict[str, Any]:
    """The JSON schema the spec declares for ``GET path``'s answer with ``status``."""
    responses = RAW_SPEC["paths"][path]["get"]["responses"]
    answer = responses[status]
    if "$ref" in answer:
        answer = RAW_SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = to_json_schema(answer["content"]["application/json"]["schema"])
    absolute: dict[str, Any] = _absolute(schema)
    return absolute


def _absolute(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and v.startswith("#") else _absolute(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute(v) for v in node]
    return node


# -- Bodies from the running sandbox -------------------------------------------------------


@pytest.fixture
def bodies(api: SandboxApi) -> dict[str, Any]:
    """The sandbox's answers to each read call, fetched over HTTPS with a real login."""
    token = api.login()["access_token"]
    numbers = api.get("/accounts/accountNumbers", token).json()
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    query = transactions_query(end - dt.timedelta(days=365), end, types=TYPES)
    first = numbers[0]["hashValue"]
    transactions = [
        api.get(f"/accounts/{n['hashValue']}/transactions", token, query).json() for n in numbers
    ]
    activity = transactions[0][0]["activityId"]
    return {
        "numbers": numbers,
        "accounts": api.get("/accounts", token, "fields=positions").json(),
        "account": api.get(f"/accounts/{first}", token, "fields=positions").json(),
        "transactions": [item for page in transactions for item in page],
        "transaction": api.get(f"/accounts/{first}/transactions/{activity}", token).json(),
        "preference": api.get("/userPreference", token).json(),
    }


def test_account_numbers_validate(bodies: dict[str, Any]) -> None:
    """/accounts/accountNumbers validates as AccountNumberHash[], each with both fields."""
    schema = response_schema("/accounts/accountNumbers")
    assert errors_of(schema, bodies["numbers"]) == []
    assert len(bodies["numbers"]) == 2
    for pair in bodies["numbers"]:
        assert re.fullmatch(r"\d{8}", pair["accountNumber"])
        assert re.fullmatch(r"[0-9A-F]{64}", pair["hashValue"])


def test_accounts_with_positions_validate(bodies: dict[str, Any]) -> None:
    """/accounts and /accounts/{hash} (fields=positions) validate as Account (MARGIN and CASH)."""
    assert errors_of(response_schema("/accounts"), bodies["accounts"]) == []
    assert errors_of(response_schema("/accounts/{accountNumber}"), bodies["account"]) == []
    kinds = {a["securitiesAccount"]["type"] for a in bodies["accounts"]}
    assert kinds == {"MARGIN", "CASH"}
    assert all(a["securitiesAccount"]["positions"] for a in bodies["accounts"])


def test_transactions_validate(bodies: dict[str, Any]) -> None:
    """/transactions and /transactions/{id} validate as Transaction[] (options, fees, cash)."""
    schema = response_schema("/accounts/{accountNumber}/transactions")
    assert errors_of(schema, bodies["transactions"]) == []
    single = response_schema("/accounts/{accountNumber}/transactions/{transactionId}")
    assert errors_of(single, bodies["transaction"]) == []
    assets = {
        t["instrument"]["assetType"] for i in bodies["transactions"] for t in i["transferItems"]
    }
    assert assets == {"EQUITY", "OPTION", "CURRENCY"}


def _error_bodies(api: SandboxApi, running: RunningSandbox) -> Iterator[tuple[int, Any]]:
    token = api.login()["access_token"]
    hash_value = running.sandbox.accounts[0].hash_value
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    good = transactions_query(end - dt.timedelta(days=30), end)
    yield 400, api.get(f"/accounts/{hash_value}/transactions", token, good.split("&types")[0])
    yield 400, api.get(f"/accounts/{hash_value}/transactions", token, good.replace(".000Z", ".000"))
    yield 401, api.get("/accounts/accountNumbers", None)
    yield 404, api.get("/accounts/UNKNOWN", token, "fields=positions")


def test_error_bodies_validate(
    api: SandboxApi, sandbox: RunningSandbox, start_sandbox: Callable[..., RunningSandbox]
) -> None:
    """400, 401, 404, and injected 429 and 500 answers are the spec's ServiceError, filled in."""
    answers = [(s, a.status_code, a.json()) for s, a in _error_bodies(api, sandbox)]
    faulty = start_sandbox(error_rate=1.0, seed=3)
    fault_api = SandboxApi(faulty)
    try:
        token = fault_api.login()["access_token"]
        injected = [fault_api.get("/accounts/accountNumbers", token) for _ in range(30)]
    finally:
        fault_api.close()
    answers += [(a.status_code, a.status_code, a.json()) for a in injected if a.status_code != 503]
    assert {s for s, _, _ in answers} == {400, 401, 404, 429, 500}
    service_error = {"$ref": SPEC_URI + "#/components/schemas/ServiceError"}
    for expected, status, body in answers:
        assert status == expected
        if status != 429:  # the spec declares ServiceError for the others, and no 429 at all
            assert response_schema("/accounts/accountNumbers", str(status)) == service_error
        assert errors_of(service_error, body) == []
        # ServiceError requires nothing: the README's shape has both fields, filled in.
        assert isinstance(body["message"], str)
        assert body["message"]
        assert body["errors"]


# -- The patches are each needed, and the conversion means what OpenAPI means -------------


def _needed_cases(bodies: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Any, str]]:
    """For each patch: a schema, a sandbox body, and the error the unpatched spec gives."""
    transactions = response_schema("/accounts/{accountNumber}/transactions")
    accounts = response_schema("/accounts")
    return {
        "instrument.name": (transactions, bodies["transactions"], "'name' is a required property"),
        "isInCall": (accounts, bodies["accounts"], "False is not of type 'number'"),
        "time +0000": (transactions, bodies["transactions"], "+0000' is not a 'date-time'"),
        "bare dates": (transactions, bodies["transactions"], "is not a 'date-time'"),
    }


@pytest.mark.parametrize("left_out", ["instrument.name", "isInCall", "time +0000", "bare dates"])
def test_each_patch_is_needed(bodies: dict[str, Any], left_out: str) -> None:
    """Without any one patch, the sandbox's answers fail on exactly that constraint."""
    schema, body, message = _needed_cases(bodies)[left_out]
    spec = spec_with([p for p in PATCHES if p != left_out])
    problems = errors_of(schema, body, spec)
    assert problems
    assert any(message in p for p in problems), problems[:5]
    if left_out == "bare dates":
        assert any("tradeDate" in p for p in problems)
        assert not any("/time:" in p for p in problems)
    if left_out == "time +0000":
        assert not any("tradeDate" in p for p in problems)


def test_aggregated_balance_is_declared_and_checked(bodies: dict[str, Any]) -> None:
    """aggregatedBalance, missing from the spec, is declared by its patch and so validated."""
    accounts = copy.deepcopy(bodies["accounts"])
    assert all(
        isinstance(a["aggregatedBalance"]["liquidationValue"], float | int) for a in accounts
    )
    accounts[0]["aggregatedBalance"]["liquidationValue"] = "12.5"
    problems = errors_of(response_schema("/accounts"), accounts)
    assert problems == ["0/aggregatedBalance/liquidationValue: '12.5' is not of type 'number'"]


@pytest.mark.parametrize(
    ("types", "accepted"),
    [
        ("TRADE", True),
        ("TRADE,JOURNAL", True),
        (TYPES, True),
        ("TRADE,BOGUS", False),
        ("trade", False),
    ],
)
def test_types_parameter_is_a_comma_list(
    api: SandboxApi, sandbox: RunningSandbox, types: str, accepted: bool
) -> None:
    """The sandbox takes exactly the types the patched spec allows; the raw spec only one value."""
    get = PATCHED["paths"]["/accounts/{accountNumber}/transactions"]["get"]
    (param,) = [p for p in get["parameters"] if p["name"] == "types"]
    assert (errors_of(param["schema"], types) == []) is accepted
    raw = to_json_schema(
        next(
            p
            for p in RAW_SPEC["paths"]["/accounts/{accountNumber}/transactions"]["get"][
                "parameters"
            ]
            if p["name"] == "types"
        )["schema"]
    )
    assert (errors_of(raw, types) == []) is (accepted and "," not in types)
    token = api.login()["access_token"]
    end = dt.datetime.now(dt.UTC)
    query = transactions_query(end - dt.timedelta(days=30), end, types=types)
    answer = api.get(
        f"/accounts/{sandbox.sandbox.accounts[0].hash_value}/transactions", token, query
    )
    assert answer.status_code == (200 if accepted else 400)


def test_conversion_handles_nullable_and_discriminators(bodies: dict[str, Any]) -> None:
    """A nullable schema allows null; a discriminator picks its mapped schema, refuses others."""
    nullable = to_json_schema({"type": "string", "nullable": True})
    assert errors_of(nullable, None) == []
    assert errors_of(nullable, "text") == []
    assert errors_of(nullable, 3) != []
    account = copy.deepcopy(bodies["account"])
    account["securitiesAccount"]["type"] = "BROKERAGE"
    assert errors_of(one("Account"), account) != []
    position = copy.deepcopy(bodies["account"]["securitiesAccount"]["positions"][0])
    position["instrument"]["assetType"] = "CURRENCY"  # not in AccountsInstrument's mapping
    assert errors_of(one("Position"), position) != []
    position["instrument"]["assetType"] = "OPTION"
    position["instrument"]["putCall"] = "STRADDLE"  # AccountOption's enum applies
    assert any("putCall" in p for p in errors_of(one("Position"), position))


# -- The live fixtures: they pass the same patched spec, and the sandbox has their keys -----


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_live_fixtures_fit_the_patched_spec_but_for_order_ids() -> None:
    """The patches describe live data, not just the sandbox: the fixtures validate too.

    One more difference shows up that the README does not list: live
    transactions carry ``orderId`` as a string, the spec as an integer.
    """
    assert errors_of(one("Account"), _fixture("account.json")) == []
    assert errors_of(array_of("AccountNumberHash"), _fixture("account_numbers.json")) == []
    problems = errors_of(array_of("Transaction"), _fixture("transactions.json"))
    assert problems == [
        "0/orderId: '1002613435352' is not of type 'integer'",
        "1/orderId: '1002613435352' is not of type 'integer'",
    ]


def _missing(fixture: dict[str, Any], body: dict[str, Any], where: str) -> list[str]:
    return [f"{where}.{key}" for key in fixture if key not in body]


def _position_side(position: dict[str, Any]) -> str:
    return "short" if position["shortQuantity"] else "long"


def _account_keys_missing(accounts: list[dict[str, Any]]) -> list[str]:
    live_account = _fixture("account.json")
    live_sec = live_account["securitiesAccount"]
    missing: list[str] = []
    for account in accounts:
        sec = account["securitiesAccount"]
        missing += _missing(live_account, account, "account")
        missing += _missing(live_sec, sec, "securitiesAccount")
        missing += _missing(live_account["aggregatedBalance"], account["aggregatedBalance"], "agg")
        if sec["type"] == live_sec["type"]:
            for balances in ("initialBalances", "currentBalances", "projectedBalances"):
                missing += _missing(live_sec[balances], sec[balances], balances)
    live_positions = {_position_side(p): p for p in live_sec["positions"]}
    live_instruments = {
        p["instrument"]["assetType"]: p["instrument"] for p in live_sec["positions"]
    }
    positions = [p for a in accounts for p in a["securitiesAccount"]["positions"]]
    assert {_position_side(p) for p in positions} == {"long", "short"}
    for position in positions:
        side = _position_side(position)
        missing += _missing(live_positions[side], position, f"{side} position")
        kind = position["instrument"]["assetType"]
        if kind in live_instruments:
            missing += _missing(live_instruments[kind], position["instrument"], f"{kind} position")
    return missing


def _item_kind(item: dict[str, Any]) -> tuple[str, str]:
    return ("fee" if item.get("feeType") else "main", item["instrument"]["assetType"])


def _transaction_keys_missing(transactions: list[dict[str, Any]]) -> list[str]:
    live_trades = [t for t in _fixture("transactions.json") if t["type"] == "TRADE"]
    live_items = {_item_kind(i): i for t in live_trades for i in t["transferItems"]}
    trades = [t for t in transactions if t["type"] == "TRADE"]
    assert trades
    missing: list[str] = []
    for trade in trades:
        missing += _missing(live_trades[0], trade, "trade")
        for item in trade["transferItems"]:
            live = live_items.get(_item_kind(item))
            if live is not None:
                missing += _missing(live, item, f"{_item_kind(item)} item")
                missing += _missing(live["instrument"], item["instrument"], "instrument")
    live_currency = live_items["fee", "CURRENCY"]["instrument"]
    currency = [
        i["instrument"]
        for t in transactions
        for i in t["transferItems"]
        if i["instrument"]["assetType"] == "CURRENCY"
    ]
    assert any(t["type"] != "TRADE" for t in transactions)
    for instrument in currency:
        missing += _missing(live_currency, instrument, "currency instrument")
    return missing


def test_accounts_have_the_live_fixtures_keys(bodies: dict[str, Any]) -> None:
    """Every key of fixtures/account.json is in the sandbox's like bodies.

    "Like" means: the same account type for balances, the same side (long or
    short) for positions, the same asset type for instruments.
    """
    assert sorted(set(_account_keys_missing(bodies["accounts"]))) == []


def test_transactions_have_the_live_fixtures_keys(bodies: dict[str, Any]) -> None:
    """Every key of fixtures/transactions.json is in the sandbox's trades and their items.

    Trades for trades, fee lines for fee lines, instruments of the same asset
    type; every CURRENCY instrument (cash movements too) has the live one's keys.
    """
    assert sorted(set(_transaction_keys_missing(bodies["transactions"]))) == []


def test_user_preference_is_one_object_like_live(
    bodies: dict[str, Any], sandbox: RunningSandbox
) -> None:
    """/userPreference is one UserPreference, as live answers, with every account's nickName.

    The spec declares an array of UserPreference; the live fixture (like the
    sandbox) is one object that validates as UserPreference itself.
    """
    declared = response_schema("/userPreference")
    assert declared["type"] == "array"
    live = _fixture("user_preferences.json")
    assert isinstance(live, dict)
    assert errors_of(one("UserPreference"), live) == []
    body = bodies["preference"]
    assert errors_of(one("UserPreference"), body) == []
    assert errors_of(declared, body) != []  # the spec's array, which live does not send
    accounts = sandbox.sandbox.accounts
    assert [(a["accountNumber"], a["nickName"]) for a in body["accounts"]] == [
        (a.number, a.nickname) for a in accounts
    ]
    assert all(a.nickname for a in accounts)
    assert [a["primaryAccount"] for a in body["accounts"]] == [True] + [False] * (len(accounts) - 1)
    missing = _missing(live, body, "preference")
    for item in body["accounts"]:
        missing += _missing(live["accounts"][0], item, "account")
    for key in ("streamerInfo", "offers"):
        missing += _missing(live[key][0], body[key][0], key)
    assert missing == []
