"""The vault's process locks on their own: shared openers, an exclusive holder, bounded waits."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.vault import locks
from dashtam_cli.core.vault.errors import VaultBusy

if TYPE_CHECKING:
    from pathlib import Path

SHORT = 0.05  # seconds: the waits below are bound to fail, this only keeps them short


def test_the_lock_files_sit_beside_the_vault(tmp_path: Path) -> None:
    """Three lock files, in the vault's directory, none of them the vault."""
    vault = tmp_path / "data" / "vault.sqlite3"
    assert locks.lock_files(vault) == (
        tmp_path / "data" / "vault.lock",
        tmp_path / "data" / "vault.gate",
        tmp_path / "data" / "vault.recover",
    )


def test_openers_share_and_an_exclusive_holder_waits_for_them(tmp_path: Path) -> None:
    """Two openers at once are fine; a rotation while one is open gives up with "nothing changed"."""
    vault = tmp_path / "vault.sqlite3"

    async def scenario() -> None:
        async with locks.shared_use(vault, timeout=SHORT), locks.shared_use(vault, timeout=SHORT):
            with pytest.raises(VaultBusy) as caught:
                async with locks.exclusive_use(vault, timeout=SHORT):
                    pytest.fail("held the vault alone while it was open")
            assert caught.value.message == (
                "other dashtam commands kept the vault open for over 0.05 s; nothing was changed"
            )
        async with locks.exclusive_use(vault, timeout=SHORT):
            pass  # every opener closed: it is free

    asyncio.run(scenario())


def test_an_opener_waits_for_an_exclusive_holder_and_gives_up_at_its_bound(tmp_path: Path) -> None:
    """While a rotation holds the vault, an opener's bounded wait ends in VaultBusy with its hint."""
    vault = tmp_path / "vault.sqlite3"

    async def scenario() -> None:
        async with locks.exclusive_use(vault, timeout=SHORT):
            with pytest.raises(VaultBusy) as caught:
                async with locks.shared_use(vault, timeout=SHORT):
                    pytest.fail("opened the vault during a rotation")
            assert "kept the vault locked for over 0.05 s" in caught.value.message
            assert "rotate-key" in (caught.value.hint or "")
        async with locks.shared_use(vault, timeout=SHORT):
            pass

    asyncio.run(scenario())


def test_recovery_is_one_process_at_a_time(tmp_path: Path) -> None:
    """A second recovery waits for the first and gives up at its bound."""
    vault = tmp_path / "vault.sqlite3"

    async def scenario() -> None:
        async with locks.recovering(vault, timeout=SHORT):
            with pytest.raises(VaultBusy, match=r"held the key recovery lock for over 0\.05 s"):
                async with locks.recovering(vault, timeout=SHORT):
                    pytest.fail("two recoveries at once")
        async with locks.recovering(vault, timeout=SHORT):
            pass

    asyncio.run(scenario())
