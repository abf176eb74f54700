"""A command group that imports each command's module only when that command runs.

`dashtam --help` lists every command from the short help kept here, so it
imports none of them; a test checks these lines against the commands' own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click as click

__all__ = ["COMMANDS", "LazyGroup"]

# name -> (module, attribute: a typer.Typer or a command function, short help)
COMMANDS: Final[dict[str, tuple[str, str, str]]] = {
    "demo": (
        "dashtam_cli.cli.sandbox",
        "demo",
        "See dashtam work end to end: no account, keyring or network needed.",
    ),
    "connect": (
        "dashtam_cli.cli.connect",
        "connect",
        "Log in to a provider and keep its credentials, sealed, in the vault.",
    ),
    "disconnect": (
        "dashtam_cli.cli.connect",
        "disconnect",
        "Remove a connection with its tokens and cached data.",
    ),
    "connections": (
        "dashtam_cli.cli.connect",
        "connections_app",
        "List your connections to providers.",
    ),
    "sync": (
        "dashtam_cli.cli.sync",
        "sync",
        "Fetch every connection into the vault: accounts, balances, positions, transactions.",
    ),
    "accounts": ("dashtam_cli.cli.data", "accounts_app", "Accounts and balances."),
    "positions": ("dashtam_cli.cli.data", "positions_app", "Holdings."),
    "transactions": ("dashtam_cli.cli.data", "transactions_app", "Transactions."),
    "networth": (
        "dashtam_cli.cli.insights",
        "networth_app",
        "Net worth now (or --at a date), by group, per currency; it reads the vault only.",
    ),
    "cashflow": (
        "dashtam_cli.cli.insights",
        "cashflow",
        "Money in and out per interval, from posted transactions; it reads the vault only.",
    ),
    "dashboard": (
        "dashtam_cli.cli.dashboard",
        "dashboard",
        "Net worth, cash flow, accounts, positions and transactions in your browser, read-only.",
    ),
    "export": (
        "dashtam_cli.cli.export",
        "export",
        "Write the vault's data in the format of your books; it reads the vault only.",
    ),
    "providers": (
        "dashtam_cli.cli.providers",
        "providers_app",
        "List providers and store their app credentials.",
    ),
    "tokens": (
        "dashtam_cli.cli.tokens",
        "tokens_app",
        "See token lifetimes and refresh access tokens (cron-friendly).",
    ),
    "vault": (
        "dashtam_cli.cli.vault",
        "vault_app",
        "Create, inspect, re-key and destroy the local encrypted vault.",
    ),
    "audit": ("dashtam_cli.cli.audit", "audit_app", "Read the audit log of provider operations."),
    "sandbox": (
        "dashtam_cli.cli.sandbox",
        "sandbox_app",
        (
            "A built-in sandbox institution that speaks Schwab's API, SimpleFIN and Plaid, on "
            "127.0.0.1."
        ),
    ),
    "paths": (
        "dashtam_cli.cli.paths",
        "paths",
        "Show where dashtam keeps its files (relocate them all with DASHTAM_HOME).",
    ),
    "completion": (
        "dashtam_cli.cli.completion",
        "completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
    "doctor": (
        "dashtam_cli.cli.doctor",
        "doctor",
        "Check versions, key source, vault, config, credentials, TLS and logins.",
    ),
}


def load(name: str) -> click.Command:
    """Import and build the command called ``name``."""
    module_name, attribute, _ = COMMANDS[name]
    target: Any = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        # A group stays a group even with one subcommand (`dashtam audit list`).
        target.rich_markup_mode = None
        target.pretty_exceptions_enable = False
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer(
            rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False
        )
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    _add_global_options(command)
    return command


def _merge_verbose(ctx: typer.Context, value: int) -> None:
    from dashtam_cli.cli import runtime

    runtime.merge_global(ctx, verbose=value)


def _merge_no_color(ctx: typer.Context, value: bool) -> None:
    from dashtam_cli.cli import runtime

    runtime.merge_global(ctx, no_color=value)


def _global_params() -> list[click.Parameter]:
    """``-v`` and ``--no-color`` as options of a command, added to what the root parsed."""
    holder = typer.Typer(add_completion=False)

    @holder.command()
    def _globals(
        verbose: Annotated[
            int,
            typer.Option(
                "--verbose",
                "-v",
                count=True,
                expose_value=False,
                callback=_merge_verbose,
                show_default=False,
                help="Log to stderr: -v for progress, -vv for debug detail (here or before "
                "the command).",
            ),
        ] = 0,
        no_color: Annotated[
            bool,
            typer.Option(
                "--no-color",
                expose_value=False,
                callback=_merge_no_color,
                help="No colour on stderr or in tables (here or before the command).",
            ),
        ] = False,
    ) -> None:
        """Only a holder of the options."""

    return list(typer.main.get_command(holder).params)


def _add_global_options(command: click.Command) -> None:
    """Accept ``-v`` and ``--no-color`` after the command too, like before it.

    ``--format`` is already each data command's own option. What is given
    here adds to what the root parsed (``dashtam -v x list -v`` is ``-vv``).
    """
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    command.params.extend(p for p in _global_params() if not taken & set(getattr(p, "opts", ())))
    for sub in getattr(command, "commands", {}).values():
        _add_global_options(sub)


class LazyGroup(TyperGroup):
    """The root group: commands are built on first use, help comes from ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, in the order of ``COMMANDS``."""
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Build the command on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # noqa: ARG002
        """List the commands from the kept short help, importing none of them."""
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
