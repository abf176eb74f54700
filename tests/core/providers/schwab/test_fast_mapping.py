"""The fast read of a transaction gives what the Fields readers give: the record, or the error.

The fast read is the one a sync takes: the answer decoded by shape
(:mod:`wire`), then each transaction read directly, falling back to the
readers for anything in another form. The reference is the readers on what
``json.loads`` parses from the same bytes.
"""

from __future__ import annotations

import copy
import decimal
import json
import random
import re
from typing import Any, Final

import pytest
from pinned_corpus import ACCOUNT_ID, MASKED, body, broken_items, variants
from schwab_support import fixture_text

from dashtam_cli.core.errors import DashtamError
from dashtam_cli.core.providers.schwab import client, mapping, wire
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


def _json(value: object) -> str:
    """JSON text of a parsed value, each Decimal written as its own digits (as Schwab sends it)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value)


def _both_ways(data: bytes) -> tuple[str, str]:
    """The first transaction of an answer: (as a sync reads it, as the readers read json.loads's)."""
    fast = client._load_json(data, "transactions", 200, wire.decode_transactions)[0]
    parsed = client._load_json(data, "transactions", 200)[0]
    return _outcome(mapping.transaction, fast), _outcome(mapping.checked_transaction, parsed)


def _same_both_ways(raw: object) -> bool:
    fast, reference = _both_ways(f"[{_json(raw)}]".encode())
    return fast == reference


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
    """Fixtures, sandbox data and variants: the same record from the fast read and the readers."""
    items = client._load_json(body(), "transactions", 200)
    assert len(items) > 100
    for raw in items:
        assert _same_both_ways(raw), raw


def test_plain_items_take_the_direct_read() -> None:
    """Answers as Schwab and the sandbox send them are decoded by shape and read directly."""
    decoded = wire.decode_transactions(body())
    assert decoded is not None
    parsed = client._load_json(body(), "transactions", 200)
    plain = [
        item
        for item, raw in zip(decoded, parsed, strict=True)
        if not any(isinstance(v, str) for v in _amounts(raw))
    ]
    assert len(plain) > 100  # the sandbox's 120 and the fixtures, at least
    for item in plain:
        mapping._plain_fields(ACCOUNT_ID, MASKED, item)


def _amounts(raw: dict[str, Any]) -> list[object]:
    lines = raw.get("transferItems") or []
    return [raw.get("netAmount"), *(line.get(k) for line in lines for k in ("cost", "amount"))]


class _Watched(dict[str, Any]):
    """A parsed object that records the keys read from it, and watches the objects inside."""

    def __init__(self, data: dict[str, Any], path: str, read: set[str]) -> None:
        super().__init__(data)
        self._path, self._read = path, read

    def get(self, key: str, default: object = None) -> Any:
        self._read.add(f"{self._path}{key}")
        return _watch(super().get(key, default), f"{self._path}{key}.", self._read)


def _watch(value: object, path: str, read: set[str]) -> Any:
    if isinstance(value, dict):
        return _Watched(value, path, read)
    if isinstance(value, list):
        return [_watch(item, f"{path.rstrip('.')}[].", read) for item in value]
    return value


def _keys(value: object, path: str = "") -> set[str]:
    """Every key path of a parsed value, lists as ``[]``."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            found.add(f"{path}{key}")
            found |= _keys(child, f"{path}{key}.")
    elif isinstance(value, list):
        for child in value:
            found |= _keys(child, f"{path.rstrip('.')}[].")
    return found


def test_the_readers_read_only_fields_the_wire_records_keep() -> None:
    """The fallback hands the readers ``as_dict()``: it must hold every field they read.

    Each corpus item is read by the readers with every key they ask for
    recorded; each recorded key is one the decoded record keeps.
    """
    items = client._load_json(body(), "transactions", 200)
    decoded = wire.decode_transactions(body())
    assert decoded is not None
    read: set[str] = set()
    kept: set[str] = set()
    for raw, item in zip(items, decoded, strict=True):
        mapping.checked_transaction(ACCOUNT_ID, MASKED, _watch(raw, "", read))
        kept |= _keys(item.as_dict())
    assert read, "the readers read nothing: the watch is broken"
    assert "transferItems[].instrument.assetType" in read
    assert read <= kept, read - kept


def test_the_wire_record_as_a_dict_reads_as_the_parsed_item() -> None:
    """A transaction the direct read hands to the readers gives what the parsed item gives."""
    items = client._load_json(body(), "transactions", 200)
    decoded = wire.decode_transactions(body())
    assert decoded is not None
    for raw, item in zip(items, decoded, strict=True):
        assert _outcome(mapping.checked_transaction, item.as_dict()) == _outcome(
            mapping.checked_transaction, raw
        )


def test_answers_of_another_shape_are_parsed_and_read_the_same() -> None:
    """Shapes the decoder refuses: json.loads parses them, and the outcome is the readers'."""
    for text in (
        b"{}",
        b"[1]",
        b'[{"activityId": 1, "transferItems": {}}]',
        b'[{"activityId": 1, "transferItems": [null]}]',
        b'[{"activityId": 1, "transferItems": [{"instrument": []}]}]',
        b'[{"activityId": 1, "netAmount": NaN}]',
        b'\xef\xbb\xbf[{"activityId": 1}]',
    ):
        assert wire.decode_transactions(text) is None, text
    fast, reference = _both_ways(
        b'[{"activityId": 1, "tradeDate": "2025-01-02", "netAmount": NaN}]'
    )
    assert fast == reference
    assert "netAmount" in fast


def test_broken_items_raise_the_same_error_both_ways() -> None:
    """Each broken item of the corpus: the same message and hint from both reads."""
    errors = 0
    for _, text in broken_items():
        fast, reference = _both_ways(b"[" + text + b"]")
        assert fast == reference
        errors += fast.startswith("ApiError")
    assert errors > 20


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
                assert _same_both_ways(changed), (path, value)
                checked += 1
        for name in ("transferItems", "type", "description", "status"):
            assert _same_both_ways(_with(raw, (name,), rng.choice(_ODD)))
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
        raw = client._load_json(
            f"[{escaped}]".encode(), "transactions", 200, wire.decode_transactions
        )[0]
        with pytest.raises(
            ApiError, match=rf"field {re.escape(field)} of activity \d+ should be text"
        ):
            mapping.transaction(ACCOUNT_ID, MASKED, raw)
    # A surrogate pair is one character, as JSON means it: read and stored as it is.
    paired = text.replace("MRVL  250321C00155000", "\\ud83d\\ude00")
    (raw,) = client._load_json(
        f"[{paired}]".encode(), "transactions", 200, wire.decode_transactions
    )
    assert isinstance(raw, wire.WireTransaction)
    record = mapping.transaction(ACCOUNT_ID, MASKED, raw)
    assert record.symbol == "\U0001f600"
    assert "\U0001f600" in record.model_dump_json()
