"""The providers dashtam knows, resolved lazily so start-up never imports them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.errors import InputError

if TYPE_CHECKING:
    from dashtam_cli.core.providers.base import ProviderSpec

__all__ = ["PROVIDER_NAMES", "get_provider"]

_MODULES: Final = {"schwab": "dashtam_cli.core.providers.schwab"}
PROVIDER_NAMES: Final = tuple(_MODULES)


def get_provider(name: str) -> ProviderSpec:
    """Return the provider called ``name``."""
    module_name = _MODULES.get(name.lower())
    if module_name is None:
        raise InputError(
            f"unknown provider {name!r}",
            hint=f"dashtam supports: {', '.join(PROVIDER_NAMES)}",
        )
    spec: ProviderSpec = importlib.import_module(module_name).SPEC
    return spec
