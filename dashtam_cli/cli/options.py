"""Options shared by several commands, declared once."""

from __future__ import annotations

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
