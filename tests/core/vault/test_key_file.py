"""A damaged or hostile passphrase key file gives one clear error: no crash, no huge allocation."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from dashtam_cli.core.vault.errors import VaultError, WrongPassphrase
from dashtam_cli.core.vault.keys import PassphraseKeySource

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

PASSPHRASE = "a passphrase of some length"
CHEAP = {"n": 2**14, "r": 8, "p": 1}


def _source(path: Path) -> PassphraseKeySource:
    """A key-file store at ``path`` whose passphrase comes from its environment."""
    return PassphraseKeySource(
        path, environ={"DASHTAM_PASSPHRASE": PASSPHRASE}, prompt=None, kdf=CHEAP
    )


def _written(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A real key file (cheap parameters) and its parsed contents."""
    path = tmp_path / "vault.key"
    asyncio.run(_source(path).save(bytes(range(32))))
    return path, json.loads(path.read_text())


def _edit(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``change`` applied."""
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    change(copy)
    return copy


def _set_kdf(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change that sets one scrypt parameter."""

    def change(doc: dict[str, Any]) -> None:
        doc["kdf"][name] = value

    return change


def test_a_good_key_file_reads_back(tmp_path: Path) -> None:
    """The file written with sane parameters unwraps to the key (the control case)."""
    path, _ = _written(tmp_path)
    assert asyncio.run(_source(path).load()) == bytes(range(32))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_set_kdf("n", 3), "power of two"),
        (_set_kdf("n", 2**40), "power of two"),
        (_set_kdf("n", 2**10), "power of two"),
        (_set_kdf("n", -(2**14)), "power of two"),
        (_set_kdf("n", "16384"), "not a whole number"),
        (_set_kdf("n", 16384.0), "not a whole number"),
        (_set_kdf("n", True), "not a whole number"),  # noqa: FBT003 - JSON true
        (_set_kdf("r", 0), "r and p"),
        (_set_kdf("r", 10**6), "r and p"),
        (_set_kdf("p", 2**31), "r and p"),
        (_set_kdf("n", 2**22), "2 GiB"),
        (lambda d: d.update(salt="AAAA"), "salt"),
        (lambda d: d.update(salt="not base64!"), "damaged"),
        (lambda d: d.pop("kdf"), "damaged"),
        (lambda d: d.update(kdf=[1, 2, 3]), "damaged"),
    ],
)
def test_bad_parameters_are_refused_before_scrypt_runs(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    """Each bad value is one VaultError naming the file; scrypt never sees it."""
    path, doc = _written(tmp_path)
    path.write_text(json.dumps(_edit(doc, change)))
    with pytest.raises(VaultError, match=says) as caught:
        asyncio.run(_source(path).load())
    assert str(path) in caught.value.message


def test_a_changed_parameter_within_bounds_fails_the_tag(tmp_path: Path) -> None:
    """The parameters are bound by derivation: a plausible edit derives another key and fails."""
    path, doc = _written(tmp_path)
    path.write_text(json.dumps(_edit(doc, _set_kdf("n", 2**15))))
    with pytest.raises(WrongPassphrase):
        asyncio.run(_source(path).load())


def test_deep_nesting_huge_files_and_links_are_refused(tmp_path: Path) -> None:
    """Absurd nesting, a file far too large, and a symbolic link each give a clear error."""
    path, doc = _written(tmp_path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VaultError, match="damaged"):
        asyncio.run(_source(path).load())
    path.write_text(json.dumps(doc) + " " * (1024 * 1024))
    with pytest.raises(VaultError, match="damaged"):
        asyncio.run(_source(path).load())
    real = tmp_path / "elsewhere.key"
    real.write_text(json.dumps(doc))
    path.unlink()
    path.symlink_to(real)
    with pytest.raises(VaultError, match="damaged"):
        asyncio.run(_source(path).load())


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "JSONDecodeError"),
        (b'{"kdf": {"n": 16384, "r": 8', "JSONDecodeError"),
        (b"\xff\xfe{}", "UnicodeDecodeError"),
        (b"null", "TypeError"),
        (b"[]", "TypeError"),
        (b'{"kdf": {"n": 16384, "r": 8, "p": 1}, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="}', "KeyError"),
    ],
)
def test_a_truncated_or_foreign_file_is_damaged_not_a_crash(
    tmp_path: Path, content: bytes, says: str
) -> None:
    """An empty, cut-short, non-UTF-8 or wrongly shaped file is one error naming what broke."""
    path = tmp_path / "vault.key"
    path.write_bytes(content)
    with pytest.raises(VaultError) as caught:
        asyncio.run(_source(path).load())
    assert caught.value.message == f"the key file {path} is unreadable or damaged ({says})"
    assert "backup" in (caught.value.hint or "")


def test_a_directory_in_place_of_the_key_file_is_damaged(tmp_path: Path) -> None:
    """A directory where the key file should be is reported, not read or followed."""
    path = tmp_path / "vault.key"
    path.mkdir()
    with pytest.raises(VaultError, match=r"unreadable or damaged \(IsADirectoryError\)"):
        asyncio.run(_source(path).load())


def test_a_damaged_wrapped_key_unlocks_nothing_and_is_left_as_it_was(tmp_path: Path) -> None:
    """One flipped bit in the wrapped key fails the tag: no key comes out, the file is not rewritten."""
    path, doc = _written(tmp_path)
    wrapped = bytearray(base64.b64decode(doc["wrapped"]))
    wrapped[len(wrapped) // 2] ^= 0x01
    doc["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    damaged = json.dumps(doc)
    path.write_text(damaged)
    with pytest.raises(WrongPassphrase, match="does not unlock"):
        asyncio.run(_source(path).load())
    assert path.read_text() == damaged
