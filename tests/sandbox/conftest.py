"""Fixtures for the sandbox tests: a running in-process sandbox, and dashtam pointed at it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from sandbox_support import FakeClock, RunningSandbox, SandboxApi, point_dashtam_at, run_sandbox

from dashtam_cli.sandbox.app import SandboxConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# Small data: enough for every kind of item (options, fees, short positions), fast to make.
SMALL: dict[str, Any] = {"accounts": 2, "transactions_per_account": 200, "seed": 7}


@pytest.fixture
def sandbox_clock() -> FakeClock:
    """The sandbox's clock, which tests move forward to age codes and tokens."""
    return FakeClock()


@pytest.fixture
def start_sandbox(
    tmp_path: Path, redirect_uri: str, sandbox_clock: FakeClock
) -> Iterator[Callable[..., RunningSandbox]]:
    """Start sandboxes with small data and any ``SandboxConfig`` overrides; stop them after.

    The registered redirect URI is a free loopback port (``redirect_uri``), so
    dashtam's real listener can bind it.
    """
    with contextlib.ExitStack() as stack:
        started = 0

        def start(**overrides: Any) -> RunningSandbox:
            nonlocal started
            started += 1
            fields = {**SMALL, "redirect_uris": (redirect_uri,), **overrides}
            config = SandboxConfig(**fields)
            tls_dir = tmp_path / f"sandbox-tls-{started}"
            return stack.enter_context(run_sandbox(config, tls_dir, sandbox_clock))

        yield start


@pytest.fixture
def sandbox(start_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A running sandbox with small data, consent page on (no auto-approve)."""
    return start_sandbox()


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[SandboxApi]:
    """An HTTPS client of the running sandbox that verifies its CA."""
    client = SandboxApi(sandbox)
    yield client
    client.close()


@pytest.fixture
def dashtam_at_sandbox(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> RunningSandbox:
    """Point dashtam (in this process) at the default sandbox; see :func:`point_dashtam_at`.

    The vault lives in the test's DASHTAM_HOME (``isolated_env``).
    """
    del isolated_env
    point_dashtam_at(sandbox, monkeypatch)
    return sandbox
