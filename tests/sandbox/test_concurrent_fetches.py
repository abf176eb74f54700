"""Many real `dashtam transactions list` processes on a fresh connection agree on one set of rows.

The sandbox runs in this process (a background thread); every child is a real
``sys.executable`` process that imports the CLI, waits for a common start
signal, then runs ``dashtam transactions list``, whose first sync of the new
connection is the race; each waits before taking the connection's sync lock
until all have reached it, having all seen the connection never synced: the
worst interleaving. The vault is keyed by
DASHTAM_MASTER_KEY, which the children inherit with DASHTAM_HOME and the
variables that point dashtam at the sandbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import func, select

from dashtam_cli.core.login import connect
from dashtam_cli.core.oauth.flow import LoginOptions
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.vault import open_vault

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conftest import CliCall
    from sandbox_support import RunningSandbox

PROCESSES = 16
ACCOUNTS = 3
START_TIMEOUT_S = 300.0  # sixteen children import dashtam on a shared machine of two cores
EXIT_TIMEOUT_S = 300.0
# Every generated transaction (the sandbox spreads them over two years), in three windows.
SINCE = (dt.datetime.now(dt.UTC) - dt.timedelta(days=800)).date().isoformat()

_CHILD = """
import asyncio
import pathlib
import sys
import time

ready, go, meeting, count, *args = sys.argv[1:]
from dashtam_cli.cli.app import app  # imported before the start line, so the race starts warm
import contextlib
from dashtam_cli.core.vault import locks

real_lock = locks.exclusive_file


@contextlib.asynccontextmanager
async def lock_together(path, **lock_kwargs):
    # The worst interleaving, every time: no child takes the sync lock until
    # every child has read the (empty) vault and decided to sync.
    if path.name.startswith("sync-"):
        (pathlib.Path(meeting) / ready.rsplit("/", 1)[-1]).touch()
        deadline = time.monotonic() + 300
        while len(list(pathlib.Path(meeting).iterdir())) < int(count):
            if time.monotonic() > deadline:
                sys.exit("not every child reached the sync lock")
            await asyncio.sleep(0.005)
    async with real_lock(path, **lock_kwargs):
        yield


locks.exclusive_file = lock_together
pathlib.Path(ready).touch()
deadline = time.monotonic() + 300
while not pathlib.Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
app(args, prog_name="dashtam")
"""


def _approving_browser(running: RunningSandbox, home: Path) -> Callable[[str], bool]:
    """An auto-approving sandbox sends the browser straight back to dashtam's listener."""

    def open_url(url: str) -> bool:
        with httpx.Client(verify=ssl.create_default_context(cafile=running.ca_path)) as client:
            answer = client.get(url)
        assert answer.status_code == 302, answer.text
        listener = ssl.create_default_context(cafile=home / "data" / "tls" / "listener-cert.pem")
        with httpx.Client(verify=listener) as client:
            client.get(answer.headers["location"])
        return True

    return open_url


@pytest.fixture
def fresh_connection(
    start_sandbox: Callable[..., RunningSandbox],
    monkeypatch: pytest.MonkeyPatch,
    isolated_env: Path,
    master_key: bytes,
) -> RunningSandbox:
    """A sandbox with three accounts, and dashtam connected to it but with nothing fetched yet.

    The vault is keyed by DASHTAM_MASTER_KEY (``master_key``), which the children inherit.
    """
    del master_key
    from sandbox_support import point_dashtam_at

    running = start_sandbox(accounts=ACCOUNTS, transactions_per_account=120, auto_approve=True)
    point_dashtam_at(running, monkeypatch)
    options = LoginOptions(open_browser=_approving_browser(running, isolated_env), timeout=30)
    asyncio.run(connect(load_settings(), "schwab", options))
    return running


def _run_children(tmp_path: Path, args: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start PROCESSES children, let them all go at once, and wait for each to end."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    go = tmp_path / "go"
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    procs = []
    try:
        for i, marker in enumerate(ready):
            out = (tmp_path / f"child-{i}.out").open("w")
            err = (tmp_path / f"child-{i}.err").open("w")
            with out, err:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(script),
                            str(marker),
                            str(go),
                            str(meeting),
                            str(PROCESSES),
                            *args,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=dict(os.environ),
                        cwd=tmp_path,
                    )
                )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(marker.exists() for marker in ready):
            exited = [p for p in procs if p.poll() is not None]
            assert not exited, f"a child exited before the start: {exited[0].returncode}"
            assert time.monotonic() < deadline, "the children did not start in time"
            time.sleep(0.01)
        go.touch()
        results = []
        for i, proc in enumerate(procs):
            code = proc.wait(timeout=EXIT_TIMEOUT_S)
            results.append(
                subprocess.CompletedProcess(
                    proc.args,
                    code,
                    (tmp_path / f"child-{i}.out").read_text(),
                    (tmp_path / f"child-{i}.err").read_text(),
                )
            )
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _row_counts() -> dict[str, int]:
    """Rows of the cache tables and distinct transaction ids, read straight from the vault."""

    async def read() -> dict[str, int]:
        async with open_vault(load_settings()) as vault, vault.reading() as conn:
            result = {}
            for table in (schema.accounts, schema.transactions):
                count = select(func.count()).select_from(table)
                result[table.name] = int(await conn.scalar(count) or 0)
            return result

    return asyncio.run(read())


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.xdist_group("many_processes")
def test_concurrent_first_fetches_make_one_row_per_account_and_transaction(
    tmp_path: Path, cli: CliCall, fresh_connection: RunningSandbox
) -> None:
    """Sixteen first syncs at once: one fetch, one row per account and transaction, ids all agree.

    The connection's sync lock lets one child fetch; the others wait for it
    and then find it synced. Every run prints the same transactions under the
    same account ids, and every account id any run printed is accepted by a
    later ``--account``.

    Slow (over 10 s on a loaded 2-core machine) by design: sixteen real
    dashtam processes, each importing the whole stack and opening the vault,
    are what makes the race this test is about; fewer would race less.
    """
    running = fresh_connection
    args = ["transactions", "list", "--since", SINCE, "--format", "jsonl"]
    runs = _run_children(tmp_path, args)
    for run in runs:
        assert run.returncode == 0, run.stderr

    printed = [_lines(run.stdout) for run in runs]
    expected = {(t["id"], t["account_id"]) for t in printed[0]}
    assert len(expected) == len(printed[0]) > 0
    for items in printed:
        assert {(t["id"], t["account_id"]) for t in items} == expected
    account_ids = {t["account_id"] for items in printed for t in items}
    assert len(account_ids) == ACCOUNTS

    counts = _row_counts()
    assert counts == {"accounts": ACCOUNTS, "transactions": len(expected)}
    # One child fetched; fifteen found the connection synced meanwhile.
    assert running.sandbox.counts["GET /trader/v1/accounts/accountNumbers"] == 1

    for account_id in sorted(account_ids):
        later = cli("transactions", "list", "--account", account_id, *args[2:])
        assert later.exit_code == 0, later.stderr
        mine = {t["id"] for t in _lines(later.stdout)}
        assert mine == {i for i, a in expected if a == account_id}
    assert _row_counts() == counts  # the later runs added nothing either
