"""`dashtam doctor`: check every part of a setup and say, for each, what is wrong and the fix.

Each check catches its own errors: a broken setup is what this module
reports, never what stops it. No check prints a secret: credentials are
named by where they come from, keys by their source.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import socket
import ssl
from typing import TYPE_CHECKING, Final, Literal

from dashtam_cli.core.errors import DashtamError, ExitCode
from dashtam_cli.core.models import Record

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from dashtam_cli.core.providers.base import ProviderSpec
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

__all__ = ["Check", "doctor_exit_code", "run_checks"]

Status = Literal["ok", "warning", "broken", "relogin"]
PROBE_TIMEOUT_S: Final = 5.0


class Check(Record):
    """One check's verdict: ``ok``, ``warning``, ``broken`` or ``relogin`` (a login to renew)."""

    check: str
    status: Status
    verdict: str
    fix: str | None = None


def doctor_exit_code(checks: list[Check]) -> ExitCode:
    """1 when something is broken, else 4 when a login must be renewed, else 0."""
    statuses = {c.status for c in checks}
    if "broken" in statuses:
        return ExitCode.ERROR
    if "relogin" in statuses:
        return ExitCode.REAUTH
    return ExitCode.OK


def _failed(name: str, exc: BaseException) -> Check:
    if isinstance(exc, DashtamError):
        return Check(check=name, status="broken", verdict=exc.message, fix=exc.hint)
    return Check(
        check=name,
        status="broken",
        verdict=f"the check itself failed ({type(exc).__name__})",
        fix="rerun with -vv and report it",
    )


async def _guard(name: str, job: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    """Run one check; any error becomes its verdict."""
    try:
        return await job()
    except Exception as exc:  # noqa: BLE001 - a doctor reports every failure, it never crashes
        return [_failed(name, exc)]


def _versions() -> list[Check]:
    from dashtam_cli import __version__

    return [
        Check(
            check="versions",
            status="ok",
            verdict=f"dashtam {__version__} on Python {platform.python_version()}",
        )
    ]


def _settings(env: Mapping[str, str]) -> tuple[Settings, Check]:
    """The settings, or the defaults and the reason the config is refused."""
    from dashtam_cli.core.paths import resolve_paths
    from dashtam_cli.core.settings import Settings, load_settings

    try:
        conf = load_settings(environ=env)
    except DashtamError as exc:
        return Settings(paths=resolve_paths(env)), _failed("config", exc)
    path = conf.paths.config_file
    verdict = f"{path} is valid" if path.exists() else f"no config file ({path}): defaults apply"
    return conf, Check(check="config", status="ok", verdict=verdict)


async def _key_source(conf: Settings, env: Mapping[str, str]) -> list[Check]:
    from dashtam_cli.core.vault.keys import ENV_KEY, decode_env_key, vetted_keyring_backend
    from dashtam_cli.core.vault.vault import OpenOptions, read_plain_meta, store_kind

    if env.get(ENV_KEY, "").strip():
        decode_env_key(env[ENV_KEY])
        return [Check(check="key source", status="ok", verdict=f"the key comes from {ENV_KEY}")]
    kind = conf.key_store
    exists = False
    if conf.database_url is not None or conf.paths.vault_file.exists():
        # An unreachable shared vault is the vault check's finding, not this one's.
        with contextlib.suppress(DashtamError):
            _, meta, _ = await read_plain_meta(conf)
            exists = bool(meta)
            kind = store_kind(meta, conf, OpenOptions()) if meta else kind
    if kind == "passphrase":
        where = conf.paths.key_file
        status: Status = "ok" if where.exists() or not exists else "broken"
        return [
            Check(
                check="key source",
                status=status,
                verdict=f"passphrase-protected key file {where}"
                + ("" if status == "ok" else " is missing"),
                fix=None if status == "ok" else f"restore {where} from your backup",
            )
        ]
    name = await vetted_keyring_backend(timeout=conf.keyring_timeout)
    return [Check(check="key source", status="ok", verdict=f"OS keyring ({name})")]


def _integrity(path: os.PathLike[str]) -> str:
    import sqlite3

    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:3])


async def _vault(conf: Settings, options: OpenOptions) -> tuple[list[Check], bool]:
    """Files, integrity, schema and key; and whether the vault can be opened for the rest."""
    from dashtam_cli.core.vault import files

    path = conf.paths.vault_file
    if conf.database_url is not None:
        found, ok = await _shared_vault(conf, conf.database_url)
        if not ok:
            return found, False
        return await _schema_and_key(conf, options, found)
    if not path.exists():
        return [
            Check(
                check="vault",
                status="warning",
                verdict=f"no vault at {path} yet",
                fix="dashtam vault init (or dashtam connect)",
            )
        ], False
    checks: list[Check] = []
    try:
        files.check_private(path.parent, directory=True)
        for file in files.sidecar_files(path):
            files.check_private(file)
        checks.append(Check(check="vault files", status="ok", verdict=f"{path}: private (0600)"))
    except DashtamError as exc:
        return [*checks, _failed("vault files", exc)], False
    try:
        result = await asyncio.to_thread(_integrity, path)
    except Exception as exc:  # noqa: BLE001 - sqlite3 errors of a damaged file
        result = f"{type(exc).__name__}: {exc}"
    if result == "ok":
        checks.append(Check(check="vault integrity", status="ok", verdict="integrity_check: ok"))
    else:
        checks.append(
            Check(
                check="vault integrity",
                status="broken",
                verdict=f"SQLite integrity_check failed: {result[:200]}",
                fix="restore vault.sqlite3 from a backup",
            )
        )
        return checks, False
    return await _schema_and_key(conf, options, checks)


async def _shared_vault(conf: Settings, url: str) -> tuple[list[Check], bool]:
    """A shared vault: its database reachable, with a vault in it (no files to check here).

    An unreachable server or a refused login raises (the caller reports it,
    as one line with the password masked).
    """
    from dashtam_cli.core.vault.database import masked_url
    from dashtam_cli.core.vault.vault import vault_absent

    shown = masked_url(url)
    if await vault_absent(conf):
        return [
            Check(
                check="vault",
                status="warning",
                verdict=f"no vault in the shared database {shown} yet",
                fix="dashtam vault init (or dashtam vault copy --to URL from an existing vault)",
            )
        ], False
    verdict = f"{shown}: reachable; integrity is PostgreSQL's own (pg_amcheck, backups)"
    return [Check(check="vault database", status="ok", verdict=verdict)], True


async def _schema_and_key(
    conf: Settings, options: OpenOptions, checks: list[Check]
) -> tuple[list[Check], bool]:
    """The schema's version and the key's proof, after the vault's storage checks."""
    from dashtam_cli.core.vault.migrations import LATEST
    from dashtam_cli.core.vault.vault import check_key, read_plain_meta

    try:
        version, _, _ = await read_plain_meta(conf)
    except DashtamError as exc:
        return [*checks, _failed("schema", exc)], False
    checks.append(
        Check(
            check="schema",
            status="ok",
            verdict=f"version {version} (this dashtam knows up to {LATEST})"
            + ("; upgraded on next use" if version < LATEST else ""),
        )
    )
    try:
        source = await check_key(conf, options)
    except DashtamError as exc:
        return [*checks, _failed("vault key", exc)], False
    checks.append(Check(check="vault key", status="ok", verdict=f"the key from {source} opens it"))
    return checks, True


async def _stored_providers(
    conf: Settings, options: OpenOptions, *, vault_ok: bool
) -> dict[str, str | None]:
    """Providers with credentials in the vault, and their saved redirect URI (no key needed)."""
    import sqlite3

    if not vault_ok:
        return {}
    if conf.database_url is not None:
        return await _stored_providers_shared(conf, options)

    def read() -> dict[str, str | None]:
        uri = f"file:{os.fspath(conf.paths.vault_file)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT provider, redirect_uri FROM provider_credentials")
            return {str(p): (r if isinstance(r, str) else None) for p, r in rows.fetchall()}
        finally:
            conn.close()

    return await asyncio.to_thread(read)


async def _stored_providers_shared(conf: Settings, options: OpenOptions) -> dict[str, str | None]:
    """:func:`_stored_providers` of a shared vault, read through the vault (its key proved)."""
    import dataclasses

    from sqlalchemy import select

    from dashtam_cli.core.vault import schema
    from dashtam_cli.core.vault.vault import open_vault

    table = schema.provider_credentials
    async with (
        open_vault(conf, dataclasses.replace(options, create=False)) as vault,
        vault.reading() as conn,
    ):
        rows = await conn.execute(select(table.c.provider, table.c.redirect_uri))
        return {str(p): (r if isinstance(r, str) else None) for p, r in rows.all()}


def _port_free(port: int) -> bool:
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


async def _providers(
    env: Mapping[str, str], stored: dict[str, str | None], used: set[str]
) -> list[Check]:
    from dashtam_cli.core.credentials import _from_env
    from dashtam_cli.core.providers import oauth_specs

    checks: list[Check] = []
    for spec in oauth_specs():
        name = spec.name
        label = f"{name} credentials"
        try:
            from_env = _from_env(spec, env)
        except DashtamError as exc:
            checks.append(_failed(label, exc))
            from_env = None
        else:
            if from_env is not None:
                verdict = f"from {spec.client_id_env} and {spec.client_secret_env}"
                checks.append(Check(check=label, status="ok", verdict=verdict))
            elif name in stored:
                checks.append(Check(check=label, status="ok", verdict="stored in the vault"))
            else:
                checks.append(
                    Check(
                        check=label,
                        status="broken" if name in used else "warning",
                        verdict=f"no app credentials for {spec.display_name}",
                        fix=f"dashtam providers configure {name} --client-id ID, or set "
                        f"{spec.client_id_env} and {spec.client_secret_env}",
                    )
                )
        checks.append(_redirect_check(spec, env, stored.get(name)))
    return checks + _key_checks(env, stored, used)


def _key_checks(
    env: Mapping[str, str], stored: dict[str, str | None], used: set[str]
) -> list[Check]:
    """Where the app keys of providers without OAuth (Plaid) come from, never their values."""
    from dashtam_cli.core.credentials import _keys_from_env
    from dashtam_cli.core.providers import PROVIDER_NAMES, provider

    checks: list[Check] = []
    for name in PROVIDER_NAMES:
        instance = provider(name)
        keys = instance.keys
        if keys is None or instance.spec is not None:
            continue
        label = f"{name} keys"
        try:
            from_env = _keys_from_env(name, keys, env)
        except DashtamError as exc:
            checks.append(_failed(label, exc))
            continue
        if from_env is not None:
            verdict = f"from {keys.client_id_env} and {keys.secret_env} ({from_env[2]})"
            checks.append(Check(check=label, status="ok", verdict=verdict))
        elif name in stored:
            checks.append(Check(check=label, status="ok", verdict="stored in the vault"))
        elif name in used:  # a provider not used and not configured is no one's concern
            checks.append(
                Check(
                    check=label,
                    status="broken",
                    verdict=f"no app keys for {instance.display_name}",
                    fix=f"dashtam providers configure {name} --client-id ID --environment ENV, "
                    f"or set {keys.client_id_env}, {keys.secret_env} and {keys.environment_env}",
                )
            )
    return checks


def _redirect_check(spec: ProviderSpec, env: Mapping[str, str], stored: str | None) -> Check:
    """The redirect URI a login would use, and whether its port is free on 127.0.0.1."""
    from dashtam_cli.core.credentials import _redirect
    from dashtam_cli.core.oauth.listener import parse_redirect_uri

    label = f"{spec.name} redirect URI"
    uri, setting = _redirect(spec, env.get(spec.redirect_uri_env, "").strip() or None, stored)
    try:
        target = parse_redirect_uri(uri, setting=setting)
    except DashtamError as exc:
        return _failed(label, exc)
    if _port_free(target.port):
        return Check(check=label, status="ok", verdict=f"{uri}: port {target.port} is free")
    return Check(
        check=label,
        status="warning",
        verdict=f"{uri}: port {target.port} is in use on 127.0.0.1",
        fix=f"stop what listens there (ss -ltnp 'sport = :{target.port}'), or choose "
        f"another port in {setting} and in the app's callback URL",
    )


def _tls_probe(host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host),
    ):
        pass


async def _tls(conf: Settings, env: Mapping[str, str], timeout: float) -> list[Check]:  # noqa: ASYNC109
    import urllib.parse

    from dashtam_cli.core.http import tls_context
    from dashtam_cli.core.providers import oauth_specs

    chosen = tls_context(conf, env)
    origin = (
        "the ca_bundle setting"
        if conf.ca_bundle
        else ("SSL_CERT_FILE" if env.get("SSL_CERT_FILE", "").strip() else "certifi's bundle")
    )
    if isinstance(chosen, ssl.SSLContext):
        context = chosen
    else:
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
    checks = [Check(check="CA certificates", status="ok", verdict=f"from {origin}")]
    for spec in oauth_specs():
        name = spec.name
        parts = urllib.parse.urlsplit(spec.base_url(env))
        host, port = parts.hostname or "", parts.port or 443
        label = f"{name} TLS"
        try:
            await asyncio.to_thread(_tls_probe, host, port, context, timeout)
        except ssl.SSLCertVerificationError as exc:
            checks.append(
                Check(
                    check=label,
                    status="broken",
                    verdict=f"the TLS certificate of {host} could not be verified "
                    f"({exc.verify_message})",
                    fix=f"check the CA settings (ca_bundle, SSL_CERT_FILE; now {origin})",
                )
            )
        except (OSError, ssl.SSLError) as exc:
            checks.append(
                Check(
                    check=label,
                    status="warning",
                    verdict=f"{host}:{port} is unreachable ({type(exc).__name__}); not checked",
                    fix="check the network, a proxy or the provider's URL setting",
                )
            )
        else:
            checks.append(
                Check(check=label, status="ok", verdict=f"the certificate of {host} verifies")
            )
    return checks


_TOKEN_STATUS: Final[dict[str, Status]] = {
    "ok": "ok",
    "access_expired": "ok",
    "refresh_expiring": "warning",
    "reauth_required": "relogin",
}


async def _connections(
    conf: Settings, options: OpenOptions, clock: Callable[[], dt.datetime]
) -> tuple[list[Check], set[str]]:
    import dataclasses

    from sqlalchemy import func, select

    from dashtam_cli.core.connections import list_connections
    from dashtam_cli.core.tokens import token_status
    from dashtam_cli.core.vault import schema
    from dashtam_cli.core.vault.vault import open_vault

    checks: list[Check] = []
    async with open_vault(conf, dataclasses.replace(options, create=False)) as vault:
        infos = await list_connections(vault)
        table = schema.accounts
        async with vault.reading() as conn:
            rows = await conn.execute(
                select(table.c.connection_id, func.max(table.c.fetched_at)).group_by(
                    table.c.connection_id
                )
            )
            fetched = {str(cid): str(at) for cid, at in rows.all() if at is not None}
    now = clock()
    for info in infos:
        state = token_status(info, now)
        last = fetched.get(info.id)
        checks.append(
            Check(
                check=f"connection {info.name}",
                status=_TOKEN_STATUS.get(state.state, "broken"),
                verdict=f"{info.provider}: tokens {state.state}"
                + (f", refresh token {state.refresh_expires}" if state.refresh_expires else "")
                + f"; last fetch {last or 'never'}",
                fix=None if state.action == "none" else state.action,
            )
        )
    if not infos:
        checks.append(
            Check(
                check="connections",
                status="ok",
                verdict="no connections yet",
                fix="dashtam connect PROVIDER (see: dashtam providers list)",
            )
        )
    return checks, {info.provider for info in infos}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _asking_once(options: OpenOptions) -> OpenOptions:
    """The same options, with a passphrase prompt that asks once for the key check and the rest."""
    import dataclasses

    prompt = options.prompt
    if prompt is None:
        return options
    answers: list[str] = []

    def once(confirm: bool) -> str:  # noqa: FBT001 - the prompt protocol
        if answers and not confirm:
            return answers[-1]
        answers.append(prompt(confirm))
        return answers[-1]

    return dataclasses.replace(options, prompt=once)


async def run_checks(
    options: OpenOptions,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], dt.datetime] = _utcnow,
    probe_timeout: float = PROBE_TIMEOUT_S,
) -> list[Check]:
    """Run every check in order and return their verdicts; never raises for a broken setup."""
    env = os.environ if environ is None else environ
    options = _asking_once(options)
    checks = _versions()
    conf, config_check = _settings(env)
    checks.append(config_check)
    checks += await _guard("key source", lambda: _key_source(conf, env))
    vault_checks: list[Check] = []
    vault_ok = False
    try:
        vault_checks, vault_ok = await _vault(conf, options)
    except Exception as exc:  # noqa: BLE001 - reported like every other failure
        vault_checks = [_failed("vault", exc)]
    checks += vault_checks
    connection_checks: list[Check] = []
    used: set[str] = set()
    if vault_ok:
        try:
            connection_checks, used = await _connections(conf, options, clock)
        except Exception as exc:  # noqa: BLE001
            connection_checks = [_failed("connections", exc)]
    try:
        stored = await _stored_providers(conf, options, vault_ok=vault_ok)
    except Exception:  # noqa: BLE001 - an unreadable table is the vault checks' finding
        stored = {}
    checks += await _guard("providers", lambda: _providers(env, stored, used))
    checks += await _guard("CA certificates", lambda: _tls(conf, env, probe_timeout))
    checks += connection_checks
    return checks
