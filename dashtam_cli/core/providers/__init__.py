"""The registry: the providers dashtam knows, resolved lazily so start-up never imports them.

This is the only module outside a provider's package that names it (a test
enforces that). Generic code asks :func:`provider` for a connection's provider.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import InputError

if TYPE_CHECKING:
    from dashtam_cli.core.models import Account
    from dashtam_cli.core.providers.base import Provider, ProviderSpec

__all__ = [
    "PROVIDER_NAMES",
    "get_provider",
    "institution_of",
    "oauth_specs",
    "provider",
    "provider_names",
    "register",
    "relogin_command",
    "unregister",
]

_MODULES: Final[dict[str, str]] = {
    "schwab": "dashtam_cli.core.providers.schwab",
    "simplefin": "dashtam_cli.core.providers.simplefin",
    "plaid": "dashtam_cli.core.providers.plaid",
}
# The built-in providers; provider_names() adds any registered at run time.
PROVIDER_NAMES: Final = tuple(_MODULES)
_REGISTERED: dict[str, Provider] = {}


def register(instance: Provider) -> None:
    """Add a provider at run time (a plugin, or a test's fake one)."""
    _REGISTERED[instance.name] = instance


def unregister(name: str) -> None:
    """Forget a provider added with :func:`register`."""
    _REGISTERED.pop(name, None)


def provider_names() -> tuple[str, ...]:
    """Every provider's name: the built-in ones, then those registered."""
    return (*_MODULES, *(n for n in _REGISTERED if n not in _MODULES))


def provider(name: str) -> Provider:
    """Return the provider called ``name``; an InputError naming the known ones otherwise."""
    key = name.lower()
    registered = _REGISTERED.get(key)
    if registered is not None:
        return registered
    module_name = _MODULES.get(key)
    if module_name is None:
        raise InputError(
            f"unknown provider {name!r}",
            hint=f"dashtam supports: {', '.join(provider_names())}",
        )
    instance: Provider = importlib.import_module(module_name).PROVIDER
    return instance


def get_provider(name: str) -> ProviderSpec:
    """Return the OAuth settings of the provider called ``name``."""
    instance = provider(name)
    if instance.spec is None:
        raise InputError(
            f"{instance.display_name} does not log in with OAuth",
            hint=f"log in with: dashtam connect {instance.name}",
        )
    return instance.spec


def oauth_specs() -> list[ProviderSpec]:
    """The OAuth settings of every built-in provider that logs in with OAuth (app credentials)."""
    specs = (provider(name).spec for name in PROVIDER_NAMES)
    return [spec for spec in specs if spec is not None]


def relogin_command(provider_name: str, connection: str) -> str:
    """The command that logs in again to ``connection``, as its provider words it.

    A provider this dashtam does not know (a plugin not installed here) gets
    the usual ``dashtam connect PROVIDER --name NAME``.
    """
    try:
        instance = provider(provider_name)
    except InputError:
        return f"dashtam connect {provider_name} --name {connection}"
    return instance.relogin_command(connection)


def institution_of(account: Account) -> str:
    """The institution holding ``account``: as its provider names it, else the provider's name."""
    if account.institution:
        return account.institution
    try:
        return provider(account.provider).display_name
    except InputError:  # a provider not installed here
        return account.provider
