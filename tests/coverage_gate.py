"""Fail when combined coverage misses a threshold of ``[tool.dashtam.coverage]`` in pyproject.toml.

Run after ``coverage run -m pytest`` and ``coverage combine`` (``.ci/run`` and
``nox -s coverage`` do both): ``python tests/coverage_gate.py``. Prints one line
per check and exits 1 when any fails, 2 when there is nothing to check.
"""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from pathlib import Path

import coverage
from coverage.exceptions import NoDataError

ROOT = Path(__file__).resolve().parent.parent


def thresholds(pyproject: Path) -> tuple[float, dict[str, float]]:
    """The overall threshold and the per-module ones, read from ``pyproject``."""
    table = tomllib.loads(pyproject.read_text())["tool"]["dashtam"]["coverage"]
    return float(table["total"]), {name: float(v) for name, v in table["modules"].items()}


def measured(data_file: Path) -> tuple[float, dict[str, float]]:
    """The overall figure and each file's, from the combined data in ``data_file``."""
    cov = coverage.Coverage(data_file=str(data_file), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "coverage.json"
        cov.json_report(outfile=str(report))
        data = json.loads(report.read_text())
    files = {
        (ROOT / name).resolve().relative_to(ROOT).as_posix(): entry["summary"]["percent_covered"]
        for name, entry in data["files"].items()
    }
    return data["totals"]["percent_covered"], files


def check(
    total: float, files: dict[str, float], want_total: float, want_modules: dict[str, float]
) -> list[str]:
    """One line per check; a failed one starts with ``FAIL``."""
    lines = [_line("overall", total, want_total)]
    for module, want in sorted(want_modules.items()):
        if module not in files:
            lines.append(f"FAIL {module}: not measured (renamed or never imported?)")
        else:
            lines.append(_line(module, files[module], want))
    return lines


def _line(what: str, got: float, want: float) -> str:
    # Compared unrounded, and shown with two decimals so a failing 97.96 never reads as 98.0.
    verdict = "ok  " if got >= want else "FAIL"
    return f"{verdict} {what}: {got:.2f}% (at least {want:g}%)"


def main() -> int:
    """Check the combined data in ./.coverage against pyproject.toml."""
    want_total, want_modules = thresholds(ROOT / "pyproject.toml")
    try:
        total, files = measured(ROOT / ".coverage")
    except NoDataError as exc:
        sys.stderr.write(f"coverage gate: no data ({exc}); run coverage run and combine first\n")
        return 2
    lines = check(total, files, want_total, want_modules)
    sys.stdout.write("coverage gate (thresholds: [tool.dashtam.coverage] in pyproject.toml)\n")
    sys.stdout.write("".join(f"  {line}\n" for line in lines))
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
