"""Development sessions: tests on every installed Python, coverage, lint, typecheck, docs, bench."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
# A Python that is not installed is skipped, not failed: contributors have
# different interpreters, and CI names the ones it has.
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]


def _sync(session: nox.Session, *groups: str) -> None:
    """Install the locked dependencies (and dashtam itself) into the session's venv."""
    args = ["uv", "sync", "--frozen", "--no-default-groups"]
    for group in groups:
        args += ["--group", group]
    session.run_install(
        *args,
        f"--python={session.virtualenv.location}",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    _sync(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """Run the suite under coverage (subprocesses too), print the report, check the gate."""
    _sync(session, "test")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")
    session.run("python", "tests/coverage_gate.py")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    _sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """Type-check the package and its tests with mypy --strict."""
    _sync(session, "lint", "test")  # the tests import pytest, respx, trustme...
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Regenerate docs/cli.md from the commands (tests fail when it drifts)."""
    _sync(session)
    session.run("python", "-m", "dashtam_cli.cli.reference", "docs/cli.md")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Print start-up, vault, sync, query and memory figures (medians over repeated runs)."""
    _sync(session)
    # The sync bench compares dashtam with a script on schwab-py's async client:
    # a bench-only dependency, never one of dashtam's.
    session.install("schwab-py==1.5.1")
    # Measure an installed dashtam as a user runs it: with bytecode compiled,
    # as it is after the first run of any normal install.
    session.run("python", "-m", "compileall", "-q", session.virtualenv.location, silent=True)
    session.run("python", "-m", "compileall", "-q", "dashtam_cli", silent=True)
    session.run(
        "python", "tests/bench/run.py", *session.posargs, env={"PYTHONDONTWRITEBYTECODE": ""}
    )
