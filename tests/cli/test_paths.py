"""`dashtam paths` prints every directory, relocated by DASHTAM_HOME, in every format."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import CliCall


def test_json_lists_every_directory_under_dashtam_home(cli: CliCall, isolated_env: Path) -> None:
    """With DASHTAM_HOME set, every path sits under it, and the names are stable."""
    result = cli("--format", "json", "paths")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    by_name = {row["name"]: row["path"] for row in rows}
    assert by_name == {
        "config_dir": str(isolated_env / "config"),
        "config_file": str(isolated_env / "config" / "config.toml"),
        "data_dir": str(isolated_env / "data"),
        "vault": str(isolated_env / "data" / "vault.sqlite3"),
        "cache_dir": str(isolated_env / "cache"),
        "log_dir": str(isolated_env / "logs"),
    }
    assert all(row["exists"] is False for row in rows)


@pytest.mark.parametrize("where", ["global", "command"])
def test_csv_and_jsonl_agree_with_json(cli: CliCall, where: str) -> None:
    """The machine formats carry the same rows; --format works before or after the command."""

    def run(fmt: str) -> str:
        args = ("--format", fmt, "paths") if where == "global" else ("paths", "--format", fmt)
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    as_json = json.loads(run("json"))
    as_jsonl = [json.loads(line) for line in run("jsonl").splitlines()]
    as_csv = list(csv.DictReader(io.StringIO(run("csv"))))
    assert as_jsonl == as_json
    assert [r["path"] for r in as_csv] == [r["path"] for r in as_json]
    assert [r["exists"] for r in as_csv] == ["false"] * len(as_json)


def test_piped_output_defaults_to_json(cli: CliCall) -> None:
    """Without --format and with stdout not a terminal, data comes out as JSON."""
    result = cli("paths")
    assert result.exit_code == 0
    assert isinstance(json.loads(result.stdout), list)


def test_table_format_prints_the_paths(cli: CliCall, isolated_env: Path) -> None:
    """The table shows each path in full (folded, never cut)."""
    result = cli("--format", "table", "paths", env={"COLUMNS": "300"})
    assert result.exit_code == 0
    assert "config_dir" in result.stdout
    assert str(isolated_env / "data" / "vault.sqlite3") in result.stdout


def test_unknown_format_is_a_usage_error(cli: CliCall) -> None:
    """A format outside the four is refused with exit 2 and names the choices."""
    result = cli("--format", "xml", "paths")
    assert result.exit_code == 2
    assert "table, json, jsonl, csv" in result.stderr
