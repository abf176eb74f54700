"""What the benches share: a vault in a temporary home, sandbox data, a sandbox server, peak RSS."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.providers.base import FetchedAccount
    from dashtam_cli.core.vault.vault import Vault
    from dashtam_cli.sandbox.data import SandboxAccount

DASHTAM = str(Path(sys.executable).parent / "dashtam")
PASSPHRASE = "bench passphrase, long enough"


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_master_key() -> str:
    """A throwaway master key, as DASHTAM_MASTER_KEY takes it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@contextlib.contextmanager
def environment(home: Path, **values: str) -> Iterator[dict[str, str]]:
    """This process pointed at ``home`` (and ``values``), with no DASHTAM_/SCHWAB_ variable else.

    Yields the environment a dashtam child process should get; the caller's is
    restored after.
    """
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("DASHTAM_", "SCHWAB_")) or name in {"SSL_CERT_FILE", "SSL_CERT_DIR"}:
            del os.environ[name]
    os.environ["DASHTAM_HOME"] = str(home)
    os.environ.update(values)
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sandbox_accounts(accounts: int, per_account: int) -> list[SandboxAccount]:
    """The sandbox's own generated accounts and transactions (two years, seed 7)."""
    from dashtam_cli.sandbox.data import generate_accounts

    return generate_accounts(
        seed=7, accounts=accounts, transactions_per_account=per_account, now=dt.datetime.now(dt.UTC)
    )


async def connection(vault: Vault, name: str = "schwab") -> ConnectionInfo:
    """A Schwab connection with made-up tokens (valid for a day), as a login leaves it."""
    from dashtam_cli.core.connections import save_login
    from dashtam_cli.core.oauth.tokens import TokenSet

    now = dt.datetime.now(dt.UTC)
    tokens = TokenSet(
        access_token="bench-access",
        refresh_token="bench-refresh",
        token_type="Bearer",
        issued_at=now,
        access_expires_at=now + dt.timedelta(days=1),
        refresh_expires_at=now + dt.timedelta(days=7),
    )
    return await save_login(vault, provider="schwab", name=name, tokens=tokens)


def fetched_accounts(
    info: ConnectionInfo, accounts: Sequence[SandboxAccount]
) -> list[FetchedAccount]:
    """The sandbox's accounts mapped as a sync maps them (new ids)."""
    import uuid

    from dashtam_cli.core.providers.base import FetchedAccount
    from dashtam_cli.core.providers.schwab import mapping
    from dashtam_cli.core.providers.schwab.client import Fields

    now = dt.datetime.now(dt.UTC)
    result = []
    for account in accounts:
        raw = Fields(account.body, what="accounts")
        model = mapping.account_model(info, str(uuid.uuid4()), raw, now, account.nickname)
        positions = mapping.positions(model, raw)
        result.append(FetchedAccount(account.number, account.hash_value, model, positions))
    return result


@dataclasses.dataclass
class Sandbox:
    """`dashtam sandbox serve` in its own process, as a real server would be."""

    accounts: int
    per_account: int
    latency_ms: float
    redirect: str
    env: dict[str, str]
    exports: dict[str, str] = dataclasses.field(default_factory=dict)
    process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        """Start it and read the settings it prints."""
        self.process = subprocess.Popen(
            [
                DASHTAM,
                "sandbox",
                "serve",
                "--port",
                "0",
                "--auto-approve",
                "--accounts",
                str(self.accounts),
                "--transactions-per-account",
                str(self.per_account),
                "--latency",
                f"{self.latency_ms:g}",
                "--redirect-uri",
                self.redirect,
            ],
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 120
        while "SCHWAB_REDIRECT_URI" not in self.exports and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            match = re.search(r"export (\w+)=(\S+)", line)
            if match:
                self.exports[match[1]] = match[2]
        if "SCHWAB_REDIRECT_URI" not in self.exports:
            self.__exit__()
            msg = "the sandbox did not start"
            raise RuntimeError(msg)
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop it."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def login(self) -> dict[str, Any]:
        """Log in as any OAuth client would (auto-approved): the token endpoint's answer."""
        import ssl
        import urllib.parse

        import httpx

        base = self.exports["DASHTAM_SCHWAB_BASE_URL"]
        client_id = self.exports["SCHWAB_API_KEY"]
        secret = self.exports["SCHWAB_API_SECRET"]
        verify = ssl.create_default_context(cafile=self.exports["DASHTAM_CA_BUNDLE"])
        with httpx.Client(verify=verify) as client:
            answer = client.get(
                f"{base}/v1/oauth/authorize",
                params={"client_id": client_id, "redirect_uri": self.redirect},
            )
            location = urllib.parse.urlsplit(answer.headers["location"])
            code = urllib.parse.parse_qs(location.query)["code"][0]
            token = client.post(
                f"{base}/v1/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect,
                },
                auth=(client_id, secret),
            )
            token.raise_for_status()
            answer_json: dict[str, Any] = token.json()
            return answer_json


_WRAPPER = """\
import resource, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
lines = 0
while chunk := child.stdout.read(1 << 16):
    lines += chunk.count(b"\\n")
err = child.stderr.read()
code = child.wait()
sys.stderr.buffer.write(err)
print(lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@dataclasses.dataclass(frozen=True)
class Measured:
    """One run of a command as a process: wall time, peak RSS, lines it wrote on stdout."""

    seconds: float
    peak_mb: float
    lines: int


def measure(command: Sequence[str], env: dict[str, str]) -> Measured:
    """Run ``command`` under a wrapper whose only child it is, reading its stdout as a pipe would.

    The wrapper's children's peak RSS (getrusage) is the command's alone.
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        env=env,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"{' '.join(command[1:3])} failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    lines, peak_kib = done.stdout.split()[-2:]
    return Measured(elapsed, int(peak_kib) / 1024, int(lines))
