"""A real PostgreSQL server for the shared-vault tests: found, or started in a temporary directory.

``DASHTAM_TEST_POSTGRES_URL`` (a superuser's URL on a running server, as
``.ci/run`` starts one) is used when set. Otherwise a server is started here
from Debian's ``postgresql`` binaries (``initdb``/``pg_ctl`` on PATH or under
/usr/lib/postgresql/*/bin), on a free port, with its data and socket in a
temporary directory; as root it runs as the ``postgres`` user, since
PostgreSQL refuses to run as root. Without either, the tests that need it are
skipped, saying why.

Each test gets a database of its own (``CREATE DATABASE``), dropped after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

URL_ENV: Final = "DASHTAM_TEST_POSTGRES_URL"
# Read once at import: the tests' isolated environment drops every DASHTAM_ variable.
GIVEN_URL: Final = os.environ.get(URL_ENV, "").strip()
# The role with a password that the tests log in as (pg_hba asks it for one).
PASSWORD_ROLE: Final = "dashtam_pw"
PASSWORD: Final = "s3cret-Pg-pass/word"


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return versions[0].parent if versions else None


def _free_port() -> int:
    from oauth_fixtures import free_port

    return free_port()


class Server:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, admin_url: str, stop: list[str] | None = None) -> None:
        """``admin_url``: a superuser's URL (any database); ``stop``: the command that stops it."""
        self.admin_url = admin_url
        self._stop = stop
        parts = urllib.parse.urlsplit(admin_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.admin = urllib.parse.unquote(parts.username or "postgres")

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        """A dashtam database URL on this server."""
        who = urllib.parse.quote(user or self.admin, safe="")
        if password is not None:
            who += ":" + urllib.parse.quote(password, safe="")
        return f"postgresql+asyncpg://{who}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser and return what psql printed (tuples only)."""
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        parts = urllib.parse.urlsplit(self.admin_url)
        if parts.password:
            env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
        done = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.admin,
                "-d",
                database,
                "-c",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            msg = f"psql failed: {done.stderr.strip()}"
            raise RuntimeError(msg)
        return done.stdout

    def new_database(self) -> str:
        """Create an empty database and return its name."""
        name = f"dashtam_test_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        self.psql(f"GRANT ALL ON DATABASE {name} TO {PASSWORD_ROLE}")
        self.psql(f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}", database=name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a test database (ending any session still on it)."""
        with contextlib.suppress(RuntimeError):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._stop:
            subprocess.run(self._stop, capture_output=True, check=False, timeout=60)


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _start(directory: Path) -> Server:
    bin_dir = _binaries()
    if bin_dir is None:
        msg = "no PostgreSQL server binaries (Debian: apt-get install postgresql)"
        raise LookupError(msg)
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            msg = "running as root with no postgres user to run the server as"
            raise LookupError(msg) from None
        shutil.chown(directory, "postgres")
    data = directory / "data"
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        ),
        capture_output=True,
        check=True,
        timeout=120,
    )
    hba = data / "pg_hba.conf"
    # The password role must log in with its password; everyone else is trusted (a test server).
    hba.write_text(
        f"local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\n"
    )
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(directory / "server.log"),
                "-w",
                "start",
            ]
        ),
        capture_output=True,
        check=True,
        timeout=120,
    )
    stop = _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    return Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop)


@contextlib.contextmanager
def server() -> Iterator[Server | str]:
    """The test server, or why there is none (a string)."""
    if GIVEN_URL:
        found = Server(GIVEN_URL)
        _ensure_password_role(found)
        yield found
        return
    directory = Path(tempfile.mkdtemp(prefix="dashtam-pg-"))
    try:
        started = _start(directory)
    except (LookupError, OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        yield f"no PostgreSQL server for the shared-vault tests: {exc} (or set {URL_ENV})"
        return
    try:
        _ensure_password_role(started)
        yield started
    finally:
        started.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _ensure_password_role(found: Server) -> None:
    """Create the password role once (each xdist worker may try at the same moment)."""
    found.psql(
        "DO $$ BEGIN "
        f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; "
        "END $$"
    )
