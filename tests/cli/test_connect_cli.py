"""`dashtam connect`, `connections list`, `disconnect` and `providers`, in-process and as the installed script.

The subprocess tests run the real console script against a local OAuth server
over real TLS; the vault key travels in DASHTAM_MASTER_KEY because the
in-memory keyring of the tests does not cross processes.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import io
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from oauth_fixtures import listener_cert
from sqlalchemy import func, select
from subprocess_env import coverage_variables

from dashtam_cli.core.audit import list_audit
from dashtam_cli.core.connections import ConnectionNotFound, load_tokens, save_login
from dashtam_cli.core.oauth import flow
from dashtam_cli.core.oauth.tokens import TokenSet
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import schema
from dashtam_cli.core.vault.files import sidecar_files
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from conftest import CliCall
    from oauth_fixtures import Browser
    from oauth_server import OAuthServer

    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.vault.vault import Vault

DASHTAM = Path(sys.executable).parent / "dashtam"
STATE = "fixed-state-for-the-manual-paste-0123456789"
CONNECTION_FIELDS = [
    "name",
    "provider",
    "status",
    "created_at",
    "updated_at",
    "access_expires_at",
    "refresh_expires_at",
    "id",
]


# --- helpers ---------------------------------------------------------------


def with_vault(job: Callable[[Vault], Awaitable[Any]]) -> Any:
    """Open the test's vault in-process (creating it if needed) and run ``job`` on it."""

    async def run() -> Any:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(run())


def add_connection(name: str, *, account: bool = False) -> ConnectionInfo:
    """Store a connection with made-up tokens (and one cached account), without a login."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    tokens = TokenSet(
        access_token=f"access-{name}-{uuid.uuid4()}",
        refresh_token=f"refresh-{name}-{uuid.uuid4()}",
        token_type="Bearer",
        issued_at=now,
        access_expires_at=now + dt.timedelta(minutes=30),
        refresh_expires_at=now + dt.timedelta(days=7),
    )

    async def job(vault: Vault) -> ConnectionInfo:
        info = await save_login(vault, provider="schwab", name=name, tokens=tokens)
        if account:
            row_id = str(uuid.uuid4())
            async with vault.writing() as conn:
                await conn.execute(
                    schema.accounts.insert().values(
                        id=row_id,
                        connection_id=info.id,
                        number=vault.seal("accounts", row_id, "number", "12345678", owner=info.id),
                        payload=vault.seal("accounts", row_id, "payload", "{}", owner=info.id),
                        fetched_at=now.isoformat(),
                    )
                )
        return info

    info: ConnectionInfo = with_vault(job)
    return info


def count_rows(table: Any, connection_id: str) -> int:
    """Rows of ``table`` that belong to the connection ``connection_id``."""

    async def job(vault: Vault) -> int:
        async with vault.reading() as conn:
            query = select(func.count()).where(table.c.connection_id == connection_id)
            return int(await conn.scalar(query) or 0)

    result: int = with_vault(job)
    return result


def operations() -> list[tuple[str, str, str | None]]:
    """(operation, outcome, connection) of every audit entry, oldest first."""

    async def job(vault: Vault) -> list[tuple[str, str, str | None]]:
        entries = await list_audit(vault)
        return [(e.operation, e.outcome, e.connection) for e in reversed(entries)]

    result: list[tuple[str, str, str | None]] = with_vault(job)
    return result


def redirect_port(oauth: OAuthServer) -> int:
    """The port of the redirect URI the OAuth server sends the browser to."""
    port = urllib.parse.urlsplit(oauth.redirect_uri).port
    assert port is not None
    return port


def authorize(oauth: OAuthServer, ca_file: Path, state: str) -> str:
    """Approve a login at the OAuth server with ``state`` and return the redirected address."""
    query = urllib.parse.urlencode(
        {
            "client_id": oauth.client_id,
            "redirect_uri": oauth.redirect_uri,
            "response_type": "code",
            "state": state,
        }
    )
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:
        answer = client.get(f"{oauth.base_url}/v1/oauth/authorize?{query}")
    assert answer.status_code == 302
    location: str = answer.headers["location"]
    return location


@pytest.fixture
def fixed_state(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the flow's state known in advance, so a pasted address can be given as CliRunner input.

    Only the flow's reference to ``secrets`` is replaced; the state is still
    checked exactly as a random one is.
    """
    monkeypatch.setattr(flow, "secrets", types.SimpleNamespace(token_urlsafe=lambda _n: STATE))
    return STATE


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a dashtam subprocess: this test's dashtam and Schwab settings only."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "user"),
        "LANG": "C.UTF-8",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "COLUMNS": "200",
        **coverage_variables(),
    }
    env.update(
        (name, value)
        for name, value in os.environ.items()
        if name.startswith(("DASHTAM_", "SCHWAB_")) or name == "SSL_CERT_FILE"
    )
    env.update(extra)
    return env


WITH_FD_LIMIT = """
import os, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
os.execv(sys.argv[2], sys.argv[2:])
"""


class Child:
    """A dashtam subprocess whose stderr is read line by line on a thread."""

    def __init__(self, args: list[str], env: dict[str, str], *, nofile: int | None = None) -> None:
        """Start ``dashtam ARGS``; stdin is empty, stdout and stderr are pipes.

        ``nofile`` lowers the child's limit of open file descriptors (its soft
        RLIMIT_NOFILE), set in the child itself before dashtam starts.
        """
        launcher = [] if nofile is None else [sys.executable, "-c", WITH_FD_LIMIT, str(nofile)]
        self.process = subprocess.Popen(
            [*launcher, str(DASHTAM), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stderr is not None
        self.reader = threading.Thread(target=self._pump, args=(self.process.stderr,), daemon=True)
        self.reader.start()

    def _pump(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first stderr line (from now on) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"dashtam printed only: {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        """Wait for the exit; return the code, stdout and the whole of stderr."""
        code = self.process.wait(timeout)
        self.reader.join(10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stdout is not None
        return code, self.process.stdout.read(), "".join(self.seen)

    def close(self) -> None:
        """Kill the process if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Subprocesses started by a test, always killed and closed at its end."""
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


BROWSER = """#!{python}
\"\"\"A browser for the tests: open the authorize URL, then follow its redirect to dashtam.\"\"\"
import os, pathlib, ssl, sys, time

import httpx

# Like a desktop browser, it writes nothing on dashtam's stdout or stderr.
quiet = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(quiet, fd)
report = pathlib.Path(os.environ["TEST_BROWSER_REPORT"])
stop = pathlib.Path(os.environ["TEST_BROWSER_STOP"])
pathlib.Path(os.environ["TEST_BROWSER_PID"]).write_text(str(os.getpid()))
try:
    provider = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    with httpx.Client(verify=provider) as client:
        location = client.get(sys.argv[1]).headers["location"]
    cert = pathlib.Path(os.environ["DASHTAM_HOME"]) / "data" / "tls" / "listener-cert.pem"
    deadline = time.monotonic() + 10
    while not cert.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
        page = client.get(location)
    report.write_text(f"{{page.status_code}}\\n{{page.text}}")
except Exception as exc:
    report.write_text(f"error {{exc!r}}")
# A real browser stays open after the login; dashtam must not wait for it.
deadline = time.monotonic() + 20
while not stop.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""

MARKER_BROWSER = """#!{python}
\"\"\"A browser that only records that it was opened.\"\"\"
import os, pathlib
pathlib.Path(os.environ["TEST_BROWSER_REPORT"]).write_text("opened")
"""


def write_browser(tmp_path: Path, source: str) -> dict[str, str]:
    """Write an executable browser script; return the variables that point dashtam at it."""
    script = tmp_path / "browser.py"
    script.write_text(source.format(python=sys.executable))
    script.chmod(0o755)
    return {
        "BROWSER": str(script),
        "TEST_BROWSER_REPORT": str(tmp_path / "browser-report.txt"),
        "TEST_BROWSER_STOP": str(tmp_path / "browser-stop"),
        "TEST_BROWSER_PID": str(tmp_path / "browser-pid"),
    }


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


# --- the installed script --------------------------------------------------


@pytest.mark.usefixtures("master_key")
def test_the_installed_script_logs_in_through_browser(
    oauth: OAuthServer, tmp_path: Path, children: list[Child]
) -> None:
    """`dashtam connect schwab --name main`: $BROWSER runs, the callback lands, JSON on stdout."""
    browser = write_browser(tmp_path, BROWSER)
    env = child_env(tmp_path, **browser)
    stop = Path(browser["TEST_BROWSER_STOP"])
    try:
        child = Child(["connect", "schwab", "--name", "main", "--timeout", "30"], env)
        children.append(child)
        code, stdout, stderr = child.finish(timeout=20)
        browser_pid = int(Path(browser["TEST_BROWSER_PID"]).read_text())
        # dashtam finished while the browser was still open.
        assert alive(browser_pid)
    finally:
        stop.touch()
    assert code == 0, stderr
    record = json.loads(stdout)
    assert (record["name"], record["provider"], record["status"]) == ("main", "schwab", "active")
    assert list(record) == CONNECTION_FIELDS
    assert "connected schwab as 'main'" in stderr
    assert "self-signed" in stderr
    assert "Opening your browser" in stderr
    assert "Open this address" not in stderr  # the browser opened: no need to show the URL
    report = Path(browser["TEST_BROWSER_REPORT"]).read_text()
    assert report.startswith("200\n"), report
    assert "Login complete" in report
    (request,) = oauth.token_requests
    assert request.form["code"].endswith("@")

    listed = subprocess.run(
        [str(DASHTAM), "connections", "list", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["provider"], row["id"]) == ("main", "schwab", record["id"])
    assert row["refresh_expires_at"] is not None


@pytest.mark.usefixtures("master_key")
def test_no_browser_prints_the_url_on_stderr_and_still_listens(
    oauth: OAuthServer,
    tmp_path: Path,
    children: list[Child],
    browser: Browser,
) -> None:
    """--no-browser: the URL is on stderr; opening it from elsewhere completes the login."""
    child = Child(["connect", "schwab", "--no-browser", "--timeout", "30"], child_env(tmp_path))
    children.append(child)
    url = child.wait_for(r"https://\S+/v1/oauth/authorize\?\S+")[0]
    assert browser(url)
    code, stdout, stderr = child.finish()
    assert code == 0, stderr
    assert json.loads(stdout)["name"] == "schwab"
    assert "Open this address in a browser on this machine" in stderr
    assert "Opening your browser" not in stderr
    assert oauth.authorize_queries[0]["state"] in url


@pytest.mark.usefixtures("master_key")
def test_ctrl_c_while_waiting_exits_130_and_frees_the_port(
    oauth: OAuthServer, tmp_path: Path, children: list[Child]
) -> None:
    """SIGINT during the wait for the callback: exit 130, 'interrupted', the port binds at once."""
    child = Child(["connect", "schwab", "--no-browser", "--timeout", "60"], child_env(tmp_path))
    children.append(child)
    child.wait_for(r"/v1/oauth/authorize\?")  # the listener is up before the URL is shown
    child.process.send_signal(signal.SIGINT)
    code, stdout, stderr = child.finish(timeout=15)
    assert code == 130, stderr
    assert stdout == ""
    assert "interrupted" in stderr
    socket.create_server(("127.0.0.1", redirect_port(oauth))).close()
    assert ("oauth.callback", "interrupted", "schwab") in operations()
    assert oauth.token_requests == []


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize(
    ("nofile", "flood", "meets_the_limit"), [(40, 100, True), (128, 150, False)]
)
def test_a_login_completes_with_the_listener_flooded_past_its_descriptor_limit(  # noqa: PLR0913, PLR0917
    oauth: OAuthServer,
    tmp_path: Path,
    isolated_env: Path,
    children: list[Child],
    browser: Browser,
    nofile: int,
    flood: int,
    meets_the_limit: bool,
) -> None:
    """With more idle connections on its port than it has descriptors, the login still completes.

    Two TLS clients that sent half a request come first, then TCP clients
    that send nothing, more than the descriptors allow. With 40 descriptors
    the accept loop meets EMFILE: it must shed waiting connections, oldest
    first, and keep accepting. With 128, the cap of 64 waiting connections
    sheds them before the limit is reached. Either way the browser's
    callback, queued behind the flood, lands.
    """
    child = Child(
        ["-v", "connect", "schwab", "--no-browser", "--timeout", "60"],
        child_env(tmp_path),
        nofile=nofile,
    )
    children.append(child)
    url = child.wait_for(r"https://\S+/v1/oauth/authorize\?\S+")[0]
    port = redirect_port(oauth)
    verify = ssl.create_default_context(cafile=listener_cert(isolated_env))
    clients: list[socket.socket] = []
    try:
        for _ in range(2):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(raw)
            half = verify.wrap_socket(raw, server_hostname="127.0.0.1")
            clients.append(half)
            half.sendall(b"GET /?code=x HTTP/1.1\r\nHost: 127")  # never finished
        for _ in range(flood):
            idle = socket.socket()
            clients.append(idle)
            idle.setblocking(False)  # noqa: FBT003 - the socket API
            idle.connect_ex(("127.0.0.1", port))
        assert browser(url)
        code, stdout, stderr = child.finish()
    finally:
        for sock in clients:
            sock.close()
    assert code == 0, stderr
    assert json.loads(stdout)["name"] == "schwab"
    assert "Traceback" not in stderr
    # -v shows whether the descriptor limit was met or the cap kept below it.
    met = "accept failed (Too many open files); dropped" in stderr
    assert met == meets_the_limit
    (page,) = browser.pages
    assert page.status_code == 200
    assert "Login complete" in page.text
    assert len(oauth.token_requests) == 1


@pytest.mark.usefixtures("master_key")
def test_a_port_in_use_is_reported_before_a_browser_opens(
    oauth: OAuthServer, tmp_path: Path, children: list[Child]
) -> None:
    """Another program on the redirect port: exit 1 naming the port and the setting; no browser."""
    browser = write_browser(tmp_path, MARKER_BROWSER)
    port = redirect_port(oauth)
    blocker = socket.create_server(("127.0.0.1", port))
    try:
        child = Child(["connect", "schwab", "--timeout", "5"], child_env(tmp_path, **browser))
        children.append(child)
        code, stdout, stderr = child.finish()
    finally:
        blocker.close()
    assert code == 1, stderr
    assert stdout == ""
    assert f"error: port {port} on 127.0.0.1 is already in use" in stderr
    assert "SCHWAB_REDIRECT_URI" in stderr
    assert "Opening your browser" not in stderr
    assert not Path(browser["TEST_BROWSER_REPORT"]).exists()
    assert oauth.authorize_queries == []


def test_a_port_in_use_names_the_saved_redirect_uri_when_it_came_from_the_vault(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redirect URI was saved with `providers configure`: the hint says so, not the variable."""
    for name in ("SCHWAB_API_KEY", "SCHWAB_API_SECRET", "SCHWAB_REDIRECT_URI"):
        monkeypatch.delenv(name, raising=False)
    blocker = socket.create_server(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        saved = cli(
            "providers",
            "configure",
            "schwab",
            "--client-id",
            "stored-app-key",
            "--redirect-uri",
            f"https://127.0.0.1:{port}",
            input="stored-secret\n",
        )
        assert saved.exit_code == 0, saved.stderr
        result = cli("connect", "schwab", "--no-browser", "--timeout", "5")
    finally:
        blocker.close()
    assert result.exit_code == 1, result.stderr
    assert f"error: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "dashtam providers configure schwab --redirect-uri" in result.stderr


# --- in-process: connect ---------------------------------------------------


def test_manual_login_reads_the_pasted_address_from_stdin(
    cli: CliCall, oauth: OAuthServer, ca_file: Path, fixed_state: str
) -> None:
    """--manual prints the URL and exchanges the code of the address pasted on stdin."""
    pasted = authorize(oauth, ca_file, fixed_state)
    assert "%40" in pasted
    result = cli("connect", "schwab", "--manual", "--name", "ira", input=pasted + "\n")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["name"], record["provider"]) == ("ira", "schwab")
    assert "Open this address in a browser on any machine" in result.stderr
    assert f"state={fixed_state}" in result.stderr
    assert "Redirected address:" in result.stderr
    assert "connected schwab as 'ira'" in result.stderr
    (request,) = oauth.token_requests
    assert urllib.parse.quote(request.form["code"], safe="") in pasted  # decoded once: '@'
    assert request.form["code"].endswith("@")

    # Again under the same name, from a script: no question asked, the tokens replaced.
    again = cli(
        "connect",
        "schwab",
        "--manual",
        "--name",
        "ira",
        input=authorize(oauth, ca_file, fixed_state) + "\n",
    )
    assert again.exit_code == 0, again.stderr
    assert "Replace" not in again.stderr
    assert json.loads(again.stdout)["id"] == record["id"]
    _, tokens = with_vault(lambda vault: load_tokens(vault, "ira"))
    assert tokens.access_token == oauth.issued[-1]["access_token"]


def test_manual_login_refuses_an_address_of_another_login(
    cli: CliCall, oauth: OAuthServer, ca_file: Path, fixed_state: str
) -> None:
    """A pasted address with another state: exit 1, a clear message, no exchange, nothing stored."""
    pasted = authorize(oauth, ca_file, "another-login-state-0000000000")
    result = cli("connect", "schwab", "--manual", input=pasted + "\n")
    assert result.exit_code == 1
    assert "error: the pasted address was refused: missing or wrong state" in result.stderr
    assert "hint:" in result.stderr
    assert result.stdout == ""
    assert oauth.token_requests == []
    assert cli("connections", "list", "--format", "json").stdout.strip() == "[]"
    assert fixed_state  # the login dashtam started had its own state


def test_manual_and_no_browser_together_is_a_usage_error(cli: CliCall) -> None:
    """--manual with --no-browser: exit 2 before anything else happens."""
    result = cli("connect", "schwab", "--manual", "--no-browser")
    assert result.exit_code == 2
    assert "choose one of --no-browser and --manual" in result.stderr
    assert not load_settings().paths.vault_file.exists()


def test_unknown_provider_exits_2_listing_schwab(cli: CliCall) -> None:
    """An unknown provider: exit 2, and the hint lists the providers dashtam supports."""
    result = cli("connect", "fidelity")
    assert result.exit_code == 2
    assert "unknown provider 'fidelity'" in result.stderr
    assert "dashtam supports: schwab" in result.stderr


@pytest.mark.usefixtures("oauth")
@pytest.mark.parametrize("missing", ["SCHWAB_API_SECRET", "SCHWAB_API_KEY"])
def test_only_one_of_the_credential_variables_is_an_error(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """SCHWAB_API_KEY without SCHWAB_API_SECRET (or the reverse): exit 1 naming both variables."""
    monkeypatch.delenv(missing)
    present = {"SCHWAB_API_SECRET": "SCHWAB_API_KEY", "SCHWAB_API_KEY": "SCHWAB_API_SECRET"}
    result = cli("connect", "schwab", "--no-browser", "--timeout", "1")
    assert result.exit_code == 1
    assert f"error: {present[missing]} is set but {missing} is not" in result.stderr
    assert "Open this address" not in result.stderr


def test_a_non_loopback_redirect_uri_exits_2_before_any_url(
    cli: CliCall, oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCHWAB_REDIRECT_URI on another host: exit 2 naming the variable; no URL is shown."""
    monkeypatch.setenv("SCHWAB_REDIRECT_URI", "https://192.0.2.1:8182")
    result = cli("connect", "schwab", "--no-browser", "--timeout", "1")
    assert result.exit_code == 2
    assert "is not loopback" in result.stderr
    assert "SCHWAB_REDIRECT_URI" in result.stderr
    assert "/v1/oauth/authorize" not in result.stderr
    assert oauth.authorize_queries == []


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that a failed command prints: one error, one hint."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "hint:"))]


LOCALHOST_ERROR = (
    "error: the redirect URI must use the address 127.0.0.1 (or [::1]), not the name "
    "localhost, which another local user could answer"
)
PORT_ERROR = "error: the redirect URI's port must be a number from 1 to 65535"


@pytest.mark.parametrize(
    "case",
    [
        ("https://localhost:{port}", LOCALHOST_ERROR, "https://127.0.0.1:{port}"),
        ("https://127.0.0.1:0", PORT_ERROR, None),
    ],
    ids=["localhost", "port-0"],
)
def test_a_localhost_or_port_0_redirect_uri_in_the_environment_exits_2(
    cli: CliCall,
    oauth: OAuthServer,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, str, str | None],
) -> None:
    """SCHWAB_REDIRECT_URI on localhost or port 0: exit 2, one error and one hint, no login started.

    Localhost was accepted while only 127.0.0.1 was bound, so another local
    user could bind [::1] on the port; port 0 bound a random port.
    """
    uri, error, suggested = case
    port = redirect_port(oauth)
    monkeypatch.setenv("SCHWAB_REDIRECT_URI", uri.format(port=port))
    result = cli("connect", "schwab", "--no-browser", "--timeout", "1")
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    first, hint = error_lines(result.stderr)
    assert first.startswith(error)
    assert hint.startswith("hint: set SCHWAB_REDIRECT_URI to ")
    if suggested is not None:
        assert suggested.format(port=port) in hint
        assert "register that exact URL" in hint
    assert "/v1/oauth/authorize" not in result.stderr
    assert oauth.authorize_queries == []


@pytest.mark.parametrize(
    ("uri", "error"),
    [("https://localhost:8182", LOCALHOST_ERROR), ("https://127.0.0.1:0", PORT_ERROR)],
    ids=["localhost", "port-0"],
)
def test_providers_configure_refuses_a_localhost_or_port_0_redirect_uri(
    cli: CliCall, uri: str, error: str
) -> None:
    """`providers configure --redirect-uri` on localhost or port 0: exit 2, nothing stored."""
    result = cli(
        "providers", "configure", "schwab", "--client-id", "ID", "--redirect-uri", uri, input="s\n"
    )
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    first, hint = error_lines(result.stderr)
    assert first.startswith(error)
    assert hint.startswith("hint: set --redirect-uri to ")
    assert not load_settings().paths.vault_file.exists()


def test_a_localhost_redirect_uri_saved_earlier_is_refused_at_login(
    cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A localhost URI stored before it was refused: connect exits 2 naming `providers configure`."""
    from dashtam_cli.core.credentials import store_credentials
    from dashtam_cli.core.providers import get_provider

    for name in ("SCHWAB_API_KEY", "SCHWAB_API_SECRET", "SCHWAB_REDIRECT_URI"):
        monkeypatch.delenv(name, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with_vault(
        lambda vault: store_credentials(
            vault,
            get_provider("schwab"),
            client_id="stored-app-key",
            client_secret="stored-secret",
            redirect_uri=f"https://localhost:{port}",
        )
    )
    result = cli("connect", "schwab", "--no-browser", "--timeout", "1")
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    first, hint = error_lines(result.stderr)
    assert first == LOCALHOST_ERROR
    assert "dashtam providers configure schwab --redirect-uri" in hint
    assert f"https://127.0.0.1:{port}" in hint
    assert "/v1/oauth/authorize" not in result.stderr


def test_end_of_input_at_the_manual_prompt_exits_1_not_130(
    cli: CliCall, oauth: OAuthServer
) -> None:
    """--manual with stdin at its end (Ctrl-D, an empty pipe): exit 1 with a hint, not 'interrupted'."""
    result = cli("connect", "schwab", "--manual", input="")
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    assert "interrupted" not in result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "error: no address was pasted: the input ended before a line was read",
        "hint: run the command again and paste the address the browser landed on, then press Enter",
    ]
    assert oauth.token_requests == []
    assert ("oauth.callback", "failed", "schwab") in operations()
    assert cli("connections", "list", "--format", "json").stdout.strip() == "[]"


# --- connections list and disconnect ---------------------------------------


def test_connections_list_in_every_format(cli: CliCall) -> None:
    """Two connections as JSON, JSON lines, CSV and a table; never a token."""
    add_connection("main")
    add_connection("ira")
    as_json = cli("connections", "list", "--format", "json")
    assert as_json.exit_code == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["provider"], r["status"]) for r in rows] == [
        ("ira", "schwab", "active"),
        ("main", "schwab", "active"),
    ]
    assert all(list(r) == CONNECTION_FIELDS for r in rows)
    for row in rows:
        created = dt.datetime.fromisoformat(row["created_at"])
        access = dt.datetime.fromisoformat(row["access_expires_at"])
        refresh = dt.datetime.fromisoformat(row["refresh_expires_at"])
        assert created.utcoffset() is not None  # ISO 8601 with an offset
        assert refresh - access == dt.timedelta(days=7) - dt.timedelta(minutes=30)

    lines = cli("connections", "list", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["ira", "main"]

    table_csv = list(
        csv.DictReader(io.StringIO(cli("connections", "list", "--format", "csv").stdout))
    )
    assert [r["name"] for r in table_csv] == ["ira", "main"]
    assert list(table_csv[0]) == CONNECTION_FIELDS

    table = cli("connections", "list", "--format", "table", env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for text in ("name", "provider", "status", "access expires (", "refresh expires ("):
        assert text in table.stdout
    assert re.search(r"ira\s.*schwab\s.*active", table.stdout)
    assert re.search(r"main\s.*schwab\s.*active", table.stdout)

    for output in (as_json.stdout, table.stdout, "\n".join(lines)):
        assert "access-" not in output
        assert "refresh-" not in output


def test_connections_list_without_a_vault_is_empty(cli: CliCall) -> None:
    """Before any login, the list is empty and no vault is created."""
    result = cli("connections", "list", "--format", "json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])
    assert not load_settings().paths.vault_file.exists()


def test_disconnect_removes_the_connection_its_tokens_and_cached_data(cli: CliCall) -> None:
    """`disconnect NAME --yes`: gone from the list, tokens and accounts deleted, audited."""
    gone = add_connection("old", account=True)
    kept = add_connection("main", account=True)
    assert count_rows(schema.tokens, gone.id) == 1
    assert count_rows(schema.accounts, gone.id) == 1

    result = cli("disconnect", "old", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "removed the connection 'old' (schwab)" in result.stderr
    names = [r["name"] for r in json.loads(cli("connections", "list", "--format", "json").stdout)]
    assert names == ["main"]
    assert count_rows(schema.tokens, gone.id) == 0
    assert count_rows(schema.accounts, gone.id) == 0
    assert count_rows(schema.tokens, kept.id) == 1
    assert count_rows(schema.accounts, kept.id) == 1
    with pytest.raises(ConnectionNotFound):
        with_vault(lambda vault: load_tokens(vault, "old"))
    assert ("connection.remove", "ok", "old") in operations()


def test_disconnect_without_yes_on_a_script_exits_2(cli: CliCall) -> None:
    """Without --yes and without a terminal to ask on: exit 2, nothing removed."""
    add_connection("main")
    result = cli("disconnect", "main")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert [r["name"] for r in json.loads(cli("connections", "list").stdout)] == ["main"]


def test_disconnect_of_an_unknown_name_exits_1_with_a_hint(cli: CliCall) -> None:
    """An unknown connection: exit 1, the name in the message, the list command as the hint."""
    add_connection("main")
    result = cli("disconnect", "nosuch", "--yes")
    assert result.exit_code == 1
    assert "error: no connection named 'nosuch'" in result.stderr
    assert "hint: see: dashtam connections list" in result.stderr


# --- providers -------------------------------------------------------------


def test_configure_reads_the_secret_from_stdin_and_seals_it(cli: CliCall) -> None:
    """The secret comes from stdin (never argv) and is stored sealed: not in the raw vault files."""
    client_id = "vault-app-key-0123456789abcdef0123"
    secret = "vault-app-secret-0123456789"
    result = cli("providers", "configure", "schwab", "--client-id", client_id, input=secret + "\n")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["name"], record["credentials"]) == ("schwab", "vault")
    assert "stored the app credentials for Charles Schwab in the vault" in result.stderr
    assert secret not in result.stdout + result.stderr
    raw = b"".join(
        p.read_bytes() for p in sidecar_files(load_settings().paths.vault_file) if p.exists()
    )
    assert secret.encode() not in raw
    assert client_id.encode() not in raw

    listed = cli("providers", "list", "--format", "json")
    (schwab,) = [p for p in json.loads(listed.stdout) if p["name"] == "schwab"]
    assert (schwab["name"], schwab["credentials"]) == ("schwab", "vault")
    assert schwab["base_url"] == "https://api.schwabapi.com"
    assert ("provider.configure", "ok", None) in operations()


def test_configure_has_no_secret_option_and_needs_stdin(cli: CliCall) -> None:
    """--client-secret does not exist (usage error); an empty stdin is refused too."""
    result = cli(
        "providers", "configure", "schwab", "--client-id", "ID", "--client-secret", "s3cret-value"
    )
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    assert "--client-secret" in result.stderr
    empty = cli("providers", "configure", "schwab", "--client-id", "ID", input="")
    assert empty.exit_code == 2
    assert "no secret on stdin" in empty.stderr
    assert not load_settings().paths.vault_file.exists()


def test_environment_credentials_win_over_the_vault(
    cli: CliCall, oauth: OAuthServer, ca_file: Path, fixed_state: str
) -> None:
    """With both variables set, `providers list` says environment and the login uses them."""
    stored = cli(
        "providers", "configure", "schwab", "--client-id", "stored-app-key", input="stored-secret\n"
    )
    assert stored.exit_code == 0, stored.stderr
    listed = cli("providers", "list", "--format", "json")
    (schwab,) = [p for p in json.loads(listed.stdout) if p["name"] == "schwab"]
    assert schwab["credentials"] == "environment"
    assert schwab["base_url"] == oauth.base_url  # DASHTAM_SCHWAB_BASE_URL

    pasted = authorize(oauth, ca_file, fixed_state)
    result = cli("connect", "schwab", "--manual", input=pasted + "\n")
    assert result.exit_code == 0, result.stderr
    assert f"client_id={oauth.client_id}" in result.stderr
    (request,) = oauth.token_requests
    basic = base64.b64encode(f"{oauth.client_id}:{oauth.client_secret}".encode()).decode()
    assert request.authorization == f"Basic {basic}"


def test_connecting_the_same_accounts_twice_warns_and_keeps_both(
    cli: CliCall, oauth: OAuthServer, ca_file: Path, fixed_state: str
) -> None:
    """A login whose accounts another connection holds: a warning naming it, masked; both kept."""
    main = add_connection("main", account=True)  # its cached account: 12345678
    add_connection("other", account=False)  # never fetched: nothing to compare
    oauth.account_numbers = [("12345678", "A" * 64), ("87654321", "B" * 64)]

    result = cli(
        "connect",
        "schwab",
        "--manual",
        "--name",
        "second",
        input=authorize(oauth, ca_file, fixed_state) + "\n",
    )

    assert result.exit_code == 0, result.stderr
    flat = " ".join(result.stderr.split())
    assert (
        "warning: this login's accounts are already connected as 'main'; "
        "both will show the same accounts (****5678)"
    ) in flat
    assert "'other'" not in flat
    # (The test app's client id holds "12345678": only the text after the URL is checked.)
    warning = flat[flat.index("warning:") :]
    assert "12345678" not in warning
    assert "87654321" not in result.stderr
    assert oauth.account_number_requests == 1
    names = [row["name"] for row in json.loads(cli("connections", "list").stdout)]
    assert sorted(names) == ["main", "other", "second"]
    assert ("schwab.account_numbers", "ok", "second") in operations()
    assert main.name == "main"


def test_a_login_of_other_accounts_connects_without_a_warning(
    cli: CliCall, oauth: OAuthServer, ca_file: Path, fixed_state: str
) -> None:
    """Accounts no other connection holds: no warning; a check that fails does not fail the login."""
    add_connection("main", account=True)
    oauth.account_numbers = [("87654321", "B" * 64)]

    args = ("connect", "schwab", "--manual", "--name", "second")
    result = cli(*args, input=authorize(oauth, ca_file, fixed_state) + "\n")

    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    assert oauth.account_number_requests == 1

    oauth.account_numbers = None  # the check's request now answers 404
    again = cli(*args[:-1], "third", input=authorize(oauth, ca_file, fixed_state) + "\n")
    assert again.exit_code == 0, again.stderr
    assert "warning" not in again.stderr
    assert "connected schwab as 'third'" in again.stderr
