"""Settings resolved from flags, environment and the TOML config file, in that order."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.paths import Paths, resolve_paths

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

__all__ = ["OUTPUT_FORMATS", "Settings", "load_settings"]

log = logging.getLogger(__name__)

OUTPUT_FORMATS: Final = ("table", "json", "jsonl", "csv")
KEY_STORES: Final = ("keyring", "passphrase")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every setting dashtam reads, after precedence has been applied.

    Precedence, highest first: command-line flag, environment variable,
    config file, default. ``sources`` records where each value came from.
    """

    paths: Paths
    format: str | None = None
    color: bool = True
    keyring_timeout: float = 10.0
    key_store: str = "keyring"
    ca_bundle: str | None = None
    # `dashtam sync`: the history a connection's first sync fetches, the days
    # each later sync fetches again (late-posted and corrected transactions),
    # and the age after which queries say the data is old.
    sync_history_days: int = 730
    sync_overlap_days: int = 7
    stale_after_hours: float = 24.0
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Each provider's own settings, unparsed: ``{provider: {key: (value, where)}}``
    # from the config file's ``[providers.NAME]`` table and ``DASHTAM_NAME_KEY``
    # variables (which win). The provider parses its own and names ``where``.
    provider_options: Mapping[str, Mapping[str, tuple[object, str]]] = dataclasses.field(
        default_factory=dict
    )
    # `dashtam export`: the config file's ``[export]`` table as given (account
    # names, counter accounts), for the exporter to check; and where it is.
    export: Mapping[str, object] = dataclasses.field(default_factory=dict)
    # A shared vault: a ``postgresql+asyncpg://`` URL (``DASHTAM_DATABASE_URL``,
    # or ``url`` in the config file's ``[database]`` table). None: the local
    # SQLite file. It may hold a password: show it only through ``masked_url``.
    database_url: str | None = None

    def options_of(self, provider: str) -> Mapping[str, tuple[object, str]]:
        """The settings of ``provider`` (none when it has none)."""
        return self.provider_options.get(provider, {})


def _parse_format(raw: object) -> str:
    value = str(raw).strip().lower()
    if value not in OUTPUT_FORMATS:
        msg = f"unknown output format {raw!r}"
        raise ValueError(msg)
    return value


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    msg = f"{raw!r} is not a boolean"
    raise ValueError(msg)


def _parse_amount(raw: object, *, unit: str, high: int) -> float:
    """A number of ``unit`` over 0 and up to ``high`` (booleans refused, text read as a number)."""
    if isinstance(raw, bool):
        msg = f"{raw!r} is not a number of {unit}"
        raise ValueError(msg)  # noqa: TRY004 - ValueError is what callers translate
    try:
        value = float(raw)  # type: ignore[arg-type]  # any value: float() raising is the check
    except (TypeError, ValueError):
        msg = f"{raw!r} is not a number of {unit}"
        raise ValueError(msg) from None
    if not 0 < value <= high:
        msg = f"{raw!r} is outside 0 to {high} {unit}"
        raise ValueError(msg)
    return value


def _parse_seconds(raw: object) -> float:
    return _parse_amount(raw, unit="seconds", high=3600)  # an hour is the sane upper bound


def _parse_days(raw: object, *, low: int, high: int) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        msg = f"{raw!r} is not a whole number of days"
        raise ValueError(msg)
    try:
        value = int(str(raw).strip()) if not isinstance(raw, int | float) else int(raw)
    except ValueError:
        msg = f"{raw!r} is not a whole number of days"
        raise ValueError(msg) from None
    if not low <= value <= high:
        msg = f"{raw!r} is outside {low} to {high} days"
        raise ValueError(msg)
    return value


def _parse_history(raw: object) -> int:
    return _parse_days(raw, low=1, high=36500)


def _parse_overlap(raw: object) -> int:
    return _parse_days(raw, low=0, high=365)


def _parse_hours(raw: object) -> float:
    return _parse_amount(raw, unit="hours", high=24 * 365)


def _parse_key_store(raw: object) -> str:
    value = str(raw).strip().lower()
    if value not in KEY_STORES:
        msg = f"unknown key store {raw!r} (choose {' or '.join(KEY_STORES)})"
        raise ValueError(msg)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    env: str
    parse: Callable[[object], Any]
    toml: tuple[type, ...] = (str,)  # the TOML types the config file may give


def _parse_path(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        msg = "an empty path"
        raise ValueError(msg)
    if not value.isprintable():
        msg = "a path with control characters"
        raise ValueError(msg)
    return value


_SPECS: Final[dict[str, _Spec]] = {
    "format": _Spec("DASHTAM_FORMAT", _parse_format),
    "color": _Spec("DASHTAM_COLOR", _parse_bool, (bool,)),
    "keyring_timeout": _Spec("DASHTAM_KEYRING_TIMEOUT", _parse_seconds, (int, float)),
    "key_store": _Spec("DASHTAM_KEY_STORE", _parse_key_store),
    "ca_bundle": _Spec("DASHTAM_CA_BUNDLE", _parse_path),
    "sync_history_days": _Spec("DASHTAM_SYNC_HISTORY_DAYS", _parse_history, (int,)),
    "sync_overlap_days": _Spec("DASHTAM_SYNC_OVERLAP_DAYS", _parse_overlap, (int,)),
    "stale_after_hours": _Spec("DASHTAM_STALE_AFTER_HOURS", _parse_hours, (int, float)),
}


# A config file is a few lines; a bigger one is a mistake (or an attack on the parser).
MAX_CONFIG_BYTES: Final = 1 << 20


_TOML_NAMES: Final[dict[type, str]] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "a table",
}


def _read_config_file(path: Path) -> dict[str, Any]:
    """Read the config file, refusing one that another user could have written.

    It can name the CA bundle that provider TLS trusts, so it is checked like
    the vault's files (owner and write permissions, through symbolic links).
    """
    from dashtam_cli.core.vault.errors import UnsafeFiles
    from dashtam_cli.core.vault.files import check_trusted

    hint = "fix the file or move it aside; docs/configuration.md lists the keys"
    try:
        check_trusted(path, what="config file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except UnsafeFiles as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}",
            hint="check that the path (and DASHTAM_HOME or DASHTAM_CONFIG) names a readable "
            "file in a directory",
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes", hint=hint)
    import tomllib  # here: without a config file (the usual case) its parser is not loaded

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start})", hint=hint
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", hint=hint) from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests arrays or tables too deeply to read", hint=hint
        ) from None


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Resolve every setting from flags (``overrides``), environment and config file.

    ``overrides`` holds values given on the command line; ``None`` values are
    ignored, so a flag that was not given does not mask lower layers.
    ``NO_COLOR`` (https://no-color.org) turns colour off unless a flag says otherwise.
    """
    env = os.environ if environ is None else environ
    paths = resolve_paths(env)
    config = _read_config_file(paths.config_file)
    for key in sorted(set(config) - set(_SPECS) - {"providers", "export", "database"}):
        log.warning("ignoring unknown key %r in %s", key, paths.config_file)
    provider_options = _provider_options(config.get("providers"), env, paths.config_file)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for name, spec in _SPECS.items():
        if name in flags:
            raw, origin, where = flags[name], "flag", "command line"
        elif env.get(spec.env, "").strip():
            raw, origin, where = env[spec.env], "env", f"environment variable {spec.env}"
        elif name == "color" and env.get("NO_COLOR", ""):
            raw, origin, where = False, "env", "environment variable NO_COLOR"
        elif name in config:
            raw, origin, where = config[name], "config", f"config file {paths.config_file}"
        else:
            continue
        try:
            if origin == "config" and (
                isinstance(raw, bool) is not (bool in spec.toml) or not isinstance(raw, spec.toml)
            ):
                wanted = " or ".join(_TOML_NAMES[t] for t in spec.toml)
                msg = f"{_TOML_NAMES.get(type(raw), type(raw).__name__)} given, {wanted} expected"
                raise ValueError(msg)  # noqa: TRY301 - reported like every other bad value
            values[name] = spec.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"invalid value for {name!r} in {where}: {exc}",
                hint="docs/configuration.md lists every setting and its values",
            ) from None
        sources[name] = origin
    export = config.get("export", {})
    if not isinstance(export, dict):
        raise ConfigError(
            f"invalid value for 'export' in config file {paths.config_file}: a table expected",
            hint="docs/export.md shows the [export] table",
        )
    database_url = _database_url(config.get("database"), env, paths.config_file, sources)
    return Settings(
        paths=paths,
        sources=sources,
        provider_options=provider_options,
        export=export,
        database_url=database_url,
        **values,
    )


DATABASE_URL_ENV: Final = "DASHTAM_DATABASE_URL"


def _database_url(
    table: object, env: Mapping[str, str], config_file: Path, sources: dict[str, str]
) -> str | None:
    """The shared vault's URL, checked: ``DASHTAM_DATABASE_URL``, else ``[database] url``."""
    from dashtam_cli.core.vault.database import check_database_url

    hint = "docs/shared-vault.md shows the URL's form: postgresql+asyncpg://USER@HOST/DATABASE"
    raw = env.get(DATABASE_URL_ENV, "").strip()
    where = f"environment variable {DATABASE_URL_ENV}"
    origin = "env"
    if not raw and table is not None:
        if not isinstance(table, dict):
            raise ConfigError(
                f"invalid value for 'database' in config file {config_file}: a table expected",
                hint=hint,
            )
        for key in sorted(set(table) - {"url"}):
            log.warning("ignoring unknown key 'database.%s' in %s", key, config_file)
        value = table.get("url")
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"invalid value for 'database.url' in config file {config_file}: a string expected",
                hint=hint,
            )
        raw = (value or "").strip()
        where = f"config file {config_file}"
        origin = "config"
    if not raw:
        return None
    try:
        check_database_url(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid database URL in {where}: {exc}", hint=hint) from None
    sources["database_url"] = origin
    return raw


def _provider_options(
    table: object, env: Mapping[str, str], config_file: Path
) -> dict[str, dict[str, tuple[object, str]]]:
    """Each provider's settings: ``[providers.NAME]`` keys, then ``DASHTAM_NAME_KEY`` variables.

    Only the providers' names are known here, not their settings: a value is
    kept as given, with where it came from, for its provider to parse.
    """
    from dashtam_cli.core.providers import provider_names

    names = provider_names()
    options: dict[str, dict[str, tuple[object, str]]] = {}
    if table is not None:
        if not isinstance(table, dict):
            raise ConfigError(
                f"invalid value for 'providers' in config file {config_file}: "
                "a table of provider tables expected, e.g. [providers.NAME]",
                hint="docs/configuration.md lists every setting and its values",
            )
        for name, keys in sorted(table.items()):
            if name not in names or not isinstance(keys, dict):
                log.warning("ignoring unknown key 'providers.%s' in %s", name, config_file)
                continue
            options[name] = {
                str(key): (value, f"config file {config_file} [providers.{name}]")
                for key, value in keys.items()
            }
    for name in names:
        prefix = f"DASHTAM_{name.upper()}_"
        for variable, value in env.items():
            if variable.startswith(prefix) and value.strip():
                key = variable.removeprefix(prefix).lower()
                options.setdefault(name, {})[key] = (value, f"environment variable {variable}")
    return options
