"""The renderer: exact money, times with offsets, stable fields, four formats, data on stdout."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import io
import json
import uuid

import pytest
from pydantic import BaseModel
from rich.console import Console

from dashtam_cli.cli.output import Renderer, to_jsonable

FORMATS = ("table", "json", "jsonl", "csv")
BIG = decimal.Decimal("12345678901234567890.123456789")


class Side(enum.Enum):
    """An enum as the models use them: the value is what prints."""

    BUY = "buy"
    SELL = "sell"


class Row(BaseModel):
    """A record with every kind of value the renderer meets."""

    name: str
    amount: decimal.Decimal
    when: dt.datetime
    day: dt.date | None
    ref: uuid.UUID
    side: Side
    note: str | None


FIELDS = ["name", "amount", "when", "day", "ref", "side", "note"]

ROWS = [
    Row(
        name="a, with comma",
        amount=decimal.Decimal("0.10"),
        when=dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC),
        day=dt.date(2025, 1, 17),
        ref=uuid.UUID(int=1),
        side=Side.BUY,
        note=None,
    ),
    Row(
        name="b",
        amount=BIG,
        when=dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        day=None,
        ref=uuid.UUID(int=2),
        side=Side.SELL,
        note="x",
    ),
]


def render(fmt: str, rows: list[Row] | None = None, *, one: bool = False) -> str:
    """Render into a string, as the CLI would on stdout."""
    stream = io.StringIO()
    renderer = Renderer(fmt=fmt, console=Console(file=stream, width=200), stream=stream)
    if one:
        renderer.one(ROWS[0])
    else:
        renderer.rows(Row, ROWS if rows is None else rows)
    return stream.getvalue()


def test_field_order_is_the_models() -> None:
    """The fields these tests pin are the model's, in declaration order."""
    assert list(Row.model_fields) == FIELDS


def test_json_is_an_array_with_money_exact_and_times_with_offsets() -> None:
    """Decimals are strings with every digit; datetimes are ISO 8601 with their offset."""
    data = json.loads(render("json"), parse_float=decimal.Decimal)
    assert isinstance(data, list)
    assert len(data) == 2
    assert [r["amount"] for r in data] == ["0.10", "12345678901234567890.123456789"]
    assert data[0]["when"] == "2025-01-17T17:19:49+00:00"
    assert data[1]["when"] == "2025-01-17T12:00:00-05:00"
    assert data[0]["day"] == "2025-01-17"
    assert data[1]["day"] is None
    assert data[0]["note"] is None
    assert data[0]["ref"] == "00000000-0000-0000-0000-000000000001"
    assert [r["side"] for r in data] == ["buy", "sell"]
    assert [list(r) for r in data] == [FIELDS, FIELDS]


def test_money_never_passes_through_a_float() -> None:
    """The decimal string keeps digits a float would lose, and trailing zeros."""
    assert to_jsonable(decimal.Decimal("0.10")) == "0.10"
    assert to_jsonable(BIG) == "12345678901234567890.123456789"
    assert str(float(BIG)) != to_jsonable(BIG)
    assert to_jsonable(decimal.Decimal("-1E+3")) == "-1000"
    assert '"12345678901234567890.123456789"' in render("json")


def test_jsonl_is_one_object_per_line() -> None:
    """JSON lines: the same objects as the array, one compact object per line."""
    lines = render("jsonl").splitlines()
    assert len(lines) == 2
    assert all(line.startswith("{") and line.endswith("}") for line in lines)
    assert [json.loads(line) for line in lines] == json.loads(render("json"))


def test_csv_header_is_the_field_order_even_without_rows() -> None:
    """CSV starts with the model's fields in order; empty values are empty cells."""
    rows = list(csv.reader(io.StringIO(render("csv"))))
    assert rows[0] == FIELDS
    assert rows[1] == [
        "a, with comma",
        "0.10",
        "2025-01-17T17:19:49+00:00",
        "2025-01-17",
        "00000000-0000-0000-0000-000000000001",
        "buy",
        "",
    ]
    assert rows[2][1] == "12345678901234567890.123456789"
    assert rows[2][3] == ""
    assert list(csv.reader(io.StringIO(render("csv", [])))) == [FIELDS]


def test_empty_lists_in_the_other_formats() -> None:
    """No rows is an empty JSON array, no JSON lines at all, and a table with its header."""
    assert json.loads(render("json", [])) == []
    assert render("jsonl", []) == ""
    assert "amount" in render("table", [])


def test_one_record_in_each_format() -> None:
    """A single record is an object in JSON, one line in JSON lines, a header and a row in CSV."""
    as_object = json.loads(render("json", one=True))
    assert isinstance(as_object, dict)
    assert as_object == json.loads(render("json"))[0]
    lines = render("jsonl", one=True).splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == as_object
    as_csv = list(csv.reader(io.StringIO(render("csv", one=True))))
    assert len(as_csv) == 2
    assert as_csv[0] == FIELDS
    assert as_csv[1][1] == "0.10"
    table = render("table", one=True)
    for label, value in (("amount", "0.10"), ("side", "buy"), ("name", "a, with comma")):
        assert label in table
        assert value in table


def test_table_shows_values() -> None:
    """The table carries every value, money exact, in a column per field."""
    table = render("table")
    for value in ("12345678901234567890.123456789", "0.10", "a, with comma", "buy", "sell"):
        assert value in table
    assert str(uuid.UUID(int=2)) in table
    header = next(line for line in table.splitlines() if "amount" in line)
    assert header.index("name") < header.index("amount") < header.index("side")


@pytest.mark.parametrize("fmt", FORMATS)
def test_naive_datetime_is_refused_in_every_format(fmt: str) -> None:
    """A time without a zone is ambiguous in a financial record: refused, not guessed."""
    naive = ROWS[0].model_copy(update={"when": dt.datetime(2025, 1, 1)})  # noqa: DTZ001 - the point
    with pytest.raises(ValueError, match="naive datetime"):
        render(fmt, [naive])
    with pytest.raises(ValueError, match="naive datetime"):
        to_jsonable(dt.datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


def test_scalar_conversions() -> None:
    """UUIDs, enums, None, booleans and nested values convert to their JSON forms."""
    assert to_jsonable(uuid.UUID(int=3)) == "00000000-0000-0000-0000-000000000003"
    assert to_jsonable(Side.SELL) == "sell"
    assert to_jsonable(None) is None
    assert to_jsonable(True) is True  # noqa: FBT003 - a literal value under test
    assert to_jsonable({"a": [decimal.Decimal("1.50")]}) == {"a": ["1.50"]}
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert to_jsonable(dt.datetime(2025, 3, 1, 9, 30, tzinfo=zone)) == "2025-03-01T09:30:00+05:30"


def test_document_is_one_object_keyed_by_section() -> None:
    """Several lists print as one JSON object in json, and one list after another otherwise."""
    stream = io.StringIO()
    renderer = Renderer(fmt="json", console=Console(file=stream), stream=stream)
    renderer.document([("first", Row, ROWS[:1]), ("second", Row, ROWS[1:])])
    data = json.loads(stream.getvalue())
    assert list(data) == ["first", "second"]
    assert data["second"][0]["amount"] == "12345678901234567890.123456789"
    stream = io.StringIO()
    Renderer(fmt="jsonl", console=Console(file=stream), stream=stream).document(
        [("first", Row, ROWS[:1]), ("second", Row, ROWS[1:])]
    )
    assert [json.loads(line)["name"] for line in stream.getvalue().splitlines()] == [
        "a, with comma",
        "b",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_data_goes_to_stdout_only(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """By default every format writes to stdout and nothing to stderr."""
    Renderer(fmt=fmt, console=Console(width=200)).rows(Row, ROWS)
    out, err = capsys.readouterr()
    assert "12345678901234567890.123456789" in out
    assert err == ""


class Other(BaseModel):
    """A second record type, for documents of several sections."""

    label: str
    amount: decimal.Decimal


def render_document(fmt: str) -> str:
    """Render a two-section document (two record types) as `dashtam demo` does."""
    stream = io.StringIO()
    renderer = Renderer(fmt=fmt, console=Console(file=stream, width=200), stream=stream)
    others = [Other(label="x", amount=decimal.Decimal("1.5"))]
    renderer.document([("rows", Row, ROWS), ("others", Other, others)])
    return stream.getvalue()


def test_a_document_in_jsonl_is_one_stream_with_a_record_field() -> None:
    """JSON lines of several record types: every line parses and names its record type."""
    lines = [json.loads(line) for line in render_document("jsonl").splitlines()]
    assert [line["record"] for line in lines] == ["rows", "rows", "others"]
    assert list(lines[0]) == ["record", *FIELDS]
    assert lines[2] == {"record": "others", "label": "x", "amount": "1.5"}


def test_a_document_in_csv_is_one_table_with_one_header() -> None:
    """CSV of several record types: one header (record, then every field), every row parses."""
    rows = list(csv.DictReader(io.StringIO(render_document("csv"))))
    text = render_document("csv").splitlines()
    assert text[0] == ",".join(["record", *FIELDS, "label"])  # amount is shared
    assert len(text) == 4
    assert [r["record"] for r in rows] == ["rows", "rows", "others"]
    assert rows[0]["name"] == "a, with comma"
    assert rows[2]["label"] == "x"
    assert rows[2]["amount"] == "1.5"
    assert rows[2]["name"] == ""
