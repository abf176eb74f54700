"""The renderer: exact money, times with offsets, stable fields, four formats, data on stdout."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import uuid

import pytest
from pydantic import BaseModel
from rich.console import Console

from dashtam_cli.cli.output import Renderer, to_jsonable


class Row(BaseModel):
    """A record with every kind of value the renderer meets."""

    name: str
    amount: decimal.Decimal
    when: dt.datetime
    day: dt.date | None
    ref: uuid.UUID
    note: str | None


ROWS = [
    Row(
        name="a, with comma",
        amount=decimal.Decimal("0.10"),
        when=dt.datetime(2025, 1, 17, 17, 19, 49, tzinfo=dt.UTC),
        day=dt.date(2025, 1, 17),
        ref=uuid.UUID(int=1),
        note=None,
    ),
    Row(
        name="b",
        amount=decimal.Decimal("12345678901234567890.123456789"),
        when=dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        day=None,
        ref=uuid.UUID(int=2),
        note="x",
    ),
]


def render(fmt: str, rows: list[Row] | None = None, *, one: bool = False) -> str:
    """Render into a string."""
    stream = io.StringIO()
    renderer = Renderer(fmt=fmt, console=Console(file=stream, width=200), stream=stream)
    if one:
        renderer.one(ROWS[0])
    else:
        renderer.rows(Row, ROWS if rows is None else rows)
    return stream.getvalue()


def test_json_keeps_money_exact_and_times_with_offsets() -> None:
    """Decimals are strings with every digit; datetimes are ISO 8601 with their offset."""
    data = json.loads(render("json"))
    assert [r["amount"] for r in data] == ["0.10", "12345678901234567890.123456789"]
    assert data[0]["when"] == "2025-01-17T17:19:49+00:00"
    assert data[1]["when"] == "2025-01-17T12:00:00-05:00"
    assert data[0]["day"] == "2025-01-17"
    assert data[1]["day"] is None
    assert data[0]["ref"] == str(uuid.UUID(int=1))
    assert list(data[0]) == list(Row.model_fields)


def test_jsonl_is_one_object_per_line() -> None:
    """JSON lines: the same objects as the array, one per line."""
    lines = render("jsonl").splitlines()
    assert [json.loads(line) for line in lines] == json.loads(render("json"))


def test_csv_header_is_the_field_order_even_without_rows() -> None:
    """CSV starts with the model's fields in order; empty values are empty cells."""
    rows = list(csv.reader(io.StringIO(render("csv"))))
    assert rows[0] == list(Row.model_fields)
    assert rows[1][0] == "a, with comma"
    assert rows[1][1] == "0.10"
    assert rows[1][5] == ""
    assert list(csv.reader(io.StringIO(render("csv", [])))) == [list(Row.model_fields)]


def test_one_record_in_each_format() -> None:
    """A single record is an object in JSON, one line in JSON lines, a header and a row in CSV."""
    assert json.loads(render("json", one=True))["amount"] == "0.10"
    assert len(render("jsonl", one=True).splitlines()) == 1
    assert len(list(csv.reader(io.StringIO(render("csv", one=True))))) == 2
    table = render("table", one=True)
    assert "amount" in table
    assert "0.10" in table


def test_table_shows_values() -> None:
    """The table carries the values, money exact."""
    table = render("table")
    assert "12345678901234567890.123456789" in table
    assert "a, with comma" in table


def test_naive_datetime_is_refused() -> None:
    """A time without a zone is ambiguous in a financial record: refused, not guessed."""
    with pytest.raises(ValueError, match="naive datetime"):
        to_jsonable(dt.datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test
