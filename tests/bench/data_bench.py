"""Schwab data figures: 20 accounts, positions and two years of transactions, 50 ms per response."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Sandbox:
    """`dashtam sandbox serve` in its own process, as a real server would be."""

    def __init__(
        self,
        *,
        accounts: int,
        per_account: int,
        latency_ms: float,
        redirect: str,
        env: dict[str, str],
    ) -> None:
        dashtam = str(Path(sys.executable).parent / "dashtam")
        self.process = subprocess.Popen(
            [
                dashtam,
                "sandbox",
                "serve",
                "--port",
                "0",
                "--auto-approve",
                "--accounts",
                str(accounts),
                "--transactions-per-account",
                str(per_account),
                "--latency",
                str(latency_ms),
                "--redirect-uri",
                redirect,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        found: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(found) < 4 and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            match = re.search(r"export (\w+)=(\S+)", line)
            if match:
                found[match[1]] = match[2]
        if len(found) < 4:
            self.close()
            msg = "the sandbox did not start"
            raise RuntimeError(msg)
        self.env = found

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _fetch_both_ways(
    sandbox_env: dict[str, str], redirect: str, runs: int
) -> list[tuple[str, str]]:
    from dashtam_cli.core.oauth.flow import LoginOptions, connect
    from dashtam_cli.core.portfolio import FetchOptions, fetch_positions, fetch_transactions
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault.vault import OpenOptions
    from dashtam_cli.sandbox.demo import _approving_browser

    os.environ.update({**sandbox_env, "SCHWAB_REDIRECT_URI": redirect})
    settings = load_settings()
    browser = _approving_browser(
        Path(sandbox_env["SSL_CERT_FILE"]), settings.paths.data_dir / "tls" / "listener-cert.pem"
    )
    await connect(settings, "schwab", LoginOptions(open_browser=browser, timeout=60))
    until = dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(days=730)  # two years: two one-year windows per account
    default = FetchOptions().max_in_flight
    modes = ((f"concurrent (default, {default} in flight)", default), ("one request at a time", 1))

    async def once(in_flight: int) -> tuple[float, int, int, int]:
        options = FetchOptions(since=since, until=until, max_in_flight=in_flight)
        started = time.perf_counter()
        positions = await fetch_positions(settings, options, OpenOptions())
        transactions = await fetch_transactions(settings, options, OpenOptions())
        wall = time.perf_counter() - started
        for result in (positions, transactions):
            error = result.outcome()
            if error is not None:
                raise error
        requests = positions.requests + transactions.requests
        return wall, requests, len(positions.items), len(transactions.items)

    # One unmeasured round first: imports and first-use set-up are paid once per
    # process and would otherwise all fall on whichever mode runs first.
    await once(default)
    measured: dict[int, list[tuple[float, int, int, int]]] = {n: [] for _, n in modes}
    for _ in range(runs):  # alternated, so a busy moment of the machine hits both
        for _, in_flight in modes:
            measured[in_flight].append(await once(in_flight))
    rows: list[tuple[str, str]] = []
    walls = []
    for label, in_flight in modes:
        wall = statistics.median(m[0] for m in measured[in_flight])
        _, requests, positions, transactions = measured[in_flight][0]
        walls.append(wall)
        rows += [
            (f"{label}: wall time (s, median of {runs})", f"{wall:.2f}"),
            (f"{label}: requests", str(requests)),
            (f"{label}: positions / transactions", f"{positions} / {transactions}"),
        ]
    rows.append(("speed-up over one at a time (target >= 5x)", f"{walls[1] / walls[0]:.1f}x"))
    # Each run takes seconds, so all its requests fall in one 60-second window.
    busiest = max(m[1] for runs_of in measured.values() for m in runs_of)
    rows.append(("most requests in any 60 s of one run (limit 120)", str(busiest)))
    return rows


def schwab_fetch(
    accounts: int = 20, per_account: int = 500, latency_ms: float = 50.0, runs: int = 3
) -> list[tuple[str, str]]:
    """Fetch positions and two years of transactions for ``accounts`` accounts, both ways.

    Concurrently (the default) and one request at a time, ``runs`` times each,
    alternated, after one unmeasured round; the medians are compared.
    """
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        home = Path(tmp) / "home"
        for name in list(os.environ):
            if name.startswith(("DASHTAM_", "SCHWAB_")) or name == "SSL_CERT_FILE":
                del os.environ[name]
        os.environ["DASHTAM_HOME"] = str(home)
        os.environ["DASHTAM_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        redirect = f"https://127.0.0.1:{_free_port()}"
        sandbox = _Sandbox(
            accounts=accounts,
            per_account=per_account,
            latency_ms=latency_ms,
            redirect=redirect,
            env={**os.environ, "DASHTAM_HOME": str(Path(tmp) / "sandbox-home")},
        )
        try:
            rows = asyncio.run(_fetch_both_ways(sandbox.env, redirect, runs))
        finally:
            sandbox.close()
            os.environ.clear()
            os.environ.update(saved)
        return [
            ("accounts x transactions per account (two years)", f"{accounts} x {per_account}"),
            ("server latency per response (ms)", f"{latency_ms:g}"),
            *rows,
        ]


if __name__ == "__main__":
    for label, value in schwab_fetch():
        print(f"{label:<55} {value:>12}")  # noqa: T201
