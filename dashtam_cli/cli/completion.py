"""`dashtam completion SHELL`, and what a shell completes: connection names, --type values."""

from __future__ import annotations

from typing import Annotated

import typer

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_DASHTAM_COMPLETE"


def connection_names(incomplete: str) -> list[str]:
    """Complete a connection name from the vault, or the shared vault (no key, never an error)."""
    from dashtam_cli.core.completion import connection_names as names
    from dashtam_cli.core.errors import DashtamError
    from dashtam_cli.core.settings import load_settings

    try:
        conf = load_settings()
    except DashtamError:  # a config file it cannot read: nothing to offer, silently
        return []
    return names(conf.paths.vault_file, incomplete, database_url=conf.database_url)


def transaction_types(incomplete: str) -> list[str]:
    """Complete a --type value: a neutral kind, or any provider's own type."""
    from dashtam_cli.core.models import KINDS
    from dashtam_cli.core.providers import provider, provider_names

    kinds = [k for k in KINDS if k.startswith(incomplete.lower())]
    types = sorted({t for n in provider_names() for t in provider(n).transaction_types})
    return kinds + [t for t in types if t.startswith(incomplete.upper())]


def _check_shell(value: str) -> str:
    if value not in SHELLS:
        msg = f"{value!r} is not one of {', '.join(SHELLS)}"
        raise typer.BadParameter(msg)
    return value


def completion(
    shell: Annotated[
        str,
        typer.Argument(
            help="The shell: bash, zsh or fish.",
            callback=_check_shell,
            autocompletion=lambda: list(SHELLS),
            metavar="SHELL",
            show_default=False,
        ),
    ],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Load it now with: eval "$(dashtam completion bash)" (zsh: the same with
    zsh; fish: dashtam completion fish | source), or save it where your shell
    reads completions.
    """
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    completion_init()
    script = get_completion_script(prog_name="dashtam", complete_var=COMPLETE_VAR, shell=shell)
    typer.echo(script)
