"""The direct read of a transaction gives what the Fields readers give: the record, or the error."""

from __future__ import annotations

import copy
import decimal
import random
import re
from typing import Any, Final

import pytest
from pinned_corpus import ACCOUNT_ID, MASKED, body, broken_items, variants
from schwab_support import fixture_text

from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.providers.schwab import client, mapping
from dashtam_cli.core.providers.schwab.client import ApiError

# Values of every JSON type and of the forms the readers treat apart.
_ODD: Final[tuple[Any, ...]] = (
    None,
    "",
    " ",
    "x",
    "caf\u00e9",
    "a\ud800b",
    "12.5",
    "NaN",
    "2025-01-17",
    "2025-01-17T17:19:49+0000",
    "2300-01-01T00:00:00Z",
    0,
    -1,
    7,
    10**15,
    True,
    False,
    1.5,
    decimal.Decimal("0.00"),
    decimal.Decimal("-3.10"),
    decimal.Decimal("1E+16"),
    decimal.Decimal("NaN"),
    [],
    [{}],
    ["x"],
    {},
    {"assetType": "CURRENCY"},
    {"assetType": 3},
)


def _outcome(read: Any, raw: object) -> str:
    try:
        record = read(ACCOUNT_ID, MASKED, copy.deepcopy(raw))
    except DashtamError as exc:
        return f"{type(exc).__name__}: {exc.message} | {exc.hint}"
    return str(record.model_dump_json())


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key or index path inside a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found += _paths(child, (*prefix, index))
    return found


def _with(raw: Any, path: tuple[Any, ...], value: object) -> Any:
    changed = copy.deepcopy(raw)
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


def test_every_corpus_item_reads_the_same_both_ways() -> None:
    """Fixtures, sandbox data and variants: the same record from the direct read and the readers."""
    items = client._load_json(body(), "transactions", 200)
    for raw in items:
        assert _outcome(mapping.transaction, raw) == _outcome(mapping.checked_transaction, raw)


def test_plain_items_take_the_direct_read() -> None:
    """Items as Schwab and the sandbox send them never need the readers (the fast path is used)."""
    items = client._load_json(body(), "transactions", 200)
    plain = [raw for raw in items if not any(isinstance(v, str) for v in _amounts(raw))]
    assert len(plain) > 100  # the sandbox's 120 and the fixtures, at least
    for raw in plain:
        mapping._plain_fields(ACCOUNT_ID, MASKED, raw)


def _amounts(raw: dict[str, Any]) -> list[object]:
    lines = raw.get("transferItems") or []
    return [raw.get("netAmount"), *(line.get(k) for line in lines for k in ("cost", "amount"))]


def test_broken_items_raise_the_same_error_both_ways() -> None:
    """Each broken item of the corpus: the same message and hint from both reads."""
    for _, text in broken_items():
        raw = client._load_json(b"[" + text + b"]", "transactions", 200)[0]
        assert _outcome(mapping.transaction, raw) == _outcome(mapping.checked_transaction, raw)


def test_any_field_set_to_any_odd_value_reads_the_same_both_ways() -> None:
    """Every field of the fixtures, at every depth, replaced by each odd value: same outcome."""
    items = client._load_json(body(), "transactions", 200)
    # The two fixtures, a sandbox item, and the single fixture (as the first variant).
    samples = [items[0], items[1], items[2], items[-len(variants())]]
    rng = random.Random(5)  # noqa: S311 - test data
    checked = 0
    for raw in samples:
        for path in _paths(raw):
            for value in _ODD:
                changed = _with(raw, path, value)
                assert _outcome(mapping.transaction, changed) == _outcome(
                    mapping.checked_transaction, changed
                ), (path, value)
                checked += 1
        for name in ("transferItems", "type", "description", "status"):
            changed = _with(raw, (name,), rng.choice(_ODD))
            assert _outcome(mapping.transaction, changed) == _outcome(
                mapping.checked_transaction, changed
            )
    assert checked > 1000


def test_a_lone_surrogate_in_text_is_one_error_naming_the_field() -> None:
    """Half a surrogate pair in a description or symbol: an ApiError naming it, no traceback."""
    text = fixture_text("transaction_single.json")
    for field, escaped in (
        (
            "description",
            text.replace('"type": "TRADE"', '"type": "TRADE", "description": "a\\ud800"'),
        ),
        ("transferItems[0].instrument.symbol", text.replace("MRVL  250321C00155000", "M\\udfff")),
    ):
        raw = client._load_json(escaped.encode(), "transactions", 200)
        with pytest.raises(
            ApiError, match=rf"field {re.escape(field)} of activity \d+ should be text"
        ):
            mapping.transaction(ACCOUNT_ID, MASKED, raw)
    # A surrogate pair is one character, as JSON means it: read and stored as it is.
    paired = text.replace("MRVL  250321C00155000", "\\ud83d\\ude00")
    record = mapping.transaction(ACCOUNT_ID, MASKED, client._load_json(paired.encode(), "t", 200))
    assert record.symbol == "\U0001f600"
    assert "\U0001f600" in record.model_dump_json()
