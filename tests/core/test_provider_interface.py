"""What generic code asks of a provider: its relogin command, whether it refreshes, its login."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from fake_provider import FakeBank, FakeProvider

from dashtam_cli.core.models import ConnectionInfo, ConnectionState, TokenState
from dashtam_cli.core.providers import register, relogin_command, unregister
from dashtam_cli.core.tokens import NO_EXPIRY, token_status

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class _LinkRelogin(FakeProvider):
    """A provider whose re-login is its own command (as Plaid's update mode is)."""

    name = "linkish"

    def relogin_command(self, connection: str) -> str:
        """Its own words."""
        return f"dashtam connect linkish --update {connection}"


@pytest.fixture
def providers() -> Iterator[None]:
    """The fake provider and one with its own re-login command, registered for the test."""
    register(FakeProvider(FakeBank()))
    register(_LinkRelogin(FakeBank()))
    yield
    unregister("fake")
    unregister("linkish")


def _info(provider: str, status: ConnectionState) -> ConnectionInfo:
    return ConnectionInfo(
        id="0d6f9a57-2a55-4a39-9f5c-3f3b8e1c0a11",
        name="bank",
        provider=provider,
        status=status,
        created_at=NOW,
        updated_at=NOW,
        access_expires_at=None,
        refresh_expires_at=None,
    )


@pytest.mark.usefixtures("providers")
def test_a_credential_that_does_not_refresh_does_not_expire() -> None:
    """No token lifetimes is ``ok`` for a provider that does not refresh, not a re-login."""
    row = token_status(_info("fake", ConnectionState.ACTIVE), NOW)
    assert (row.state, row.action) == (TokenState.OK, "none")
    assert row.access_expires == row.refresh_expires == NO_EXPIRY


@pytest.mark.usefixtures("providers")
def test_a_refused_login_of_a_provider_that_does_not_refresh_needs_its_own_relogin() -> None:
    """A refused connection says the provider's own command, not another provider's."""
    row = token_status(_info("linkish", ConnectionState.REAUTH_REQUIRED), NOW)
    assert row.state == TokenState.REAUTH_REQUIRED
    assert row.action == "log in again: dashtam connect linkish --update bank"


@pytest.mark.usefixtures("providers")
def test_relogin_commands_come_from_the_provider() -> None:
    """The registry asks the provider; an unknown one gets the usual command."""
    assert relogin_command("linkish", "x") == "dashtam connect linkish --update x"
    assert relogin_command("fake", "x") == "dashtam connect fake --name x"
    assert relogin_command("gone", "x") == "dashtam connect gone --name x"


@pytest.mark.usefixtures("providers")
def test_providers_without_app_credentials_are_listed_and_skipped_by_oauth_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A built-in pasted-token provider is listed without credentials; OAuth checks pass it by."""
    import asyncio

    from dashtam_cli.core import credentials, providers

    monkeypatch.setattr(credentials, "PROVIDER_NAMES", ("schwab", "fake"))
    monkeypatch.setattr(providers, "PROVIDER_NAMES", ("schwab", "fake"))
    listed = {p.name: p for p in asyncio.run(credentials.list_providers(None, {}))}
    assert set(listed) == {"schwab", "fake"}
    assert (listed["fake"].credentials, listed["fake"].base_url) == (None, None)
    assert listed["fake"].display_name == "Fake Bank"
    assert [spec.name for spec in providers.oauth_specs()] == ["schwab"]
