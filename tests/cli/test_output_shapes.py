"""Every command's JSON output is documented (docs/output.md, data.md) and these tests pin it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from token_support import add_connection, token_set

from dashtam_cli.core import models

if TYPE_CHECKING:
    from conftest import CliCall
    from pydantic import BaseModel

DOCS = Path(__file__).parents[2] / "docs"
HEADING = re.compile(r"^### `?(\w+)`?\s*$")
FIELD_ROW = re.compile(r"^\| `(\w+)` \|")


def documented_fields(doc: str) -> dict[str, list[str]]:
    """The fields each record's table lists, by record name, in the order written."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in (DOCS / doc).read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading:
            current = heading[1]
            fields[current] = []
        elif current is not None and (row := FIELD_ROW.match(line)):
            fields[current].append(row[1])
    return fields


RECORDS: list[tuple[str, type[BaseModel]]] = [
    ("output.md", models.AuditEntry),
    ("output.md", models.ConnectionInfo),
    ("output.md", models.PathEntry),
    ("output.md", models.VaultStatus),
    ("output.md", models.VaultInit),
    ("output.md", models.KeyRotation),
    ("output.md", models.ProviderInfo),
    ("output.md", models.RefreshResult),
    ("output.md", models.SyncReport),
    ("data.md", models.Account),
    ("export.md", models.BookAccountName),
    ("insights.md", models.NetWorth),
    ("insights.md", models.NetWorthPoint),
    ("insights.md", models.CashFlow),
    ("insights.md", models.Total),
    ("data.md", models.Position),
    ("data.md", models.Transaction),
]


@pytest.mark.parametrize(("doc", "model"), RECORDS, ids=lambda v: getattr(v, "__name__", v))
def test_each_record_is_documented_field_by_field(doc: str, model: type[BaseModel]) -> None:
    """The documented table lists exactly the model's fields, in its order."""
    assert documented_fields(doc)[model.__name__] == list(model.model_fields)


def test_every_record_a_command_prints_is_documented() -> None:
    """No record type is left out of the documentation."""
    records = {
        name
        for name in models.__all__
        if isinstance(kind := getattr(models, name), type) and issubclass(kind, models.Record)
    }
    # Record is the base; a Balance snapshot is stored by each sync but no command prints it yet.
    printed = records - {"Record", "Balance"}
    documented = {m.__name__ for _, m in RECORDS} | {"TokenStatus"}  # tokens.md, by example
    assert printed == documented


def keys(result_stdout: str) -> list[list[str]]:
    """The keys of each object the command printed, in order."""
    data = json.loads(result_stdout)
    return [list(obj) for obj in (data if isinstance(data, list) else [data])]


@pytest.fixture
def one_connection(master_key: bytes) -> None:
    """A vault with one connection (which writes no audit entry of its own)."""
    del master_key
    now = dt.datetime.now(dt.UTC)
    add_connection("main", token_set(now, access_in=dt.timedelta(minutes=30)))


@pytest.mark.usefixtures("one_connection")
def test_connections_list_json_shape(cli: CliCall) -> None:
    """`connections list --format json`: an array of ConnectionInfo objects."""
    result = cli("connections", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert keys(result.stdout) == [documented_fields("output.md")["ConnectionInfo"]]
    (row,) = json.loads(result.stdout)
    assert row["name"] == "main"
    assert row["status"] == "active"
    assert dt.datetime.fromisoformat(row["refresh_expires_at"]).tzinfo is not None


@pytest.mark.usefixtures("one_connection")
def test_vault_status_json_shape(cli: CliCall) -> None:
    """`vault status --format json`: one VaultStatus object, counts as integers."""
    result = cli("vault", "status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert keys(result.stdout) == [documented_fields("output.md")["VaultStatus"]]
    status = json.loads(result.stdout)
    assert status["state"] == "ok"
    assert isinstance(status["size_bytes"], int)
    assert status["counts"]["connections"] == 1


@pytest.mark.usefixtures("one_connection")
def test_audit_list_json_shape(cli: CliCall) -> None:
    """`audit list --format json`: an array of AuditEntry objects."""
    cli("providers", "configure", "schwab", "--client-id", "app-key", input="app-secret\n")
    result = cli("audit", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    shapes = keys(result.stdout)
    assert shapes
    assert all(shape == documented_fields("output.md")["AuditEntry"] for shape in shapes)
    entry = json.loads(result.stdout)[0]
    assert entry["operation"] == "provider.configure"
    assert entry["outcome"] == "ok"


def test_paths_json_shape(cli: CliCall) -> None:
    """`paths --format json`: an array of PathEntry objects, in the documented order."""
    result = cli("paths", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert set(map(tuple, keys(result.stdout))) == {
        tuple(documented_fields("output.md")["PathEntry"])
    }
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names == ["config_dir", "config_file", "data_dir", "vault", "cache_dir", "log_dir"]
    assert all(isinstance(row["exists"], bool) for row in json.loads(result.stdout))
