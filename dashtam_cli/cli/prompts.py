"""Prompts on stderr, asked only when a person is at the terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from dashtam_cli.core.errors import ExitCode

if TYPE_CHECKING:
    from dashtam_cli.core.vault.vault import OpenOptions


def interactive() -> bool:
    """Whether a person can answer: stdin is a terminal."""
    return sys.stdin.isatty()


def hidden(label: str, *, confirm: bool = False) -> str:
    """Ask for ``label`` on stderr, the input hidden (twice with ``confirm``); Ctrl-C interrupts."""
    try:
        value: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    except typer.Abort:
        raise KeyboardInterrupt from None
    return value


def secret_input(label: str, *, limit: int) -> str:
    """A secret from a hidden prompt when a person is there, else at most ``limit`` of stdin.

    Never from the command line (argv is visible to every local user).
    """
    if interactive():
        return hidden(label)
    return sys.stdin.read(limit)


def passphrase(confirm: bool) -> str:
    """Ask for the key file's passphrase, hidden, twice when setting it."""
    return hidden("Vault passphrase", confirm=confirm)


def new_passphrase(_confirm: bool) -> str:
    """Ask for a new passphrase, hidden, twice."""
    return hidden("New vault passphrase", confirm=True)


def new_passphrase_prompt() -> Callable[[bool], str] | None:
    """The prompt for a new passphrase when a person is there (else DASHTAM_NEW_PASSPHRASE)."""
    return new_passphrase if interactive() else None


def passphrase_prompt() -> Callable[[bool], str] | None:
    """The passphrase prompt when a person is there, else None (DASHTAM_PASSPHRASE is used)."""
    return passphrase if interactive() else None


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question``; ``--yes`` answers for scripts; no terminal and no ``--yes`` is refused."""
    if yes:
        return
    if not interactive():
        typer.echo("error: refusing to ask on a non-interactive stdin", err=True)
        typer.echo("hint: pass --yes to confirm from a script", err=True)
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if not agreed:
        typer.echo("nothing changed", err=True)
        raise typer.Exit(int(ExitCode.ERROR))


def open_options(**overrides: Any) -> OpenOptions:  # noqa: ANN401
    """Vault options for a command: the passphrase prompt when a person is there."""
    from dashtam_cli.core.vault.vault import OpenOptions

    return OpenOptions(prompt=passphrase_prompt(), **overrides)
