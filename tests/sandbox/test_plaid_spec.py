"""The sandbox's Plaid answers (and the requests it accepts) validate against Plaid's OpenAPI spec.

The spec is the extract in ``tests/reference/plaid/openapi-extract.json``
(the operations served, with their schemas' ``$ref`` closure; see its
README). OpenAPI 3.0 is turned into JSON Schema 2020-12 here (``nullable``,
``$ref`` siblings ignored); ``date`` and ``date-time`` formats are checked.
No schema is patched: where the sandbox and the spec differ, the sandbox is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import referencing
from plaid_sandbox_support import PlaidApi
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sandbox_support import RunningSandbox

EXTRACT = pathlib.Path(__file__).parents[1] / "reference" / "plaid" / "openapi-extract.json"
SPEC_URI = "urn:plaid:2020-09-14"
DAY = 86_400


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 to JSON Schema: ``nullable`` also allows null; a ``$ref`` replaces its siblings."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}
    result = {k: to_json_schema(v) for k, v in node.items() if k != "discriminator"}
    if result.pop("nullable", False) is True:
        return {"anyOf": [result, {"type": "null"}]}
    return result


SPEC: dict[str, Any] = to_json_schema(json.loads(EXTRACT.read_text(encoding="utf-8")))
FORMATS = jsonschema.FormatChecker(formats=())
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")


@FORMATS.checks("date")
def _is_date(value: object) -> bool:
    """An ISO 8601 calendar date, YYYY-MM-DD, that exists."""
    if not isinstance(value, str):
        return True
    try:
        return re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None and bool(
            dt.date.fromisoformat(value)
        )
    except ValueError:
        return False


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    """An RFC 3339 date-time that exists."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _validator(schema_ref: str) -> jsonschema.Draft202012Validator:
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        SPEC_URI, DRAFT202012.create_resource(SPEC)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": SPEC_URI + schema_ref}, registry=registry, format_checker=FORMATS
    )


def _operation(path: str) -> dict[str, Any]:
    operation: dict[str, Any] = SPEC["paths"][path]["post"]
    return operation


def _schema_of(path: str, *, request: bool = False, status: str = "200") -> str:
    operation = _operation(path)
    content = (
        operation["requestBody"]["content"]
        if request
        else operation["responses"][status]["content"]
    )
    ref: str = content["application/json"]["schema"]["$ref"]
    return ref


def check(path: str, body: dict[str, Any], *, request: bool = False) -> None:
    """Fail with every schema error of ``body`` as the request or 200 answer of ``path``."""
    errors = sorted(
        _validator(_schema_of(path, request=request)).iter_errors(body), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:10])


def check_error(body: dict[str, Any]) -> None:
    """Fail unless ``body`` is a PlaidError (the spec's ``default`` answer of every operation)."""
    errors = list(_validator("#/components/schemas/PlaidError").iter_errors(body))
    assert not errors, [e.message for e in errors[:5]]


@pytest.fixture
def plaid(start_sandbox: Callable[..., RunningSandbox]) -> Iterator[PlaidApi]:
    """A Plaid client of a sandbox with small data."""
    client = PlaidApi(start_sandbox(transactions_per_account=30))
    yield client
    client.close()


def test_every_served_path_is_in_the_extract() -> None:
    """The extract holds each operation the sandbox serves, and nothing else."""
    served = {
        "/link/token/create", "/item/public_token/exchange", "/sandbox/public_token/create",
        "/sandbox/item/reset_login", "/accounts/get", "/accounts/balance/get",
        "/transactions/sync", "/investments/holdings/get", "/investments/transactions/get",
        "/item/get", "/item/remove",
    }  # fmt: skip
    assert set(SPEC["paths"]) == served


def test_answers_and_requests_validate_against_the_spec(plaid: PlaidApi) -> None:
    """Every operation's answer, over a whole life of an item, validates; so does each request.

    Link token, public token, exchange, accounts, balances, transactions/sync
    pages (before and after the next morning's changes), holdings, investment
    transactions, item, reset_login, Link in update mode and remove.
    """
    answers: list[tuple[str, dict[str, Any]]] = []

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = plaid.call(path, body)
        answers.append((path, answer))
        return answer

    call(
        "/link/token/create",
        {"client_name": "dashtam", "language": "en", "country_codes": ["US"],
         "user": {"client_user_id": "dashtam-user"}, "products": ["transactions", "investments"],
         "redirect_uri": "https://127.0.0.1:8182/link"},
    )  # fmt: skip
    public = call(
        "/sandbox/public_token/create",
        {"institution_id": "ins_109508", "initial_products": ["transactions", "investments"]},
    )["public_token"]
    token = call("/item/public_token/exchange", {"public_token": public})["access_token"]
    call("/accounts/get", {"access_token": token})
    call("/accounts/balance/get", {"access_token": token})
    cursor = ""
    for _day in range(2):
        while True:
            page = call(
                "/transactions/sync", {"access_token": token, "cursor": cursor, "count": 40}
            )
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        plaid.running.clock.advance(2 * DAY)
    assert any(p["modified"] for path, p in answers if path == "/transactions/sync")
    assert any(p["removed"] for path, p in answers if path == "/transactions/sync")
    call("/investments/holdings/get", {"access_token": token})
    call(
        "/investments/transactions/get",
        {"access_token": token, "start_date": "2000-01-01", "end_date": "2100-01-01",
         "options": {"count": 500, "offset": 0}},
    )  # fmt: skip
    call("/item/get", {"access_token": token})
    call("/sandbox/item/reset_login", {"access_token": token})
    call("/item/get", {"access_token": token})
    call(
        "/link/token/create",
        {"client_name": "dashtam", "language": "en", "country_codes": ["US"],
         "user": {"client_user_id": "dashtam-user"}, "access_token": token},
    )  # fmt: skip
    call("/item/remove", {"access_token": token})
    assert {path for path, _ in answers} == set(SPEC["paths"])
    for path, answer in answers:
        check(path, answer)
    for path, request in plaid.sent:
        check(path, request, request=True)


def test_error_answers_validate_as_plaid_errors(plaid: PlaidApi) -> None:
    """Keys, token, login, fault and paging errors all have the spec's PlaidError shape."""
    token, _item = plaid.link()
    bodies = [
        plaid.call("/accounts/get", {"access_token": token, "secret": "x"}, 400),
        plaid.call("/accounts/get", {"access_token": "access-sandbox-unknown"}, 400),
        plaid.call("/transactions/sync", {"access_token": token, "count": 0}, 400),
        plaid.call("/item/public_token/exchange", {"public_token": "x"}, 400),
    ]
    plaid.call("/sandbox/item/reset_login", {"access_token": token})
    bodies.append(plaid.call("/accounts/get", {"access_token": token}, 400))
    for body in bodies:
        check_error(body)


def test_a_wrong_answer_fails_the_check(plaid: PlaidApi) -> None:
    """The check is not vacuous: an amount as a string, or a missing required field, fails it."""
    token, _item = plaid.link()
    page = plaid.call("/transactions/sync", {"access_token": token, "count": 5})
    check("/transactions/sync", page)
    page["added"][0]["amount"] = str(page["added"][0]["amount"])
    with pytest.raises(AssertionError, match="amount"):
        check("/transactions/sync", page)
    accounts = plaid.call("/accounts/get", {"access_token": token})
    del accounts["accounts"][0]["balances"]["iso_currency_code"]
    with pytest.raises(AssertionError, match="iso_currency_code"):
        check("/accounts/get", accounts)
