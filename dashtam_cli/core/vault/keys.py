"""Where the master key lives: the environment, the OS keyring, or a passphrase-wrapped file.

Resolution order, for a vault being opened:

1. ``DASHTAM_MASTER_KEY`` (base64url of 32 bytes, padding optional), when set.
   It always wins, for CI and headless servers.
2. The store the vault was created with, recorded (in plain text) in the vault:
   the OS keyring (service ``dashtam``, one entry per vault id), or the
   passphrase-wrapped key file next to the vault.
3. For a new vault: the store asked for (``--key-store`` or the ``key_store``
   setting), the OS keyring by default.

Nothing ever falls back to storing a key in plain text; a keyring backend that
would (keyrings.alt's file backends) or that stores nothing (null, fail) is
refused, as is any backend not on the list below.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.threads import in_daemon_thread
from dashtam_cli.core.vault import crypto
from dashtam_cli.core.vault.errors import (
    KEY_OPTIONS_HINT,
    KeyringTimeout,
    KeyringUnavailable,
    NoKeySource,
    VaultError,
    WeakPassphrase,
    WrongPassphrase,
)
from dashtam_cli.core.vault.files import write_private_file

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

__all__ = [
    "KEYRING_SERVICE",
    "EnvKeySource",
    "KeySource",
    "KeyringKeySource",
    "PassphraseKeySource",
    "decode_env_key",
    "trust_keyring_backend",
    "vetted_keyring_backend",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

KEYRING_SERVICE: Final = "dashtam"
ENV_KEY: Final = "DASHTAM_MASTER_KEY"
ENV_PASSPHRASE: Final = "DASHTAM_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
ENV_NEW_PASSPHRASE: Final = "DASHTAM_NEW_PASSPHRASE"  # noqa: S105 - a variable name
# The shortest passphrase accepted for a new key file, unless the user says
# otherwise (`--weak-passphrase`); scrypt slows guessing, it cannot make up for
# a short one.
MIN_PASSPHRASE_LENGTH: Final = 12
# Tries at a terminal prompt for a wrong (or, when setting one, too short) passphrase.
PROMPT_ATTEMPTS: Final = 3

# Backends that keep secrets encrypted at rest under the user's login.
_TRUSTED_BACKENDS: set[str] = {
    "keyring.backends.SecretService.Keyring",
    "keyring.backends.libsecret.Keyring",
    "keyring.backends.kwallet.DBusKeyring",
    "keyring.backends.kwallet.DBusKeyringKWallet4",
    "keyring.backends.macOS.Keyring",
    "keyring.backends.Windows.WinVaultKeyring",
}


def trust_keyring_backend(backend_class: type) -> None:
    """Allow one more keyring backend class (tests use this for an in-memory backend).

    This is deliberately a call in Python, not a setting: nothing a user can
    put in the environment or the config file widens the list.
    """
    _TRUSTED_BACKENDS.add(_qualname(backend_class))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


async def call_blocking(fn: Callable[[], T], *, timeout: float, what: str) -> T:  # noqa: ASYNC109
    """Run a blocking call in a daemon thread and wait at most ``timeout`` seconds."""
    future = in_daemon_thread(fn, name=what)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise KeyringTimeout(
            f"the OS keyring did not answer within {timeout:g} s ({what})",
            hint=(
                "unlock your keyring (log in to the desktop session, or run "
                "`gnome-keyring-daemon --unlock`), raise DASHTAM_KEYRING_TIMEOUT, or "
                "set DASHTAM_MASTER_KEY"
            ),
        ) from None


def decode_env_key(raw: str) -> bytes:
    """Decode ``DASHTAM_MASTER_KEY``: base64url of exactly 32 bytes, ``=`` padding optional."""
    text = raw.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != crypto.KEY_BYTES or not text or "=" in text.rstrip("="):
        raise NoKeySource(
            f"{ENV_KEY} is not a base64url-encoded 32-byte key",
            hint=(
                'make one with: python3 -c "import base64,os; '
                'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
            ),
        )
    return key


class KeySource(Protocol):
    """A place that holds a vault's master key, and a pending one during rotation."""

    kind: str
    description: str
    rotatable: bool

    async def load(self) -> bytes | None:
        """Return the key, or None when this source has none."""

    async def save(self, key: bytes) -> None:
        """Store ``key`` as the vault's key."""

    async def load_pending(self) -> bytes | None:
        """Return the key of an unfinished rotation, if any."""

    async def save_pending(self, key: bytes) -> None:
        """Store the next key, before the vault is re-sealed with it."""

    async def promote_pending(self) -> None:
        """Make the pending key the key (after the re-sealed vault is committed)."""

    async def discard_pending(self) -> None:
        """Forget a pending key whose rotation never committed."""

    async def delete(self) -> None:
        """Remove the key and any pending key."""

    def backend_name(self) -> str | None:
        """Name the keyring backend, for sources that use one."""


class EnvKeySource:
    """The key given in ``DASHTAM_MASTER_KEY``; read-only."""

    kind = "env"
    description = f"environment variable {ENV_KEY}"
    rotatable = False

    def __init__(self, raw: str) -> None:
        """Decode the key now, so a malformed value fails before anything opens."""
        self._key = decode_env_key(raw)
        register_secret(raw.strip())

    async def load(self) -> bytes | None:
        """Return the key."""
        return self._key

    async def save(self, key: bytes) -> None:
        """Accept only the key it already holds (a new vault adopts it)."""
        if key != self._key:
            raise VaultError(f"cannot store a new key in {ENV_KEY}")

    async def load_pending(self) -> bytes | None:
        """There is never a pending key in the environment."""
        return None

    async def save_pending(self, key: bytes) -> None:  # noqa: ARG002 - protocol signature
        """Refuse: the environment cannot be rewritten from here."""
        raise VaultError(
            f"cannot rotate a key that comes from {ENV_KEY}",
            hint=f"unset {ENV_KEY} to rotate the key kept in the keyring or key file",
        )

    async def promote_pending(self) -> None:
        """Nothing to do."""

    async def discard_pending(self) -> None:
        """Nothing to do."""

    async def delete(self) -> None:
        """Nothing to delete: the variable belongs to the user."""

    def backend_name(self) -> str | None:
        """No keyring backend."""
        return None


class KeyringKeySource:
    """The key in the OS keyring: service ``dashtam``, user ``vault-<vault id>``."""

    kind = "keyring"
    rotatable = True

    def __init__(self, vault_id: str, *, timeout: float) -> None:
        """Address the entry of one vault; ``timeout`` bounds every keyring call."""
        self._user = f"vault-{vault_id}"
        self._pending_user = f"vault-{vault_id}-pending"
        self._timeout = timeout
        self._backend: Any = None
        self.description = "OS keyring"

    async def _keyring(self) -> Any:  # noqa: ANN401 - keyring has no type hints
        if self._backend is None:

            def pick() -> Any:  # noqa: ANN401
                from dashtam_cli.core.vault.keyring_backend import load_backend

                return load_backend()

            backend = await call_blocking(pick, timeout=self._timeout, what="keyring start-up")
            _vet(backend)
            self._backend = backend
            self.description = f"OS keyring ({_qualname(type(backend))})"
        return self._backend

    def backend_name(self) -> str | None:
        """The backend class in use, once it has been looked up."""
        return None if self._backend is None else _qualname(type(self._backend))

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        backend = await self._keyring()
        try:
            return await call_blocking(lambda: fn(backend), timeout=self._timeout, what=what)
        except KeyringTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - backends raise D-Bus, OS and their own errors
            raise KeyringUnavailable(
                f"the OS keyring failed to {what}: {type(exc).__name__}: {exc}",
                hint="unlock the keyring and retry, or set DASHTAM_MASTER_KEY",
            ) from None

    async def _get(self, user: str) -> bytes | None:
        value = await self._call(
            "read the master key", lambda b: b.get_password(KEYRING_SERVICE, user)
        )
        if value is None:
            return None
        register_secret(value)
        try:
            return decode_env_key(value)
        except NoKeySource:
            raise VaultError(
                f"the keyring entry {KEYRING_SERVICE}/{user} does not hold a valid key",
                hint="restore the entry from a backup of your keyring",
            ) from None

    async def _set(self, user: str, key: bytes) -> None:
        encoded = base64.urlsafe_b64encode(key).decode()
        register_secret(encoded)
        await self._call(
            "store the master key", lambda b: b.set_password(KEYRING_SERVICE, user, encoded)
        )

    async def _delete(self, user: str) -> None:
        def delete(backend: Any) -> None:  # noqa: ANN401
            import keyring.errors

            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                backend.delete_password(KEYRING_SERVICE, user)

        await self._call("delete the master key", delete)

    async def load(self) -> bytes | None:
        """Return the key from the keyring, or None."""
        return await self._get(self._user)

    async def save(self, key: bytes) -> None:
        """Store the key, then read it back: a keyring that drops it must not go unnoticed."""
        await self._set(self._user, key)
        if await self._get(self._user) != key:
            raise KeyringUnavailable(
                "the OS keyring did not keep the master key (read-back differs)",
                hint=KEY_OPTIONS_HINT,
            )

    async def load_pending(self) -> bytes | None:
        """Return the pending key, or None."""
        return await self._get(self._pending_user)

    async def save_pending(self, key: bytes) -> None:
        """Store the next key under the pending entry."""
        await self._set(self._pending_user, key)
        if await self._get(self._pending_user) != key:
            raise KeyringUnavailable(
                "the OS keyring did not keep the new key", hint=KEY_OPTIONS_HINT
            )

    async def promote_pending(self) -> None:
        """Copy the pending key over the key, then delete the pending entry."""
        pending = await self._get(self._pending_user)
        if pending is not None:
            await self.save(pending)
            await self._delete(self._pending_user)

    async def discard_pending(self) -> None:
        """Delete the pending entry."""
        await self._delete(self._pending_user)

    async def delete(self) -> None:
        """Delete both entries."""
        await self._delete(self._pending_user)
        await self._delete(self._user)


async def vetted_keyring_backend(*, timeout: float) -> str:  # noqa: ASYNC109 - bounds a thread
    """Name the keyring backend in use, or raise KeyringUnavailable naming a refused one."""

    def pick() -> Any:  # noqa: ANN401
        from dashtam_cli.core.vault.keyring_backend import load_backend

        return load_backend()

    backend = await call_blocking(pick, timeout=timeout, what="keyring start-up")
    _vet(backend)
    return _qualname(type(backend))


def _vet(backend: Any) -> None:  # noqa: ANN401
    """Refuse keyring backends that do not protect the secret."""
    name = _qualname(type(backend))
    members = getattr(backend, "backends", None)
    if name == "keyring.backends.chainer.ChainerBackend" and members:
        untrusted = [
            _qualname(type(b)) for b in members if _qualname(type(b)) not in _TRUSTED_BACKENDS
        ]
        if not untrusted:
            return
        name = ", ".join(untrusted)
    elif name in _TRUSTED_BACKENDS:
        return
    if name in {"keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"}:
        message = "no OS keyring service is available"
    elif name.startswith("keyrings.alt."):
        message = (
            f"refusing keyring backend {name}: it keeps secrets in a plain or weakly protected file"
        )
    else:
        message = f"refusing keyring backend {name}: dashtam cannot vouch that it protects secrets"
    raise KeyringUnavailable(message, hint=KEY_OPTIONS_HINT)


_KDF: Final = {"n": 2**17, "r": 8, "p": 1}
# What a key file may ask of scrypt. The parameters need no signature: they
# feed the derivation, so a changed one derives another key and fails the
# AES-GCM tag. The bounds keep a damaged or hostile file from asking for
# terabytes of memory (scrypt takes 128 * n * r bytes) or a crash.
_KDF_MIN_LOG2_N: Final = 14
_KDF_MAX_LOG2_N: Final = 22
_KDF_MAX_R: Final = 32
_KDF_MAX_P: Final = 16
_KDF_MAX_MEMORY: Final = 2 * 1024**3
_KEY_FILE_MAX_BYTES: Final = 64 * 1024
_SALT_BYTES: Final = 16


def _kdf_problem(params: Mapping[str, object], salt: bytes) -> str | None:
    """Say what is wrong with a key file's scrypt parameters, or None when they are sane."""
    values: dict[str, int] = {}
    for name, value in params.items():
        if type(value) is not int:
            return f"scrypt parameter {name} is not a whole number"
        values[name] = value
    n, r, p = values["n"], values["r"], values["p"]
    if n <= 0 or n & (n - 1) or not _KDF_MIN_LOG2_N <= n.bit_length() - 1 <= _KDF_MAX_LOG2_N:
        return (
            f"scrypt parameter n must be a power of two from 2^{_KDF_MIN_LOG2_N} "
            f"to 2^{_KDF_MAX_LOG2_N}"
        )
    if not 1 <= r <= _KDF_MAX_R or not 1 <= p <= _KDF_MAX_P:
        return f"scrypt parameters r and p must be 1 to {_KDF_MAX_R} and 1 to {_KDF_MAX_P}"
    if 128 * n * r > _KDF_MAX_MEMORY:
        return "scrypt parameters ask for more than 2 GiB of memory"
    if len(salt) != _SALT_BYTES:
        return f"the salt is {len(salt)} bytes, not {_SALT_BYTES}"
    return None


def _read_small(path: Path) -> str:
    """Read a key file: a real file (no link), of a sane size, in UTF-8."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as file:
        data = file.read(_KEY_FILE_MAX_BYTES + 1)
    if len(data) > _KEY_FILE_MAX_BYTES:
        msg = f"larger than {_KEY_FILE_MAX_BYTES} bytes"
        raise ValueError(msg)
    return data.decode("utf-8")


class PassphraseKeySource:
    """The key wrapped by a passphrase (scrypt, AES-256-GCM) in a 0600 file beside the vault."""

    kind = "passphrase"
    rotatable = True

    def __init__(  # noqa: PLR0913 - keyword-only settings of one key file
        self,
        path: Path,
        *,
        environ: Mapping[str, str],
        prompt: Callable[[bool], str] | None,
        timeout: float = 600.0,
        kdf: Mapping[str, int] | None = None,
        allow_weak: bool = False,
    ) -> None:
        """Use the key file at ``path``; the passphrase comes from the environment or ``prompt``.

        ``prompt(confirm)`` is called (in a thread) only when ``DASHTAM_PASSPHRASE``
        is unset; ``confirm`` asks the caller to have the user type it twice.
        A wrong passphrase is asked again, up to three tries, only at a prompt.
        ``allow_weak`` accepts a new passphrase shorter than 12 characters.
        """
        self.path = path
        self.pending_path = path.with_name(path.name + ".pending")
        self.description = f"passphrase-protected key file {path}"
        self._environ = environ
        self._prompt = prompt
        self._timeout = timeout
        self._kdf = dict(kdf or _KDF)
        self._allow_weak = allow_weak
        self._passphrase: str | None = None
        self._from_prompt = False

    def backend_name(self) -> str | None:
        """No keyring backend."""
        return None

    async def _ask(
        self,
        *,
        confirm: bool,
        variable: str = ENV_PASSPHRASE,
        prompt: Callable[[bool], str] | None = None,
    ) -> str:
        """Prompt for a passphrase (in a daemon thread, with the timeout)."""
        prompt = prompt or self._prompt
        if prompt is None:
            raise NoKeySource(
                "the vault's key file needs a passphrase and none was given",
                hint=f"set {variable} or run dashtam from a terminal",
            )
        # A daemon thread: a prompt nobody answers must not hold the process at
        # exit once its timeout has been reported.
        try:
            return await asyncio.wait_for(
                in_daemon_thread(lambda: prompt(confirm), name="passphrase prompt"),
                self._timeout,
            )
        except TimeoutError:
            raise NoKeySource(
                f"no passphrase was typed within {self._timeout:g} s",
                hint=f"run the command again and type it, or set {variable}",
            ) from None

    def _weakness(self, value: str, *, variable: str) -> WeakPassphrase | None:
        """The refusal of a new passphrase that is too short, or None."""
        if self._allow_weak or len(value) >= MIN_PASSPHRASE_LENGTH:
            return None
        return WeakPassphrase(
            f"a new passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long "
            f"(the one given has {len(value)})",
            hint=f"choose a longer one (in {variable} or at the prompt), or pass "
            "--weak-passphrase to accept it anyway",
        )

    async def new_passphrase(
        self, *, variable: str = ENV_PASSPHRASE, prompt: Callable[[bool], str] | None = None
    ) -> str:
        """Get a passphrase to set: from ``variable`` or the prompt (typed twice), long enough.

        At a prompt, a passphrase that is too short is asked again (three tries).
        """
        value = self._environ.get(variable)
        if value:
            problem = self._weakness(value, variable=variable)
            if problem:
                raise problem
        else:
            for attempt in range(1, PROMPT_ATTEMPTS + 1):
                value = await self._ask(confirm=True, variable=variable, prompt=prompt)
                if not value:
                    break
                problem = self._weakness(value, variable=variable)
                if problem is None:
                    break
                if attempt == PROMPT_ATTEMPTS:
                    raise problem
                log.warning("%s; try again", problem.message)
        if not value:
            raise NoKeySource("an empty passphrase protects nothing", hint="choose a passphrase")
        register_secret(value)
        return value

    async def _get_passphrase(self, *, confirm: bool) -> str:
        if self._passphrase is not None:
            return self._passphrase
        if confirm:
            value = await self.new_passphrase()
        else:
            value = self._environ.get(ENV_PASSPHRASE) or ""
            self._from_prompt = not value
            if not value:
                value = await self._ask(confirm=False)
        if not value:
            raise NoKeySource("an empty passphrase protects nothing", hint="choose a passphrase")
        register_secret(value)
        self._passphrase = value
        return value

    async def _read(self, path: Path) -> bytes | None:
        damaged = "restore it from a backup; without it the vault cannot be opened"
        try:
            doc = json.loads(_read_small(path))
            params = {k: doc["kdf"][k] for k in ("n", "r", "p")}
            salt = base64.b64decode(doc["salt"], validate=True)
            wrapped = base64.b64decode(doc["wrapped"], validate=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise VaultError(
                f"the key file {path} is unreadable or damaged ({type(exc).__name__})",
                hint=damaged,
            ) from None
        problem = _kdf_problem(params, salt)
        if problem:
            raise VaultError(f"the key file {path} is damaged: {problem}", hint=damaged)
        from cryptography.exceptions import InvalidTag

        for attempt in range(1, PROMPT_ATTEMPTS + 1):
            passphrase = await self._get_passphrase(confirm=False)
            try:
                return await asyncio.to_thread(
                    crypto.unwrap_key, wrapped, passphrase, salt=salt, **params
                )
            except InvalidTag:
                self._passphrase = None
                # Only a person at a prompt gets another try; a wrong
                # DASHTAM_PASSPHRASE stays wrong however often it is read.
                if not self._from_prompt or attempt == PROMPT_ATTEMPTS:
                    break
                log.warning("the passphrase does not unlock %s; try again", path)
        tries = f" ({PROMPT_ATTEMPTS} tries)" if self._from_prompt else ""
        raise WrongPassphrase(
            f"the passphrase does not unlock {path}{tries}",
            hint=f"check {ENV_PASSPHRASE} or type it again",
        )

    async def _write(self, path: Path, key: bytes) -> None:
        passphrase = await self._get_passphrase(confirm=not self.path.exists())
        salt = os.urandom(16)
        wrapped = await asyncio.to_thread(crypto.wrap_key, key, passphrase, salt=salt, **self._kdf)
        doc = {
            "format": "dashtam-key-file",
            "version": 1,
            "kdf": {"name": "scrypt", **self._kdf},
            "salt": base64.b64encode(salt).decode(),
            "cipher": "AES-256-GCM",
            "wrapped": base64.b64encode(wrapped).decode(),
        }
        write_private_file(path, (json.dumps(doc, indent=2) + "\n").encode())

    async def load(self) -> bytes | None:
        """Unwrap the key file, or None when there is none."""
        return await self._read(self.path)

    async def change_passphrase(
        self,
        key: bytes,
        *,
        variable: str = ENV_NEW_PASSPHRASE,
        prompt: Callable[[bool], str] | None = None,
    ) -> None:
        """Re-wrap ``key`` under a new passphrase, replacing the key file atomically.

        The new passphrase comes from ``variable`` or the prompt (typed twice)
        (``prompt``, else this source's prompt) and is held to the same length
        rule as a first one. The file is
        written beside the old one and renamed over it, then read back with
        the new passphrase: a crash leaves the old file or the new one, whole.
        """
        passphrase = await self.new_passphrase(variable=variable, prompt=prompt)
        self._passphrase = passphrase
        self._from_prompt = False
        await self._write(self.path, key)
        if await self._read(self.path) != key:  # pragma: no cover - write_private_file is atomic
            raise VaultError(
                f"the key file {self.path} did not read back after the change",
                hint="restore it from your backup",
            )

    async def save(self, key: bytes) -> None:
        """Write the key file (atomically, 0600)."""
        await self._write(self.path, key)

    async def load_pending(self) -> bytes | None:
        """Unwrap the pending key file, if any."""
        return await self._read(self.pending_path)

    async def save_pending(self, key: bytes) -> None:
        """Write the pending key file."""
        await self._write(self.pending_path, key)

    async def promote_pending(self) -> None:
        """Atomically replace the key file with the pending one."""
        if self.pending_path.exists():
            self.pending_path.replace(self.path)

    async def discard_pending(self) -> None:
        """Remove the pending key file."""
        self.pending_path.unlink(missing_ok=True)

    async def delete(self) -> None:
        """Remove both key files."""
        self.pending_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


async def keyring_text(user: str, *, timeout: float) -> str | None:  # noqa: ASYNC109 - the keyring's bound
    """A text entry of dashtam's in the OS keyring (service ``dashtam``), or None."""
    source = KeyringKeySource("", timeout=timeout)
    value: str | None = await source._call(  # noqa: SLF001 - this module's own class
        "read a password", lambda b: b.get_password(KEYRING_SERVICE, user)
    )
    return value


async def store_keyring_text(user: str, value: str, *, timeout: float) -> str:  # noqa: ASYNC109
    """Store a text entry of dashtam's in the OS keyring; returns the keyring's description."""
    source = KeyringKeySource("", timeout=timeout)
    await source._call(  # noqa: SLF001 - this module's own class
        "store a password", lambda b: b.set_password(KEYRING_SERVICE, user, value)
    )
    if await keyring_text(user, timeout=timeout) != value:
        raise KeyringUnavailable(
            "the OS keyring did not keep the password", hint="unlock the keyring and retry"
        )
    return source.description
