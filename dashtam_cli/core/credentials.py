"""Provider app credentials: from the environment, or sealed in the vault.

Resolution, for each provider (Schwab's variables shown):

1. ``SCHWAB_API_KEY`` and ``SCHWAB_API_SECRET`` in the environment, when both
   are set (one without the other is an error, not a silent fall-through);
2. the credentials stored sealed in the vault by
   ``dashtam providers configure schwab --client-id ID``;
3. otherwise an error saying both ways.

The redirect URI follows the same order (``SCHWAB_REDIRECT_URI``, then the
vault), with the provider's default (``https://127.0.0.1:8182``) last.

A provider with app keys but no OAuth login (a :class:`KeySpec`: Plaid's
``PLAID_CLIENT_ID``, ``PLAID_SECRET``, ``PLAID_ENV``) resolves the same way
(:func:`resolve_app_keys`); its stored secret is sealed together with the
environment it belongs to (``{"secret": ..., "environment": ...}``), since a
secret is valid in one environment only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from dashtam_cli.core.errors import ConfigError, InputError
from dashtam_cli.core.models import ProviderInfo
from dashtam_cli.core.oauth.tokens import AppCredentials
from dashtam_cli.core.providers import PROVIDER_NAMES, get_provider, provider
from dashtam_cli.core.providers import provider as provider_named
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.vault import db, schema

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dashtam_cli.core.providers.base import AppKeys, KeySpec, Provider, ProviderSpec
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions, Vault

__all__ = [
    "configure",
    "list_providers",
    "providers",
    "resolve_app_keys",
    "resolve_credentials",
    "store_credentials",
]


# Schwab's are 32 and 16 characters; anything longer, or with spaces or
# control characters, is a paste gone wrong, refused before it reaches a header.
_MAX_CREDENTIAL = 512


def _credential_problem(value: str) -> str | None:
    """Why ``value`` cannot be a client id or secret (never repeating it), or None."""
    if len(value) > _MAX_CREDENTIAL:
        return f"is over {_MAX_CREDENTIAL} characters"
    if not value.isascii() or not value.isprintable() or any(ch.isspace() for ch in value):
        return "holds spaces, control or non-ASCII characters"
    return None


def _from_env(spec: ProviderSpec, env: Mapping[str, str]) -> tuple[str, str] | None:
    client_id = env.get(spec.client_id_env, "").strip()
    secret = env.get(spec.client_secret_env, "").strip()
    if client_id and secret:
        for name, value in ((spec.client_id_env, client_id), (spec.client_secret_env, secret)):
            problem = _credential_problem(value)
            if problem is not None:
                raise ConfigError(
                    f"{name} {problem}",
                    hint=f"copy it again from {spec.display_name}'s developer portal",
                )
        return client_id, secret
    if client_id or secret:
        missing = spec.client_secret_env if client_id else spec.client_id_env
        present = spec.client_id_env if client_id else spec.client_secret_env
        raise ConfigError(
            f"{present} is set but {missing} is not",
            hint="set both, or unset both to use the credentials stored in the vault",
        )
    return None


async def _from_vault(vault: Vault, spec: ProviderSpec | str) -> tuple[str, str, str | None] | None:
    table = schema.provider_credentials
    name = spec if isinstance(spec, str) else spec.name
    async with vault.reading() as conn:
        row = (await conn.execute(select(table).where(table.c.provider == name))).one_or_none()
    if row is None:
        return None
    owner = row.provider
    client_id = vault.unseal_text(table.name, row.id, "client_id", row.client_id, owner=owner)
    secret = vault.unseal_text(table.name, row.id, "client_secret", row.client_secret, owner=owner)
    return client_id, secret, row.redirect_uri


def _redirect(spec: ProviderSpec, from_env: str | None, stored: str | None) -> tuple[str, str]:
    """The redirect URI to use, and how to name where it is set (for hints)."""
    if from_env:
        return from_env, spec.redirect_uri_env
    if stored:
        return stored, (
            f"the redirect URI saved by `dashtam providers configure {spec.name} "
            f"--redirect-uri` (or set {spec.redirect_uri_env})"
        )
    return spec.default_redirect_uri, spec.redirect_uri_env


async def resolve_credentials(
    vault: Vault, spec: ProviderSpec, environ: Mapping[str, str] | None = None
) -> AppCredentials:
    """Return the app credentials to log in with: environment first, then the vault."""
    env = os.environ if environ is None else environ
    env_redirect = env.get(spec.redirect_uri_env, "").strip() or None
    from_env = _from_env(spec, env)
    stored = await _from_vault(vault, spec) if from_env is None or env_redirect is None else None
    redirect, setting = _redirect(spec, env_redirect, stored[2] if stored else None)
    if from_env is not None:
        return AppCredentials(from_env[0], from_env[1], redirect, "environment", setting)
    if stored is not None:
        return AppCredentials(stored[0], stored[1], redirect, "vault", setting)
    raise ConfigError(
        f"no app credentials for {spec.display_name}",
        hint=f"run: dashtam providers configure {spec.name} --client-id ID, or set "
        f"{spec.client_id_env} and {spec.client_secret_env}",
    )


def _keys_from_env(name: str, keys: KeySpec, env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Client id, secret and environment from the environment, or None when neither is set."""
    client_id = env.get(keys.client_id_env, "").strip()
    secret = env.get(keys.secret_env, "").strip()
    if not client_id and not secret:
        return None
    if not client_id or not secret:
        missing = keys.secret_env if client_id else keys.client_id_env
        present = keys.client_id_env if client_id else keys.secret_env
        raise ConfigError(
            f"{present} is set but {missing} is not",
            hint="set both, or unset both to use the keys stored in the vault",
        )
    for setting, value in ((keys.client_id_env, client_id), (keys.secret_env, secret)):
        problem = _credential_problem(value)
        if problem is not None:
            raise ConfigError(f"{setting} {problem}", hint=f"copy it again from {keys.portal}")
    return client_id, secret, _environment(name, keys, env.get(keys.environment_env))


def _environment(name: str, keys: KeySpec, given: str | None, *, setting: str = "") -> str:
    """The environment named (or the default, the first), checked against the provider's."""
    value = (given or "").strip().lower() or keys.environments[0]
    if value not in keys.environments:
        raise ConfigError(
            f"{setting or keys.environment_env} must be one of {', '.join(keys.environments)}",
            hint=f"the {name} environment your keys are for",
        )
    return value


async def resolve_app_keys(
    vault: Vault, provider_name: str, environ: Mapping[str, str] | None = None
) -> AppKeys:
    """A provider's app keys (a :class:`KeySpec`): the environment first, then the vault."""
    from dashtam_cli.core.providers.base import AppKeys

    instance = provider(provider_name)
    keys = instance.keys
    if keys is None:
        raise ConfigError(f"{instance.display_name} has no app keys")
    env = os.environ if environ is None else environ
    redirect = env.get(keys.redirect_uri_env, "").strip() or None
    from_env = _keys_from_env(instance.name, keys, env)
    stored = None
    if from_env is None or redirect is None:
        row = await _from_vault(vault, instance.name)
        if row is not None:
            secret, environment = _split_secret(row[1], keys)
            stored = (row[0], secret, environment, row[2])
    if from_env is not None:
        redirect = redirect or (stored[3] if stored else None)
        return AppKeys(from_env[0], from_env[1], from_env[2], redirect, "environment")
    if stored is not None:
        register_secret(stored[1])
        return AppKeys(stored[0], stored[1], stored[2], redirect or stored[3], "vault")
    raise ConfigError(
        f"no app keys for {instance.display_name}",
        hint=f"run: dashtam providers configure {instance.name} --client-id ID --environment "
        f"ENV, or set {keys.client_id_env}, {keys.secret_env} and {keys.environment_env}",
    )


def _split_secret(sealed: str, keys: KeySpec) -> tuple[str, str]:
    """The stored secret and its environment (a record of :func:`_joined_secret`)."""
    try:
        data = json.loads(sealed)
        secret, environment = data["secret"], data["environment"]
    except (ValueError, TypeError, KeyError):
        secret, environment = sealed, keys.environments[0]
    if not isinstance(secret, str) or environment not in keys.environments:
        raise ConfigError(
            "the stored app keys are not readable",
            hint="store them again: dashtam providers configure PROVIDER --client-id ID",
        )
    return secret, environment


def _joined_secret(secret: str, environment: str) -> str:
    return json.dumps({"secret": secret, "environment": environment})


async def store_credentials(
    vault: Vault,
    spec: ProviderSpec | str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str | None,
) -> None:
    """Store (or replace) a provider's app credentials, sealed (``spec``: its settings or name)."""
    table = schema.provider_credentials
    name = spec if isinstance(spec, str) else spec.name
    now = db.utcnow_text()
    async with vault.writing() as conn:
        existing = await conn.scalar(select(table.c.id).where(table.c.provider == name))
        row_id = existing or str(uuid.uuid4())
        values = {
            "client_id": vault.seal(table.name, row_id, "client_id", client_id, owner=name),
            "client_secret": vault.seal(
                table.name, row_id, "client_secret", client_secret, owner=name
            ),
            "redirect_uri": redirect_uri,
            "updated_at": now,
        }
        row = {"id": row_id, "provider": name, "created_at": now, **values}
        stmt = db.insert(conn, table).values(**row)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


async def list_providers(
    vault: Vault | None, environ: Mapping[str, str] | None = None
) -> list[ProviderInfo]:
    """Every provider, with where its credentials would come from (never the values)."""
    env = os.environ if environ is None else environ
    stored: set[str] = set()
    if vault is not None:
        async with vault.reading() as conn:
            stored = set((await conn.scalars(select(schema.provider_credentials.c.provider))).all())
    infos = []
    for name in PROVIDER_NAMES:
        instance = provider(name)
        spec = instance.spec
        keys = instance.keys
        if spec is None and keys is not None:  # app keys without OAuth (Plaid)
            in_env = bool(
                env.get(keys.client_id_env, "").strip() and env.get(keys.secret_env, "").strip()
            )
            infos.append(
                ProviderInfo(
                    name=name,
                    display_name=instance.display_name,
                    credentials="environment" if in_env else "vault" if name in stored else None,
                    base_url=_quiet_base_url(instance, env),
                )
            )
            continue
        if spec is None:  # a login without app credentials (a pasted token, ...)
            infos.append(
                ProviderInfo(
                    name=name, display_name=instance.display_name, credentials=None, base_url=None
                )
            )
            continue
        in_env = bool(
            env.get(spec.client_id_env, "").strip() and env.get(spec.client_secret_env, "").strip()
        )
        source = "environment" if in_env else "vault" if name in stored else None
        infos.append(
            ProviderInfo(
                name=name,
                display_name=spec.display_name,
                credentials=source,
                base_url=spec.base_url(dict(env)),
            )
        )
    return infos


def _quiet_base_url(instance: Provider, env: Mapping[str, str]) -> str | None:
    """Where the provider's calls go, or None when its settings are unusable (said elsewhere)."""
    try:
        return instance.base_url(env)
    except ConfigError:
        return None


async def configure(  # noqa: PLR0913 - each is one input of the command
    settings: Settings,
    provider: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str | None,
    options: OpenOptions,
    environment: str | None = None,
) -> ProviderInfo:
    """Check and store a provider's app credentials in the vault, and audit it.

    ``environment`` is for providers whose keys belong to one of their
    environments (Plaid's sandbox or production); the others refuse it.
    """
    from dashtam_cli.core import audit
    from dashtam_cli.core.oauth.listener import parse_redirect_uri
    from dashtam_cli.core.vault.vault import open_vault

    instance = provider_named(provider)
    keys = instance.keys
    if keys is None:
        spec: ProviderSpec | str = get_provider(provider)
        if environment is not None:
            raise InputError(
                f"{instance.display_name} has no environments",
                hint="drop --environment",
            )
        display = instance.display_name
    else:
        spec = instance.name
        display = instance.display_name
        environment = _environment(instance.name, keys, environment, setting="--environment")
    client_id, client_secret = client_id.strip(), client_secret.strip()
    register_secret(client_secret)
    if not client_id or not client_secret:
        raise InputError("the client id and the secret must not be empty")
    for what, value in (("the client id", client_id), ("the secret", client_secret)):
        problem = _credential_problem(value)
        if problem is not None:
            raise InputError(
                f"{what} {problem}",
                hint=f"copy it again from {display}'s developer portal",
            )
    if redirect_uri is not None:
        parse_redirect_uri(redirect_uri, setting="--redirect-uri")
    sealed = client_secret if environment is None else _joined_secret(client_secret, environment)
    async with open_vault(settings, dataclasses.replace(options, create=True)) as vault:
        await store_credentials(
            vault, spec, client_id=client_id, client_secret=sealed, redirect_uri=redirect_uri
        )
        await audit.record(
            vault, operation="provider.configure", outcome="ok", provider=instance.name
        )
        (info,) = [p for p in await list_providers(vault) if p.name == instance.name]
    return info


async def providers(settings: Settings, options: OpenOptions) -> list[ProviderInfo]:
    """Every provider and where its credentials come from (the vault is read only if it exists)."""
    from dashtam_cli.core.vault.vault import open_vault, vault_absent

    if await vault_absent(settings):
        return await list_providers(None)
    async with open_vault(settings, options) as vault:
        return await list_providers(vault)
