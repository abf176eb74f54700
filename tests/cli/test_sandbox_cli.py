"""`dashtam demo` and `dashtam sandbox serve`, run as the installed console script.

Each run gets a clean environment: no DASHTAM_* or SCHWAB_* variables, a
HOME and TMPDIR inside the test's folder, and a keyring backend that fails
every call, which proves the demo needs no keyring service.
"""

from __future__ import annotations

import collections
import decimal
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from subprocess_env import coverage_variables

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

DASHTAM = Path(sys.executable).parent / "dashtam"
SANDBOX_APP_KEY = "dashtam-sandbox-app-key-00000000"


@pytest.fixture
def tmpdir_root(tmp_path: Path) -> Path:
    """The TMPDIR the subprocesses see, so the demo's temporary home lands in the test's folder."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
def clean_env(tmp_path: Path, tmpdir_root: Path) -> dict[str, str]:
    """An environment with nothing of dashtam in it and no usable keyring."""
    home = tmp_path / "user"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmpdir_root),
        "LANG": "C.UTF-8",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "COLUMNS": "200",  # wide tables: option symbols stay on one line
        **coverage_variables(),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed dashtam with ``args``."""
    return subprocess.run(
        [str(DASHTAM), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def demo_homes(tmpdir_root: Path) -> list[Path]:
    """The demo's temporary homes present in TMPDIR."""
    return sorted(tmpdir_root.glob("dashtam-demo-*"))


def test_demo_runs_with_no_configuration_and_cleans_up(
    clean_env: dict[str, str], tmpdir_root: Path
) -> None:
    """`dashtam demo` exits 0, prints the four tables, narrates on stderr, leaves nothing behind."""
    assert demo_homes(tmpdir_root) == []
    result = run(clean_env, "demo")
    assert result.returncode == 0, result.stderr
    for title in ("accounts", "positions", "recent transactions (the 10 newest)", "tokens"):
        assert title in result.stdout
    assert "schwab" in result.stdout
    assert re.search(r"\*\*\*\*\d{4}", result.stdout)
    # An option as people write it, whole: "META 01/24/2027 $550 Call".
    assert re.search(r"[A-Z]{1,5} \d\d/\d\d/\d{4} \$[\d.]+ (Call|Put)", result.stdout)
    for step in range(1, 11):
        assert f"\n{step}. " in "\n" + result.stderr
    assert "Connected as 'plaid'" in result.stderr
    assert "1. Starting the sandbox" not in result.stdout
    match = re.search(r"the vault is (\S+)\.\n", result.stderr)
    assert match is not None, result.stderr
    vault = Path(match[1])
    assert vault.is_relative_to(tmpdir_root)
    assert not vault.exists()
    assert demo_homes(tmpdir_root) == []


def test_demo_json_is_one_object(clean_env: dict[str, str], tmpdir_root: Path) -> None:
    """`--format json` prints one JSON object: both syncs, the merged accounts, positions and more."""
    result = run(clean_env, "demo", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {
        "synced",
        "accounts",
        "positions",
        "transactions",
        "tokens",
        "networth",
    }
    usd = next(row for row in document["networth"] if row["currency"] == "USD")
    assert usd["accounts"] == sum(1 for a in document["accounts"] if a["currency"] == "USD")
    assert usd["total"] == str(
        sum(
            decimal.Decimal(a["total_value"])
            for a in document["accounts"]
            if a["currency"] == "USD"
        )
    )
    assert {(r["connection"], r["provider"], r["result"]) for r in document["synced"]} == {
        ("schwab", "schwab", "ok"),
        ("banks", "simplefin", "ok"),
        ("plaid", "plaid", "ok"),
    }
    by_connection = collections.Counter(a["connection"] for a in document["accounts"])
    assert by_connection["schwab"] == 3
    assert by_connection["banks"] >= 4  # the sandbox Bridge's bank, card, brokerage and miles
    # The sandbox Plaid item's checking, savings, card, euro, crypto and brokerage accounts.
    assert by_connection["plaid"] == 6
    plaid_card = next(
        a for a in document["accounts"] if a["connection"] == "plaid" and a["type"] == "CREDIT_CARD"
    )
    assert plaid_card["total_value"] != "0.00"
    assert all(isinstance(a["cash"], str) for a in document["accounts"])  # money as text
    assert any(" " in p["symbol"] for p in document["positions"])
    assert 0 < len(document["transactions"]) <= 10
    assert sorted(t["state"] for t in document["tokens"]) == ["ok", "ok", "ok"]
    assert demo_homes(tmpdir_root) == []


def test_demo_keep_leaves_a_vault_its_key_opens(
    clean_env: dict[str, str], tmpdir_root: Path
) -> None:
    """`--keep`: the home stays with a 0600 key file, and `dashtam vault status` opens the vault."""
    result = run(clean_env, "demo", "--keep", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "then open the dashboard on this data: dashtam dashboard" in result.stderr
    match = re.search(r"kept the demo's files in (\S+);", result.stderr)
    assert match is not None, result.stderr
    home = Path(match[1])
    assert demo_homes(tmpdir_root) == [home]
    key_file = home / "demo-master-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    env = {**clean_env, "DASHTAM_HOME": str(home)}
    status = run(
        {**env, "DASHTAM_MASTER_KEY": key_file.read_text()}, "vault", "status", "--format", "json"
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "ok"
    counts = report["counts"]
    assert counts["connections"] == 3  # Schwab, SimpleFIN and Plaid
    assert counts["accounts"] > 3
    assert counts["positions"] > 0
    assert counts["transactions"] > 0
    locked = run(env, "vault", "status", "--format", "json")  # the key is what opens it
    assert locked.returncode == 1
    assert json.loads(locked.stdout)["state"] == "error"


class Serving:
    """A `dashtam sandbox serve` process and the lines it printed on stderr."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        """Read its stderr on a thread, so a silent process cannot block the test."""
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stderr is not None
        self.reader = threading.Thread(target=self._pump, args=(process.stderr,), daemon=True)
        self.reader.start()

    def _pump(self, stream: Iterable[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def line_matching(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait for a printed line matching ``pattern`` and return the match."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the sandbox printed only: {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def exports(self, count: int, timeout: float = 30) -> dict[str, str]:
        """Wait for ``count`` ``export NAME=value`` lines and return them."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the sandbox printed only: {self.seen}")
            self.seen.append(line)
            match = re.search(r"export (\w+)=(\S+)", line)
            if match:
                found[match[1]] = match[2]
        return found


@pytest.fixture
def serve(clean_env: dict[str, str], tmp_path: Path) -> Iterator[Serving]:
    """`dashtam sandbox serve --port 0 --auto-approve` with its files under the test's folder."""
    env = {**clean_env, "DASHTAM_HOME": str(tmp_path / "serve-home")}
    process = subprocess.Popen(
        [
            str(DASHTAM),
            "sandbox",
            "serve",
            "--port",
            "0",
            "--auto-approve",
            "--redirect-uri",
            "https://127.0.0.1:9911",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    serving = Serving(process)
    try:
        yield serving
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        serving.reader.join(10)  # it has read to the end: the stream can close under no reader
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_sandbox_serve_prints_where_it_is_answers_and_stops_on_ctrl_c(
    serve: Serving, tmp_path: Path
) -> None:
    """It prints the exports (base URL, CA, app, redirect), serves HTTPS, and Ctrl-C exits 130."""
    exports = serve.exports(5)
    base_url = exports["DASHTAM_SCHWAB_BASE_URL"]
    ca_path = Path(exports["DASHTAM_CA_BUNDLE"])
    assert "SSL_CERT_FILE" not in exports  # it would change what pip and git trust
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", base_url)
    assert any(f"listening on {base_url}" in line for line in serve.seen)
    assert ca_path.is_relative_to(tmp_path / "serve-home")
    assert exports["SCHWAB_API_KEY"] == SANDBOX_APP_KEY
    assert exports["SCHWAB_REDIRECT_URI"] == "https://127.0.0.1:9911"

    query = urllib.parse.urlencode(
        {"client_id": SANDBOX_APP_KEY, "redirect_uri": "https://127.0.0.1:9911", "state": "s1"}
    )
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_path)) as client:
        login = client.get(f"{base_url}/v1/oauth/authorize?{query}")
        api = client.get(f"{base_url}/trader/v1/accounts/accountNumbers")
    assert login.status_code == 302  # --auto-approve: no consent page
    assert login.headers["location"].startswith("https://127.0.0.1:9911/?code=")
    assert api.status_code == 401

    serve.process.send_signal(signal.SIGINT)
    assert serve.process.wait(timeout=10) == 130
    assert serve.process.stdout is not None
    assert serve.process.stdout.read() == ""  # messages only, on stderr


def test_sandbox_serve_on_a_port_in_use_says_so_and_changes_nothing(
    serve: Serving, clean_env: dict[str, str], tmp_path: Path
) -> None:
    """A second sandbox on the first one's port exits 1 with one line; the first's CA stays."""
    exports = serve.exports(5)
    base_url = exports["DASHTAM_SCHWAB_BASE_URL"]
    ca_path = Path(exports["DASHTAM_CA_BUNDLE"])
    ca_before = ca_path.read_bytes()
    port = base_url.rsplit(":", 1)[1]

    second = subprocess.run(
        [str(DASHTAM), "sandbox", "serve", "--port", port],
        env={**clean_env, "DASHTAM_HOME": str(tmp_path / "serve-home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
    assert "--port 0" in second.stderr
    assert "Traceback" not in second.stderr
    assert "internal error" not in second.stderr
    assert ca_path.read_bytes() == ca_before
    assert [p.name for p in ca_path.parent.iterdir() if p.name.startswith("starting-")] == []
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_path)) as client:
        assert client.get(f"{base_url}/trader/v1/accounts/accountNumbers").status_code == 401


def test_sandbox_serve_says_how_to_connect_simplefin(serve: Serving) -> None:
    """After the Schwab exports it names the SimpleFIN create page, which gives a setup token."""
    exports = serve.exports(5)
    base_url = exports["DASHTAM_SCHWAB_BASE_URL"]
    ca_path = Path(exports["DASHTAM_CA_BUNDLE"])
    version = serve.line_matching(r"SimpleFIN \(version (\d)\) at (\S+):")
    assert version[1] == "2"
    assert version[2] == f"{base_url}/simplefin"
    create = serve.line_matching(r"open (\S+/simplefin/create) ")[1]
    assert create == f"{base_url}/simplefin/create"
    # The CA to trust is the one exported for Schwab (fails the test when not printed).
    serve.line_matching(r"paste it into dashtam connect simplefin \(DASHTAM_CA_BUNDLE exported")
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_path)) as client:
        page = client.get(create)
        info = client.get(f"{base_url}/simplefin/info")
    assert page.status_code == 200
    assert "dashtam connect simplefin" in page.text
    assert info.json() == {"versions": ["2.0"]}


def test_sandbox_serve_simplefin_version_1(clean_env: dict[str, str], tmp_path: Path) -> None:
    """--simplefin-version 1 serves version 1 and says so."""
    process = subprocess.Popen(
        [str(DASHTAM), "sandbox", "serve", "--port", "0", "--simplefin-version", "1"],
        env={**clean_env, "DASHTAM_HOME": str(tmp_path / "v1-home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    serving = Serving(process)
    try:
        exports = serving.exports(5)
        assert serving.line_matching(r"SimpleFIN \(version (\d)\)")[1] == "1"
        context = ssl.create_default_context(cafile=exports["DASHTAM_CA_BUNDLE"])
        with httpx.Client(verify=context) as client:
            info = client.get(exports["DASHTAM_SCHWAB_BASE_URL"] + "/simplefin/info")
        assert info.json() == {"versions": ["1.0"]}
    finally:
        process.kill()
        process.wait(10)
        serving.reader.join(10)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize("value", ["3", "0", "two"])
def test_sandbox_serve_refuses_another_simplefin_version(
    clean_env: dict[str, str], tmp_path: Path, value: str
) -> None:
    """--simplefin-version other than 1 or 2: a one-line usage error, exit 2, nothing served."""
    result = subprocess.run(
        [str(DASHTAM), "sandbox", "serve", "--port", "0", "--simplefin-version", value],
        env={**clean_env, "DASHTAM_HOME": str(tmp_path / "bad-home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--simplefin-version" in result.stderr
    assert "from 1 to 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr


def test_sandbox_serve_prints_the_plaid_exports_and_serves_plaid(serve: Serving) -> None:
    """It prints DASHTAM_PLAID_BASE_URL and the sandbox's Plaid keys, which work there."""
    exports = serve.exports(9)
    plaid = exports["DASHTAM_PLAID_BASE_URL"]
    assert plaid == exports["DASHTAM_SCHWAB_BASE_URL"] + "/plaid"
    assert exports["PLAID_ENV"] == "sandbox"
    context = ssl.create_default_context(cafile=exports["DASHTAM_CA_BUNDLE"])
    with httpx.Client(verify=context) as client:
        answer = client.post(
            plaid + "/sandbox/public_token/create",
            json={
                "client_id": exports["PLAID_CLIENT_ID"],
                "secret": exports["PLAID_SECRET"],
                "institution_id": "ins_109508",
                "initial_products": ["transactions"],
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["public_token"].startswith("public-sandbox-")


@pytest.mark.parametrize("value", ["mutations", "", "RATE-LIMIT"])
def test_sandbox_serve_refuses_an_unknown_plaid_fault(
    clean_env: dict[str, str], tmp_path: Path, value: str
) -> None:
    """--plaid-fault other than rate-limit, server-error or mutation: usage error, exit 2."""
    result = subprocess.run(
        [str(DASHTAM), "sandbox", "serve", "--port", "0", "--plaid-fault", value],
        env={**clean_env, "DASHTAM_HOME": str(tmp_path / "bad-home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--plaid-fault" in result.stderr
    assert "rate-limit, server-error, mutation" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr
