"""Token refresh across real processes: one request for many, and a usable vault after any kill.

Every child is a real ``sys.executable`` process running the script below
against the test's vault (keyed by DASHTAM_MASTER_KEY, since the in-memory
keyring does not cross processes) and the local OAuth server (trusted through
SSL_CERT_FILE). The children inherit DASHTAM_HOME, SSL_CERT_FILE,
DASHTAM_SCHWAB_BASE_URL and SCHWAB_* from the fixtures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest
from token_support import add_connection, audit_of, refresh_requests, stored, token_set

from dashtam_cli.core.connections import list_connections
from dashtam_cli.core.errors import ReauthRequired
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.tokens import token_manager
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from oauth_server import OAuthServer

pytestmark = pytest.mark.usefixtures("master_key")

NAME = "brokerage"
REFRESH = "R0.the-login's-refresh-token@"
PROCESSES = 8
START_TIMEOUT_S = 30.0  # children import dashtam on a possibly busy machine
EXIT_TIMEOUT_S = 30.0

_CHILD = """
import asyncio
import pathlib
import signal
import sys
import time

name, stage, marker, ready, go = sys.argv[1:6]
# Python's own SIGINT handler even if this process inherited SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

import dashtam_cli.core.http  # loaded before the start line, so the race starts warm
from dashtam_cli.core import connections, tokens
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions


def stop_here():
    # Say where we are, then wait (bounded) for the SIGKILL.
    pathlib.Path(marker).write_text(stage)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit("not killed in time")


real_store, real_write = tokens.store_tokens, connections._write_tokens


async def stop(*args, **kwargs):
    stop_here()


async def write_then_stop(*args, **kwargs):
    await real_write(*args, **kwargs)
    stop_here()  # inside the write transaction: rows written, not committed


async def store_then_stop(*args, **kwargs):
    await real_store(*args, **kwargs)
    stop_here()


if stage == "before-request":
    tokens.post_token_request = stop
elif stage == "before-commit":
    tokens.store_tokens = stop
elif stage == "mid-commit":
    connections._write_tokens = write_then_stop
elif stage == "after-commit":
    tokens.store_tokens = store_then_stop


async def main():
    async with tokens.token_manager(load_settings(), OpenOptions()) as manager:
        return await manager.access_token(name)


if ready != "-":
    pathlib.Path(ready).touch()
    deadline = time.monotonic() + 30
    while not pathlib.Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("no start signal")
        time.sleep(0.002)
print(asyncio.run(main()), flush=True)
"""


@dataclasses.dataclass
class Child:
    """One child process and the files its output goes to."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def report(self) -> str:
        """What the child said, for a failure message."""
        return f"exit {self.proc.returncode}\n{self.stderr.read_text()}"


class Children:
    """Starts children; the fixture kills and reaps whatever is still running."""

    def __init__(self, tmp_path: Path) -> None:
        """Write the child script into ``tmp_path``."""
        self.tmp_path = tmp_path
        self.script = tmp_path / "child.py"
        self.script.write_text(textwrap.dedent(_CHILD))
        self.started: list[Child] = []

    def start(
        self,
        *,
        stage: str = "none",
        ready: Path | None = None,
        go: Path | None = None,
        home: Path | None = None,
    ) -> Child:
        """Start a child that gets an access token for NAME, stopping at ``stage``.

        ``home``: a DASHTAM_HOME of its own (another machine sharing the vault's database).
        """
        n = len(self.started)
        env = dict(os.environ)
        if home is not None:
            env["DASHTAM_HOME"] = str(home)
        out, err = self.tmp_path / f"child-{n}.out", self.tmp_path / f"child-{n}.err"
        marker = self.tmp_path / f"child-{n}.stage"
        args = [NAME, stage, str(marker), str(ready or "-"), str(go or "-")]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(self.script), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=self.tmp_path,
            )
        child = Child(proc, out, err)
        self.started.append(child)
        return child

    def marker(self, child: Child) -> Path:
        """The file a child writes when it reaches its stage."""
        return self.tmp_path / f"child-{self.started.index(child)}.stage"

    def finish(self, child: Child) -> str:
        """Wait (bounded) for a child to exit 0 and return what it printed."""
        try:
            child.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a child did not finish in {EXIT_TIMEOUT_S} s")
        assert child.proc.returncode == 0, child.report()
        return child.stdout.read_text().strip()

    def kill_all(self) -> None:
        """SIGKILL every child still running, and reap them all."""
        for child in self.started:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(timeout=EXIT_TIMEOUT_S)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """Child processes, killed and reaped when the test ends, whatever happened."""
    started = Children(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def wait_until(condition: Callable[[], bool], what: str, watched: list[Child]) -> None:
    """Poll ``condition`` (bounded); fail early, with its stderr, if a watched child exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        for child in watched:
            if child.proc.poll() is not None:
                pytest.fail(f"a child exited before {what}: {child.report()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def expired_connection(oauth: OAuthServer) -> None:
    """A connection whose access token expired a minute ago; the server knows its refresh token.

    The server refuses a refresh token it rotated away: a second request with
    the login's refresh token would fail, so a double refresh cannot pass unnoticed.
    """
    oauth.behaviour.rotate_refresh = True
    oauth.behaviour.check_refresh = True
    oauth.live_refresh.add(REFRESH)
    now = dt.datetime.now(dt.UTC)
    add_connection(NAME, token_set(now, access_in=dt.timedelta(minutes=-1), refresh=REFRESH))


@pytest.mark.xdist_group("many_processes")
def test_many_processes_needing_a_refresh_send_one_request(
    oauth: OAuthServer, children: Children, tmp_path: Path
) -> None:
    """Eight processes refreshing one connection at once: one request, one token for all.

    Slow (over 10 s under coverage on a loaded 2-core machine) by design:
    eight real dashtam processes, each importing the stack and opening the
    vault, are the contention the per-connection lock must withstand. On a
    shared vault (PostgreSQL) each process has a DASHTAM_HOME of its own, as
    eight machines would: no file lock is shared, only the database.
    """
    expired_connection(oauth)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    machines = load_settings().database_url is not None
    started = [
        children.start(ready=path, go=go, home=tmp_path / f"machine-{i}" if machines else None)
        for i, path in enumerate(ready)
    ]
    wait_until(lambda: all(path.exists() for path in ready), "every child is ready", started)

    go.touch()
    printed = [children.finish(child) for child in started]

    assert len(refresh_requests(oauth)) == 1
    (issued,) = oauth.issued
    assert printed == [issued["access_token"]] * PROCESSES
    _, tokens = stored(NAME)
    assert tokens.access_token == issued["access_token"]
    assert tokens.refresh_token == issued["refresh_token"]
    assert tokens.access_expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=25)
    refreshes = [e for e in audit_of(NAME) if e.operation == "oauth.refresh"]
    assert [e.outcome for e in refreshes] == ["ok"]


def fresh_access_token() -> str:
    """What a new process gets: an access token for NAME, refreshing it if needed."""

    async def main() -> str:
        async with token_manager(load_settings(), OpenOptions()) as manager:
            return await manager.access_token(NAME)

    return asyncio.run(main())


def connection_status() -> str:
    """The connection's recorded status."""

    async def read() -> str:
        async with open_vault(load_settings()) as vault:
            (info,) = await list_connections(vault, name=NAME)
            return info.status

    return asyncio.run(read())


def assert_vault_intact() -> None:
    """SQLite finds the vault file (and what the kill left in its WAL) consistent.

    A shared vault's PostgreSQL keeps its own consistency (its WAL, its
    transactions): what a kill leaves there is checked by reading the tokens back.
    """
    if load_settings().database_url is not None:
        return
    with sqlite3.connect(load_settings().paths.vault_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


@pytest.mark.parametrize(
    ("stage", "rotate", "outcome"),
    [
        ("before-request", True, "refreshes"),
        ("provider-holding", True, "reauth"),
        ("provider-holding", False, "refreshes"),
        ("before-commit", True, "reauth"),
        ("mid-commit", True, "reauth"),
        ("mid-commit", False, "refreshes"),
        ("after-commit", True, "committed"),
    ],
)
def test_a_killed_refresh_leaves_a_usable_token_pair(
    oauth: OAuthServer, children: Children, stage: str, rotate: bool, outcome: str
) -> None:
    """A refresh SIGKILLed at any point: the next process gets a valid token, or 'log in again'.

    Killed before the request, the old pair still works. Killed once the
    provider has answered (held, received, or half-written) but before the
    commit: if the provider rotated, the old refresh token is now refused and
    the next process reports ReauthRequired with the command; if it did not
    rotate (Schwab), the old pair still refreshes. Killed after the commit,
    the new pair is there. Never a corrupted vault or a silent success.
    """
    expired_connection(oauth)
    oauth.behaviour.rotate_refresh = rotate
    _, original = stored(NAME)
    hold = threading.Event()
    if stage == "provider-holding":
        oauth.behaviour.hold = hold
    try:
        child = children.start(stage=stage)
        if stage == "provider-holding":
            wait_until(oauth.holding.is_set, "the server holds its answer", [child])
        else:
            wait_until(children.marker(child).exists, f"the child reaches {stage}", [child])
        child.proc.kill()
        child.proc.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        hold.set()  # let the held answer go to the dead socket
    oauth.behaviour.hold = None
    sent_by_child = 0 if stage == "before-request" else 1
    assert len(refresh_requests(oauth)) == sent_by_child
    assert_vault_intact()

    if outcome == "reauth":
        with pytest.raises(ReauthRequired) as caught:
            fresh_access_token()
        assert caught.value.hint == f"run: dashtam connect schwab --name {NAME}"
        assert len(refresh_requests(oauth)) == 2  # the retry, refused
        assert connection_status() == "reauth_required"
        assert stored(NAME)[1] == original  # the old pair kept, not deleted or half-written
        return

    token = fresh_access_token()
    _, now_stored = stored(NAME)
    assert token == now_stored.access_token == oauth.issued[-1]["access_token"]
    assert now_stored.access_expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=25)
    assert connection_status() == "active"
    if outcome == "committed":
        assert len(refresh_requests(oauth)) == 1  # the child's: nothing more was needed
        assert now_stored.refresh_token == oauth.issued[-1]["refresh_token"]
    else:
        assert len(refresh_requests(oauth)) == sent_by_child + 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_refresh_waits_for_the_commit(
    oauth: OAuthServer, children: Children, signum: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM while the provider's answer is on its way: the answer is committed first.

    The server rotates and holds its answer; the child gets the signal while
    waiting for it. Had the signal stopped the child there, the rotated
    refresh token would be lost and the next process told to log in again.
    """
    expired_connection(oauth)
    hold = threading.Event()
    oauth.behaviour.hold = hold
    try:
        child = children.start()
        wait_until(oauth.holding.is_set, "the server holds its answer", [child])
        child.proc.send_signal(signum)
    finally:
        hold.set()
    try:
        child.proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the child did not exit after the signal")

    assert child.proc.returncode == -signum, child.report()  # it did die of the signal
    assert child.stdout.read_text() == ""  # after the commit, before using the token
    (issued,) = oauth.issued
    _, now_stored = stored(NAME)
    assert now_stored.access_token == issued["access_token"]
    assert now_stored.refresh_token == issued["refresh_token"]
    assert fresh_access_token() == issued["access_token"]
    assert len(refresh_requests(oauth)) == 1
