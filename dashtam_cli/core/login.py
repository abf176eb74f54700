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
    instance = provider_named(provider)
    _check_options(instance, options)
    name = options.update if options.update is not None else options.name
    name = check_name(instance.name if name is None else name)
    vault_options = OpenOptions(
        create=True, prompt=options.passphrase_prompt, environ=options.environ
    )
    async with open_vault(settings, vault_options) as vault:
        if options.update is not None:
            await _check_update(vault, instance, name)
        elif await connection_exists(vault, name) and options.confirm_replace is not None:
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
        elif instance.login is LoginKind.LINK:
            info, credential = await _link(
                settings, vault, instance, name=name, options=options, note=note
            )
        else:
            info, credential = await _token(
                settings, vault, instance, name=name, options=options, note=note
            )
        updated = instance.login is LoginKind.LINK and options.update is not None
        await audit.record(
            vault,
            operation="connection.update" if updated else "connection.save",
            outcome="ok",
            provider=instance.name,
            connection_id=info.id,
            connection_name=name,
        )
        if updated:
            log.info("logged in again to %s as %r", instance.display_name, name)
            return info
        log.info("connected %s as %r", instance.display_name, name)
        await _warn_if_connected_elsewhere(settings, vault, info, credential, options)
        return info


def _check_options(instance: Provider, options: LoginOptions) -> None:
    """Refuse the options that do not apply to how ``instance`` logs in."""
    if options.mode not in MODES:
        raise InputError(f"unknown login mode {options.mode!r}")
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
    if instance.login is not LoginKind.LINK and (options.update or options.products):
        raise InputError(
            f"{instance.display_name} has no --update or --products",
            hint=f"log in again with: {instance.relogin_command(options.name or instance.name)}",
        )
    if instance.login is LoginKind.LINK and options.mode == "manual":
        raise InputError(
            f"{instance.display_name} logs in on a page this machine serves: --manual does not "
            "apply",
            hint="use --no-browser to print the page's address instead",
        )
    if options.update is not None and options.name is not None and options.name != options.update:
        raise InputError("--update names the connection: drop --name", hint="--update NAME")


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


async def _check_update(vault: Vault, instance: Provider, name: str) -> None:
    """``--update NAME``: the connection must exist, and be this provider's."""
    from dashtam_cli.core.connections import list_connections

    found = await list_connections(vault, name=name) if await connection_exists(vault, name) else []
    if not found:
        raise InputError(
            f"there is no connection named {name!r} to log in to again",
            hint=f"list them with: dashtam connections list; or connect a new one: "
            f"dashtam connect {instance.name} --name {name}",
        )
    if found[0].provider != instance.name:
        raise InputError(
            f"the connection {name!r} is a {found[0].provider} connection, not "
            f"{instance.display_name}",
            hint=f"log in to it again with: dashtam connect {found[0].provider} --name {name}",
        )


def _link_user_id(record: str | None) -> str:
    """The connection's random id at the provider: kept in its record, else a new one (no PII)."""
    import json
    import secrets

    if record is not None:
        try:
            kept = json.loads(record).get("user_id")
        except (ValueError, AttributeError):
            kept = None
        if isinstance(kept, str) and kept:
            return kept
    return f"dashtam-{secrets.token_hex(16)}"


async def _link(  # noqa: PLR0913 - one login's parts
    settings: Settings,
    vault: Vault,
    instance: Provider,
    *,
    name: str,
    options: LoginOptions,
    note: AuditNote,
) -> tuple[ConnectionInfo, str]:
    """The hosted-page login: the provider's page on the listener, its result made a credential.

    In update mode (``options.update``) the stored credential stays: the
    page only renews the login at the provider, and nothing is exchanged.
    """
    from dashtam_cli.core import store
    from dashtam_cli.core.connections import list_connections, set_status
    from dashtam_cli.core.credentials import resolve_app_keys
    from dashtam_cli.core.http import make_client
    from dashtam_cli.core.models import ConnectionState
    from dashtam_cli.core.oauth import hosted
    from dashtam_cli.core.oauth.listener import parse_redirect_uri
    from dashtam_cli.core.providers.base import CallRecord, LinkRequest

    keys_spec = instance.keys
    if keys_spec is None:  # a provider's declaration error, not the user's
        raise DashtamError(f"{instance.display_name} declares a hosted login but no app keys")
    env = os.environ if options.environ is None else options.environ
    keys = await resolve_app_keys(vault, instance.name, env)
    target = parse_redirect_uri(
        keys.redirect_uri or keys_spec.default_redirect_uri, setting=keys_spec.redirect_uri_env
    )
    existing = None
    record: str | None = None
    if options.update is not None:
        (existing,) = await list_connections(vault, name=name)
        record = await store.load_secret(vault, existing)

    async def audited(call: CallRecord) -> None:
        await note(
            f"login.{call.operation}",
            call.outcome,
            http_status=call.http_status,
            duration_ms=call.duration_ms,
            correlation_id=call.correlation_id,
            detail=call.detail,
        )

    request = LinkRequest(
        user_id=_link_user_id(record),
        products=options.products,
        update=record,
        redirect_uri=keys.redirect_uri,
        options=settings.options_of(instance.name),
    )
    async with make_client(settings, transport=options.transport) as client:
        page = await instance.hosted_page(client, keys, request, record=audited, environ=env)
        for secret in page.secrets:
            register_secret(secret)
        await note("login.page", "started")
        try:
            fields = await hosted.hosted_login(settings, target, page, options, note)
        except (asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.shield(note("login.page", "interrupted"))
            raise
        except DashtamError as exc:
            await note("login.page", "failed", detail=exc.message)
            raise
        register_secret(fields.get("public_token"))
        await note("login.page", "ok")
        if existing is not None and record is not None:
            await set_status(vault, existing.id, ConnectionState.ACTIVE)
            (info,) = await list_connections(vault, name=name)
            return info, record
        secret = await instance.complete_hosted(
            client, keys, fields, request, record=audited, environ=env
        )
    register_secret(secret)
    info = await save_secret_login(vault, provider=instance.name, name=name, secret=secret)
    return info, secret


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
