"""`nox -s bench`: prints start-up, vault and Schwab-data figures (medians over repeated runs).

Not a test: targets are printed next to the figures, never asserted.
Usage: python tests/bench/run.py [--runs N] [--only startup|vault|data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import data_bench
import vault_bench


def _median_ms(command: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(command, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def startup(runs: int) -> list[tuple[str, str]]:
    """`dashtam --version` and `--help` against bare Python (targets: 4x and 8x)."""
    dashtam = str(Path(sys.executable).parent / "dashtam")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DASHTAM_HOME": home}
        bare = _median_ms([sys.executable, "-c", "pass"], runs, env)
        rows = [(f"python -c pass, median of {runs} (ms)", f"{bare:.1f}")]
        for args, target in ((["--version"], 4), (["--help"], 8)):
            took = _median_ms([dashtam, *args], runs, env)
            ratio = took / bare
            verdict = "meets" if ratio <= target else "MISSES"
            rows.append((f"dashtam {args[0]} (ms)", f"{took:.1f}"))
            rows.append(
                (
                    f"dashtam {args[0]} / bare Python (target <= {target}x)",
                    f"{ratio:.1f}x {verdict}",
                )
            )
    return rows


def vault(runs: int) -> list[tuple[str, str]]:
    """Seal/open throughput and `vault status` on 100,000 sealed transactions."""
    return [
        *vault_bench.seal_open_throughput(),
        *vault_bench.vault_status_time(runs=max(3, runs // 3)),
    ]


def data(runs: int) -> list[tuple[str, str]]:
    """20 accounts, positions and two years of transactions, 50 ms per response."""
    del runs
    return [*data_bench.schwab_fetch(per_account=100), *data_bench.schwab_fetch(per_account=500)]


SECTIONS = {"startup": startup, "vault": vault, "data": data}


def main() -> int:
    """Run the sections asked for and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="runs per timed command (at least 10)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args()
    runs = max(10, args.runs)
    print(f"dashtam benchmarks on Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")  # noqa: T201
    for name in args.only or list(SECTIONS):
        section = SECTIONS[name]
        print(f"\n== {name}: {(section.__doc__ or '').strip()}")  # noqa: T201
        for label, value in section(runs):
            print(f"  {label:<62} {value:>16}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
