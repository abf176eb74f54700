"""Renders pydantic models as a rich table, a JSON array, JSON lines or CSV on stdout."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import decimal
import enum
import json
import sys
import uuid
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TextIO

from dashtam_cli.core import lines
from dashtam_cli.core.lines import Printed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from pydantic import BaseModel
    from rich.console import Console

__all__ = ["Renderer", "to_jsonable"]


def to_jsonable(value: Any) -> Any:  # noqa: ANN401, PLR0911 - one flat match over value types
    """Convert a field value to what JSON and CSV print.

    Money stays exact (``Decimal`` becomes a decimal string, never a float);
    datetimes become ISO 8601 with an explicit offset (naive ones are refused,
    since a time without a zone is ambiguous in a financial record).
    """
    match value:
        case None | bool() | int() | str():
            return value
        case decimal.Decimal():
            return _decimal_text(value)
        case float():
            return value
        case dt.datetime():
            return _datetime_text(value)
        case dt.date() | dt.time():
            return value.isoformat()
        case uuid.UUID() | PurePath():
            return str(value)
        case enum.Enum():
            return to_jsonable(value.value)
        case dict():
            return {str(k): to_jsonable(v) for k, v in value.items()}
        case list() | tuple() | set() | frozenset():
            return [to_jsonable(v) for v in value]
        case _:
            return str(value)


def _decimal_text(value: decimal.Decimal) -> str:
    return format(value, "f")


def _datetime_text(value: dt.datetime) -> str:
    if value.tzinfo is None:
        msg = "naive datetime in output: every time dashtam prints has an offset"
        raise ValueError(msg)
    return value.isoformat()


def money_text(value: decimal.Decimal) -> str:
    """An exact decimal string with at least two decimal places: ``0`` is ``"0.00"``.

    Only zeros are added, so no digit is lost or rounded.
    """
    text = format(value, "f")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"


# Values printed as they are: checked by exact type first, the common case,
# before the general conversion (which gives these types back unchanged).
_AS_IS: frozenset[type] = frozenset({type(None), bool, int, str, float})
# The general conversion of a few exact types, looked up rather than matched.
_CONVERT: dict[type, Callable[[Any], Any]] = {
    decimal.Decimal: _decimal_text,
    dt.datetime: _datetime_text,
    dt.date: dt.date.isoformat,
}


def _row(model: BaseModel, fields: Sequence[str]) -> dict[str, Any]:
    money = lines.money_fields(type(model))
    row: dict[str, Any] = {}
    for name in fields:
        value = getattr(model, name)
        kind = type(value)
        if kind in _AS_IS:
            row[name] = value
        elif name in money and isinstance(value, decimal.Decimal):
            row[name] = money_text(value)
        else:
            row[name] = _CONVERT.get(kind, to_jsonable)(value)
    return row


def _printed(
    model: type[BaseModel], fields: list[str], item: BaseModel | dict[str, Any] | str
) -> dict[str, Any]:
    """The printed row of a model, or of a stored record's JSON text or object."""
    if isinstance(item, str):
        return _text_row(model, item)
    if isinstance(item, dict):
        return _record_row(model, item)
    return _row(item, fields)


def _validated(model: type[BaseModel], item: BaseModel | dict[str, Any] | str) -> BaseModel:
    """A model, or a stored record's JSON text or object validated into ``model``."""
    if isinstance(item, str):
        return model.model_validate_json(item)
    if isinstance(item, dict):
        return model.model_validate(item)
    return item


def _text_row(model: type[BaseModel], text: str) -> dict[str, Any]:
    """The printed row of a record of ``model`` stored as the JSON text ``text``."""
    record = json.loads(text)
    if not isinstance(record, dict):
        return _row(model.model_validate_json(text), list(model.model_fields))
    return _record_row(model, record)


def _record_row(model: type[BaseModel], record: dict[str, Any]) -> dict[str, Any]:
    """The printed row of a stored JSON record of ``model``: converted, or validated and printed."""
    plain = lines.plain_of(model)
    row = None if plain is None else plain.row(record)
    if row is None:
        row = _row(model.model_validate(record), list(model.model_fields))
    return row


def _cell(value: Any) -> str:  # noqa: ANN401
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=False)
    return str(value)


class Renderer:
    """Prints data in one of the four formats; data goes to stdout only.

    ``console`` is the rich console bound to stdout, used for tables only
    (made on first use, with ``color``, when not given): machine formats are
    written straight to ``stream`` so nothing wraps, truncates or colours
    them, and never import rich.
    """

    __slots__ = ("_console", "color", "fmt", "stream")

    def __init__(
        self,
        fmt: str,
        console: Console | None = None,
        stream: TextIO | None = None,
        *,
        color: bool = True,
    ) -> None:
        """Print in ``fmt`` to ``stream`` (stdout by default)."""
        self.fmt = fmt
        self._console = console
        self.stream: TextIO = sys.stdout if stream is None else stream
        self.color = color

    @property
    def console(self) -> Console:
        """The rich console for tables, bound to stdout."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(no_color=not self.color, highlight=False)
        return self._console

    def rows(
        self,
        model: type[BaseModel],
        items: Iterable[BaseModel],
        *,
        title: str | None = None,
    ) -> None:
        """Print a list of records of one model: a table, a JSON array, JSON lines or CSV."""
        fields = list(model.model_fields)
        items = list(items)
        rows = [_row(item, fields) for item in items]
        if self.fmt == "json":
            json.dump(rows, self.stream, indent=2, ensure_ascii=False)
            self.stream.write("\n")
        elif self.fmt == "jsonl":
            for row in rows:
                self.stream.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
                self.stream.write("\n")
        elif self.fmt == "csv":
            writer = csv.DictWriter(self.stream, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
        else:
            self._table(model, list(items), title=title)
        self.stream.flush()

    @contextlib.contextmanager
    def streaming(  # noqa: C901 - one writer per format, each a few lines
        self, model: type[BaseModel]
    ) -> Iterator[Callable[[Sequence[BaseModel | dict[str, Any] | str]], None]]:
        """Yield a function that prints records batch by batch, as they are read.

        JSON lines and CSV write each batch at once, and a JSON array is
        written element by element, so memory does not grow with the rows. A
        table needs every row to size its columns: it is printed at the end.

        A record is a model, or the JSON text or object a model of ``model``
        was stored as: printed byte for byte as its validated model would be.
        A :class:`~dashtam_cli.core.lines.Printed` text is its JSON line already.
        """
        fields = list(model.model_fields)
        if self.fmt == "table":
            held: list[BaseModel] = []

            def hold(batch: Sequence[BaseModel | dict[str, Any] | str]) -> None:
                held.extend(_validated(model, item) for item in batch)

            yield hold
            self._table(model, held, title=None)
            self.stream.flush()
            return
        write = self.stream.write
        # One encoder for every line, not one built per call of json.dumps.
        line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        converter = lines.line_of(model) if self.fmt == "jsonl" else None
        first = True
        writer = csv.DictWriter(self.stream, fieldnames=fields, lineterminator="\n")

        def emit(batch: Sequence[BaseModel | dict[str, Any] | str]) -> None:
            # The opening ("[" or the CSV header) waits for the first rows, so a
            # command that fails before any leaves stdout empty.
            nonlocal first
            if self.fmt == "jsonl":
                # Line by line: a reader that goes away (`| head -1`) is seen as a
                # broken pipe, where one large write can end as if delivered.
                for item in batch:
                    if type(item) is Printed:  # stored as its line
                        write(item + "\n")
                        continue
                    # A stored record's text, in the stored shape, is nearly its line already.
                    text = (
                        converter.line(item)
                        if converter is not None and type(item) is str
                        else None
                    )
                    if text is None:
                        text = line(_printed(model, fields, item))
                    write(text + "\n")
                first = first and not batch
                return
            for item in batch:
                row = _printed(model, fields, item)
                if self.fmt == "csv":
                    if first:
                        writer.writeheader()
                    writer.writerow({k: _cell(v) for k, v in row.items()})
                else:
                    write("[\n  " if first else ",\n  ")
                    write(json.dumps(row, ensure_ascii=False, indent=2).replace("\n", "\n  "))
                first = False

        yield emit
        if self.fmt == "json":
            write("[]\n" if first else "\n]\n")
        elif self.fmt == "csv" and first:
            writer.writeheader()
        self.stream.flush()

    def one(self, item: BaseModel, *, title: str | None = None) -> None:
        """Print one record: a two-column table, a JSON object, one JSON line or CSV."""
        fields = list(type(item).model_fields)
        row = _row(item, fields)
        if self.fmt == "json":
            json.dump(row, self.stream, indent=2, ensure_ascii=False)
            self.stream.write("\n")
        elif self.fmt in {"jsonl", "csv"}:
            self.rows(type(item), [item])
            return
        else:
            from rich.table import Table

            table = Table(title=title, show_header=False, box=None, pad_edge=False)
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            money = lines.money_fields(type(item))
            for name in fields:
                value = getattr(item, name)
                if name in money and isinstance(value, decimal.Decimal):
                    cell = money_cell(value, getattr(item, "currency", None))
                elif isinstance(value, dt.datetime):
                    local = value.astimezone()
                    cell = f"{local:%Y-%m-%d %H:%M} {local.tzname() or ''}".rstrip()
                else:
                    cell = _cell(row[name])
                table.add_row(name.replace("_", " "), cell)
            self.console.print(table)
        self.stream.flush()

    def document(
        self, sections: Sequence[tuple[str, type[BaseModel], Sequence[BaseModel]]]
    ) -> None:
        """Print several lists as one stream a program can parse.

        JSON: one object keyed by section. JSON lines and CSV: every record,
        with a ``record`` field naming its section first (CSV's header is the
        union of the sections' fields, in order). Tables: each list in turn.
        """
        if self.fmt == "table":
            for title, model, items in sections:
                self.rows(model, items, title=title)
            return
        if self.fmt in {"jsonl", "csv"}:
            self._records(sections)
            return
        document = {
            key: [_row(item, list(model.model_fields)) for item in items]
            for key, model, items in sections
        }
        json.dump(document, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")
        self.stream.flush()

    def _records(
        self, sections: Sequence[tuple[str, type[BaseModel], Sequence[BaseModel]]]
    ) -> None:
        fields: dict[str, None] = {"record": None}
        for _, model, _ in sections:
            fields.update(dict.fromkeys(model.model_fields))
        writer = csv.DictWriter(self.stream, fieldnames=list(fields), lineterminator="\n")
        if self.fmt == "csv":
            writer.writeheader()
        for key, model, items in sections:
            for item in items:
                row = {"record": key, **_row(item, list(model.model_fields))}
                if self.fmt == "csv":
                    writer.writerow({k: _cell(v) for k, v in row.items()})
                else:
                    self.stream.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
                    self.stream.write("\n")
        self.stream.flush()

    def _table(
        self, model: type[BaseModel], items: Sequence[BaseModel], *, title: str | None
    ) -> None:
        """A table for people that fits the terminal, one line per row.

        The columns are the model's ``table_columns`` (all fields if it has
        none). Numbers, dates, times and ids keep their full width and never
        wrap; free text (``table_text``) is cut with an ellipsis; when even
        that is too wide, the columns of ``table_drop`` are left out in order.
        Money has its currency's decimal places and is aligned right; times
        are local, to the minute, with the zone once in the header. The
        machine formats keep every field, exact, with full ISO 8601 times.
        """
        from rich import box
        from rich.table import Table

        columns = [
            _Column.build(model, name, items)
            for name in getattr(model, "table_columns", None) or list(model.model_fields)
        ]
        columns = _fit(columns, list(getattr(model, "table_drop", ())), self.console.width)
        table = Table(
            title=title,
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for column in columns:
            table.add_column(
                column.label,
                justify="right" if column.numeric else "left",
                width=column.width,
                no_wrap=column.kind != "fold",
                overflow="ellipsis" if column.kind == "text" else "fold",
            )
        for index in range(len(items)):
            table.add_row(*(column.cells[index] for column in columns))
        self.console.print(table)


# Decimal places of the currencies that do not have two (ISO 4217 minor units).
_CURRENCY_PLACES: dict[str, int] = {
    "BHD": 3,
    "CLP": 0,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "OMR": 3,
    "TND": 3,
    "VND": 0,
}
_TEXT_MIN_WIDTH = 8
_FOLD_MIN_WIDTH = 16
# What the table's box and padding take: one space each side of a column,
# and one character between two columns.
_PER_COLUMN = 3
_LABELS: dict[str, str] = {
    "average_price": "avg price",
    "day_profit_loss": "day P/L",
    "market_value": "mkt value",
    "total_value": "total",
    "buying_power": "buying power",
    "http_status": "HTTP",
    "duration_ms": "ms",
    "correlation_id": "correlation id",
    "access_expires_at": "access expires",
    "refresh_expires_at": "refresh expires",
    "access_expires": "access expires",
    "refresh_expires": "refresh expires",
    "created_at": "created",
    "requests_left": "left today",
    "unrealized_gain": "gain",
}


def money_cell(value: decimal.Decimal, currency: str | None) -> str:
    """Money for a table: rounded to its currency's places (two for USD), named unless USD.

    An amount in another currency, or in a custom one (miles, points), says
    which, so that no one reads it as dollars.
    """
    places = _CURRENCY_PLACES.get((currency or "USD").upper(), 2)
    with decimal.localcontext() as context:
        context.prec = max(len(value.as_tuple().digits) + places + 2, 28)
        text = format(
            value.quantize(decimal.Decimal(1).scaleb(-places), decimal.ROUND_HALF_UP), "f"
        )
    if currency is None or currency.upper() == "USD":
        return text
    from dashtam_cli.core.models import currency_label

    return f"{text} {currency_label(currency)}"


@dataclasses.dataclass(slots=True)
class _Column:
    """One table column: its cells as text, its kind and the width it needs."""

    name: str
    label: str
    kind: str  # fixed: never wraps or shrinks; text: cut with "..."; fold: wraps (paths)
    numeric: bool
    cells: list[str]
    width: int

    @classmethod
    def build(cls, model: type[BaseModel], name: str, items: Sequence[BaseModel]) -> _Column:
        annotation = str(model.model_fields[name].annotation) if name in model.model_fields else ""
        numeric = any(t in annotation for t in ("Decimal", "int", "float"))
        money = name in lines.money_fields(model)
        values = [
            item.table_value(name) if hasattr(item, "table_value") else getattr(item, name)
            for item in items
        ]
        label = _LABELS.get(name, name.replace("_", " "))
        if "datetime.datetime" in annotation:
            zones = sorted(
                {v.astimezone().tzname() or "" for v in values if isinstance(v, dt.datetime)}
            )
            zone = "/".join(zones) or (dt.datetime.now().astimezone().tzname() or "")
            label = f"{label} ({zone})"
        cells = []
        for item, value in zip(items, values, strict=True):
            if money and isinstance(value, decimal.Decimal):
                cells.append(money_cell(value, getattr(item, "currency", None)))
            else:
                cells.append(_table_cell(value))
        text = name in getattr(model, "table_text", frozenset())
        kind = "text" if text else "fold" if "Path" in annotation else "fixed"
        width = max([len(label), *(len(c) for c in cells)])
        return cls(name=name, label=label, kind=kind, numeric=numeric, cells=cells, width=width)

    @property
    def least(self) -> int:
        """The narrowest this column may be."""
        if self.kind == "fixed":
            return self.width
        return min(self.width, _TEXT_MIN_WIDTH if self.kind == "text" else _FOLD_MIN_WIDTH)


def _fit(columns: list[_Column], drop: list[str], width: int) -> list[_Column]:
    """Leave out columns in ``drop`` order until the rest fit ``width``; share out the room."""

    def needed(cols: list[_Column]) -> int:
        return sum(c.least for c in cols) + _PER_COLUMN * len(cols) - 3

    columns = list(columns)
    for name in drop:
        if needed(columns) <= width:
            break
        columns = [c for c in columns if c.name != name]
    while len(columns) > 1 and needed(columns) > width:
        columns.pop()  # a last resort: fewer columns rather than a broken number
    spare = width - sum(c.width for c in columns) - _PER_COLUMN * len(columns) + 3
    if spare < 0:
        # Shrink the text columns, widest first, down to their least width.
        for column in sorted(columns, key=lambda c: c.width, reverse=True):
            if column.kind == "fixed":
                continue
            cut = min(-spare, column.width - column.least)
            column.width -= cut
            spare += cut
            if spare >= 0:
                break
    return columns


def _table_cell(value: Any) -> str:  # noqa: ANN401
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    return _cell(to_jsonable(value))
