"""AES-256-GCM sealing of single fields, bound to their table, row, owner, field and key."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "BLOB_VERSION",
    "KEY_BYTES",
    "BlobFormatError",
    "Sealer",
    "key_id_of",
    "new_key",
    "parse_blob",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_ID_BYTES: Final = 8
BLOB_VERSION: Final = 2
# Blobs of format 1 were bound to table, row, field and key, not to the row's
# owner; they are opened only to re-seal a vault of that age in format 2.
LEGACY_BLOB_VERSION: Final = 1
_HEADER: Final = struct.Struct(f">B{KEY_ID_BYTES}s{NONCE_BYTES}s")
MIN_BLOB: Final = _HEADER.size + TAG_BYTES
_NONCE_AT: Final = 1 + KEY_ID_BYTES  # after the version byte and the key id
_KEY_CHECK_PLAINTEXT: Final = b"dashtam vault key check v1"


class BlobFormatError(ValueError):
    """A sealed blob whose framing is wrong: too short, unknown version."""


def new_key() -> bytes:
    """Return 256 fresh random bits from the OS."""
    return os.urandom(KEY_BYTES)


def key_id_of(key: bytes) -> bytes:
    """Return the 64-bit identifier of a key: a keyed hash that reveals nothing useful of it."""
    if len(key) != KEY_BYTES:
        msg = f"a master key is {KEY_BYTES} bytes, not {len(key)}"
        raise ValueError(msg)
    return hmac.new(key, b"dashtam key id v1", hashlib.sha256).digest()[:KEY_ID_BYTES]


def parse_blob(blob: bytes) -> tuple[int, bytes, bytes, bytes]:
    """Split a blob into version, key id, nonce and ciphertext-with-tag, checking exact sizes.

    AES-GCM itself accepts nonces of other lengths, so the framing is checked
    here rather than trusted to the cipher.
    """
    if len(blob) < MIN_BLOB:
        msg = f"sealed blob is {len(blob)} bytes, shorter than the minimum {MIN_BLOB}"
        raise BlobFormatError(msg)
    version, key_id, nonce = _HEADER.unpack_from(blob)
    if version not in {BLOB_VERSION, LEGACY_BLOB_VERSION}:
        msg = f"sealed blob has format version {version}, this dashtam reads {BLOB_VERSION}"
        raise BlobFormatError(msg)
    return version, key_id, nonce, blob[_HEADER.size :]


def _aad(table: str, row_id: str, field: str, key_hex: str, owner: str | None) -> bytes:
    # NUL cannot occur in our table, id, owner or field names, so the join is
    # unambiguous. ``owner`` None is format 1, which had no owner. Formatted as
    # text and encoded once: UTF-8 of a join is the join of the UTF-8s.
    if owner is None:
        return f"dashtam/v1\0{table}\0{row_id}\0{field}\0{key_hex}".encode()
    return f"dashtam/v2\0{table}\0{row_id}\0{field}\0{key_hex}\0{owner}".encode()


class Sealer:
    """Seals and opens fields with one master key.

    Blob layout: ``version (1 byte) | key id (8) | nonce (12) | ciphertext |
    tag (16)``. The associated data of format 2 binds the ciphertext to its
    table, row id, field, key id and *owner*: the row that the row belongs to
    (a token's and an account's connection, a position's and a transaction's
    account, a credential's provider). So a blob copied to another row or
    field fails to open, and so does a row moved to another owner.
    """

    __slots__ = ("_aead", "_key_hex", "key_id")

    def __init__(self, key: bytes) -> None:
        """Prepare the cipher for ``key`` (32 bytes)."""
        self.key_id = key_id_of(key)
        self._key_hex = self.key_id.hex()
        self._aead = AESGCM(key)

    def seal(self, table: str, row_id: str, field: str, plaintext: bytes, *, owner: str) -> bytes:
        """Encrypt ``plaintext`` for one field of one row of ``owner``, with a fresh nonce."""
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(table, row_id, field, self._key_hex, owner)
        return _HEADER.pack(BLOB_VERSION, self.key_id, nonce) + self._aead.encrypt(
            nonce, plaintext, aad
        )

    def open(  # noqa: PLR0913 - the whole address of a field
        self, table: str, row_id: str, field: str, blob: bytes, *, owner: str, legacy: bool = False
    ) -> bytes:
        """Decrypt a blob; raise ``InvalidTag`` or ``BlobFormatError`` if it is not from here.

        A format-1 blob (no owner) opens only with ``legacy=True``: once a vault
        is re-sealed in format 2, an old blob put back in it is refused.
        """
        if len(blob) >= MIN_BLOB and blob[0] == BLOB_VERSION and blob[1:_NONCE_AT] == self.key_id:
            # The blob every read meets (format 2, this key), without the general
            # parse; the key id is no secret (it is in every blob's header).
            return self._aead.decrypt(
                blob[_NONCE_AT : _HEADER.size],
                blob[_HEADER.size :],
                _aad(table, row_id, field, self._key_hex, owner),
            )
        version, key_id, nonce, sealed = parse_blob(blob)
        if not hmac.compare_digest(key_id, self.key_id):
            raise InvalidTag
        if version == LEGACY_BLOB_VERSION:
            if not legacy:
                raise InvalidTag
            aad = _aad(table, row_id, field, self._key_hex, None)
        else:
            aad = _aad(table, row_id, field, self._key_hex, owner)
        return self._aead.decrypt(nonce, sealed, aad)

    def open_texts(
        self, table: str, field: str, items: Iterable[tuple[str, str, object]]
    ) -> list[str | None]:
        """Open many text fields of ``table``: each item is (row id, owner, blob).

        What :meth:`open` and UTF-8 decoding give for each, one call for a
        batch (a query's rows: the per-call layers cost as much as the
        cipher). None where that raises, or where a blob is not bytes or an
        owner not text: the caller opens that one alone to say why.
        """
        # _aad's format 2, its fixed parts joined once.
        head, middle = f"dashtam/v2\0{table}\0", f"\0{field}\0{self._key_hex}\0"
        decrypt = self._aead.decrypt
        key_id = self.key_id
        opened: list[str | None] = []
        for row_id, owner, blob in items:
            try:
                if (
                    type(blob) is bytes
                    and type(owner) is str
                    and len(blob) >= MIN_BLOB
                    and blob[0] == BLOB_VERSION
                    and blob[1:_NONCE_AT] == key_id
                ):
                    plain = decrypt(
                        blob[_NONCE_AT : _HEADER.size],
                        blob[_HEADER.size :],
                        f"{head}{row_id}{middle}{owner}".encode(),
                    )
                else:
                    opened.append(None)
                    continue
                opened.append(plain.decode("utf-8"))
            except (InvalidTag, UnicodeDecodeError):
                opened.append(None)
        return opened

    def key_check(self, vault_id: str) -> bytes:
        """Seal the fixed key-check value for this vault."""
        return self.seal("vault_meta", vault_id, "key_check", _KEY_CHECK_PLAINTEXT, owner=vault_id)

    def verify_key_check(self, vault_id: str, blob: bytes) -> bool:
        """Return whether ``blob`` is this key's check value for this vault (either format)."""
        try:
            opened = self.open(
                "vault_meta", vault_id, "key_check", blob, owner=vault_id, legacy=True
            )
        except (InvalidTag, BlobFormatError):
            return False
        return opened == _KEY_CHECK_PLAINTEXT


def wrap_key(  # noqa: PLR0913 - the scrypt parameters travel with the file
    key: bytes, passphrase: str, *, salt: bytes, n: int, r: int, p: int
) -> bytes:
    """Encrypt ``key`` under a key derived from ``passphrase`` with scrypt."""
    kek = _scrypt(passphrase, salt=salt, n=n, r=r, p=p)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, key, b"dashtam key file v1")


def unwrap_key(  # noqa: PLR0913 - same
    wrapped: bytes, passphrase: str, *, salt: bytes, n: int, r: int, p: int
) -> bytes:
    """Decrypt a wrapped key; raise ``InvalidTag`` when the passphrase is wrong."""
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise InvalidTag
    kek = _scrypt(passphrase, salt=salt, n=n, r=r, p=p)
    return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"dashtam key file v1")


def _scrypt(passphrase: str, *, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
