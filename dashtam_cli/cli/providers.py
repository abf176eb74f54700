"""`dashtam providers ...`: the providers dashtam supports, and their app credentials."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime

providers_app = typer.Typer(
    name="providers",
    help="List providers and store their app credentials.",
    no_args_is_help=True,
)


@providers_app.command("list")
def list_(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """List providers and where their app credentials come from (environment or vault)."""
    from dashtam_cli.core.credentials import providers
    from dashtam_cli.core.models import ProviderInfo

    opts = prompts.open_options()
    infos = runtime.run(ctx, lambda conf: providers(conf, opts))
    runtime.renderer(ctx, fmt).rows(ProviderInfo, infos)


@providers_app.command("configure")
def configure(
    ctx: typer.Context,
    provider: Annotated[
        str, typer.Argument(help="The provider (see: dashtam providers list).", show_default=False)
    ],
    client_id: Annotated[
        str,
        typer.Option(
            "--client-id",
            help="The app's client id (its name at each provider: docs/providers/).",
            show_default=False,
        ),
    ],
    redirect_uri: Annotated[
        str | None,
        typer.Option(
            "--redirect-uri",
            help="The callback URL registered for the app, on 127.0.0.1 or [::1], not "
            "localhost (default https://127.0.0.1:8182).",
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--environment",
            metavar="ENV",
            help="For providers whose keys belong to one of their environments (its first "
            "by default; see docs/providers/).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Store a provider app's credentials, sealed in the vault.

    The secret is never taken from the command line: it is asked for with a
    hidden prompt, or read from the first line of stdin when stdin is not a
    terminal (for example: dashtam providers configure schwab --client-id ID < secret.txt).
    Environment variables (SCHWAB_API_KEY, SCHWAB_API_SECRET; PLAID_CLIENT_ID,
    PLAID_SECRET, PLAID_ENV) win over the vault.
    """
    from dashtam_cli.core.credentials import configure as store

    if prompts.interactive():
        try:
            secret = typer.prompt("Client secret", hide_input=True, err=True)
        except typer.Abort:
            raise typer.Exit(130) from None
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise typer.BadParameter("no secret on stdin (give it on the first line)")
    opts = prompts.open_options()
    info = runtime.run(
        ctx,
        lambda conf: store(
            conf,
            provider,
            client_id=client_id,
            client_secret=secret,
            redirect_uri=redirect_uri,
            options=opts,
            environment=environment,
        ),
    )
    runtime.stderr(ctx).print(
        f"stored the app credentials for {info.display_name} in the vault",
        markup=False,
        highlight=False,
    )
    runtime.renderer(ctx, fmt).one(info)
