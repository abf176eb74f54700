"""`dashtam sandbox serve` and `dashtam demo`: a local institution, and the flow against it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from dashtam_cli.cli import options, runtime

sandbox_app = typer.Typer(
    name="sandbox",
    help="A built-in sandbox institution that speaks Schwab's API, SimpleFIN and Plaid, on "
    "127.0.0.1.",
    no_args_is_help=True,
)


@sandbox_app.command("serve")
def serve(
    ctx: typer.Context,
    port: Annotated[
        str, typer.Option("--port", metavar="PORT", help="Port, 0 to 65535 (0: any free port).")
    ] = "8443",
    latency: Annotated[
        str,
        typer.Option(
            "--latency", metavar="MS", help="Milliseconds added to each response (0 to 60000)."
        ),
    ] = "0",
    error_rate: Annotated[
        str,
        typer.Option(
            "--error-rate",
            metavar="SHARE",
            help="Share of API calls answered 429, 500 or 503 (0 to 1).",
        ),
    ] = "0",
    accounts: Annotated[
        str, typer.Option("--accounts", metavar="N", help="Accounts to generate (1 to 1000).")
    ] = "3",
    transactions: Annotated[
        str,
        typer.Option(
            "--transactions-per-account",
            metavar="N",
            help="Transactions per account (0 to 1,000,000).",
        ),
    ] = "250",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated data.")] = 1,
    access_ttl: Annotated[
        str,
        typer.Option(
            "--access-ttl",
            metavar="SECONDS",
            help="Access-token lifetime in seconds (1 to 604800, a week).",
        ),
    ] = "1800",
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Approve every login at once (for scripts).")
    ] = False,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(
            "--redirect-uri",
            help="Registered redirect URI (repeatable). Default https://127.0.0.1:8182.",
        ),
    ] = None,
    simplefin_version: Annotated[
        str,
        typer.Option(
            "--simplefin-version",
            metavar="1|2",
            help="SimpleFIN protocol version served under /simplefin (1 or 2).",
        ),
    ] = "2",
    plaid_fault: Annotated[
        list[str] | None,
        typer.Option(
            "--plaid-fault",
            metavar="NAME",
            help="A fault each Plaid item meets once (repeatable): rate-limit, server-error, "
            "mutation.",
        ),
    ] = None,
) -> None:
    """Serve the sandbox until Ctrl-C; it prints how to point dashtam at it."""
    import asyncio

    from dashtam_cli.sandbox.app import Sandbox, SandboxConfig
    from dashtam_cli.sandbox.plaid import FAULTS

    for fault in plaid_fault or ():
        if fault not in FAULTS:
            msg = f"must be one of {', '.join(FAULTS)}, not {fault[:40]!r}"
            raise typer.BadParameter(msg, param_hint="--plaid-fault")
    bounded = options.bounded
    config = SandboxConfig(
        port=int(bounded(port, option="--port", low=0, high=65535)),
        latency_ms=bounded(latency, option="--latency", low=0, high=60_000, whole=False),
        error_rate=bounded(error_rate, option="--error-rate", low=0, high=1, whole=False),
        accounts=int(bounded(accounts, option="--accounts", low=1, high=1000)),
        transactions_per_account=int(
            bounded(transactions, option="--transactions-per-account", low=0, high=1_000_000)
        ),
        seed=seed,
        access_ttl=int(bounded(access_ttl, option="--access-ttl", low=1, high=604_800)),
        auto_approve=auto_approve,
        redirect_uris=tuple(redirect_uri or ("https://127.0.0.1:8182",)),
        simplefin_version=int(
            bounded(simplefin_version, option="--simplefin-version", low=1, high=2)
        ),
        plaid_faults=tuple(dict.fromkeys(plaid_fault or ())),
    )
    conf = runtime.settings(ctx)
    err = runtime.stderr(ctx)

    async def job(_conf: object) -> None:
        async with Sandbox(config, conf.paths.cache_dir / "sandbox") as sandbox:
            lines = [
                f"sandbox listening on {sandbox.base_url} (Ctrl-C to stop)",
                "point dashtam at it with:",
                f"  export DASHTAM_SCHWAB_BASE_URL={sandbox.base_url}",
                # DASHTAM_CA_BUNDLE, not SSL_CERT_FILE: that one would change what
                # pip, git and every other TLS client of the shell trusts.
                f"  export DASHTAM_CA_BUNDLE={sandbox.ca_path}",
                f"  export SCHWAB_API_KEY={config.client_id}",
                f"  export SCHWAB_API_SECRET={config.client_secret}  # the sandbox's public one",
                f"  export SCHWAB_REDIRECT_URI={config.redirect_uris[0]}",
                f"SimpleFIN (version {config.simplefin_version}) at {sandbox.base_url}/simplefin:",
                f"  open {sandbox.base_url}/simplefin/create for a setup token (one per visit)",
                "  paste it into dashtam connect simplefin (DASHTAM_CA_BUNDLE exported as above)",
                f"Plaid at {sandbox.base_url}/plaid (stand-in Link login: user_good / pass_good):",
                f"  export DASHTAM_PLAID_BASE_URL={sandbox.base_url}/plaid",
                f"  export PLAID_CLIENT_ID={config.plaid_client_id}",
                f"  export PLAID_SECRET={config.plaid_secret}  # the sandbox's public one",
                "  export PLAID_ENV=sandbox",
                "  then dashtam connect plaid (DASHTAM_CA_BUNDLE exported as above)",
            ]
            for line in lines:
                err.print(line, markup=False, highlight=False)
            await asyncio.Event().wait()

    runtime.run(ctx, job)


def demo(
    ctx: typer.Context,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary DASHTAM_HOME and say where it is.")
    ] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """See dashtam work end to end: no account, keyring or network needed.

    In a temporary DASHTAM_HOME with a throwaway master key, it starts the
    sandbox, logs in to its Schwab through the real loopback listener, to its
    SimpleFIN Bridge with a setup token and to its Plaid through the Link page
    on the listener, syncs all three, then shows the merged accounts,
    positions, recent transactions, login status and net worth (tables unless
    --format).
    """
    from dashtam_cli.core.models import (
        Account,
        NetWorth,
        Position,
        SyncReport,
        TokenStatus,
        Transaction,
    )
    from dashtam_cli.sandbox.demo import demo_environment, run_demo

    home = Path(tempfile.mkdtemp(prefix="dashtam-demo-"))
    err = runtime.stderr(ctx)

    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    try:
        with demo_environment(home) as env:
            runtime.forget_settings(ctx)  # the demo's own DASHTAM_HOME, not the caller's
            report = runtime.run(ctx, lambda _conf: run_demo(home, say))
            if keep:
                from dashtam_cli.core.vault.files import write_private_file

                write_private_file(home / "demo-master-key", env["DASHTAM_MASTER_KEY"].encode())
            recent = f"recent transactions (the {len(report.transactions)} newest)"
            say("")
            runtime.renderer(ctx, fmt or "table").document(
                [
                    ("synced", SyncReport, report.synced),
                    ("accounts", Account, report.accounts),
                    ("positions", Position, report.positions),
                    (
                        recent if (fmt or "table") == "table" else "transactions",
                        Transaction,
                        report.transactions,
                    ),
                    ("tokens", TokenStatus, report.tokens),
                    ("networth", NetWorth, report.networth),
                ]
            )
    finally:
        if keep:
            say(
                f"\nkept the demo's files in {home}; to look around: export DASHTAM_HOME={home} "
                f'DASHTAM_MASTER_KEY="$(cat {home}/demo-master-key)"; then open the dashboard '
                "on this data: dashtam dashboard"
            )
        else:
            shutil.rmtree(home, ignore_errors=True)
    say(
        "\nThat was the real flow. With your own Schwab app: dashtam providers configure schwab "
        "--client-id APP_KEY, then dashtam connect schwab (see docs/providers/schwab.md). With a "
        "SimpleFIN Bridge setup token: dashtam connect simplefin (see docs/providers/simplefin.md)."
        " With your own Plaid keys: dashtam providers configure plaid --client-id ID --environment "
        "ENV, then dashtam connect plaid (see docs/providers/plaid.md)."
    )
    if not keep:
        say("To see this data in the local dashboard: dashtam demo --keep, then dashtam dashboard.")
