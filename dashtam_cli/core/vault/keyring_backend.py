"""Loading the keyring library's backend, with its start-up failures turned into one clear error."""

from __future__ import annotations

import os
from typing import Any, Final

from dashtam_cli.core.vault.errors import KEY_OPTIONS_HINT, KeyringUnavailable

__all__ = ["BACKEND_ENV", "load_backend"]

BACKEND_ENV: Final = "PYTHON_KEYRING_BACKEND"
_MAX_DETAIL: Final = 160


def load_backend() -> Any:  # noqa: ANN401 - keyring has no type hints
    """Return ``keyring.get_keyring()``; blocking, so callers run it on a thread.

    keyring imports the class named by ``PYTHON_KEYRING_BACKEND`` (or by its
    own ``keyringrc.cfg``) when first asked, and raises whatever that import
    raises: ModuleNotFoundError, AttributeError, ValueError, or the backend's
    own errors. Each becomes a KeyringUnavailable naming where the name came from.
    """
    import keyring

    try:
        return keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - an imported backend may raise anything
        detail = "".join(ch if ch.isprintable() else " " for ch in str(exc))[:_MAX_DETAIL]
        named = BACKEND_ENV in os.environ
        where = f"{BACKEND_ENV}" if named else "the keyring library's configuration"
        raise KeyringUnavailable(
            f"the keyring backend named by {where} cannot be loaded "
            f"({type(exc).__name__}: {detail})",
            hint=(
                f"unset {BACKEND_ENV} or name an installed backend such as "
                f"keyring.backends.SecretService.Keyring; {KEY_OPTIONS_HINT}"
                if named
                else f"fix keyringrc.cfg (see: keyring diagnose); {KEY_OPTIONS_HINT}"
            ),
        ) from None
