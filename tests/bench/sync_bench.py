"""Sync figures: CPU per stored transaction, and `dashtam sync` against schwab-py side by side."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_support as support


async def _cpu(accounts: int, per_account: int) -> dict[str, float]:
    """CPU seconds of each step of storing the sandbox's transactions, as a first sync does."""
    from dashtam_cli.core import store
    from dashtam_cli.core.providers.base import Changes
    from dashtam_cli.core.providers.schwab import client, mapping, wire
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault.vault import OpenOptions, open_vault

    generated = support.sandbox_accounts(accounts, per_account)
    # The bodies as the sandbox sends them: one JSON array per account.
    bodies = [json.dumps(a.transactions).encode() for a in generated]
    now = dt.datetime.now(dt.UTC)
    spent = {"parse": 0.0, "map": 0.0, "seal and write": 0.0}
    async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
        info = await support.connection(vault)
        fetched = await store.write_accounts(
            vault, info, support.fetched_accounts(info, generated), now
        )
        # The generator's own objects are not what a sync holds: kept, they made every
        # full collection of the garbage collector scan them, charged to the steps below.
        del generated
        gc.collect()
        for item, body in zip(fetched, bodies, strict=True):
            account = item.account
            started = time.process_time()
            raws = client._load_json(body, "transactions", 200, wire.decode_transactions)
            parsed = time.process_time()
            page = [mapping.transaction(account.id, account.number, raw) for raw in raws]
            mapped = time.process_time()
            await store.write_changes(
                vault,
                info,
                Changes(transactions=page, completed={account.id: None}),
                through={account.id: now},
                now=now,
            )
            written = time.process_time()
            spent["parse"] += parsed - started
            spent["map"] += mapped - parsed
            spent["seal and write"] += written - mapped
    return spent


def cpu_per_transaction(accounts: int = 10, per_account: int = 3000) -> list[tuple[str, str]]:
    """Microseconds of CPU (all threads) per transaction stored: parse, map, seal, write.

    The process's CPU time, so the SQLite thread's work counts too.
    """
    from dashtam_cli.cli.runtime import YOUNG_COLLECTION_THRESHOLD

    count = accounts * per_account
    thresholds = gc.get_threshold()
    # The cycle collector as a command runs it (cli.runtime.run sets this).
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    try:
        with (
            tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp,
            support.environment(Path(tmp), DASHTAM_MASTER_KEY=support.new_master_key()),
        ):
            spent = asyncio.run(_cpu(accounts, per_account))
    finally:
        gc.set_threshold(*thresholds)
    total = sum(spent.values())
    per = total / count * 1e6
    rows = [(f"{step} (us per transaction)", f"{s / count * 1e6:.1f}") for step, s in spent.items()]
    return [
        ("transactions stored (new, first sync)", f"{count:,}"),
        *rows,
        ("CPU per stored transaction (us, target <= 60)", f"{per:.1f}"),
        ("result", "PASS" if per <= 60 else "MISS"),
    ]


def _dashtam_sync(template: Path, home: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """One `dashtam sync` process on a fresh copy of the logged-in home: wall, requests, new."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home)
    started = time.perf_counter()
    done = subprocess.run(
        [support.DASHTAM, "sync", "--format", "json", "--quiet"],
        env=env,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"dashtam sync failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    reports = json.loads(done.stdout)
    return wall, sum(r["requests"] for r in reports), sum(r["new"] for r in reports)


def _schwab_py(sandbox: support.Sandbox, token: str, env: dict[str, str]) -> tuple[float, int, int]:
    """One run of the schwab-py script as a process: wall, requests, transactions."""
    script = str(Path(__file__).with_name("schwabpy_fetch.py"))
    exports = sandbox.exports
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            script,
            exports["DASHTAM_SCHWAB_BASE_URL"],
            exports["DASHTAM_CA_BUNDLE"],
            exports["SCHWAB_API_KEY"],
            exports["SCHWAB_API_SECRET"],
            token,
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"the schwab-py script failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    answer = json.loads(done.stdout)
    return wall, answer["requests"], answer["transactions"]


async def _logged_in(token: dict[str, object]) -> None:
    from dashtam_cli.core.connections import save_login
    from dashtam_cli.core.oauth.tokens import TokenSet
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault.vault import OpenOptions, open_vault

    now = dt.datetime.now(dt.UTC)
    tokens = TokenSet(
        access_token=str(token["access_token"]),
        refresh_token=str(token["refresh_token"]),
        token_type="Bearer",
        issued_at=now,
        access_expires_at=now + dt.timedelta(seconds=int(str(token["expires_in"]))),
        refresh_expires_at=now + dt.timedelta(days=7),
    )
    async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
        await save_login(vault, provider="schwab", name="schwab", tokens=tokens)


def side_by_side(
    accounts: int = 20, per_account: int = 500, latency_ms: float = 50.0, runs: int = 3
) -> list[tuple[str, str]]:
    """`dashtam sync` (a first sync, as a process) and the schwab-py script, alternated.

    Both against one `dashtam sandbox serve` process answering each request
    after ``latency_ms``. dashtam starts each run from a copy of a home that
    is logged in and never synced, so each run fetches, parses, seals and
    stores everything.
    """
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        root = Path(tmp)
        redirect = f"https://127.0.0.1:{support.free_port()}"
        with support.environment(root / "sandbox-home") as sandbox_env:
            sandbox = support.Sandbox(accounts, per_account, latency_ms, redirect, sandbox_env)
        with sandbox:
            token = sandbox.login()
            template = root / "template"
            with support.environment(
                template,
                DASHTAM_MASTER_KEY=support.new_master_key(),
                DASHTAM_SCHWAB_BASE_URL=sandbox.exports["DASHTAM_SCHWAB_BASE_URL"],
                DASHTAM_CA_BUNDLE=sandbox.exports["DASHTAM_CA_BUNDLE"],
                SCHWAB_API_KEY=sandbox.exports["SCHWAB_API_KEY"],
                SCHWAB_API_SECRET=sandbox.exports["SCHWAB_API_SECRET"],
                SCHWAB_REDIRECT_URI=redirect,
            ) as env:
                asyncio.run(_logged_in(token))
            home = root / "home"
            env = {**env, "DASHTAM_HOME": str(home)}
            token_text = json.dumps(token)
            # One unmeasured round each: the page cache and first-use costs.
            _dashtam_sync(template, home, env)
            _schwab_py(sandbox, token_text, env)
            ours, theirs = [], []
            for _ in range(runs):  # alternated, so a busy moment of the machine hits both
                ours.append(_dashtam_sync(template, home, env))
                theirs.append(_schwab_py(sandbox, token_text, env))
    wall = statistics.median(r[0] for r in ours)
    other = statistics.median(r[0] for r in theirs)
    ratio = wall / other
    return [
        ("accounts x transactions per account (two years)", f"{accounts} x {per_account}"),
        ("server latency per response (ms)", f"{latency_ms:g}"),
        (f"`dashtam sync` wall (s, median of {runs})", f"{wall:.2f}"),
        ("`dashtam sync` requests / transactions stored", f"{ours[0][1]} / {ours[0][2]:,}"),
        (f"schwab-py async + gather wall (s, median of {runs})", f"{other:.2f}"),
        ("schwab-py requests / transactions fetched", f"{theirs[0][1]} / {theirs[0][2]:,}"),
        ("dashtam / schwab-py (target <= 1.0x)", f"{ratio:.2f}x"),
        ("result", "PASS" if ratio <= 1.0 else "MISS"),
    ]


def repr_trap(count: int = 10_000, runs: int = 5) -> list[tuple[str, str]]:
    """``asyncio.run`` of a coroutine returning ``count`` transactions, against one that boxes them.

    CPython 3.11 and 3.12 compute the repr of a coroutine's return value
    (twice) on the way out of ``asyncio.run``: asking whether its SIGINT
    handler (which holds the task, and so the result) is still installed,
    ``signal.getsignal`` formats it into an error it then drops; dashtam's ``runtime.run`` passes
    the result out in a box instead (tests/cli/test_root_command.py checks it
    is never repr'd). reprlib cuts a list short, but reprs any other object
    whole: a result record holding the items pays for every item's repr.
    The first figure is the trap, the second what dashtam pays.
    """
    from dashtam_cli.core.providers.schwab import mapping

    (account,) = support.sandbox_accounts(1, count)
    page = [mapping.transaction("account", "****0000", raw) for raw in account.transactions]

    @dataclasses.dataclass
    class Found:
        """A result as a command gets it: a record holding the items (reprlib reprs it whole)."""

        items: list[object]

    async def returned() -> Found:
        return Found(list(page))

    async def boxed(box: list[Found]) -> None:
        box.append(Found(list(page)))

    def trap() -> None:
        asyncio.run(returned())

    def box() -> None:
        holder: list[Found] = []
        asyncio.run(boxed(holder))
        assert len(holder[0].items) == count

    # As a command started from a shell has it. A background job (`cmd &`)
    # starts with SIGINT ignored: asyncio.run then installs no handler of its
    # own, never asks whether its handler is still the one in place, and the
    # trap does not show (a bench run in the background read 0.4 ms).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    figures = {}
    for name, way in (("returned", trap), ("boxed", box)):
        times = []
        for _ in range(runs):
            started = time.process_time()
            way()
            times.append(time.process_time() - started)
        figures[name] = statistics.median(times)
    return [
        ("transactions passed out of asyncio.run", f"{count:,}"),
        (
            f"returned by the coroutine (ms CPU, median of {runs})",
            f"{figures['returned'] * 1000:.1f}",
        ),
        (
            f"boxed, as runtime.run does (ms CPU, median of {runs})",
            f"{figures['boxed'] * 1000:.1f}",
        ),
        ("Python", sys.version.split()[0]),
    ]


if __name__ == "__main__":
    for label, value in [*cpu_per_transaction(), *side_by_side()]:
        print(f"{label:<55} {value:>12}")  # noqa: T201
