"""Keyring backends for tests: in memory, in a shared JSON file, hung, and unsafe."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import ClassVar

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from dashtam_cli.core.vault.keys import trust_keyring_backend


class MemoryKeyring(KeyringBackend):
    """A trusted keyring that lives in a dict."""

    priority: ClassVar[float] = 1

    def __init__(self) -> None:
        """Start empty."""
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it unannotated
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        """Return the stored value."""
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store a value."""
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        """Delete a value, as real backends do: an error when absent."""
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class FileKeyring(KeyringBackend):
    """A trusted keyring kept in a JSON file, so several processes share it (tests only)."""

    priority: ClassVar[float] = 1

    def __init__(self, path: str | Path) -> None:
        """Use the JSON file at ``path``."""
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it unannotated
        self.path = Path(path)

    def _load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def get_password(self, service: str, username: str) -> str | None:
        """Return the stored value."""
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store a value."""
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        """Delete a value."""
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(data)


class HungKeyring(MemoryKeyring):
    """A trusted keyring whose reads block until released, like a locked Secret Service."""

    def __init__(self) -> None:
        """Start blocked."""
        super().__init__()
        self.release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        """Block until released."""
        self.release.wait(30)
        return super().get_password(service, username)


class PlaintextFileKeyring(MemoryKeyring):
    """Stands in for keyrings.alt's plain-text file backend (never trusted)."""


PlaintextFileKeyring.__module__ = "keyrings.alt.file"
PlaintextFileKeyring.__qualname__ = "PlaintextKeyring"


def trust_test_backends() -> None:
    """Allow the test backends that stand for real, protected keyrings."""
    for cls in (MemoryKeyring, FileKeyring, HungKeyring):
        trust_keyring_backend(cls)
