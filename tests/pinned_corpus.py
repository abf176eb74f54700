"""Transactions of every shape the mapper meets, and broken ones, for the pinned-output test.

``pinned_output.json`` holds what the code stored and answered for them
when it was written (by ``pinned_now``); rewrite it only
when a change of the stored records is intended, and say so in the commit.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

import respx
from schwab_support import add_connection, mock_connection_api
from sqlalchemy import select
from sync_support import NOW, at, run_sync

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

PINNED: Final = Path(__file__).parent / "core" / "providers" / "schwab" / "pinned_output.json"
FIXTURES: Final = Path(__file__).parent / "reference" / "schwab" / "fixtures"
# The sandbox's generator, pinned to one moment so it makes the same data every time.
SANDBOX_NOW: Final = dt.datetime(2025, 2, 1, 12, tzinfo=dt.UTC)
SANDBOX_COUNT: Final = 120
ACCOUNT_ID: Final = "0a0a0a0a-0000-4000-8000-000000000001"
MASKED: Final = "****1111"
NUMBER: Final = "11111111"


def _single() -> dict[str, Any]:
    """transaction_single.json as parsed (numbers as Python floats and ints; see ``_variants``)."""
    item: dict[str, Any] = json.loads((FIXTURES / "transaction_single.json").read_text("utf-8"))
    return item


def variants() -> list[dict[str, Any]]:
    """The single fixture changed one way each: forms live data and the spec allow."""
    out: list[dict[str, Any]] = []

    def variant(activity: object, **changes: Any) -> dict[str, Any]:
        item = _single()
        item["activityId"] = activity
        for key, value in changes.items():
            if value is _DROP:
                item.pop(key, None)
            else:
                item[key] = value
        out.append(item)
        return item

    variant("ABC-1")
    variant(2, time="2025-01-17T17:19:49Z")
    variant(3, time="2025-01-17T17:19:49.123Z")
    variant(4, time="2025-01-17T23:19:49+0530")
    variant(5, time=_DROP)
    variant(6, time="", tradeDate="2024-12-31")
    variant(7, netAmount="12.50")
    variant(8, netAmount=7)
    variant(9, netAmount=" 3.10 ")
    variant(10, netAmount=_DROP)
    variant(11, transferItems=_DROP)
    variant(12, transferItems=[_single()["transferItems"][1]])
    fee = variant(13)
    del fee["transferItems"][1]["cost"]
    extra = variant(14)
    extra["transferItems"].append(
        {"instrument": {"assetType": "EQUITY", "symbol": "X"}, "cost": "-1.5", "feeType": "SEC"}
    )
    variant(15, type="DIVIDEND_OR_INTEREST", description="QUALIFIED DIVIDEND")
    variant(16, type="DIVIDEND_OR_INTEREST", description="BANK INTEREST")
    variant(17, type="JOURNAL", description="NON-RESIDENT TAX WITHHOLDING")
    variant(18, type="MEMORANDUM", description="ADR FEE")
    variant(19, type="NEW_TYPE_NOT_LISTED")
    variant(20, type=_DROP)
    variant(21, status=_DROP, settlementDate="2025-01-20T00:00:00+0000")
    variant(22, description="Own description", settlementDate="2025-01-21")
    priced = variant(23, type="RECEIVE_AND_DELIVER")
    priced["transferItems"][0]["price"] = 3
    priced["transferItems"][0]["amount"] = "1E+2"
    variant(24, netAmount="-0.0")
    variant(25, type="ACH_RECEIPT", transferItems=[{"amount": 5, "cost": 5}])
    variant(26, time="1900-01-01T00:00:00+0000")
    variant(27, time="2199-12-31T23:59:59+0000", tradeDate="2199-12-31")
    variant(28, netAmount="999999999999999.99")
    variant(29, description='caf\u00e9 \u2014 "quoted" \\ back', status=None)
    variant(30, transferItems=[], type="CASH_RECEIPT")
    variant(31, transferItems=None, tradeDate=None, settlementDate="")
    variant("x" * 64)
    return out


_DROP: Final = object()


def valid_items() -> list[dict[str, Any]]:
    """Every transaction the pinned sync stores: fixtures, sandbox data, variants."""
    from dashtam_cli.sandbox.data import generate_accounts

    items: list[dict[str, Any]] = json.loads((FIXTURES / "transactions.json").read_text("utf-8"))
    (sandbox,) = generate_accounts(
        seed=11, accounts=1, transactions_per_account=SANDBOX_COUNT, now=SANDBOX_NOW
    )
    items += sandbox.transactions
    items += variants()
    return items


def body() -> bytes:
    """The transactions answer holding every valid item, as Schwab's text (amounts exact)."""
    return json.dumps(valid_items(), indent=1).encode()


def broken_items() -> list[tuple[str, bytes]]:
    """One field of the wrong type or form each, as (what is wrong, the item's JSON text)."""
    cases: list[tuple[str, Any]] = [
        ("item is a list", []),
        ("no activityId", {"type": "TRADE"}),
        ("activityId a list", {"activityId": [1]}),
        ("activityId a boolean", {"activityId": True}),
        ("activityId negative", {"activityId": -1}),
        ("activityId too long", {"activityId": "x" * 65}),
        ("activityId empty", {"activityId": ""}),
        ("activityId unprintable", {"activityId": "a\nb"}),
        ("activityId a float", {"activityId": 1.5}),
        ("no time, no date", {"activityId": 1}),
        ("time a number", {"activityId": 1, "time": 5}),
        ("time garbage", {"activityId": 1, "time": "yesterday"}),
        ("time too late", {"activityId": 1, "time": "2200-01-01T00:00:00+0000"}),
        ("time too early", {"activityId": 1, "time": "1899-12-31T23:59:59+0000"}),
        ("time out of range", {"activityId": 1, "time": "0001-01-01T00:00:00+0100"}),
        ("tradeDate garbage", {"activityId": 1, "tradeDate": "2025-13-01"}),
        ("tradeDate a number", {"activityId": 1, "tradeDate": 20250101}),
        ("settlementDate a list", {"activityId": 1, "time": "2025-01-01", "settlementDate": []}),
        ("settlementDate early", {"activityId": 1, "tradeDate": "1800-01-01"}),
        (
            "transferItems an object",
            {"activityId": 1, "tradeDate": "2025-01-01", "transferItems": {}},
        ),
        (
            "transferItems[1] text",
            {"activityId": 1, "tradeDate": "2025-01-01", "transferItems": [{}, "x"]},
        ),
        (
            "instrument text",
            {"activityId": 1, "tradeDate": "2025-01-01", "transferItems": [{"instrument": "x"}]},
        ),
        (
            "assetType a number",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [{"instrument": {"assetType": 3}}],
            },
        ),
        (
            "symbol a number",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [{"instrument": {"symbol": 3}}],
            },
        ),
        (
            "instrument description a list",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [{"instrument": {"description": []}}],
            },
        ),
        ("netAmount a boolean", {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": False}),
        ("netAmount NaN text", {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": "NaN"}),
        (
            "netAmount Infinity text",
            {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": "-Infinity"},
        ),
        ("netAmount garbage", {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": "1,5"}),
        ("netAmount too large", {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": 1e15}),
        ("netAmount an object", {"activityId": 1, "tradeDate": "2025-01-01", "netAmount": {}}),
        ("type a number", {"activityId": 1, "tradeDate": "2025-01-01", "type": 1}),
        ("description a number", {"activityId": 1, "tradeDate": "2025-01-01", "description": 1}),
        ("status an object", {"activityId": 1, "tradeDate": "2025-01-01", "status": {}}),
        (
            "fee cost text",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [{"feeType": "X", "cost": "abc"}],
            },
        ),
        (
            "fee amount a list",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [{"feeType": "X", "amount": []}],
            },
        ),
        (
            "trade price a list",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "type": "TRADE",
                "transferItems": [{"price": [], "amount": 1}],
            },
        ),
        (
            "trade amount text",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "type": "TRADE",
                "transferItems": [{"amount": "lots"}],
            },
        ),
        (
            "currency line cost garbage in a trade",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "type": "TRADE",
                "transferItems": [
                    {"instrument": {"assetType": "EQUITY"}},
                    {"instrument": {"assetType": "CURRENCY"}, "cost": "x"},
                ],
            },
        ),
        (
            "fee in a non-trade, currency line ignored",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "type": "JOURNAL",
                "transferItems": [{"instrument": {"assetType": "CURRENCY"}, "cost": "x"}],
            },
        ),
        (
            "fee line instrument a list",
            {
                "activityId": 1,
                "tradeDate": "2025-01-01",
                "transferItems": [
                    {"instrument": {"assetType": "EQUITY"}},
                    {"instrument": [], "feeType": "X"},
                ],
            },
        ),
    ]
    return [(name, json.dumps(item).encode()) for name, item in cases]


def outcome(raw: object) -> str:
    """What mapping one item gives: its record's JSON, or the error's message and hint."""
    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.providers.schwab import mapping

    try:
        record = mapping.transaction(ACCOUNT_ID, MASKED, copy.deepcopy(raw))  # type: ignore[arg-type]
    except DashtamError as exc:
        return f"{type(exc).__name__}: {exc.message} | {exc.hint}"
    return record.model_dump_json()


def broken_outcomes() -> dict[str, str]:
    """Each broken item's outcome, parsed as a sync parses an answer (amounts exact)."""
    from dashtam_cli.core.providers.schwab import client, wire

    return {
        name: outcome(
            client._load_json(b"[" + text + b"]", "transactions", 200, wire.decode_transactions)[0]
        )
        for name, text in broken_items()
    }


async def _rows() -> list[dict[str, Any]]:
    """Every stored transaction: columns and opened payload, ids checked then left out."""
    table = schema.transactions
    async with open_vault(load_settings()) as vault, vault.reading() as conn:
        rows = (await conn.execute(select(table))).all()
        records = []
        for row in rows:
            text = vault.unseal_text(
                table.name, row.id, "payload", row.payload, owner=row.account_id
            )
            record = json.loads(text)
            assert (record["id"], record["account_id"]) == (row.id, row.account_id)
            # The ids are random per vault (the account's id is): the rest is pinned.
            records.append(
                {
                    "occurred_at": row.occurred_at,
                    "kind": row.kind,
                    "form": row.form,
                    "payload": text.replace(row.id, "<id>").replace(row.account_id, "<account>"),
                }
            )
    return sorted(records, key=lambda r: (r["occurred_at"], r["payload"]))


def stored_records() -> dict[str, Any]:
    """Sync one account answering the whole corpus; what the vault then holds, and the counts."""
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    add_connection("brokerage", "token-b")
    mock_connection_api(router, "token-b", [NUMBER], transactions=body().decode())
    first = run_sync(router, clock=at(NOW))
    again = run_sync(router, clock=at(NOW))
    counts = [
        [[r.new, r.changed, r.unchanged] for r in result.reports] for result in (first, again)
    ]
    return {"counts": counts, "rows": asyncio.run(_rows())}


def pinned_now() -> dict[str, Any]:
    """What the code stores and answers now, in the shape of ``pinned_output.json``."""
    return {"stored": stored_records(), "broken": broken_outcomes()}
