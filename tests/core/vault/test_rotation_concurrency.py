"""Key rotation against other dashtam processes: nothing they do can lose or split the key.

Every process here is a real ``sys.executable`` child sharing the test's
vault. The key lives where a user's would: in a passphrase-protected key file
(the store of the reported loss, ``DASHTAM_PASSPHRASE`` crosses processes) or
in a keyring that every child reads from one file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import pytest
from fake_keyrings import FileKeyring
from vault_seed import Seeded, read_all, seed

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import keys
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS_DIR = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple, rotated"
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 120.0

# One script for every child: its first argument says what it does.
_CHILD = """
import asyncio
import json
import pathlib
import sys
import time
import uuid

tests_dir, keyring_file, mode, out = sys.argv[1:5]
extra = sys.argv[5:]
sys.path.insert(0, tests_dir)
if keyring_file != "-":
    import keyring
    from fake_keyrings import FileKeyring, trust_test_backends

    trust_test_backends()
    keyring.set_keyring(FileKeyring(keyring_file))

from vault_seed import read_all

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault import db, keys, schema
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

# Cheaper key files than a user's (the file records its own parameters, so
# the real CLI reads them as written); the KDF's cost is not what is tested.
keys._KDF = {"n": 2**14, "r": 8, "p": 1}


def pause(stage, count):
    # Rotate mode with a pause: stop half-way through the re-sealing, inside the
    # write transaction, until the test says go.
    reached, go, at = extra
    if stage == "resealed" and count >= int(at) and not pathlib.Path(reached).exists():
        pathlib.Path(reached).write_text(str(count))
        deadline = time.monotonic() + 60
        while not pathlib.Path(go).exists():
            if time.monotonic() > deadline:
                sys.exit("no go signal")
            time.sleep(0.01)


async def main():
    if mode == "rotate":
        async with open_vault(load_settings(), OpenOptions(exclusive=True)) as vault:
            result = await vault.rotate_key(on_progress=pause if extra else None)
            return {"old": result.old_key_id, "new": result.new_key_id}
    async with open_vault(load_settings()) as vault:
        if mode == "read":
            opened, _ = await read_all(vault)
            return {"opened": len(opened), "key_id": vault.key_id}
        if mode == "write":
            # What a fetch does: new rows, sealed with the key this opener holds.
            written = {}
            async with vault.writing() as conn:
                account = (await conn.exec_driver_sql("SELECT id FROM accounts LIMIT 1")).scalar()
                for _ in range(20):
                    row_id = str(uuid.uuid4())
                    plain = f"written by {out} {row_id}"
                    await conn.execute(
                        schema.transactions.insert().values(
                            id=row_id, account_id=account, occurred_at=db.utcnow_text(),
                            payload=vault.seal("transactions", row_id, "payload", plain, owner=account),
                            fetched_at=db.utcnow_text(),
                        )
                    )
                    written[row_id] = plain
            return {"written": written, "key_id": vault.key_id}
    raise SystemExit(f"unknown mode {mode}")


result = asyncio.run(main())
pathlib.Path(out).write_text(json.dumps(result))
"""


@dataclasses.dataclass
class Child:
    """One child process, its output file and its stderr."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def report(self) -> str:
        """What the child said, for a failure message."""
        return f"exit {self.proc.returncode}\n{self.err.read_text()}"

    def result(self) -> dict[str, object]:
        """Wait (bounded) for a clean exit and return what the child wrote."""
        try:
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a child did not finish in {EXIT_TIMEOUT_S} s")
        assert self.proc.returncode == 0, self.report()
        data = json.loads(self.out.read_text())
        assert isinstance(data, dict)
        return data


class Children:
    """Starts children running the script above; whatever still runs is killed at the end."""

    def __init__(self, tmp_path: Path, keyring_file: Path | None) -> None:
        """Write the script into ``tmp_path``."""
        self.tmp_path = tmp_path
        self.keyring_file = keyring_file
        self.script = tmp_path / "child.py"
        self.script.write_text(textwrap.dedent(_CHILD))
        self.started: list[Child] = []

    def start(self, mode: str, *extra: str) -> Child:
        """Start a child in ``mode`` (rotate, read or write)."""
        n = len(self.started)
        out, err = self.tmp_path / f"child-{n}.json", self.tmp_path / f"child-{n}.err"
        keyring_arg = str(self.keyring_file) if self.keyring_file else "-"
        args = [str(TESTS_DIR), keyring_arg, mode, str(out), *extra]
        return self._popen([sys.executable, str(self.script), *args], out, err)

    def start_cli(self, *args: str) -> Child:
        """Start the real ``dashtam`` command (its stdout is the output file)."""
        n = len(self.started)
        out, err = self.tmp_path / f"child-{n}.json", self.tmp_path / f"child-{n}.err"
        return self._popen([sys.executable, "-m", "dashtam_cli", *args], out, err)

    def _popen(self, argv: list[str], out: Path, err: Path) -> Child:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=dict(os.environ),
                cwd=self.tmp_path,
            )
        child = Child(proc, out, err)
        self.started.append(child)
        return child

    def kill_all(self) -> None:
        """SIGKILL every child still running, and reap them all."""
        for child in self.started:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(timeout=EXIT_TIMEOUT_S)


@pytest.fixture(params=["passphrase", "keyring"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path | None]:
    """The key store the vault is created with; yields the keyring file for keyring stores."""
    if request.param == "passphrase":
        monkeypatch.setenv("DASHTAM_PASSPHRASE", PASSPHRASE)
        # As the children do: cheap key files, whose cost is not what is tested.
        monkeypatch.setattr(keys, "_KDF", {"n": 2**14, "r": 8, "p": 1})
        yield None
        return
    keyring_file = tmp_path / "keyring.json"
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring(keyring_file))
    try:
        yield keyring_file
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def children(tmp_path: Path, store: Path | None) -> Iterator[Children]:
    """Child processes, killed and reaped when the test ends, whatever happened."""
    started = Children(tmp_path, store)
    try:
        yield started
    finally:
        started.kill_all()


def _create(store: Path | None, transactions: int) -> Seeded:
    """Create the vault in the parametrised store and fill it."""
    key_store = "passphrase" if store is None else "keyring"

    async def run() -> Seeded:
        options = OpenOptions(create=True, key_store=key_store)
        async with open_vault(load_settings(), options) as vault:
            return await seed(vault, transactions=transactions)

    return asyncio.run(run())


def _check_everything(seeded: Seeded, written: dict[str, str]) -> str:
    """Open the vault afresh: every sealed field opens, seeded and written alike; return the key id."""

    async def run() -> str:
        async with open_vault(load_settings()) as vault:
            opened, _ = await read_all(vault)
            for field, plain in seeded.plaintexts.items():
                assert opened[field] == plain, field
            for row_id, written_text in written.items():
                assert opened[("transactions", row_id, "payload")] == written_text.encode()
            expected = len(seeded.plaintexts) + len(written)
            assert len(opened) == expected
            return vault.key_id

    return asyncio.run(run())


def _wait_for(path: Path, child: Child) -> None:
    """Wait (bounded) for ``path`` to appear; fail with the child's stderr if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if child.proc.poll() is not None:
            pytest.fail(f"the child exited early: {child.report()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear in {START_TIMEOUT_S} s")
        time.sleep(0.01)


def _wait_for_text(child: Child, text: str) -> None:
    """Wait (bounded) until ``text`` is in the child's stderr; fail if it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in child.err.read_text():
        if child.proc.poll() is not None:
            pytest.fail(f"the child exited instead of waiting: {child.report()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the child did not say {text!r} in {START_TIMEOUT_S} s")
        time.sleep(0.02)


def _pending_gone(settings_home: Path, store: Path | None) -> bool:
    """Whether no pending key is left in the store."""
    if store is None:
        return not any(settings_home.rglob("vault.key.pending"))
    entries = json.loads(store.read_text())
    return not any(name.endswith("-pending") for name in entries)


def _check_tokens_status(cli: Child) -> None:
    """``tokens status`` read every connection's sealed tokens (seeded expired: exit 4, re-login)."""
    assert cli.proc.wait(timeout=EXIT_TIMEOUT_S) == 4, cli.report()
    statuses = json.loads(cli.out.read_text())
    assert sorted(s["connection"] for s in statuses) == ["conn-0", "conn-1", "conn-2"]
    assert "integrity" not in cli.err.read_text()


@pytest.mark.xdist_group("many_processes")
def test_opener_during_a_rotation_waits_and_the_vault_survives(
    children: Children, store: Path | None, isolated_env: Path
) -> None:
    """An opener that starts while a rotation re-seals waits for it, then uses the new key.

    The reported loss: the opener saw the old key still current, deleted the
    rotation's pending key, and the rotation then committed with no key left
    to promote. Here the rotation stops half-way inside its transaction; a
    reader, a writer and the real ``dashtam tokens status`` start; the
    rotation goes on only after they have had time to do damage. Everything
    must then open under the new key, with nothing pending.
    """
    seeded = _create(store, transactions=400)
    reached, go = isolated_env.parent / "reached", isolated_env.parent / "go"
    half = str(len(seeded.plaintexts) // 2)
    rotator = children.start("rotate", str(reached), str(go), half)
    _wait_for(reached, rotator)

    reader = children.start("read")
    writer = children.start("write")
    # The real command of the report (the CLI reads no test keyring: the
    # keyring variant runs a second reader instead).
    cli = (
        children.start_cli("tokens", "status", "--format", "json")
        if store is None
        else children.start("read")
    )
    # Each says on stderr that it waits for the rotation (and is still running).
    for child in (reader, writer, cli):
        _wait_for_text(child, "rotating the vault's key; waiting")
    go.touch()

    rotation = rotator.result()
    read, wrote = reader.result(), writer.result()
    assert read["key_id"] == rotation["new"]
    assert wrote["key_id"] == rotation["new"]
    if store is None:
        _check_tokens_status(cli)
    else:
        assert cli.result()["key_id"] == rotation["new"]

    written = wrote["written"]
    assert isinstance(written, dict)
    assert _check_everything(seeded, written) == rotation["new"]
    assert _pending_gone(isolated_env, store)


# Seconds between starting a rotation and starting the other processes;
# negative: the others start first, and the rotation must wait for them.
DELAYS = (-0.4, 0.0, 0.2, 0.6, 1.2)


@pytest.mark.xdist_group("many_processes")
def test_rotations_under_concurrent_use_lose_nothing(
    children: Children, store: Path | None, isolated_env: Path
) -> None:
    """Rotations on a large vault while other processes read and write, at many delays.

    After every round each process has exited 0, and at the end every sealed
    field (seeded or written during the rounds) opens under the last key.

    Slow (over 10 s, and the passphrase store's scrypt adds to it) by design:
    each round starts real processes at another point of the rotation, and a
    vault of a few thousand fields is what keeps the rotation running long
    enough for them to meet it.
    """
    seeded = _create(store, transactions=3000)
    written: dict[str, str] = {}
    last_key = ""
    for delay in DELAYS:
        others: list[Child] = []
        if delay < 0:
            others = [children.start("read"), children.start("write")]
            time.sleep(-delay)
        rotator = children.start("rotate")
        if delay >= 0:
            time.sleep(delay)
            others = [children.start("read"), children.start("write")]
        if store is None:  # the CLI reads no test keyring
            cli = children.start_cli("tokens", "status", "--format", "json")
        rotation = rotator.result()
        for child in others:
            result = child.result()
            if "written" in result:
                assert isinstance(result["written"], dict)
                written.update(result["written"])
        if store is None:
            _check_tokens_status(cli)
        assert rotation["new"] != rotation["old"]
        last_key = str(rotation["new"])

    assert len(written) == 20 * len(DELAYS)
    assert _check_everything(seeded, written) == last_key
    assert _pending_gone(isolated_env, store)
