"""Passphrases of the key file: a minimum length, three tries at a prompt, and changing one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from vault_seed import seed

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import keys, locks, service
from dashtam_cli.core.vault.errors import NoKeySource, WeakPassphrase, WrongPassphrase
from dashtam_cli.core.vault.keys import PassphraseKeySource
from dashtam_cli.core.vault.vault import OpenOptions, open_vault


@pytest.fixture(autouse=True)
def cheap_key_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key files written here use scrypt's smallest accepted cost (2^14, not 2^17).

    What is tested is the passphrase rules, not the KDF's cost; a file records
    its own parameters, so the dashtam processes started here read it as written.
    """
    monkeypatch.setattr(keys, "_KDF", {"n": 2**14, "r": 8, "p": 1})


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from conftest import CliCall

    from dashtam_cli.core.vault.vault import Vault

DASHTAM = Path(sys.executable).parent / "dashtam"
CHEAP = {"n": 2**14, "r": 8, "p": 1}
GOOD = "twelve chars"  # exactly the minimum
SHORT = "eleven char"
OTHER = "another long passphrase"
KEY = bytes(range(32))


def _prompts(answers: list[str], asked: list[bool]) -> Callable[[bool], str]:
    """A prompt that gives ``answers`` in turn and records each ``confirm`` it was called with."""
    queue = list(answers)

    def prompt(confirm: bool) -> str:
        asked.append(confirm)
        return queue.pop(0)

    return prompt


def _source(
    path: Path,
    *,
    env: dict[str, str] | None = None,
    prompt: Callable[[bool], str] | None = None,
    allow_weak: bool = False,
) -> PassphraseKeySource:
    return PassphraseKeySource(
        path, environ=env or {}, prompt=prompt, kdf=CHEAP, allow_weak=allow_weak
    )


# a minimum length for new passphrases


def test_the_rule_is_twelve_characters(tmp_path: Path) -> None:
    """DASHTAM_PASSPHRASE of 11 characters is refused for a new key file; 12 are accepted."""
    short = tmp_path / "short.key"
    with pytest.raises(WeakPassphrase, match="at least 12 characters") as caught:
        asyncio.run(_source(short, env={"DASHTAM_PASSPHRASE": SHORT}).save(KEY))
    assert "--weak-passphrase" in (caught.value.hint or "")
    assert SHORT not in caught.value.message
    assert not short.exists()
    good = tmp_path / "good.key"
    asyncio.run(_source(good, env={"DASHTAM_PASSPHRASE": GOOD}).save(KEY))
    assert asyncio.run(_source(good, env={"DASHTAM_PASSPHRASE": GOOD}).load()) == KEY


def test_weak_passphrases_are_accepted_when_asked_for(tmp_path: Path) -> None:
    """With ``allow_weak`` (`--weak-passphrase`), a short passphrase makes a key file."""
    path = tmp_path / "vault.key"
    asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": "short"}, allow_weak=True).save(KEY))
    assert asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": "short"}).load()) == KEY


def test_an_existing_short_passphrase_still_unlocks(tmp_path: Path) -> None:
    """The rule is for new passphrases: a key file made with a short one still opens."""
    path = tmp_path / "vault.key"
    asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": "short"}, allow_weak=True).save(KEY))
    assert asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": "short"}).load()) == KEY


def test_a_short_passphrase_at_the_prompt_is_asked_again(tmp_path: Path) -> None:
    """At a prompt, a short new passphrase is asked again (typed twice each time)."""
    asked: list[bool] = []
    path = tmp_path / "vault.key"
    asyncio.run(_source(path, prompt=_prompts([SHORT, GOOD], asked)).save(KEY))
    assert asked == [True, True]
    assert asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": GOOD}).load()) == KEY


def test_three_short_passphrases_at_the_prompt_are_refused(tmp_path: Path) -> None:
    """After three short answers the creation stops with the rule, and writes nothing."""
    asked: list[bool] = []
    path = tmp_path / "vault.key"
    with pytest.raises(WeakPassphrase):
        asyncio.run(_source(path, prompt=_prompts([SHORT] * 5, asked)).save(KEY))
    assert len(asked) == 3
    assert not path.exists()


def test_a_new_vault_is_held_to_the_rule(isolated_env: Path) -> None:
    """`open_vault(create=True)` with a short DASHTAM_PASSPHRASE is refused and leaves no vault."""
    options = OpenOptions(
        create=True, key_store="passphrase", environ={"DASHTAM_PASSPHRASE": SHORT}
    )

    async def create() -> None:
        async with open_vault(load_settings(), options):
            pass

    with pytest.raises(WeakPassphrase):
        asyncio.run(create())
    assert list((isolated_env / "data").glob("vault.s*")) == []
    assert not (isolated_env / "data" / "vault.key").exists()


# three tries at a prompt


def _written(tmp_path: Path) -> Path:
    path = tmp_path / "vault.key"
    asyncio.run(_source(path, env={"DASHTAM_PASSPHRASE": GOOD}).save(KEY))
    return path


def test_a_wrong_passphrase_at_the_prompt_gets_three_tries(tmp_path: Path) -> None:
    """Wrong, wrong, right at the prompt unlocks the key."""
    path = _written(tmp_path)
    asked: list[bool] = []
    assert asyncio.run(_source(path, prompt=_prompts(["x1", "x2", GOOD], asked)).load()) == KEY
    assert asked == [False, False, False]


def test_three_wrong_passphrases_at_the_prompt_fail(tmp_path: Path) -> None:
    """A third wrong answer ends it: WrongPassphrase, and no fourth prompt."""
    path = _written(tmp_path)
    asked: list[bool] = []
    with pytest.raises(WrongPassphrase, match="3 tries"):
        asyncio.run(_source(path, prompt=_prompts(["x1", "x2", "x3", GOOD], asked)).load())
    assert len(asked) == 3


def test_a_wrong_environment_passphrase_is_tried_once(tmp_path: Path) -> None:
    """A wrong DASHTAM_PASSPHRASE fails at once; the prompt is never used in its place."""
    path = _written(tmp_path)
    asked: list[bool] = []
    source = _source(path, env={"DASHTAM_PASSPHRASE": "wrong"}, prompt=_prompts([GOOD], asked))
    with pytest.raises(WrongPassphrase) as caught:
        asyncio.run(source.load())
    assert asked == []
    assert "tries" not in caught.value.message


# change-passphrase


@pytest.fixture
def passphrase_vault(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vault whose key is in a key file under GOOD, with rows in it; returns the key file."""
    monkeypatch.setenv("DASHTAM_PASSPHRASE", GOOD)

    async def make() -> None:
        options = OpenOptions(create=True, key_store="passphrase")
        async with open_vault(load_settings(), options) as vault:
            await seed(vault, transactions=3, positions_per_account=1)

    asyncio.run(make())
    return isolated_env / "data" / "vault.key"


def _open_with(passphrase: str, job: Callable[[Vault], Any]) -> Any:
    async def run() -> Any:
        options = OpenOptions(environ={"DASHTAM_PASSPHRASE": passphrase})
        async with open_vault(load_settings(), options) as vault:
            return await job(vault)

    return asyncio.run(run())


async def _counts_and_key(vault: Vault) -> tuple[dict[str, int], str]:
    return await vault.counts(), vault.key_id


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_change_passphrase_rewraps_the_same_key(
    cli: CliCall, passphrase_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new passphrase opens the vault with the same key and rows; the old one no longer does."""
    before = _open_with(GOOD, _counts_and_key)
    vault_file = passphrase_vault.with_name("vault.sqlite3")
    data_before = vault_file.read_bytes()
    result = cli(
        "vault",
        "change-passphrase",
        "--format",
        "json",
        env={"DASHTAM_PASSPHRASE": GOOD, "DASHTAM_NEW_PASSPHRASE": OTHER},
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record == {"key_file": str(passphrase_vault), "key_id": before[1]}
    assert "changed the passphrase" in result.stderr
    for secret in (GOOD, OTHER):
        assert secret not in result.stdout + result.stderr
    assert vault_file.read_bytes() == data_before
    assert _open_with(OTHER, _counts_and_key) == before
    monkeypatch.delenv("DASHTAM_PASSPHRASE")
    with pytest.raises(WrongPassphrase):
        _open_with(GOOD, _counts_and_key)
    assert oct(passphrase_vault.stat().st_mode & 0o777) == "0o600"
    assert list(passphrase_vault.parent.glob(".vault.key.*")) == []


@pytest.mark.sqlite_only  # reaches into the local vault file itself
def test_change_passphrase_holds_the_vault_alone(
    passphrase_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change runs under the vault's exclusive lock, like a key rotation."""
    held: list[str] = []
    exclusive = locks.exclusive_use

    @contextlib.asynccontextmanager
    async def spy(vault_file: Path, **kwargs: float) -> AsyncIterator[None]:
        async with exclusive(vault_file, **kwargs):
            held.append("exclusive")
            yield
            held.append("released")

    monkeypatch.setattr(locks, "exclusive_use", spy)
    monkeypatch.setenv("DASHTAM_NEW_PASSPHRASE", OTHER)
    asyncio.run(service.change_passphrase(load_settings(), OpenOptions(), new_prompt=None))
    assert held == ["exclusive", "released"]
    env = {"DASHTAM_PASSPHRASE": OTHER}
    assert asyncio.run(_source(passphrase_vault, env=env).load()) is not None


def test_a_short_new_passphrase_changes_nothing(cli: CliCall, passphrase_vault: Path) -> None:
    """A new passphrase under 12 characters is refused (exit 1) and the key file is as it was."""
    before = passphrase_vault.read_bytes()
    env = {"DASHTAM_PASSPHRASE": GOOD, "DASHTAM_NEW_PASSPHRASE": SHORT}
    result = cli("vault", "change-passphrase", env=env)
    assert result.exit_code == 1
    assert "at least 12 characters" in result.stderr
    assert passphrase_vault.read_bytes() == before
    weak = cli("vault", "change-passphrase", "--weak-passphrase", env=env)
    assert weak.exit_code == 0, weak.stderr
    assert _open_with(SHORT, _counts_and_key)[1]


def test_a_wrong_old_passphrase_changes_nothing(cli: CliCall, passphrase_vault: Path) -> None:
    """The current passphrase must unlock the key file first."""
    before = passphrase_vault.read_bytes()
    env = {"DASHTAM_PASSPHRASE": "not the passphrase", "DASHTAM_NEW_PASSPHRASE": OTHER}
    result = cli("vault", "change-passphrase", env=env)
    assert result.exit_code == 1
    assert "does not unlock" in result.stderr
    assert passphrase_vault.read_bytes() == before


def test_change_passphrase_is_refused_for_a_keyring_vault(cli: CliCall, isolated_env: Path) -> None:
    """A vault whose key is in the keyring has no passphrase: one clear line, exit 1."""
    assert cli("vault", "init").exit_code == 0
    result = cli("vault", "change-passphrase", env={"DASHTAM_NEW_PASSPHRASE": OTHER})
    assert result.exit_code == 1
    assert "kept in the OS keyring, not under a passphrase" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (isolated_env / "data" / "vault.key").exists()


@pytest.mark.usefixtures("master_key")
def test_change_passphrase_is_refused_with_an_environment_key(cli: CliCall) -> None:
    """With DASHTAM_MASTER_KEY set there is no passphrase to change."""
    assert cli("vault", "init").exit_code == 0
    result = cli("vault", "change-passphrase", env={"DASHTAM_NEW_PASSPHRASE": OTHER})
    assert result.exit_code == 1
    assert "comes from DASHTAM_MASTER_KEY" in result.stderr


def test_init_refuses_a_short_passphrase_unless_told(cli: CliCall, isolated_env: Path) -> None:
    """`vault init --key-store passphrase` holds DASHTAM_PASSPHRASE to the rule."""
    env = {"DASHTAM_PASSPHRASE": SHORT}
    refused = cli("vault", "init", "--key-store", "passphrase", env=env)
    assert refused.exit_code == 1
    assert "at least 12 characters" in refused.stderr
    assert not (isolated_env / "data" / "vault.sqlite3").exists()
    accepted = cli("vault", "init", "--key-store", "passphrase", "--weak-passphrase", env=env)
    assert accepted.exit_code == 0, accepted.stderr


# on a real terminal


class Terminal:
    """A dashtam subprocess on a pseudo-terminal (stdin and stderr), stdout a pipe."""

    def __init__(self, args: list[str], home: Path) -> None:
        """Start ``dashtam ARGS`` without a controlling terminal, so prompts use the pty."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home.parent / "user"),
            "LANG": "C.UTF-8",
            "DASHTAM_HOME": str(home),
        }
        for name in ("PYTHONPATH", "DASHTAM_DATABASE_URL"):  # the second: the shared-vault run
            if name in os.environ:
                env[name] = os.environ[name]
        self.controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [str(DASHTAM), *args],
            env=env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=terminal,
            start_new_session=True,
        )
        os.close(terminal)
        self.seen = b""

    def answer(self, prompt: bytes, text: str) -> None:
        """Wait for ``prompt`` (counted from the last answer) and type ``text``.

        The prompt ends with the space getpass writes once echo is off and the
        terminal's input flushed: typing earlier would be thrown away.
        """
        deadline = time.monotonic() + 30
        while prompt not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.controller], [], [], 0.5)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.controller, 1024)
        assert prompt in self.seen, self.seen
        self.seen = self.seen[self.seen.index(prompt) + len(prompt) :]
        os.write(self.controller, text.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        """Wait for the exit; return the code and what the terminal showed since the last answer."""
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        code = self.process.wait(30)
        with contextlib.suppress(OSError):
            while chunk := os.read(self.controller, 4096):
                self.seen += chunk
        os.close(self.controller)
        self.process.stdout.close()
        return code, stdout.decode() + self.seen.decode(errors="replace")


def test_change_passphrase_at_a_terminal_asks_the_new_one_twice(passphrase_vault: Path) -> None:
    """Old passphrase, then the new one twice at the prompt: the vault opens with the new one."""
    terminal = Terminal(["vault", "change-passphrase"], passphrase_vault.parent.parent)
    try:
        terminal.answer(b"Vault passphrase: ", GOOD)
        terminal.answer(b"New vault passphrase: ", OTHER)
        terminal.answer(b"Repeat for confirmation: ", OTHER)
        code, shown = terminal.finish()
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    assert code == 0, shown
    assert "changed the passphrase" in shown
    assert _open_with(OTHER, _counts_and_key)[1]


def test_a_terminal_gets_three_tries_at_the_passphrase(passphrase_vault: Path) -> None:
    """`vault status` at a terminal: two wrong answers are asked again, the third opens it."""
    terminal = Terminal(["vault", "status", "--format", "json"], passphrase_vault.parent.parent)
    try:
        terminal.answer(b"Vault passphrase: ", "wrong one")
        terminal.answer(b"Vault passphrase: ", "wrong two")
        terminal.answer(b"Vault passphrase: ", GOOD)
        code, shown = terminal.finish()
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    assert code == 0, shown
    assert '"state": "ok"' in shown


def test_an_empty_prompt_answer_is_still_refused(tmp_path: Path) -> None:
    """An empty new passphrase at the prompt protects nothing and is refused."""
    asked: list[bool] = []
    with pytest.raises(NoKeySource, match="empty passphrase"):
        asyncio.run(_source(tmp_path / "vault.key", prompt=_prompts([""], asked)).save(KEY))
