"""SimpleFIN: the banks and cards of thousands of institutions, through a pasted setup token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashtam_cli.core.providers.base import LoginKind, Provider

if TYPE_CHECKING:
    import httpx

    from dashtam_cli.core.models import Kind
    from dashtam_cli.core.providers.base import ProviderSession, SessionContext

__all__ = ["PROVIDER", "SimpleFINProvider"]


class SimpleFINProvider(Provider):
    """SimpleFIN: a setup token claimed once for an access URL that does not expire."""

    name = "simplefin"
    display_name = "SimpleFIN"
    login = LoginKind.TOKEN
    refreshes = False
    transaction_types = ("CREDIT", "DEBIT")
    unrevoked_advice = (
        "note: SimpleFIN has no way to revoke an access from here; the access URL still works "
        "until you disable it at the SimpleFIN Bridge (https://beta-bridge.simplefin.org)"
    )

    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of SimpleFIN's types (the sign of the amount)."""
        from dashtam_cli.core.providers.simplefin.mapping import kind_of

        return kind_of(provider_type)

    def session(self, context: SessionContext) -> ProviderSession:
        """A session of one access URL."""
        from dashtam_cli.core.providers.simplefin.session import SimpleFINSession

        return SimpleFINSession(self, context)

    async def claim(self, client: httpx.AsyncClient, token: str) -> str:
        """Claim a setup token: the access URL, as the credential record to seal."""
        from dashtam_cli.core.providers.simplefin.protocol import claim

        return await claim(client, token)


PROVIDER = SimpleFINProvider()
