"""Vault figures: seal and open throughput, and `dashtam vault status` on 100,000 sealed transactions."""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from dashtam_cli.core.vault import crypto

PAYLOAD = b'{"amount":"-1215.95","type":"TRADE","symbol":"MRVL  250321C00155000","fees":"0.95"}' * 3


def seal_open_throughput(records: int = 100_000) -> list[tuple[str, str]]:
    """Records per second sealed and opened with AES-256-GCM (about 250-byte payloads)."""
    sealer = crypto.Sealer(crypto.new_key())
    ids = [str(uuid.uuid4()) for _ in range(records)]
    started = time.perf_counter()
    blobs = [
        sealer.seal("transactions", row_id, "payload", PAYLOAD, owner="account") for row_id in ids
    ]
    sealed = time.perf_counter() - started
    started = time.perf_counter()
    for row_id, blob in zip(ids, blobs, strict=True):
        sealer.open("transactions", row_id, "payload", blob, owner="account")
    opened = time.perf_counter() - started
    return [
        ("seal (records/s)", f"{records / sealed:,.0f}"),
        ("open (records/s)", f"{records / opened:,.0f}"),
        ("payload (bytes)", str(len(PAYLOAD))),
    ]


async def _fill(home: Path, count: int, key_store: str | None = None) -> None:
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.vault import db, schema
    from dashtam_cli.core.vault.vault import OpenOptions, open_vault

    settings = load_settings()
    now = db.utcnow_text()
    async with open_vault(settings, OpenOptions(create=True, key_store=key_store)) as vault:
        conn_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with vault.writing() as conn:
            await conn.execute(
                schema.connections.insert().values(
                    id=conn_id,
                    provider="schwab",
                    name="bench",
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                schema.accounts.insert().values(
                    id=account_id,
                    connection_id=conn_id,
                    number=vault.seal("accounts", account_id, "number", "12345678", owner=conn_id),
                    payload=vault.seal("accounts", account_id, "payload", b"{}", owner=conn_id),
                    fetched_at=now,
                )
            )
        # In batches: the bench's own memory is not what is measured.
        for start in range(0, count, 50_000):
            rows = []
            for _ in range(min(50_000, count - start)):
                row_id = str(uuid.uuid4())
                rows.append(
                    {
                        "id": row_id,
                        "account_id": account_id,
                        "occurred_at": now,
                        "payload": vault.seal(
                            "transactions", row_id, "payload", PAYLOAD, owner=account_id
                        ),
                        "fetched_at": now,
                    }
                )
            async with vault.writing() as conn:
                await conn.execute(schema.transactions.insert(), rows)
    del home


def vault_status_time(transactions: int = 100_000, runs: int = 5) -> list[tuple[str, str]]:
    """Median wall time of `dashtam vault status` (a fresh process each run) on a large vault."""
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        home = Path(tmp) / "home"
        key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        env = {**os.environ, "DASHTAM_HOME": str(home), "DASHTAM_MASTER_KEY": key}
        saved = dict(os.environ)
        os.environ.update({"DASHTAM_HOME": str(home), "DASHTAM_MASTER_KEY": key})
        try:
            started = time.perf_counter()
            asyncio.run(_fill(home, transactions))
            filled = time.perf_counter() - started
        finally:
            os.environ.clear()
            os.environ.update(saved)
        dashtam = str(Path(sys.executable).parent / "dashtam")
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(
                [dashtam, "vault", "status", "--format", "json"],
                env=env,
                capture_output=True,
                check=False,
            )
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                msg = f"vault status failed: {done.stderr.decode()}"
                raise RuntimeError(msg)
        size = sum(p.stat().st_size for p in (home / "data").glob("vault.sqlite3*"))
    return [
        ("transactions in the vault", f"{transactions:,}"),
        ("vault size (MB)", f"{size / 1e6:.1f}"),
        ("time to fill it (s)", f"{filled:.2f}"),
        (
            f"`dashtam vault status`, median of {runs} (ms)",
            f"{statistics.median(times) * 1000:.0f}",
        ),
    ]


def rotation_cost(transactions: int = 200_000) -> list[tuple[str, str]]:
    """Wall time and peak memory of `dashtam vault rotate-key` as a process, on a large vault.

    The key is in a passphrase key file (a key from DASHTAM_MASTER_KEY cannot
    be rotated); dashtam's peak RSS comes from getrusage in a wrapper process.
    """
    with tempfile.TemporaryDirectory(prefix="dashtam-bench-") as tmp:
        home = Path(tmp) / "home"
        passphrase = "bench passphrase, long enough"
        env = {**os.environ, "DASHTAM_HOME": str(home), "DASHTAM_PASSPHRASE": passphrase}
        env.pop("DASHTAM_MASTER_KEY", None)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            asyncio.run(_fill(home, transactions, key_store="passphrase"))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        dashtam = str(Path(sys.executable).parent / "dashtam")
        # A wrapper process whose only child is dashtam: its children's peak
        # RSS is dashtam's alone (getrusage reports the largest child).
        wrapper = (
            "import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
            "sys.stderr.buffer.write(done.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(done.returncode)\n"
        )
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", wrapper, dashtam, "vault", "rotate-key", "--format", "json"],
            env=env,
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            msg = f"vault rotate-key failed: {done.stderr.decode()}"
            raise RuntimeError(msg)
        peak_mb = int(done.stdout.split()[-1]) / 1024  # KiB on Linux
    return [
        ("transactions re-sealed by `vault rotate-key`", f"{transactions:,}"),
        ("`vault rotate-key` wall time (s)", f"{elapsed:.2f}"),
        ("`vault rotate-key` peak RSS (MB)", f"{peak_mb:.0f}"),
    ]


if __name__ == "__main__":
    for label, value in [*seal_open_throughput(), *vault_status_time()]:
        print(f"{label:<45} {value:>14}")  # noqa: T201
