"""Renders pydantic models as a rich table, a JSON array, JSON lines or CSV on stdout."""

from __future__ import annotations

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

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pydantic import BaseModel
    from rich.console import Console

__all__ = ["Renderer", "to_jsonable"]


def to_jsonable(value: Any) -> Any:  # noqa: ANN401, C901, PLR0911 - one flat match over value types
    """Convert a field value to what JSON and CSV print.

    Money stays exact (``Decimal`` becomes a decimal string, never a float);
    datetimes become ISO 8601 with an explicit offset (naive ones are refused,
    since a time without a zone is ambiguous in a financial record).
    """
    match value:
        case None | bool() | int() | str():
            return value
        case decimal.Decimal():
            return format(value, "f")
        case float():
            return value
        case dt.datetime():
            if value.tzinfo is None:
                msg = "naive datetime in output: every time dashtam prints has an offset"
                raise ValueError(msg)
            return value.isoformat()
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


def _row(model: BaseModel, fields: Sequence[str]) -> dict[str, Any]:
    return {name: to_jsonable(getattr(model, name)) for name in fields}


def _cell(value: Any) -> str:  # noqa: ANN401
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=False)
    return str(value)


@dataclasses.dataclass(slots=True)
class Renderer:
    """Prints data in one of the four formats; data goes to stdout only.

    ``console`` is the rich console bound to stdout, used for tables only:
    machine formats are written straight to ``stream`` so nothing wraps,
    truncates or colours them.
    """

    fmt: str
    console: Console
    stream: TextIO = dataclasses.field(default_factory=lambda: sys.stdout)

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
            for name in fields:
                table.add_row(name.replace("_", " "), _cell(row[name]))
            self.console.print(table)
        self.stream.flush()

    def document(
        self, sections: Sequence[tuple[str, type[BaseModel], Sequence[BaseModel]]]
    ) -> None:
        """Print several lists: one JSON object keyed by section, or each list in turn."""
        if self.fmt != "json":
            for title, model, items in sections:
                self.rows(model, items, title=title if self.fmt == "table" else None)
            return
        document = {
            key: [_row(item, list(model.model_fields)) for item in items]
            for key, model, items in sections
        }
        json.dump(document, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")
        self.stream.flush()

    def _table(
        self, model: type[BaseModel], items: Sequence[BaseModel], *, title: str | None
    ) -> None:
        """A table for people: the model's ``table_columns`` (all fields if it has none).

        Times show in local time to the minute; the machine formats keep every
        field and full ISO 8601 times.
        """
        from rich.table import Table

        columns: Sequence[str] = getattr(model, "table_columns", None) or list(model.model_fields)
        table = Table(title=title, header_style="bold")
        for name in columns:
            annotation = str(model.model_fields[name].annotation)
            numeric = any(t in annotation for t in ("Decimal", "int", "float"))
            table.add_column(
                name.replace("_", " "),
                justify="right" if numeric else "left",
                overflow="fold",
            )
        for item in items:
            table.add_row(*(_table_cell(getattr(item, name)) for name in columns))
        self.console.print(table)


def _table_cell(value: Any) -> str:  # noqa: ANN401
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    return _cell(to_jsonable(value))
