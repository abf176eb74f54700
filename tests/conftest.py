"""Fixtures every test shares: an isolated DASHTAM_HOME and environment, and a CLI runner."""

from __future__ import annotations

import base64
import dataclasses
import os
from typing import TYPE_CHECKING, Protocol

import keyring
import postgres_support
import pytest
from fake_keyrings import MemoryKeyring, trust_test_backends
from typer.testing import CliRunner

from dashtam_cli.core import redact

pytest_plugins = ["oauth_fixtures"]

# `DASHTAM_TEST_BACKEND=postgresql`: every test gets a PostgreSQL database of
# its own as its vault (DASHTAM_DATABASE_URL), instead of the SQLite file;
# .ci/run runs the vault, token and sync suites so, beside the usual run.
# Read at import: the isolated environment below drops every DASHTAM_ variable.
BACKEND_ENV = "DASHTAM_TEST_BACKEND"
ON_POSTGRES = os.environ.get(BACKEND_ENV, "").strip() == "postgresql"

# tests/bench holds benchmark scripts run by `nox -s bench`, not tests.
collect_ignore = ["bench"]

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres_support.Server]:
    """A PostgreSQL server for this test session (one per xdist worker), or a skip saying why."""
    with postgres_support.server() as found:
        if isinstance(found, str):
            if ON_POSTGRES:
                pytest.fail(found)  # asked to run on PostgreSQL: never pass by skipping
            pytest.skip(found)
        yield found


@pytest.fixture
def pg_database(pg_server: postgres_support.Server) -> Iterator[str]:
    """A fresh, empty PostgreSQL database's superuser URL (a shared vault's DASHTAM_DATABASE_URL)."""
    name = pg_server.new_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(autouse=True)
def isolated_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """Point DASHTAM_HOME at a temporary folder and drop every dashtam variable.

    No test reads or writes the user's real home, config or keyring. Under
    ``DASHTAM_TEST_BACKEND=postgresql`` the vault is a fresh PostgreSQL database.
    """
    for name in list(os.environ):
        if name.startswith(("DASHTAM_", "SCHWAB_")) or name in {"NO_COLOR", "XDG_CONFIG_HOME"}:
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("DASHTAM_HOME", str(home))
    if ON_POSTGRES and request.node.get_closest_marker("sqlite_only") is None:
        monkeypatch.setenv("DASHTAM_DATABASE_URL", request.getfixturevalue("pg_database"))
    redact.forget_secrets()
    yield home
    redact.forget_secrets()


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Install an in-memory keyring: no test touches the real OS keyring."""
    trust_test_backends()
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Set DASHTAM_MASTER_KEY to a fresh key (unpadded base64url) and return the raw key."""
    key = os.urandom(32)
    monkeypatch.setenv("DASHTAM_MASTER_KEY", base64.urlsafe_b64encode(key).decode().rstrip("="))
    return key


@dataclasses.dataclass
class Result:
    """What one in-process CLI run produced."""

    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli() -> CliCall:
    """Run dashtam in-process and return its exit code, stdout and stderr."""
    from dashtam_cli.cli.app import app

    runner = CliRunner()

    def call(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:  # noqa: A002
        result = runner.invoke(app, list(args), input=input, env=env, prog_name="dashtam")
        return Result(result.exit_code, result.stdout, result.stderr)

    return call


class CliCall(Protocol):
    """The type of the ``cli`` fixture (for annotations)."""

    def __call__(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - mirrors CliRunner.invoke
        env: dict[str, str] | None = None,
    ) -> Result:
        """Run dashtam with ``args``."""
        ...


SECRET_SERVICE_ENV = "DASHTAM_TEST_SECRET_SERVICE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests a run cannot serve: Secret Service ones, and local-file ones on PostgreSQL.

    Secret Service tests run only with DASHTAM_TEST_SECRET_SERVICE=1; under
    DASHTAM_TEST_BACKEND=postgresql the tests of the local vault file (marked
    ``sqlite_only``) are left out. They are deselected (not skipped): the default run cannot reach a Secret
    Service. CI runs them in the D-Bus session .ci/secret-service-tests makes,
    where a Secret Service that does not answer fails them.
    """
    left_out = set()
    if os.environ.get(SECRET_SERVICE_ENV) != "1":
        left_out.add("secret_service")
    if ON_POSTGRES:
        # What only the local file has (its modes, its sidecars, a damaged file).
        left_out.add("sqlite_only")
    kept = [item for item in items if not any(item.get_closest_marker(m) for m in left_out)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
