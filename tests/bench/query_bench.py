"""Query and memory figures on vaults of 100,000 and 1,000,000 synced transactions.

The vaults are seeded directly: 20 accounts stored as a sync stores them,
then transactions made from the sandbox's own (mapped as a sync maps them,
each under a new id), sealed and written in batches of 50,000.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import bench_support as support

BATCH = 50_000
# What `accounts list` is built on: the floor it is compared with.
FLOOR = "import sqlalchemy.ext.asyncio, aiosqlite, pydantic"


async def seed(transactions: int, *, key_store: str | None = None) -> None:
    """A vault (in the environment's DASHTAM_HOME) holding ``transactions`` synced transactions."""
    from dashtam_cli.core import lines, store
    from dashtam_cli.core.models import Transaction
    from dashtam_cli.core.providers.base import Changes
    from dashtam_cli.core.providers.schwab import mapping
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault import db
    from dashtam_cli.core.vault.vault import OpenOptions, open_vault

    generated = support.sandbox_accounts(20, 500)
    now = dt.datetime.now(dt.UTC)
    async with open_vault(load_settings(), OpenOptions(create=True, key_store=key_store)) as vault:
        info = await support.connection(vault)
        fetched = await store.write_accounts(
            vault, info, support.fetched_accounts(info, generated), now
        )
        # Each account's sync point, as a completed sync leaves it.
        completed = {item.account.id: None for item in fetched}
        await store.write_changes(
            vault,
            info,
            Changes(completed=completed),
            through=dict.fromkeys(completed, now),
            now=now,
        )
        # Templates: the stored text and form of real transactions (as the sync stores
        # them), one list per account.
        templates = []
        for item, account in zip(fetched, generated, strict=True):
            aid = item.account.id
            models = [
                mapping.transaction(aid, item.account.number, raw) for raw in account.transactions
            ]
            templates.append(
                [
                    (
                        m.id,
                        *lines.stored_form(Transaction, m.model_dump_json()),
                        db.utcnow_text(m.time),
                        m.kind.value,
                    )
                    for m in models
                ]
            )
        stamp = db.utcnow_text(now)
        sql = (
            "INSERT INTO transactions (id, account_id, occurred_at, kind, payload, form,"
            " fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        accounts = [item.account.id for item in fetched]
        for start in range(0, transactions, BATCH):
            rows = []
            for n in range(start, min(start + BATCH, transactions)):
                which = n % len(accounts)
                aid = accounts[which]
                old_id, text, form, occurred, kind = templates[which][(n // len(accounts)) % 500]
                row_id = str(uuid.uuid4())
                sealed = vault.seal(
                    "transactions", row_id, "payload", text.replace(old_id, row_id), owner=aid
                )
                rows.append((row_id, aid, occurred, kind, sealed, form, stamp))
            async with vault.writing() as conn:
                await conn.exec_driver_sql(sql, rows)


STREAM_RUNS = 5


def _wall_s(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run of ``command``."""
    started = time.perf_counter()
    subprocess.run(command, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def queries(transactions: int = 100_000, runs: int = 10) -> list[tuple[str, str]]:
    """`accounts list` against the import floor, and `transactions list --format jsonl` rows/s."""
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        home = Path(tmp)
        with support.environment(home, DASHTAM_MASTER_KEY=support.new_master_key()) as env:
            started = time.perf_counter()
            asyncio.run(seed(transactions))
            seeded = time.perf_counter() - started
        # Alternated, in one loop, so a busy moment of the machine hits all three.
        floor_cmd = [sys.executable, "-c", FLOOR]
        listing = [support.DASHTAM, "accounts", "list", "--format", "json"]
        offline = [*listing, "--offline"]
        commands = {"floor": floor_cmd, "list": listing, "offline": offline}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            _wall_s(command, env)  # one untimed run each: the page cache
        for _ in range(runs):
            for name, command in commands.items():
                times[name].append(_wall_s(command, env))
        floor, listed, offline_s = (statistics.median(times[k]) for k in times)
        # Each run takes seconds, and one run is at the mercy of a busy moment: a median.
        stream = [support.DASHTAM, "transactions", "list", "--format", "jsonl", "--offline"]
        streams = [support.measure(stream, env) for _ in range(STREAM_RUNS)]
        streamed = sorted(streams, key=lambda m: m.seconds)[STREAM_RUNS // 2]
    ratio = listed / floor
    rate = streamed.lines / streamed.seconds
    return [
        ("transactions in the vault", f"{transactions:,}"),
        ("time to seed it (s)", f"{seeded:.1f}"),
        (f"python -c '{FLOOR}' (ms, median of {runs})", f"{floor * 1000:.0f}"),
        (f"`accounts list --format json` (ms, median of {runs})", f"{listed * 1000:.0f}"),
        ("  with --offline (ms)", f"{offline_s * 1000:.0f}"),
        ("`accounts list` / floor (target <= 1.3x)", f"{ratio:.2f}x"),
        ("result", "PASS" if ratio <= 1.3 else "MISS"),
        ("`transactions list --format jsonl` rows written", f"{streamed.lines:,}"),
        (f"  wall (s), whole process, median of {STREAM_RUNS}", f"{streamed.seconds:.2f}"),
        ("  rows per second (target >= 50,000)", f"{rate:,.0f}"),
        ("  result", "PASS" if rate >= 50_000 else "MISS"),
    ]


def memory(transactions: int = 1_000_000) -> list[tuple[str, str]]:
    """Peak RSS of `transactions list --format jsonl` and `vault rotate-key` over a large vault.

    The key is in a passphrase key file (a key from DASHTAM_MASTER_KEY cannot
    be rotated), from DASHTAM_PASSPHRASE.
    """
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        home = Path(tmp)
        with support.environment(home, DASHTAM_PASSPHRASE=support.PASSPHRASE) as env:
            started = time.perf_counter()
            asyncio.run(seed(transactions, key_store="passphrase"))
            seeded = time.perf_counter() - started
        size = sum(p.stat().st_size for p in (home / "data").glob("vault.sqlite3*"))
        listed = support.measure(
            [support.DASHTAM, "transactions", "list", "--format", "jsonl", "--offline"], env
        )
        rotated = support.measure([support.DASHTAM, "vault", "rotate-key", "--format", "json"], env)
    limit = 300
    return [
        ("transactions in the vault", f"{transactions:,}"),
        ("vault size (MB)", f"{size / 1e6:.0f}"),
        ("time to seed it (s)", f"{seeded:.1f}"),
        ("`transactions list --format jsonl` rows", f"{listed.lines:,}"),
        ("  wall (s)", f"{listed.seconds:.1f}"),
        ("  peak RSS (MB, target < 300)", f"{listed.peak_mb:.0f}"),
        ("  result", "PASS" if listed.peak_mb < limit else "MISS"),
        ("`vault rotate-key` wall (s)", f"{rotated.seconds:.1f}"),
        ("  peak RSS (MB, target < 300)", f"{rotated.peak_mb:.0f}"),
        ("  result", "PASS" if rotated.peak_mb < limit else "MISS"),
    ]


if __name__ == "__main__":
    for label, value in [*queries(), *memory()]:
        print(f"{label:<55} {value:>12}")  # noqa: T201
