"""`nox -s bench`: prints start-up, vault, sync, query and memory figures.

Not a test: targets are printed next to the figures, never asserted. The
machine's load is printed with them: on a shared machine prefer the ratios,
measured in the same run, to the absolute times.
Usage: python tests/bench/run.py [--runs N] [--only SECTION]...

Each section is a function taking the number of runs and returning a Table;
add a section by writing one and listing it in SECTIONS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

sys.path.insert(0, str(Path(__file__).parent))

MIN_RUNS = 10


@dataclasses.dataclass(frozen=True)
class Table:
    """A section's figures: a header row and rows of cells (numbers right-aligned)."""

    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]

    @classmethod
    def pairs(cls, rows: Sequence[tuple[str, str]]) -> Table:
        """A two-column table from (what, figure) pairs, as the vault and data benches return."""
        return cls(("measure", "figure"), rows)

    def lines(self) -> list[str]:
        """The table as aligned text lines, first column left-aligned, the rest right-aligned."""
        grid = [self.header, *self.rows]
        widths = [max(len(row[i]) for row in grid) for i in range(len(self.header))]

        def line(row: tuple[str, ...]) -> str:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            return "  ".join(cells).rstrip()

        rule = "  ".join("-" * width for width in widths)
        return [line(self.header), rule, *(line(row) for row in self.rows)]


def _median_ms(command: list[str], runs: int, env: dict[str, str]) -> float:
    """Median wall time of ``command`` over ``runs`` runs, after one untimed warm-up run."""
    subprocess.run(command, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def startup(runs: int) -> Table:
    """`dashtam --version` and `--help` against bare Python (targets: 4x and 8x)."""
    dashtam = str(Path(sys.executable).parent / "dashtam")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DASHTAM_HOME": home}
        bare = _median_ms([sys.executable, "-c", "pass"], runs, env)
        rows = [("python -c pass", f"{bare:.1f}", "1.0x", "", "")]
        for args, target in ((["--version"], 4), (["--help"], 8)):
            took = _median_ms([dashtam, *args], runs, env)
            ratio = took / bare
            verdict = "PASS" if ratio <= target else "MISS"
            rows.append(
                (
                    f"dashtam {' '.join(args)}",
                    f"{took:.1f}",
                    f"{ratio:.1f}x",
                    f"<= {target}x",
                    verdict,
                )
            )
    return Table((f"command (median of {runs})", "ms", "x bare", "target", "result"), rows)


def vault(runs: int) -> Table:
    """Seal/open throughput and `vault status` on 100,000 sealed transactions."""
    import vault_bench

    return Table.pairs(
        [
            *vault_bench.seal_open_throughput(),
            *vault_bench.vault_status_time(runs=max(3, runs // 3)),
            *vault_bench.rotation_cost(),
        ]
    )


def sync(runs: int) -> Table:
    """CPU per stored transaction; `dashtam sync` against schwab-py's async client, 50 ms latency."""
    import sync_bench

    # Each run takes seconds: a few are enough for a median.
    runs = max(3, runs // 5)
    return Table.pairs(
        [
            *sync_bench.cpu_per_transaction(),
            *sync_bench.side_by_side(per_account=500, runs=runs),
            *sync_bench.side_by_side(per_account=3000, runs=runs),
        ]
    )


def queries(runs: int) -> Table:
    """`accounts list` against its import floor; `transactions list --format jsonl` rows/s."""
    import query_bench

    return Table.pairs(query_bench.queries(runs=runs))


def memory(_runs: int) -> Table:
    """Peak RSS over 1,000,000 transactions: `transactions list --format jsonl`, `rotate-key`."""
    import query_bench

    return Table.pairs(query_bench.memory())


def repr_trap(_runs: int) -> Table:
    """What returning 10,000 transactions out of asyncio.run costs, against passing them out.

    In a fresh interpreter, as a command meets it, with SIGINT at its
    default (see sync_bench.repr_trap: in a background job the trap does not
    show).
    """
    import json

    probe = "import json, sync_bench; print(json.dumps(sync_bench.repr_trap()))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(done.stdout.splitlines()[-1])
    return Table.pairs([(str(what), str(figure)) for what, figure in rows])


SECTIONS: dict[str, Callable[[int], Table]] = {
    "startup": startup,
    "vault": vault,
    "sync": sync,
    "queries": queries,
    "memory": memory,
    "repr": repr_trap,
}


def _load() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _runs(text: str) -> int:
    value = int(text)
    if value < MIN_RUNS:
        msg = f"at least {MIN_RUNS} runs, for a median worth printing"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections asked for and print their figures."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs",
        type=_runs,
        default=15,
        help=f"runs per timed command (default 15, at least {MIN_RUNS})",
    )
    parser.add_argument(
        "--only",
        choices=list(SECTIONS),
        action="append",
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    print(f"dashtam benchmarks on Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")  # noqa: T201
    for name in args.only or list(SECTIONS):
        section = SECTIONS[name]
        print(f"\n== {name}: {(section.__doc__ or '').strip()}")  # noqa: T201
        print(f"  load average before: {_load()}")  # noqa: T201
        for line in section(args.runs).lines():
            print(f"  {line}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
