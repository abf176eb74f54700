"""The three key stores on their own: which keyring is trusted, read-backs, pending keys, refusals."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

import keyring
import keyring.backend
import pytest
from fake_keyrings import MemoryKeyring, PlaintextFileKeyring
from keyring.backends.chainer import ChainerBackend

from dashtam_cli.core.vault import keys
from dashtam_cli.core.vault.errors import KeyringUnavailable, NoKeySource, VaultError

if TYPE_CHECKING:
    from pathlib import Path

    from keyring.backend import KeyringBackend

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
CHEAP = {"n": 2**14, "r": 8, "p": 1}


def _chain(monkeypatch: pytest.MonkeyPatch, *members: KeyringBackend) -> ChainerBackend:
    """Install keyring's real ChainerBackend over ``members``, as a desktop with several gets it.

    The chainer finds its members with ``keyring.backend.get_all_keyring``; the
    test decides what that finds.
    """
    monkeypatch.setattr(keyring.backend, "get_all_keyring", lambda: list(members))
    chainer = ChainerBackend()
    assert [type(b) for b in chainer.backends] == [type(m) for m in members]
    keyring.set_keyring(chainer)
    return chainer


def _keyring_source() -> keys.KeyringKeySource:
    """A keyring store for one vault, with a timeout no healthy call comes near."""
    return keys.KeyringKeySource("v1", timeout=30)


def test_a_chainer_of_trusted_backends_only_is_used() -> None:
    """The chainer passes the check when each member is trusted, and the key lands in one."""
    trusted = MemoryKeyring()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _chain(monkeypatch, trusted)
        source = _keyring_source()
        asyncio.run(source.save(KEY))
        assert asyncio.run(source.load()) == KEY
        assert source.backend_name() == "keyring.backends.chainer.ChainerBackend"
    assert trusted.entries == {("dashtam", "vault-v1"): base64.urlsafe_b64encode(KEY).decode()}


def test_a_chainer_with_one_untrusted_member_is_refused_by_that_members_name() -> None:
    """One plain-text member among trusted ones refuses the whole chain before anything is stored."""
    trusted, plain = MemoryKeyring(), PlaintextFileKeyring()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _chain(monkeypatch, trusted, plain)
        source = _keyring_source()
        with pytest.raises(KeyringUnavailable) as caught:
            asyncio.run(source.save(KEY))
    assert caught.value.message == (
        "refusing keyring backend keyrings.alt.file.PlaintextKeyring: "
        "it keeps secrets in a plain or weakly protected file"
    )
    assert "MemoryKeyring" not in caught.value.message
    assert trusted.entries == {}
    assert plain.entries == {}
    assert source.backend_name() is None


def test_a_chainer_with_no_members_is_refused() -> None:
    """An empty chain stores nothing anywhere: it is refused as a backend dashtam cannot vouch for."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _chain(monkeypatch)
        with pytest.raises(KeyringUnavailable, match="ChainerBackend: dashtam cannot vouch"):
            asyncio.run(_keyring_source().load())


def test_an_entry_that_is_not_a_key_is_a_damaged_entry(memory_keyring: MemoryKeyring) -> None:
    """A keyring entry holding something else is reported as such, without echoing it."""
    memory_keyring.entries[("dashtam", "vault-v1")] = "not-a-key-at-all"
    with pytest.raises(VaultError) as caught:
        asyncio.run(_keyring_source().load())
    assert caught.value.message == "the keyring entry dashtam/vault-v1 does not hold a valid key"
    assert "not-a-key-at-all" not in str(caught.value)


class ForgetfulKeyring(MemoryKeyring):
    """A trusted keyring that accepts writes and keeps none, like a locked collection may."""

    def set_password(self, service: str, username: str, password: str) -> None:
        """Drop the value."""


@pytest.mark.parametrize("method", ["save", "save_pending"])
def test_a_keyring_that_drops_the_key_is_noticed_on_read_back(method: str) -> None:
    """Saving reads the entry back: a key the keyring did not keep is an error, not a lost vault."""
    keys.trust_keyring_backend(ForgetfulKeyring)
    keyring.set_keyring(ForgetfulKeyring())
    source = _keyring_source()
    with pytest.raises(KeyringUnavailable, match="did not keep"):
        asyncio.run(getattr(source, method)(KEY))


def test_pending_keys_in_the_keyring(memory_keyring: MemoryKeyring) -> None:
    """Promote with nothing pending keeps the key; promote moves a pending key; delete clears both."""
    source = _keyring_source()

    async def scenario() -> list[bytes | None]:
        await source.save(KEY)
        await source.promote_pending()  # nothing pending: the key stays
        seen = [await source.load(), await source.load_pending()]
        await source.save_pending(OTHER)
        await source.promote_pending()
        seen += [await source.load(), await source.load_pending()]
        await source.save_pending(KEY)
        await source.discard_pending()
        seen.append(await source.load_pending())
        await source.save_pending(KEY)
        await source.delete()
        seen += [await source.load(), await source.load_pending()]
        return seen

    assert asyncio.run(scenario()) == [KEY, None, OTHER, None, None, None, None]
    assert memory_keyring.entries == {}


def test_the_environment_key_cannot_be_replaced_or_rotated() -> None:
    """DASHTAM_MASTER_KEY is read-only: its own key is accepted, another key or a rotation refused."""
    source = keys.EnvKeySource(base64.urlsafe_b64encode(KEY).decode())

    async def scenario() -> None:
        await source.save(KEY)  # a new vault adopting the variable's key
        assert await source.load() == KEY
        assert await source.load_pending() is None
        with pytest.raises(VaultError, match="cannot store a new key in DASHTAM_MASTER_KEY"):
            await source.save(OTHER)
        with pytest.raises(VaultError, match="cannot rotate a key") as caught:
            await source.save_pending(OTHER)
        assert "unset DASHTAM_MASTER_KEY" in (caught.value.hint or "")
        await source.promote_pending()
        await source.discard_pending()
        await source.delete()
        assert await source.load() == KEY

    asyncio.run(scenario())
    assert source.backend_name() is None


def test_an_empty_typed_passphrase_is_refused(tmp_path: Path) -> None:
    """A passphrase prompt answered with nothing writes no key file."""
    path = tmp_path / "vault.key"
    source = keys.PassphraseKeySource(path, environ={}, prompt=lambda _confirm: "", kdf=CHEAP)
    with pytest.raises(NoKeySource, match="an empty passphrase protects nothing"):
        asyncio.run(source.save(KEY))
    assert not path.exists()
    assert source.backend_name() is None


def test_pending_key_files(tmp_path: Path) -> None:
    """Promote with no pending file keeps the key file; delete removes the file and its pending one."""
    path = tmp_path / "vault.key"
    source = keys.PassphraseKeySource(
        path, environ={"DASHTAM_PASSPHRASE": "a passphrase"}, prompt=None, kdf=CHEAP
    )

    async def scenario() -> list[bytes | None]:
        await source.save(KEY)
        await source.promote_pending()
        seen = [await source.load()]
        await source.save_pending(OTHER)
        await source.delete()
        seen += [await source.load(), await source.load_pending()]
        return seen

    assert asyncio.run(scenario()) == [KEY, None, None]
    assert list(tmp_path.iterdir()) == []
