"""`dashtam connect`: run the provider's login, then save the connection it yields.

The login strategies return credentials and never touch the vault's
connections: the OAuth flow (:func:`dashtam_cli.core.oauth.flow.authorize`)
returns tokens; a pasted-token provider's :meth:`Provider.claim` returns its
credential record. Saving them (atomically, replacing an existing login of
the same name only once the new one is in hand) and auditing it happens here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Final

from dashtam_cli.core import audit
from dashtam_cli.core.connections import connection_exists, save_login, save_secret_login
from dashtam_cli.core.errors import DashtamError, InputError
from dashtam_cli.core.oauth.flow import MODES, LoginOptions, check_name
from dashtam_cli.core.providers import provider as provider_named
from dashtam_cli.core.providers.base import LoginKind
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.threads import in_daemon_thread
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from dashtam_cli.core.models import ConnectionInfo
    from dashtam_cli.core.oauth.flow import AuditNote
    from dashtam_cli.core.providers.base import Provider
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import Vault

__all__ = ["MAX_TOKEN", "LoginOptions", "connect", "read_token_file"]

log = logging.getLogger(__name__)

# A setup token or similar is a few hundred characters; a file far larger is
# the wrong file, refused before it is read into memory.
MAX_TOKEN: Final = 16 * 1024


def _clean_token(raw: str, source: str) -> str:
    """The token without surrounding blanks; an InputError (never repeating it) otherwise."""
    token = raw.strip()
    if not token:
        raise InputError(f"no token was given ({source} was empty)", hint="paste the token again")
    if len(token) > MAX_TOKEN or not token.isprintable():
        raise InputError(
            f"the token from {source} is not one token (over {MAX_TOKEN} characters, "
            "or with control characters)",
            hint="give the token alone, as the provider showed it",
        )
    return token


def read_token_file(path: os.PathLike[str] | str) -> str:
    """Read a token from a file: its whole content, trimmed, at most :data:`MAX_TOKEN` bytes."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as handle:  # noqa: PTH123 - a bounded read of a user's file
            data = handle.read(MAX_TOKEN + 1)
    except OSError as exc:
        raise InputError(
            f"cannot read the token file {where}: {exc.strerror or exc.__class__.__name__}",
            hint="check the path given to --token-file",
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"the token file {where} is not text", hint="give a file holding only the token"
        ) from None
    return _clean_token(text, "the token file")


async def _read_token(options: LoginOptions) -> str:
    if options.token_file is not None:
        return await asyncio.to_thread(read_token_file, options.token_file)
    if options.read_token is None:
        raise InputError(
            "no token to log in with",
            hint="paste it at the prompt, pipe it in, or use --token-file",
        )
    try:
        # A daemon thread: a prompt left unanswered after Ctrl-C must not hold the exit.
        raw = await in_daemon_thread(options.read_token, name="token")
    except EOFError:
        raise InputError(
            "no token was given: the input ended before one was read",
            hint="paste the token, pipe it in, or use --token-file",
        ) from None
    return _clean_token(raw, "the input")


async def connect(settings: Settings, provider: str, options: LoginOptions) -> ConnectionInfo:
    """Log in to ``provider`` the way it logs in, and store the connection, sealed.

    Every step goes to the audit log. Under an existing name, the old
    credentials are replaced only once the new ones are in hand.
    """
    if options.mode not in MODES:
        raise InputError(f"unknown login mode {options.mode!r}")
    instance = provider_named(provider)
    if options.token_file is not None and instance.login is not LoginKind.TOKEN:
        raise InputError(
            f"{instance.display_name} does not log in with a pasted token",
            hint=f"drop --token-file: {instance.relogin_command(options.name or instance.name)}",
        )
    if instance.login is LoginKind.TOKEN and options.mode != "browser":
        raise InputError(
            f"{instance.display_name} logs in with a pasted token, not in a browser",
            hint="drop --no-browser and --manual; paste the token, or use --token-file",
        )
    if instance.login is LoginKind.LINK:
        raise InputError(f"{instance.display_name} logs in with a hosted page, not supported yet")
    name = check_name(instance.name if options.name is None else options.name)
    vault_options = OpenOptions(
        create=True, prompt=options.passphrase_prompt, environ=options.environ
    )
    async with open_vault(settings, vault_options) as vault:
        if await connection_exists(vault, name) and options.confirm_replace is not None:
            confirm = options.confirm_replace
            if not await asyncio.to_thread(confirm, name):
                raise DashtamError(
                    f"the connection {name!r} was left as it is", hint="nothing changed"
                )
        note = _note(vault, instance.name, name)
        if instance.login is LoginKind.OAUTH:
            info, credential = await _oauth(
                settings, vault, instance, name=name, options=options, note=note
            )
        else:
            info, credential = await _token(
                settings, vault, instance, name=name, options=options, note=note
            )
        await audit.record(
            vault,
            operation="connection.save",
            outcome="ok",
            provider=instance.name,
            connection_id=info.id,
            connection_name=name,
        )
        log.info("connected %s as %r", instance.display_name, name)
        await _warn_if_connected_elsewhere(settings, vault, info, credential, options)
        return info


def _note(vault: Vault, provider: str, name: str) -> AuditNote:
    async def note(  # noqa: PLR0913 - the audit columns
        operation: str,
        outcome: str,
        *,
        http_status: int | None = None,
        duration_ms: int | None = None,
        correlation_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        await audit.record(
            vault,
            operation=operation,
            outcome=outcome,
            provider=provider,
            connection_name=name,
            http_status=http_status,
            duration_ms=duration_ms,
            correlation_id=correlation_id,
            detail=detail,
        )

    return note


async def _oauth(  # noqa: PLR0913 - one login's parts
    settings: Settings,
    vault: Vault,
    instance: Provider,
    *,
    name: str,
    options: LoginOptions,
    note: AuditNote,
) -> tuple[ConnectionInfo, str]:
    """The browser login: tokens from the flow, saved here. Returns the access token too."""
    from dashtam_cli.core.credentials import resolve_credentials
    from dashtam_cli.core.oauth.flow import PendingAuthorization, authorize
    from dashtam_cli.core.oauth.listener import parse_redirect_uri

    spec = instance.spec
    if spec is None:  # a provider's declaration error, not the user's
        raise DashtamError(f"{instance.display_name} declares an OAuth login but no OAuth settings")
    env = os.environ if options.environ is None else options.environ
    credentials = await resolve_credentials(vault, spec, env)
    target = parse_redirect_uri(
        credentials.redirect_uri, setting=credentials.redirect_setting or spec.redirect_uri_env
    )
    pending = PendingAuthorization.new(spec, credentials, target)
    tokens = await authorize(settings, pending, options, note)
    info = await save_login(vault, provider=instance.name, name=name, tokens=tokens)
    return info, tokens.access_token


async def _token(  # noqa: PLR0913 - one login's parts
    settings: Settings,
    vault: Vault,
    instance: Provider,
    *,
    name: str,
    options: LoginOptions,
    note: AuditNote,
) -> tuple[ConnectionInfo, str]:
    """The pasted-token login: the provider claims it; its credential record is sealed here."""
    from dashtam_cli.core.http import make_client

    token = await _read_token(options)
    register_secret(token)
    await note("login.claim", "started")
    started = time.monotonic()
    async with make_client(settings, transport=options.transport) as client:
        try:
            secret = await instance.claim(client, token)
        except (asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.shield(note("login.claim", "interrupted"))
            raise
        except DashtamError as exc:
            await note("login.claim", "failed", detail=exc.message)
            raise
    register_secret(secret)
    await note("login.claim", "ok", duration_ms=int((time.monotonic() - started) * 1000))
    info = await save_secret_login(vault, provider=instance.name, name=name, secret=secret)
    return info, secret


async def _warn_if_connected_elsewhere(
    settings: Settings, vault: Vault, info: ConnectionInfo, credential: str, options: LoginOptions
) -> None:
    """Warn when this login's accounts are already connected under another name.

    The new connection is kept (both may be wanted); a check that cannot be
    made is only logged: the login itself succeeded.
    """
    from dashtam_cli.core.http import make_client
    from dashtam_cli.core.sync import connected_elsewhere

    try:
        async with make_client(settings, transport=options.transport) as client:
            shared = await connected_elsewhere(
                vault, client, info, credential, options=settings.options_of(info.provider)
            )
    except DashtamError as exc:
        log.info("could not compare this login's accounts with other connections: %s", exc)
        return
    for name, masked in shared:
        options.notify(
            f"warning: this login's accounts are already connected as {name!r}; both will "
            f"show the same accounts ({', '.join(masked)}). Keep both, or remove one with: "
            f"dashtam disconnect {name}"
        )
