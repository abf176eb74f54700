"""The JSON line a stored record prints as, read from its stored text without pydantic.

A transaction is stored as JSON text (sealed). ``--format jsonl`` prints
each record as one compact JSON line: what pydantic's ``model_dump_json``
writes, but for times (``Z`` printed ``+00:00``, as ``datetime.isoformat``
does) and money (two decimal places at least). :class:`Plain` prints a
parsed record and :class:`Line` a record's text that way, each only when
the record has exactly the shape ``model_dump_json`` writes; anything else
is left to the model's validation (``None``).

The sync stores a transaction in its printed form where :class:`Line` takes
it, and marks the row with :data:`LINE_FORM` (the ``form`` column): printing
such a row is writing its text. Tests hold both to what the validated model
prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import re
import types
import typing
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import BaseModel

__all__ = [
    "LINE_FORM",
    "Line",
    "Plain",
    "Printed",
    "line_of",
    "money_fields",
    "plain_of",
    "stored_form",
]

LINE_FORM: Final = 1
"""The ``form`` of a transaction row whose text is its JSON line, as printed.

Tied to the fields of :class:`~dashtam_cli.core.models.Transaction`: a
change to them needs a new number (and rows of this one read as records to
check), or old rows would print without the new field. A test pins them.
A row of any other form (NULL: rows stored before it) is checked as it is
printed.
"""


class Printed(str):
    """A stored record's text that is already its JSON line: printed as it is."""

    __slots__ = ()


def money_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` printed as money (two decimal places at least)."""
    found: frozenset[str] = getattr(model, "money_fields", frozenset())
    return found


# What dashtam's own model_dump_json writes, exactly: a stored value of any
# other form is left to pydantic (see Plain). It writes microseconds only
# when there are some, as datetime.isoformat does.
_DATE_TEXT: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_TEXT: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(?!000000)\d{6})?(?:Z|[+-]\d{2}:\d{2})"
)
# No exponent and no leading zero: the decimal's 'f' format is the text itself.
_DECIMAL_TEXT: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")


@dataclasses.dataclass(frozen=True, slots=True)
class Plain:
    """Prints a stored JSON record as the row its validated model prints, without pydantic.

    Only the shapes ``model_dump_json`` writes are taken: every field
    present and no other, each a string (or null where allowed), times with
    an offset, dates as YYYY-MM-DD, decimals without exponent, enum members
    by value. Times only change (``Z`` is printed ``+00:00``, as
    ``datetime.isoformat`` does) and money gets two decimal places at least;
    the rest is printed as stored. Anything else is not converted (``row``
    returns None) and the caller validates the record into the model, which
    prints it or refuses it as before. Tests compare both ways on varied records.
    """

    order: tuple[str, ...]
    names: frozenset[str]
    nullable: frozenset[str]
    texts: tuple[str, ...]
    times: tuple[str, ...]
    dates: tuple[str, ...]
    decimals: tuple[str, ...]
    money: frozenset[str]
    enums: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def of(cls, model: type[BaseModel]) -> Plain | None:
        """The conversion for ``model``, or None when a field has a type it does not take."""
        kinds: dict[str, list[str]] = {"str": [], "datetime": [], "date": [], "decimal": []}
        nullable: set[str] = set()
        enums: list[tuple[str, frozenset[str]]] = []
        for name, info in model.model_fields.items():
            if info.metadata or info.alias or not info.is_required():
                return None
            annotation: Any = info.annotation
            if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is (
                typing.Union
            ):
                members = [a for a in typing.get_args(annotation) if a is not type(None)]
                if len(members) != 1 or len(members) == len(typing.get_args(annotation)):
                    return None
                annotation = members[0]
                nullable.add(name)
            if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
                enums.append((name, frozenset(member.value for member in annotation)))
                kinds["str"].append(name)
                continue
            kind = {str: "str", dt.datetime: "datetime", dt.date: "date"}.get(annotation)
            kind = "decimal" if annotation is decimal.Decimal else kind
            if kind is None:
                return None
            kinds[kind].append(name)
        return cls(
            order=tuple(model.model_fields),
            names=frozenset(model.model_fields),
            nullable=frozenset(nullable),
            texts=tuple(kinds["str"]),
            times=tuple(kinds["datetime"]),
            dates=tuple(kinds["date"]),
            decimals=tuple(kinds["decimal"]),
            money=money_fields(model),
            enums=tuple(enums),
        )

    def row(self, record: dict[str, Any]) -> dict[str, Any] | None:  # noqa: C901, PLR0911, PLR0912 - checks in a row
        """The printed row of ``record``, or None when it is not in the stored shape."""
        if record.keys() != self.names:
            return None
        row = {name: record[name] for name in self.order}
        nullable = self.nullable
        for name in self.texts:
            value = row[name]
            if type(value) is not str and (value is not None or name not in nullable):
                return None
        for name, members in self.enums:
            if row[name] not in members:
                return None
        for name in self.dates:
            value = row[name]
            if value is None:
                if name not in nullable:
                    return None
            elif type(value) is not str or not _valid(_DATE_TEXT, dt.date.fromisoformat, value):
                return None
        for name in self.times:
            value = row[name]
            if type(value) is not str or not _valid(
                _DATETIME_TEXT, dt.datetime.fromisoformat, value
            ):
                if value is None and name in nullable:
                    continue
                return None
            if value[-1] == "Z":
                row[name] = f"{value[:-1]}+00:00"
        for name in self.decimals:
            value = row[name]
            if type(value) is not str or _DECIMAL_TEXT.fullmatch(value) is None:
                if value is None and name in nullable:
                    continue
                return None
            if name in self.money:
                whole, _, cents = value.partition(".")
                if len(cents) < 2:  # noqa: PLR2004 - cents
                    row[name] = f"{whole}.{cents.ljust(2, '0')}"
        return row


_time = dt.datetime.fromisoformat
_date = dt.date.fromisoformat


def _valid(form: re.Pattern[str], parse: Callable[[str], object], value: str) -> bool:
    """Whether ``value`` has the stored form and is a real date or time (no 30 February)."""
    if form.fullmatch(value) is None:
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


_PLAIN: dict[type[BaseModel], Plain | None] = {}

# A JSON string with no escape in it: printed the same by pydantic and by json
# (ensure_ascii off); one with an escape goes the parsed way.
_STRING: Final = r'"[^"\\\x00-\x1f]*"'


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """Prints a stored record's JSON text as its validated model's JSON line, without parsing it.

    ``model_dump_json`` writes the fields in order, compact, as the JSON
    line has them: only times (``Z`` becomes ``+00:00``) and money with
    fewer than two decimal places differ. The whole text must match the
    stored shape (the same forms :class:`Plain` takes, and no escaped
    character in any string); otherwise ``line`` returns None.
    """

    pattern: re.Pattern[str]
    # The captured values that may change, in order (group number, whether money; else a time).
    edits: tuple[tuple[int, bool], ...]
    dates: tuple[int, ...]

    @classmethod
    def of(cls, plain: Plain) -> Line:
        """The line conversion for the records ``plain`` takes."""
        enums = dict(plain.enums)
        parts: list[str] = []
        edits: list[tuple[int, bool]] = []
        dates: list[int] = []
        for group, name in enumerate(plain.order, start=1):
            if name in enums:
                value = '"(?:' + "|".join(re.escape(m) for m in sorted(enums[name])) + ')"'
            elif name in plain.dates:
                value = f'"{_DATE_TEXT.pattern}"'
                dates.append(group)
            elif name in plain.times:
                value = f'"{_DATETIME_TEXT.pattern}"'
                edits.append((group, False))
            elif name in plain.decimals:
                value = f'"{_DECIMAL_TEXT.pattern}"'
                if name in plain.money:
                    edits.append((group, True))
            else:
                value = _STRING
            if name in plain.nullable:
                value = f"(?:null|{value})"
            parts.append(f'"{re.escape(name)}":({value})')
        return cls(re.compile("{" + ",".join(parts) + "}"), tuple(edits), tuple(dates))

    def line(self, text: str) -> str | None:  # noqa: C901 - checks, then edits
        """The JSON line of the record stored as ``text``, or None when it is not in that shape."""
        match = self.pattern.fullmatch(text)
        if match is None:
            return None
        group = match.group
        try:
            for index in self.dates:
                value = group(index)
                if value[0] == '"':
                    _date(value[1:-1])  # a real date: no 30 February
        except ValueError:
            return None
        pieces: list[str] = []
        done = 0
        for index, money in self.edits:
            value = group(index)
            if value[0] != '"':
                continue  # null
            if money:
                # Two decimal places at least: only zeros are added, before the closing quote.
                dot = value.find(".")
                if dot < 0 or len(value) - dot < 4:  # noqa: PLR2004 - '.', two digits, '"'
                    end = match.end(index) - 1
                    pieces += (text[done:end], ".00" if dot < 0 else "0")
                    done = end
                continue
            try:
                _time(value[1:-1])  # a real time: no 25 o'clock
            except ValueError:
                return None
            if value[-2] == "Z":
                # datetime.isoformat writes UTC as +00:00.
                end = match.end(index) - 1
                pieces += (text[done : end - 1], "+00:00")
                done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


_LINE: dict[type[BaseModel], Line | None] = {}


def line_of(model: type[BaseModel]) -> Line | None:
    """The converter of ``model``'s stored text to its JSON line (None for a model without one)."""
    if model not in _LINE:
        plain = plain_of(model)
        _LINE[model] = None if plain is None else Line.of(plain)
    return _LINE[model]


def plain_of(model: type[BaseModel]) -> Plain | None:
    """The record conversion of ``model`` (None for a model without one)."""
    if model not in _PLAIN:
        _PLAIN[model] = Plain.of(model)
    return _PLAIN[model]


def stored_form(model: type[BaseModel], dumped: str) -> tuple[str, int | None]:
    """The text to store for a record whose ``model_dump_json`` is ``dumped``, and its form.

    Its JSON line and :data:`LINE_FORM` when :class:`Line` takes it; else
    ``dumped`` itself and None (an escaped character or a decimal with an
    exponent, rare).
    """
    converter = line_of(model)
    line = None if converter is None else converter.line(dumped)
    return (dumped, None) if line is None else (line, LINE_FORM)
