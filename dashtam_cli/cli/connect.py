"""`dashtam connect`, `dashtam disconnect` and `dashtam connections list`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime
from dashtam_cli.cli.completion import connection_names

# An hour: inf, nan and absurd waits are usage errors, not a listener left open.
MAX_TIMEOUT = 3600.0

connections_app = typer.Typer(
    name="connections", help="List your connections to providers.", no_args_is_help=True
)


def _provider_names() -> list[str]:
    from dashtam_cli.core.providers import provider_names

    return list(provider_names())


def _read_token() -> str:
    """The token from a hidden prompt on a terminal, else all of stdin (never argv or env)."""
    from dashtam_cli.core.login import MAX_TOKEN

    interactive = prompts.interactive()
    text = prompts.secret_input("Token (input hidden)", limit=MAX_TOKEN + 1)
    if not interactive and not text:
        raise EOFError
    return text


def connect(
    ctx: typer.Context,
    provider: Annotated[
        str,
        typer.Argument(
            help="The provider to log in to (see: dashtam providers list).",
            autocompletion=_provider_names,
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="Name of the connection (default: the provider's name). Use several names "
            "for several logins to one provider.",
        ),
    ] = None,
    no_browser: Annotated[
        bool,
        typer.Option("--no-browser", help="Print the login URL instead of opening a browser."),
    ] = False,
    manual: Annotated[
        bool,
        typer.Option(
            "--manual",
            help="Print the login URL and read the redirected address pasted back (for SSH).",
        ),
    ] = False,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Seconds to wait for the login to complete (1 to 3600).",
        ),
    ] = "300",
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="For providers that log in with a pasted token: read it from this file "
            "(default: a hidden prompt, or stdin when it is not a terminal).",
            show_default=False,
        ),
    ] = None,
    products: Annotated[
        str | None,
        typer.Option(
            "--products",
            metavar="LIST",
            help="For providers that log in with a hosted page: what the login grants, "
            "comma-separated (default: the provider's; see docs/providers/).",
            show_default=False,
        ),
    ] = None,
    update: Annotated[
        str | None,
        typer.Option(
            "--update",
            metavar="NAME",
            help="For providers that log in with a hosted page: log in again to the "
            "connection NAME; its stored data stays.",
            show_default=False,
            autocompletion=connection_names,
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Log in to a provider and keep its credentials, sealed, in the vault.

    With OAuth (the browser), the provider redirects to a short-lived HTTPS
    listener on this machine (https://127.0.0.1:8182 by default). Its
    certificate is self-signed, so the browser warns once: that is expected.
    A provider that gives a token to paste reads it from a hidden prompt, from
    stdin when it is not a terminal, or from --token-file; never from the
    command line. A provider with a hosted page (Plaid Link) is served on the
    same listener; --update NAME logs in again to a connection that needs it.
    """
    from dashtam_cli.core.login import connect
    from dashtam_cli.core.oauth.flow import LoginOptions

    if no_browser and manual:
        raise typer.BadParameter("choose one of --no-browser and --manual", param_hint="--manual")
    chosen = tuple(p.strip().lower() for p in (products or "").split(",") if p.strip())
    if products is not None and not chosen:
        raise typer.BadParameter("give at least one product", param_hint="--products")
    seconds = options.bounded(timeout, option="--timeout", low=1, high=MAX_TIMEOUT, whole=False)
    err = runtime.stderr(ctx)

    def notify(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    def read_pasted_url() -> str:
        err.print("Redirected address: ", end="", markup=False)
        line = sys.stdin.readline()
        if not line:  # end of input (Ctrl-D, or an empty pipe): an error, not Ctrl-C
            err.print(markup=False)  # end the prompt's line before the error
            raise EOFError
        return line

    def confirm_replace(existing: str) -> bool:
        return typer.confirm(
            f"Replace the tokens of the connection {existing!r} with this new login?",
            default=True,
            err=True,
        )

    login = LoginOptions(
        name=name,
        mode="manual" if manual else "print" if no_browser else "browser",
        timeout=seconds,
        notify=notify,
        read_pasted_url=read_pasted_url,
        # On a terminal, ask before replacing; scripts are not asked.
        confirm_replace=(
            confirm_replace if prompts.interactive() and not manual and update is None else None
        ),
        passphrase_prompt=prompts.passphrase_prompt(),
        read_token=_read_token,
        token_file=token_file,
        products=chosen,
        update=update,
    )
    info = runtime.run(ctx, lambda conf: connect(conf, provider, login))
    err.print(f"connected {info.provider} as {info.name!r}", markup=False, highlight=False)
    runtime.renderer(ctx, fmt).one(info)


def disconnect(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="The connection to remove.", show_default=False, autocompletion=connection_names
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a connection with its tokens and cached data.

    A provider that can forget a login is asked to first (best effort: when it
    cannot be reached, the connection is removed all the same, with a warning).
    """
    from dashtam_cli.core.connections import disconnect as remove

    prompts.confirm(f"Remove the connection {name!r}, its tokens and its cached data?", yes=yes)
    opts = prompts.open_options()
    err = runtime.stderr(ctx)

    def notify(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    info = runtime.run(ctx, lambda conf: remove(conf, name, opts, notify=notify))
    err.print(
        f"removed the connection {info.name!r} ({info.provider})", markup=False, highlight=False
    )


@connections_app.command("list")
def list_(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """List connections: name, provider, created, token expiry times, status."""
    from dashtam_cli.core.connections import listing
    from dashtam_cli.core.models import ConnectionInfo

    opts = prompts.open_options()
    infos = runtime.run(ctx, lambda conf: listing(conf, opts))
    runtime.renderer(ctx, fmt).rows(ConnectionInfo, infos)
