"""`dashtam demo`: the real login and data paths, end to end, against the built-in sandbox.

Nothing is faked on dashtam's side: the vault is real (with a throwaway
master key), the login goes through the real loopback HTTPS listener with
its self-signed certificate, and the data comes through the real Schwab,
SimpleFIN and Plaid clients (the SimpleFIN setup token is claimed as a pasted
one is; Plaid's Link page is served by the listener as for a person). Only
the browser is replaced: by an HTTP client that approves at once, and for
Plaid by the sandbox's ``complete_link``, which does what a person in Link does.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import random
import socket
import ssl
from typing import TYPE_CHECKING, Final

from dashtam_cli.sandbox.app import Sandbox, SandboxConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from dashtam_cli.core.models import (
        Account,
        ConnectionInfo,
        NetWorth,
        Position,
        SyncReport,
        TokenStatus,
        Transaction,
    )
    from dashtam_cli.core.settings import Settings

__all__ = ["DemoReport", "demo_environment", "run_demo"]

RECENT: Final = 10
PLAID_PRODUCTS: Final = ("transactions", "investments")


@dataclasses.dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo fetched, for the CLI to show."""

    home: Path
    synced: list[SyncReport]
    accounts: list[Account]
    positions: list[Position]
    transactions: list[Transaction]
    tokens: list[TokenStatus]
    networth: list[NetWorth]


def _free_port() -> int:
    """A free port for the demo's login listener, chosen below the ephemeral range.

    The port is chosen before the listener binds it (the sandbox must know the redirect URI
    first). A port from ``bind(0)`` is one the kernel also hands to outgoing connections as
    their source port, so one could take it in between; Linux's ephemeral range starts at
    32768, and nothing draws from below it unasked.
    """
    for port in random.sample(range(20000, 32768), 64):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a machine with all 64 taken: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def demo_environment(home: Path) -> Iterator[dict[str, str]]:
    """Point dashtam at ``home`` with a throwaway master key, restoring the environment after.

    Variables that would send the demo elsewhere (the user's Schwab app,
    Plaid keys, CA, config file) are removed for its duration.
    """
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("DASHTAM_", "SCHWAB_", "PLAID_")) or name in {
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        }:
            del os.environ[name]
    os.environ["DASHTAM_HOME"] = str(home)
    os.environ["DASHTAM_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _approving_browser(sandbox_ca: Path, listener_cert: Path) -> Callable[[str], bool]:
    """Stands in for the browser: opens the consent page, approves, follows the redirect home."""

    def open_url(url: str) -> bool:
        import httpx

        with httpx.Client(verify=ssl.create_default_context(cafile=sandbox_ca)) as client:
            answer = client.get(url)
        location = answer.headers.get("location")
        if answer.status_code != 302 or not location:  # noqa: PLR2004
            return False
        # The listener's certificate is self-signed: trust exactly it, nothing else.
        with httpx.Client(verify=ssl.create_default_context(cafile=listener_cert)) as client:
            client.get(location)
        return True

    return open_url


def _linking_browser(
    sandbox: Sandbox, config: SandboxConfig, listener_cert: Path
) -> Callable[[str], bool]:
    """Stands in for a person in Plaid Link: the sandbox's ``complete_link`` on the page."""

    def open_url(url: str) -> bool:
        from dashtam_cli.sandbox.plaid import complete_link

        assert sandbox.ca_path is not None
        answer = complete_link(
            url,
            plaid_url=sandbox.base_url + "/plaid",
            client_id=config.plaid_client_id,
            secret=config.plaid_secret,
            sandbox_verify=ssl.create_default_context(cafile=sandbox.ca_path),
            # The listener's certificate is self-signed: trust exactly it, nothing else.
            listener_verify=ssl.create_default_context(cafile=listener_cert),
            products=PLAID_PRODUCTS,
        )
        return answer.get("ok") is True

    return open_url


async def _connect_plaid(
    sandbox: Sandbox, cfg: SandboxConfig, settings: Settings, say: Callable[[str], None]
) -> ConnectionInfo:
    """`dashtam connect plaid` against the sandbox's Plaid, Link completed by ``complete_link``."""
    from dashtam_cli.core.login import connect
    from dashtam_cli.core.oauth.flow import LoginOptions

    plaid_listener = f"https://127.0.0.1:{_free_port()}"
    os.environ.update(
        {
            "DASHTAM_PLAID_BASE_URL": sandbox.base_url + "/plaid",
            "PLAID_CLIENT_ID": cfg.plaid_client_id,
            "PLAID_SECRET": cfg.plaid_secret,
            "PLAID_ENV": "sandbox",
            "PLAID_REDIRECT_URI": plaid_listener,
        }
    )
    say(
        "4. Connecting an institution through Plaid Link (`dashtam connect plaid --products"
        " transactions,investments`): a link token from the sandbox's Plaid, the Link page"
        f" served on the loopback listener ({plaid_listener}), the public token it hands back"
        " exchanged for the item's access token, sealed in the vault."
    )
    linker = _linking_browser(sandbox, cfg, settings.paths.data_dir / "tls" / "listener-cert.pem")
    options = LoginOptions(name="plaid", open_browser=linker, timeout=60, products=PLAID_PRODUCTS)
    return await connect(settings, "plaid", options)


async def run_demo(
    home: Path, say: Callable[[str], None], *, config: SandboxConfig | None = None
) -> DemoReport:
    """Start the sandbox, log in through the real flow, fetch everything; ``say`` narrates.

    Call it inside :func:`demo_environment` so the settings and vault it uses
    are the temporary ones.
    """
    from dashtam_cli.core.insights import networth
    from dashtam_cli.core.login import connect
    from dashtam_cli.core.models import NetWorth as NetWorthRow
    from dashtam_cli.core.oauth.flow import LoginOptions
    from dashtam_cli.core.queries import (
        QueryOptions,
        query_accounts,
        query_positions,
        query_transactions,
    )
    from dashtam_cli.core.settings import load_settings
    from dashtam_cli.core.sync import SyncOptions, sync
    from dashtam_cli.core.tokens import status_report
    from dashtam_cli.core.vault.vault import OpenOptions

    redirect = f"https://127.0.0.1:{_free_port()}"
    cfg = config or SandboxConfig(auto_approve=True, redirect_uris=(redirect,))
    cfg = dataclasses.replace(cfg, auto_approve=True, redirect_uris=(redirect,))
    say(
        "1. Starting the sandbox institution: a local HTTPS server that speaks Schwab's API"
        ", SimpleFIN's and Plaid's."
    )
    async with Sandbox(cfg, home / "sandbox") as sandbox:
        assert sandbox.ca_path is not None
        os.environ.update(
            {
                "DASHTAM_SCHWAB_BASE_URL": sandbox.base_url,
                "SCHWAB_API_KEY": cfg.client_id,
                "SCHWAB_API_SECRET": cfg.client_secret,
                "SCHWAB_REDIRECT_URI": redirect,
                "SSL_CERT_FILE": str(sandbox.ca_path),
            }
        )
        settings = load_settings()
        say(f"   It listens on {sandbox.base_url}; dashtam trusts it through SSL_CERT_FILE.")
        say(
            "2. Logging in: `dashtam connect schwab` opens the consent page, waits on a loopback "
            f"HTTPS listener ({redirect}) and exchanges the code for tokens, sealed in the vault."
        )
        browser = _approving_browser(
            sandbox.ca_path, settings.paths.data_dir / "tls" / "listener-cert.pem"
        )
        login = LoginOptions(name="schwab", open_browser=browser, timeout=60)
        info = await connect(settings, "schwab", login)
        say(f"   Connected as {info.name!r}; the vault is {settings.paths.vault_file}.")
        token = sandbox.simplefin_setup_token()
        say(
            "3. Connecting banks and cards through SimpleFIN (`dashtam connect simplefin`): the"
            " setup token the sandbox's Bridge page shows is claimed once for an access URL,"
            " sealed in the vault."
        )
        banks = await connect(
            settings, "simplefin", LoginOptions(name="banks", read_token=lambda: token)
        )
        say(f"   Connected as {banks.name!r}.")
        item = await _connect_plaid(sandbox, cfg, settings, say)
        say(f"   Connected as {item.name!r}.")
        options = OpenOptions()
        say(
            "5. Syncing all three at once into the vault (`dashtam sync`): accounts, balances,"
            " positions and two years of transactions, sealed."
        )
        synced = await sync(settings, SyncOptions(), options)
        error = synced.outcome.outcome()
        if error is not None:
            raise error
        offline = QueryOptions(offline=True)
        say("6. Reading every account with balances from the vault (`dashtam accounts list`).")
        accounts, _ = await query_accounts(settings, offline, options)
        say("7. Reading positions (`dashtam positions list`).")
        positions, _ = await query_positions(settings, offline, options)
        say("8. Reading the latest transactions (`dashtam transactions list --limit 10`).")
        transactions: list[Transaction] = []
        await query_transactions(
            settings, dataclasses.replace(offline, limit=RECENT), options, transactions.extend
        )
        say("9. Checking logins (`dashtam tokens status`).")
        tokens = await status_report(settings, None, options)
        say("10. Adding it all up, per currency (`dashtam networth`).")
        worth = await networth(settings, options)
    return DemoReport(
        home=home,
        synced=synced.reports,
        accounts=accounts,
        positions=positions,
        transactions=transactions,
        tokens=tokens,
        networth=[row for row in worth.rows if isinstance(row, NetWorthRow)],
    )
