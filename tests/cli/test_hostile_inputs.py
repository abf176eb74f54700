"""Hostile command lines and environments: each ends in one clear line and a documented exit code."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall, Result

# Time zones at both ends of the offsets in use: UTC+14 and UTC-12.
ZONES = ("Pacific/Kiritimati", "Etc/GMT+12", "UTC")
OUT_OF_RANGE = "outside the dates dashtam handles"


def assert_clear_failure(result: Result, code: int, *needles: str) -> None:
    """One failure, said plainly: the exit code, the words, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert result.stdout == ""


@pytest.fixture(params=ZONES)
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the process's local time zone set to each extreme zone in turn."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


# --- dates --------------------------------------------------------------------------------------

EDGE_DATES = [
    ("--since", "0001-01-01"),
    ("--since", "0001-01-01T00:00:00"),
    ("--since", "0001-01-01T00:00:00+14:00"),
    ("--since", "9999-12-31"),
    ("--since", "9999-12-31T23:59:59.999999"),
    ("--since", "9999-12-31T23:59:59-12:00"),
    ("--since", "1969-12-31"),
    ("--until", "9999-12-31"),
    ("--until", "0001-01-01"),
    ("--until", "2100-01-01"),
]


@pytest.mark.usefixtures("zone")
@pytest.mark.parametrize(("option", "value"), EDGE_DATES)
def test_dates_at_the_edges_are_usage_errors_in_transactions_list(
    cli: CliCall, option: str, value: str
) -> None:
    """A date near year 1 or 9999, in any zone, exits 2 naming the option, not a traceback."""
    result = cli("transactions", "list", option, value)
    assert_clear_failure(result, 2, OUT_OF_RANGE, option, value)


@pytest.mark.usefixtures("zone")
@pytest.mark.parametrize(
    "value", ["0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31", "9999-12-31T23:59:59"]
)
def test_dates_at_the_edges_are_usage_errors_in_audit_list(cli: CliCall, value: str) -> None:
    """`audit list --since` refuses the same dates the same way."""
    result = cli("audit", "list", "--since", value)
    assert_clear_failure(result, 2, OUT_OF_RANGE, "--since", value)


@pytest.mark.usefixtures("zone")
def test_the_ends_of_the_range_are_accepted_in_every_zone(cli: CliCall) -> None:
    """1970-01-01 and the end of 2099-12-31 pass the date check (the next error is the vault's)."""
    for args in (
        ("audit", "list", "--since", "1970-01-01"),
        ("audit", "list", "--since", "2099-12-31T23:59:59"),
        ("transactions", "list", "--since", "1970-01-01", "--until", "2099-12-31"),
    ):
        result = cli(*args)
        assert OUT_OF_RANGE not in result.stderr, args
        assert "no vault" in result.stderr or "no connections" in result.stderr, result.stderr
        assert result.exit_code == 1


@pytest.mark.parametrize("zone_name", ["Pacific/Kiritimati", "Etc/GMT+12"])
def test_edge_dates_in_a_real_process_with_tz_set(zone_name: str, tmp_path: Path) -> None:
    """The installed command under TZ=<extreme zone> refuses year 1 and 9999 with exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHTAM_", "SCHWAB_"))}
    env |= {"TZ": zone_name, "DASHTAM_HOME": str(tmp_path), "NO_COLOR": "1"}
    exe = [sys.executable, "-m", "dashtam_cli"]
    for args in (
        ["audit", "list", "--since", "0001-01-01"],
        ["transactions", "list", "--until", "9999-12-31"],
    ):
        done = subprocess.run(
            [*exe, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2, done.stderr
        assert OUT_OF_RANGE in done.stderr
        assert "Traceback" not in done.stderr


# --- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["18446744073709551616", "99999999999999999999999999", "-1", "0", "1000000001"]
)
@pytest.mark.usefixtures("master_key")
def test_audit_limit_beyond_its_range_is_a_usage_error(cli: CliCall, value: str) -> None:
    """--limit beyond 64 bits (SQLite overflowed), negative or zero exits 2 naming --limit."""
    assert cli("vault", "init").exit_code == 0
    result = cli("audit", "list", "--limit", value)
    assert_clear_failure(result, 2, "--limit")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "-5", "0", "3601"])
def test_connect_timeout_must_be_a_finite_number_of_seconds(cli: CliCall, value: str) -> None:
    """--timeout inf, nan, negative or over an hour exits 2 naming --timeout."""
    result = cli("connect", "schwab", "--no-browser", "--timeout", value)
    assert_clear_failure(result, 2, "--timeout")


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   ", "\t", "a\x01b", "bell\x07", "x" * 65, "rtl\u202eabc"])
def test_a_connection_name_must_be_printable_and_not_empty(cli: CliCall, name: str) -> None:
    """An empty, blank, control-character or overlong --name exits 2 before anything else."""
    result = cli("connect", "schwab", "--no-browser", "--name", name)
    assert_clear_failure(result, 2, "a connection name is 1 to 64 printable characters")


# --- config.toml ---------------------------------------------------------------------------------


def write_config(home: Path, content: bytes, mode: int = 0o600) -> Path:
    """Write ``content`` as the config file under ``home`` (directory 0700), with ``mode``."""
    directory = home / "config"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "config.toml"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'format = "\xff\xfe"\n', "is not UTF-8 text"),
        (b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests arrays or tables too deeply"),
        (b"x = " + b"{a=" * 5_000 + b"1" + b"}" * 5_000 + b"\n", "nests arrays or tables too"),
        (b"format = \n", "is not valid TOML"),
        (b"# " + b"x" * (1 << 20) + b"\n", "is over 1048576 bytes"),
        (b"keyring_timeout = true\n", "a boolean given, an integer or a number expected"),
        (b'ca_bundle = "/etc/\\u0000ca.pem"\n', "a path with control characters"),
        (b"ca_bundle = [1, 2]\n", "an array given, a string expected"),
    ],
    ids=["not-utf8", "deep-arrays", "deep-tables", "bad-toml", "huge", "bool", "nul", "array"],
)
def test_an_unreadable_config_file_is_one_clear_error(
    cli: CliCall, isolated_env: Path, content: bytes, needle: str
) -> None:
    """Bad bytes, absurd nesting or wrong types in config.toml exit 1 naming the file."""
    path = write_config(isolated_env, content)
    result = cli("paths")
    assert_clear_failure(result, 1, needle, str(path), "hint:")


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_config_file_others_may_change_is_refused(
    cli: CliCall, isolated_env: Path, mode: int
) -> None:
    """config.toml writable by group or others is refused: it chooses the CA bundle."""
    path = write_config(isolated_env, b'ca_bundle = "/tmp/evil.pem"\n', mode)
    result = cli("paths")
    assert_clear_failure(result, 1, f"{path} has mode {mode:o}", f"chmod go-w '{path}'")


def test_a_symbolic_link_to_a_config_file_others_may_change_is_refused(
    cli: CliCall, isolated_env: Path, tmp_path: Path
) -> None:
    """A link is followed and its target checked: a world-writable target is refused."""
    target = tmp_path / "shared.toml"
    target.write_text('format = "csv"\n')
    target.chmod(0o666)
    link = write_config(isolated_env, b"")
    link.unlink()
    link.symlink_to(target)
    result = cli("paths")
    assert_clear_failure(result, 1, f"{target} has mode 666")


def test_a_symbolic_link_to_a_private_config_file_is_followed(
    cli: CliCall, isolated_env: Path, tmp_path: Path
) -> None:
    """A dotfiles-style link to your own, read-only-for-others file is read as usual."""
    target = tmp_path / "dotfiles" / "dashtam.toml"
    target.parent.mkdir(mode=0o755)
    target.write_text('format = "csv"\n')
    target.chmod(0o644)
    link = write_config(isolated_env, b"")
    link.unlink()
    link.symlink_to(target)
    result = cli("paths")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("name,path,exists")  # format = "csv" was applied


def test_a_config_file_in_a_directory_others_may_write_is_refused(
    cli: CliCall, isolated_env: Path
) -> None:
    """Others who may write the directory may replace the file: refused, unless it is sticky."""
    path = write_config(isolated_env, b'format = "csv"\n')
    path.parent.chmod(0o777)
    result = cli("paths")
    assert_clear_failure(result, 1, f"{path.parent} of the config file is writable by every")
    path.parent.chmod(0o1777)  # like /tmp: others cannot replace your file
    assert cli("paths").exit_code == 0


def test_a_config_file_owned_by_another_user_is_refused(cli: CliCall, isolated_env: Path) -> None:
    """A config file you do not own is refused, even when its mode is strict."""
    env: dict[str, str] = {}
    if os.geteuid() == 0:
        path = write_config(isolated_env, b'format = "csv"\n', 0o644)
        os.chown(path, 65534, 65534)
        owner = 65534
    else:  # without root, a file of root's stands in for another user's
        path, owner = Path("/etc/passwd"), 0
        env["DASHTAM_CONFIG"] = str(path)
    result = cli("paths", env=env)
    assert_clear_failure(result, 1, f"{path} is owned by user id {owner}, not by you")


# --- files dashtam creates, and where it may create them ---------------------------------------

UMASK_SCRIPT = """
import asyncio
from dashtam_cli.core.oauth.tls import listener_ssl_context
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.tokens import _connection_lock
from dashtam_cli.sandbox.tls import make_sandbox_tls

paths = load_settings().paths
listener_ssl_context(paths.data_dir / "tls")
make_sandbox_tls(paths.cache_dir / "sandbox")


async def lock() -> None:
    async with _connection_lock(paths.data_dir / "locks", "c0ffee"):
        pass


asyncio.run(lock())
"""


def test_under_umask_000_every_directory_is_0700_and_every_file_0600(tmp_path: Path) -> None:
    """With umask 000, the vault, key file, locks and certificates are still private.

    Real processes: `vault init` with a passphrase key store, then the listener's
    and the sandbox's certificates and a token lock file, from a fresh DASHTAM_HOME
    whose parents do not exist yet.
    """
    home = tmp_path / "not" / "yet" / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHTAM_", "SCHWAB_"))}
    env |= {
        "DASHTAM_HOME": str(home),
        "DASHTAM_KEY_STORE": "passphrase",
        "DASHTAM_PASSPHRASE": "correct horse battery staple",
    }
    for argv in (
        [sys.executable, "-m", "dashtam_cli", "vault", "init"],
        [sys.executable, "-c", UMASK_SCRIPT],
    ):
        done = subprocess.run(
            argv, env=env, umask=0, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr

    created = [tmp_path / "not", *(tmp_path / "not").rglob("*")]
    names = {p.name for p in created}
    assert {"vault.sqlite3", "vault.key", "listener-key.pem", "c0ffee.lock"} <= names
    assert any(p.parent.name == "sandbox" for p in created)
    for path in created:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_a_dashtam_home_under_a_file_is_one_clear_error(
    cli: CliCall, tmp_path: Path, master_key: bytes
) -> None:
    """DASHTAM_HOME inside a file: exit 1 naming the path, no OSError traceback."""
    del master_key
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for home in (blocker, blocker / "sub"):
        result = cli("vault", "init", env={"DASHTAM_HOME": str(home)})
        assert_clear_failure(result, 1, str(home), "Not a directory", "hint:")


def test_a_dashtam_home_where_nothing_can_be_created_is_one_clear_error(
    cli: CliCall, master_key: bytes
) -> None:
    """DASHTAM_HOME on a file system that refuses new directories (procfs): exit 1, a hint."""
    del master_key
    home = "/proc/self/dashtam-home"
    result = cli("vault", "init", env={"DASHTAM_HOME": home})
    assert_clear_failure(result, 1, f"cannot create the directory {home}", "DASHTAM_HOME")


def test_a_data_dir_that_is_a_file_is_one_clear_error(
    cli: CliCall, isolated_env: Path, master_key: bytes
) -> None:
    """A file where the data directory belongs is refused by name, not an OSError."""
    del master_key
    isolated_env.mkdir(mode=0o700)
    data = isolated_env / "data"
    data.write_text("")
    data.chmod(0o600)
    result = cli("vault", "init")
    assert_clear_failure(result, 1, f"{data} is not a directory")


# --- a damaged vault: lock files ----------------------------------------------------------------


def _lock_path(home: Path, name: str) -> Path:
    """Store a connection ``name`` with expired tokens; return where its lock file goes."""
    from token_support import add_connection, token_set

    now = dt.datetime.now(dt.UTC)
    info = add_connection(
        name,
        token_set(
            now,
            access_in=-dt.timedelta(minutes=1),
            refresh_in=dt.timedelta(days=5),
            access="A0.lock-access@",
            refresh="R0.lock-refresh@",
        ),
    )
    locks = home / "data" / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    return locks / f"{info.id}.lock"


@pytest.mark.usefixtures("oauth", "master_key")
def test_a_symlinked_lock_file_is_refused_and_not_followed(
    cli: CliCall, isolated_env: Path, tmp_path: Path
) -> None:
    """A lock file planted as a link to another file: exit 1, a hint, the target untouched."""
    lock = _lock_path(isolated_env, "alpha")
    victim = tmp_path / "victim"
    lock.symlink_to(victim)  # dangling: following it would create the victim

    result = cli("tokens", "refresh", "alpha")

    assert result.exit_code == 1, result.stderr
    assert f"the lock file {lock} is a symbolic link" in result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert not victim.exists()


@pytest.mark.usefixtures("oauth", "master_key")
def test_a_lock_file_that_is_a_directory_is_one_clear_error(
    cli: CliCall, isolated_env: Path
) -> None:
    """A directory where a lock file belongs is named in one line, not an OSError."""
    lock = _lock_path(isolated_env, "alpha")
    lock.mkdir(mode=0o700)

    result = cli("tokens", "refresh", "alpha")

    assert result.exit_code == 1, result.stderr
    assert f"cannot open the lock file {lock}" in result.stderr
    assert "internal error" not in result.stderr


# --- provider URL settings ----------------------------------------------------------------------

BAD_BASE_URLS = {
    "ftp": ("ftp://api.example.test", "not an https:// URL"),
    "no-scheme": ("api.example.test", "not an https:// URL"),
    "credentials": ("https://user:hunter2@api.example.test", "user name or password"),
    "no-host": ("https://", "has no host"),
    "no-host-path": ("https:///v1", "has no host"),
    "broken-ipv6": ("https://[::1", "host or port is malformed"),
    "port-too-big": ("https://api.example.test:99999", "host or port is malformed"),
    "query": ("https://api.example.test/?x=1", "query or a fragment"),
    "fragment": ("https://api.example.test#top", "query or a fragment"),
    "newline": ("https://api.exa\nmple.test", "control or non-ASCII"),
    "space": ("https://api example.test", "spaces"),
    "plain-http-remote": ("http://api.example.test", "plain http is allowed only"),
}


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize(("url", "needle"), BAD_BASE_URLS.values(), ids=BAD_BASE_URLS.keys())
def test_a_malformed_base_url_is_one_clear_error_that_hides_the_value(
    cli: CliCall, url: str, needle: str
) -> None:
    """A bad DASHTAM_SCHWAB_BASE_URL stops every command that would use it, value unrepeated."""
    from schwab_support import add_connection

    add_connection("brokerage", "token-b")
    env = {
        "DASHTAM_SCHWAB_BASE_URL": url,
        "SCHWAB_API_KEY": "k" * 32,
        "SCHWAB_API_SECRET": "s" * 16,
    }
    for args in (
        ("accounts", "list"),
        ("tokens", "refresh", "--force", "brokerage"),
        ("providers", "list"),
        ("connect", "schwab", "--no-browser", "--timeout", "1", "--name", "other"),
    ):
        result = cli(*args, env=env)
        assert result.exit_code == 1, (args, result.stderr)
        assert "DASHTAM_SCHWAB_BASE_URL is not a usable provider URL" in result.stderr, args
        assert needle in result.stderr, args
        assert "hunter2" not in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize(
    "url",
    ["https://api.example.test/", "https://127.0.0.1:8443", "http://127.0.0.1:9", "http://[::1]:9"],
)
def test_a_well_formed_base_url_is_used(url: str) -> None:
    """An https URL anywhere, or plain http to the loopback, is used (no trailing slash)."""
    from dashtam_cli.core.providers import get_provider

    spec = get_provider("schwab")
    assert spec.base_url({"DASHTAM_SCHWAB_BASE_URL": url}) == url.rstrip("/")


# --- the keyring library's environment ----------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "needle"),
    [
        ("nonexistent.Backend", "ModuleNotFoundError"),
        ("keyring.backends.nope.Keyring", "ModuleNotFoundError"),
        ("os.path", "AttributeError"),
        ("", "ValueError"),
        ("not a backend", "ValueError"),
    ],
    ids=["no-module", "no-submodule", "not-a-class", "empty", "spaces"],
)
def test_an_unknown_keyring_backend_is_one_clear_error(
    tmp_path: Path, backend: str, needle: str
) -> None:
    """PYTHON_KEYRING_BACKEND naming nothing loadable: exit 1, named, with a hint (real process).

    keyring reads the variable at its first use in a process, so only a fresh
    process shows what a user sees.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHTAM_", "SCHWAB_"))}
    env |= {
        "DASHTAM_HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),  # no keyringrc.cfg of the real user
        "PYTHON_KEYRING_BACKEND": backend,
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "dashtam_cli", "vault", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith(
        "error: the keyring backend named by PYTHON_KEYRING_BACKEND cannot be loaded"
    ), lines
    assert needle in lines[0]
    assert lines[1].startswith("hint: unset PYTHON_KEYRING_BACKEND")
    assert len(lines) == 2  # one error line, one hint line
    assert "internal error" not in done.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--latency", "inf"),
        ("--latency", "nan"),
        ("--latency", "1e300"),
        ("--access-ttl", "99999999999999999999999"),
        ("--access-ttl", "604801"),
        ("--accounts", "0"),
        ("--transactions-per-account", "-1"),
        ("--error-rate", "2"),
        ("--port", "70000"),
    ],
)
def test_sandbox_numbers_beyond_their_range_are_usage_errors(
    cli: CliCall, option: str, value: str
) -> None:
    """An endless latency or an absurd token lifetime exits 2 before the sandbox starts.

    The message names the option and the range in words, not a validator's
    ("Input should be greater than or equal to 1").
    """
    result = cli("sandbox", "serve", "--port", "0", option, value)
    assert_clear_failure(result, 2, option)
    assert " from " in result.stderr
    assert "Input should be" not in result.stderr


# --- app credentials typed or exported by the user ----------------------------------------------

BAD_CREDENTIALS = {
    "control": "abc\x01def",
    "space": "abc def",
    "non-ascii": "abcdéf",
    "huge": "x" * 513,
}


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize("value", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_a_malformed_client_id_or_secret_is_refused_without_echo(cli: CliCall, value: str) -> None:
    """`providers configure` refuses a client id or secret with control characters or 513+ chars.

    Exit 2, nothing stored, and the value is not repeated on either stream.
    """
    for args, stdin, what in (
        (("--client-id", value), "good-secret\n", "the client id"),
        (("--client-id", "a" * 32), value + "\n", "the secret"),
    ):
        result = cli("providers", "configure", "schwab", *args, input=stdin)
        assert_clear_failure(result, 2, what, "hint:")
        assert value not in result.stderr
    listed = cli("providers", "list", "--format", "json")
    assert '"credentials": null' in listed.stdout


@pytest.mark.usefixtures("master_key")
@pytest.mark.parametrize("value", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_a_malformed_client_id_or_secret_in_the_environment_is_refused(
    cli: CliCall, value: str
) -> None:
    """SCHWAB_API_KEY or SCHWAB_API_SECRET with control characters: exit 1 naming the variable."""
    for env, name in (
        ({"SCHWAB_API_KEY": value, "SCHWAB_API_SECRET": "s" * 16}, "SCHWAB_API_KEY"),
        ({"SCHWAB_API_KEY": "k" * 32, "SCHWAB_API_SECRET": value}, "SCHWAB_API_SECRET"),
    ):
        result = cli("connect", "schwab", "--no-browser", "--timeout", "1", env=env)
        assert_clear_failure(result, 1, name)
        assert value not in result.stderr
