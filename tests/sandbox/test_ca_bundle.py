"""What `dashtam sandbox serve` prints works: DASHTAM_CA_BUNDLE alone makes dashtam trust it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sandbox_support import login

if TYPE_CHECKING:
    from pathlib import Path

    import pytest
    from conftest import CliCall
    from sandbox_support import RunningSandbox


def test_dashtam_trusts_the_sandbox_through_dashtam_ca_bundle(
    dashtam_at_sandbox: RunningSandbox,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: CliCall,
) -> None:
    """With the CA in DASHTAM_CA_BUNDLE and no SSL_CERT_FILE, login and fetches verify TLS."""
    monkeypatch.delenv("SSL_CERT_FILE")
    assert dashtam_at_sandbox.ca_path is not None
    monkeypatch.setenv("DASHTAM_CA_BUNDLE", str(dashtam_at_sandbox.ca_path))
    login(dashtam_at_sandbox, isolated_env)
    result = cli("accounts", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == dashtam_at_sandbox.config.accounts
