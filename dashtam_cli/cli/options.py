"""Options shared by several commands, and their parsers, declared once."""

from __future__ import annotations

import datetime as dt

import typer

FORMATS = ("table", "json", "jsonl", "csv")


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


def parse_when(value: str | None, *, end_of_day: bool = False) -> dt.datetime | None:
    """A date (YYYY-MM-DD, local midnight; the end of that day for --until) or an ISO 8601 time."""
    if value is None:
        return None
    try:
        if len(value) == 10:  # noqa: PLR2004 - YYYY-MM-DD
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(
                day + dt.timedelta(days=1) if end_of_day else day, dt.time()
            )
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        msg = f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        raise typer.BadParameter(msg) from None
    return moment if moment.tzinfo else moment.astimezone()
