"""Sealing: AES-256-GCM, fresh nonces, bound to table, row, owner, field and key; exact framing."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from dashtam_cli.core.vault import crypto


@pytest.fixture
def sealer() -> crypto.Sealer:
    """A sealer with a fresh key."""
    return crypto.Sealer(crypto.new_key())


def test_round_trip_and_fresh_nonce(sealer: crypto.Sealer) -> None:
    """A sealed value opens to itself; sealing twice gives different blobs (fresh nonce)."""
    first = sealer.seal("tokens", "row-1", "access_token", b"secret-token", owner="o")
    second = sealer.seal("tokens", "row-1", "access_token", b"secret-token", owner="o")
    assert first != second
    assert first[9:21] != second[9:21]  # the nonces themselves differ
    assert sealer.open("tokens", "row-1", "access_token", first, owner="o") == b"secret-token"
    assert b"secret-token" not in first


def test_blob_layout(sealer: crypto.Sealer) -> None:
    """Version byte, 8-byte key id, 12-byte nonce, then ciphertext and a 16-byte tag."""
    blob = sealer.seal("t", "r", "f", b"abc", owner="o")
    assert blob[0] == crypto.BLOB_VERSION
    assert blob[1:9] == sealer.key_id
    assert len(blob) == 1 + 8 + 12 + 3 + 16
    version, key_id, nonce, sealed = crypto.parse_blob(blob)
    assert (version, key_id, len(nonce), len(sealed)) == (2, sealer.key_id, 12, 19)


def test_format_2_associated_data_is_pinned() -> None:
    """The associated data, built here by hand: every stored blob depends on its exact bytes.

    Version tag, table, row id, field, key id in hex and owner, joined by NUL.
    A non-ASCII owner is UTF-8.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = crypto.new_key()
    sealer = crypto.Sealer(key)
    owner = "caf\u00e9-1"
    blob = sealer.seal("transactions", "row-9", "payload", b"{}", owner=owner)
    _, key_id, nonce, sealed = crypto.parse_blob(blob)
    aad = b"\0".join(
        (
            b"dashtam/v2",
            b"transactions",
            b"row-9",
            b"payload",
            key_id.hex().encode(),
            owner.encode("utf-8"),
        )
    )
    assert AESGCM(key).decrypt(nonce, sealed, aad) == b"{}"
    # And a blob sealed by hand that way opens.
    nonce = os.urandom(12)
    made = bytes([2]) + key_id + nonce + AESGCM(key).encrypt(nonce, b"[1]", aad)
    assert sealer.open("transactions", "row-9", "payload", made, owner=owner) == b"[1]"


@pytest.mark.parametrize(
    ("table", "row", "field"),
    [
        ("accounts", "row-1", "access_token"),
        ("tokens", "row-2", "access_token"),
        ("tokens", "row-1", "refresh_token"),
    ],
)
def test_blob_moved_elsewhere_fails(
    sealer: crypto.Sealer, table: str, row: str, field: str
) -> None:
    """A blob copied to another table, row or field does not open."""
    blob = sealer.seal("tokens", "row-1", "access_token", b"secret", owner="o")
    with pytest.raises(InvalidTag):
        sealer.open(table, row, field, blob, owner="o")


def test_blob_of_a_row_moved_to_another_owner_fails(sealer: crypto.Sealer) -> None:
    """The same table, row and field under another owner (a moved row) does not open."""
    blob = sealer.seal("tokens", "row-1", "access_token", b"secret", owner="connection-a")
    assert sealer.open("tokens", "row-1", "access_token", blob, owner="connection-a") == b"secret"
    with pytest.raises(InvalidTag):
        sealer.open("tokens", "row-1", "access_token", blob, owner="connection-b")


def _format_1_blob(key: bytes, table: str, row: str, field: str, plaintext: bytes) -> bytes:
    """A blob as dashtam sealed it before owners: format 1, no owner in the associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key_id = crypto.key_id_of(key)
    nonce = os.urandom(12)
    aad = b"\0".join(
        (b"dashtam/v1", table.encode(), row.encode(), field.encode(), key_id.hex().encode())
    )
    return bytes([1]) + key_id + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def test_format_1_blobs_open_only_when_upgrading() -> None:
    """An old blob opens with ``legacy=True`` (the one-time upgrade) and is refused otherwise."""
    key = crypto.new_key()
    sealer = crypto.Sealer(key)
    old = _format_1_blob(key, "tokens", "row-1", "access_token", b"secret")
    assert sealer.open("tokens", "row-1", "access_token", old, owner="x", legacy=True) == b"secret"
    with pytest.raises(InvalidTag):
        sealer.open("tokens", "row-1", "access_token", old, owner="x")
    with pytest.raises(InvalidTag):
        sealer.open("tokens", "row-2", "access_token", old, owner="x", legacy=True)


def test_other_key_fails(sealer: crypto.Sealer) -> None:
    """A blob sealed with another key does not open, even with the same place."""
    blob = crypto.Sealer(crypto.new_key()).seal("t", "r", "f", b"secret", owner="o")
    with pytest.raises(InvalidTag):
        sealer.open("t", "r", "f", blob, owner="o")


def test_flipped_bit_fails(sealer: crypto.Sealer) -> None:
    """Any altered byte of nonce, ciphertext or tag fails the check."""
    blob = bytearray(sealer.seal("t", "r", "f", b"secret value", owner="o"))
    for index in (10, 25, len(blob) - 1):
        altered = bytearray(blob)
        altered[index] ^= 0x01
        with pytest.raises(InvalidTag):
            sealer.open("t", "r", "f", bytes(altered), owner="o")


def test_parser_checks_exact_lengths(sealer: crypto.Sealer) -> None:
    """Blobs shorter than header plus tag, or of another version, are refused by the parser."""
    blob = sealer.seal("t", "r", "f", b"", owner="o")
    assert len(blob) == crypto.MIN_BLOB
    crypto.parse_blob(blob)
    with pytest.raises(crypto.BlobFormatError, match="shorter"):
        crypto.parse_blob(blob[:-1])
    with pytest.raises(crypto.BlobFormatError, match="version 3"):
        crypto.parse_blob(b"\x03" + blob[1:])
    with pytest.raises(crypto.BlobFormatError):
        sealer.open("t", "r", "f", b"", owner="o")


def test_key_id_and_key_check() -> None:
    """Key ids differ per key and need 32-byte keys; the key check opens only with its key."""
    key = crypto.new_key()
    assert crypto.key_id_of(key) == crypto.key_id_of(bytes(key))
    assert crypto.key_id_of(key) != crypto.key_id_of(crypto.new_key())
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.key_id_of(os.urandom(16))
    check = crypto.Sealer(key).key_check("vault-a")
    assert crypto.Sealer(key).verify_key_check("vault-a", check)
    assert not crypto.Sealer(key).verify_key_check("vault-b", check)
    assert not crypto.Sealer(crypto.new_key()).verify_key_check("vault-a", check)
    assert not crypto.Sealer(key).verify_key_check("vault-a", check[:-1])


def test_wrap_and_unwrap_key() -> None:
    """A wrapped key opens with its passphrase only; a wrong size is refused before the KDF."""
    key = crypto.new_key()
    params: dict[str, Any] = {"salt": b"s" * 16, "n": 2**10, "r": 8, "p": 1}
    wrapped = crypto.wrap_key(key, "correct horse", **params)
    assert key not in wrapped
    assert crypto.unwrap_key(wrapped, "correct horse", **params) == key
    with pytest.raises(InvalidTag):
        crypto.unwrap_key(wrapped, "wrong horse", **params)
    with pytest.raises(InvalidTag):
        crypto.unwrap_key(wrapped[:-1], "correct horse", **params)


def test_many_texts_open_as_each_would_alone() -> None:
    """``open_texts`` gives, in order, what ``open`` and UTF-8 give; None for what open refuses.

    Refused: a blob of another row, owner, field or key, a flipped bit, a
    format-1 blob (opened only when upgrading), a short blob, text that is
    not UTF-8, a blob that is not bytes, an owner that is not text.
    """
    key = crypto.new_key()
    mine = crypto.Sealer(key)
    good = [(f"r{n}", f"o{n % 3}", f"café {n} 🙂") for n in range(7)]
    blobs = {row: mine.seal("t", row, "f", text.encode(), owner=o) for row, o, text in good}
    flipped = bytearray(blobs["r1"])
    flipped[-1] ^= 1
    items: list[tuple[str, Any, object]] = [(row, o, blobs[row]) for row, o, _ in good]
    refused: list[tuple[str, Any, object]] = [
        ("r9", "o0", blobs["r0"]),  # another row's
        ("r1", "o2", blobs["r1"]),  # another owner's
        ("r2", "o2", mine.seal("t", "r2", "g", b"x", owner="o2")),  # another field's
        ("r3", "o0", crypto.Sealer(crypto.new_key()).seal("t", "r3", "f", b"x", owner="o0")),
        ("r1", "o1", bytes(flipped)),
        ("r4", "o1", _format_1_blob(key, "t", "r4", "f", b"old")),
        ("r5", "o2", blobs["r5"][: crypto.MIN_BLOB - 1]),
        ("r6", "o0", mine.seal("t", "r6", "f", b"\xff\xfe", owner="o0")),
        ("r0", "o0", bytearray(blobs["r0"])),
        ("r0", None, blobs["r0"]),
    ]
    mixed = [item for pair in zip(items, refused[: len(items)], strict=True) for item in pair]
    mixed += refused[len(items) :]
    opened = mine.open_texts("t", "f", mixed)
    expected: list[str | None] = []
    for row, owner, blob in mixed:
        try:
            assert isinstance(blob, bytes)
            assert isinstance(owner, str)
            expected.append(mine.open("t", row, "f", blob, owner=owner).decode("utf-8"))
        except (AssertionError, InvalidTag, crypto.BlobFormatError, UnicodeDecodeError):
            expected.append(None)
    assert opened == expected
    assert [text for text in opened if text is not None] == [text for _, _, text in good]
    assert opened.count(None) == len(refused)
