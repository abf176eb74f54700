"""Options shared by several commands, and their parsers, declared once."""

from __future__ import annotations

import datetime as dt
import math
from typing import overload

import typer

from dashtam_cli.cli.completion import connection_names

FORMATS = ("table", "json", "jsonl", "csv")


@overload
def bounded(value: str, *, option: str, low: float, high: float, whole: bool = True) -> float: ...
@overload
def bounded(value: None, *, option: str, low: float, high: float, whole: bool = True) -> None: ...
def bounded(
    value: str | None, *, option: str, low: float, high: float, whole: bool = True
) -> float | None:
    """A number given as ``option`` within bounds, refused in words a person reads.

    Typer's own ``min=``/``max=`` answer in a validator's words ("Input should be
    greater than or equal to 1"); this says which option, what was given and
    what is taken. Whole numbers come back as ``int``.
    """
    if value is None:
        return None
    kind = "a whole number" if whole else "a number"
    wanted = f"{kind} from {_show(low)} to {_show(high)}"
    try:
        number: float = int(value.strip()) if whole else float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        msg = f"{value!r} is not {wanted}"
        raise typer.BadParameter(msg, param_hint=option)
    return number


def _show(number: float) -> str:
    """``1,000,000,000``, ``0.5``: a bound as a person reads it."""
    return f"{int(number):,}" if float(number).is_integer() else f"{number:,}"


def _check_format(value: str | None) -> str | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered not in FORMATS:
        msg = f"{value!r} is not one of {', '.join(FORMATS)}"
        raise typer.BadParameter(msg)
    return lowered


FORMAT = typer.Option(
    "--format",
    "-f",
    help="Output format: table, json, jsonl or csv. Default: table on a terminal, json when piped.",
    callback=_check_format,
    metavar="[table|json|jsonl|csv]",
)


# Dates outside these are refused: near year 1 or 9999 a time zone or a day's
# end overflows Python's datetime, and no provider's history reaches them.
EARLIEST = dt.datetime(1970, 1, 1)  # noqa: DTZ001 - compared with the time as written
LATEST = dt.datetime(2100, 1, 1)  # noqa: DTZ001 - the end of 2099-12-31


def parse_when(value: str | None, *, option: str, end_of_day: bool = False) -> dt.datetime | None:
    """A date (YYYY-MM-DD, local midnight; the end of that day for --until) or an ISO 8601 time.

    The time as written (before any zone is applied) must lie from 1970-01-01
    to the end of 2099-12-31, so converting it to UTC cannot overflow.
    """
    if value is None:
        return None
    try:
        if len(value) == 10:  # noqa: PLR2004 - YYYY-MM-DD
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day, dt.time())
            if end_of_day and day < dt.date.max:  # the day after 9999-12-31 overflows
                moment += dt.timedelta(days=1)
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        msg = f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        raise typer.BadParameter(msg, param_hint=option) from None
    if not EARLIEST <= moment.replace(tzinfo=None) <= LATEST:
        msg = f"{value!r} is outside the dates dashtam handles (1970-01-01 to 2099-12-31)"
        raise typer.BadParameter(msg, param_hint=option)
    return moment if moment.tzinfo else moment.astimezone()


# A repeatable --connection: the commands that work on several connections at once.
CONNECTIONS = typer.Option(
    "--connection",
    "-c",
    help="Only this connection (repeatable; default: all).",
    show_default=False,
    autocompletion=connection_names,
)
