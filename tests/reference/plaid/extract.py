"""Extract the operations the sandbox serves, with their schemas' ``$ref`` closure, from Plaid's spec.

Run once from the repository root with the path of ``2020-09-14.yml`` (from
plaid/plaid-openapi); it writes ``tests/reference/plaid/openapi-extract.json``:

    uv run python tests/reference/plaid/extract.py /path/to/2020-09-14.yml

Descriptions and examples are dropped (they are most of the file's size);
every constraint (types, ``required``, ``nullable``, enums, formats,
``allOf``, ``additionalProperties``) is kept as published.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import yaml

PATHS = (
    "/link/token/create",
    "/item/public_token/exchange",
    "/sandbox/public_token/create",
    "/sandbox/item/reset_login",
    "/accounts/get",
    "/accounts/balance/get",
    "/transactions/sync",
    "/investments/holdings/get",
    "/investments/transactions/get",
    "/item/get",
    "/item/remove",
)
DROP = frozenset({"description", "example", "examples", "x-examples", "externalDocs"})
OUT = pathlib.Path(__file__).with_name("openapi-extract.json")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: {name: _strip(sub) for name, sub in v.items()} if k == "properties" else _strip(v)
            for k, v in node.items()
            if k not in DROP and not k.startswith("x-")
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def main(source: str) -> None:
    """Write the extract of ``source``."""
    spec = yaml.load(pathlib.Path(source).read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    schemas = spec["components"]["schemas"]
    paths = {path: _strip(spec["paths"][path]) for path in PATHS}
    wanted, todo = set(), _refs(paths)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo |= _refs(schemas[name])
    extract = {
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "paths": paths,
        "components": {"schemas": {n: _strip(schemas[n]) for n in sorted(wanted)}},
    }
    OUT.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
