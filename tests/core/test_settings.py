"""Settings: flag over environment over config file over default, with clear errors."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.settings import load_settings


def write_config(home: Path, text: str) -> Path:
    """Write config.toml in the config directory under DASHTAM_HOME."""
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@dataclasses.dataclass(frozen=True)
class Layers:
    """One setting's value at each layer, chosen so that every layer changes the result."""

    name: str
    env: str
    default: Any
    config_toml: str
    config: Any
    env_raw: str
    env_value: Any
    flag: Any


LAYERS = [
    Layers("format", "DASHTAM_FORMAT", None, '"csv"', "csv", "JSONL", "jsonl", "table"),
    Layers("color", "DASHTAM_COLOR", True, "false", False, "yes", True, False),  # noqa: FBT003
    Layers("keyring_timeout", "DASHTAM_KEYRING_TIMEOUT", 10.0, "20", 20.0, "30.5", 30.5, 40.0),
    Layers(
        "key_store", "DASHTAM_KEY_STORE", "keyring", '"passphrase"', "passphrase", "keyring",
        "keyring", "passphrase",
    ),
    Layers(
        "ca_bundle", "DASHTAM_CA_BUNDLE", None, '"/c/ca.pem"', "/c/ca.pem", "/e/ca.pem",
        "/e/ca.pem", "/f/ca.pem",
    ),
    Layers("sync_history_days", "DASHTAM_SYNC_HISTORY_DAYS", 730, "365", 365, "90", 90, 30),
    Layers("sync_overlap_days", "DASHTAM_SYNC_OVERLAP_DAYS", 7, "14", 14, "0", 0, 3),
    Layers("stale_after_hours", "DASHTAM_STALE_AFTER_HOURS", 24.0, "12", 12.0, "0.5", 0.5, 48.0),
]  # fmt: skip


def test_defaults() -> None:
    """With nothing set, the documented defaults apply."""
    settings = load_settings()
    assert (
        settings.format,
        settings.color,
        settings.keyring_timeout,
        settings.key_store,
        settings.ca_bundle,
    ) == (None, True, 10.0, "keyring", None)
    assert settings.sources == {}


def test_every_setting_is_covered_here() -> None:
    """The precedence test below names every setting Settings has."""
    names = {f.name for f in dataclasses.fields(load_settings())}
    # Providers' own settings are tested apart (test_provider_options_*).
    names -= {"paths", "sources", "provider_options", "export", "database_url"}
    assert names == {layer.name for layer in LAYERS}


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_precedence_flag_env_config_default(
    layer: Layers, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For each setting, each layer wins over the ones below it, and the source is recorded."""

    def value(**overrides: object) -> tuple[Any, str | None]:
        settings = load_settings(overrides=overrides)
        return getattr(settings, layer.name), settings.sources.get(layer.name)

    assert value() == (layer.default, None)
    write_config(isolated_env, f"{layer.name} = {layer.config_toml}\n")
    assert value() == (layer.config, "config")
    monkeypatch.setenv(layer.env, layer.env_raw)
    assert value() == (layer.env_value, "env")
    assert value(**{layer.name: layer.flag}) == (layer.flag, "flag")
    # A flag that was not given (None) does not hide the layers below it.
    assert value(**{layer.name: None}) == (layer.env_value, "env")
    # An empty variable counts as unset.
    monkeypatch.setenv(layer.env, "  ")
    assert value() == (layer.config, "config")


def test_no_color(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR turns colour off over the config file; DASHTAM_COLOR and the flag override it."""
    write_config(isolated_env, "color = true\n")
    monkeypatch.setenv("NO_COLOR", "")
    assert load_settings().color is True
    monkeypatch.setenv("NO_COLOR", "1")
    settings = load_settings()
    assert settings.color is False
    assert settings.sources["color"] == "env"
    monkeypatch.setenv("DASHTAM_COLOR", "yes")
    assert load_settings().color is True
    assert load_settings(overrides={"color": False}).color is False


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("DASHTAM_FORMAT", "xml", "unknown output format"),
        ("DASHTAM_KEYRING_TIMEOUT", "soon", "not a number of seconds"),
        ("DASHTAM_KEYRING_TIMEOUT", "0", "outside 0 to 3600"),
        ("DASHTAM_KEYRING_TIMEOUT", "3601", "outside 0 to 3600"),
        ("DASHTAM_KEY_STORE", "file", "unknown key store"),
        ("DASHTAM_COLOR", "maybe", "not a boolean"),
        ("DASHTAM_SYNC_HISTORY_DAYS", "two years", "not a whole number of days"),
        ("DASHTAM_SYNC_HISTORY_DAYS", "0", "outside 1 to 36500 days"),
        ("DASHTAM_SYNC_HISTORY_DAYS", "1.5", "not a whole number of days"),
        ("DASHTAM_SYNC_OVERLAP_DAYS", "-1", "outside 0 to 365 days"),
        ("DASHTAM_SYNC_OVERLAP_DAYS", "366", "outside 0 to 365 days"),
        ("DASHTAM_STALE_AFTER_HOURS", "0", "outside 0 to 8760 hours"),
        ("DASHTAM_STALE_AFTER_HOURS", "soon", "not a number of hours"),
    ],
)
def test_bad_environment_values_name_their_source(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    """A bad value is a ConfigError naming the variable and what is wrong."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"environment variable {name}" in caught.value.message
    assert needle in caught.value.message
    assert caught.value.hint
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('format = "xml"', "invalid value for 'format'"),
        ('color = "maybe"', "invalid value for 'color'"),
        ("keyring_timeout = true", "a boolean given, an integer or a number expected"),
        ('keyring_timeout = "20"', "a string given, an integer or a number expected"),
        ('color = "yes"', "a string given, a boolean expected"),
        ("format = 3", "an integer given, a string expected"),
        ("ca_bundle = 5", "an integer given, a string expected"),
        ("ca_bundle = { path = '/x' }", "a table given, a string expected"),
        ('ca_bundle = "/a\\u0000b"', "a path with control characters"),
        ("key_store = [1]", "an array given, a string expected"),
        ("keyring_timeout = -1", "outside 0 to 3600"),
        ('key_store = "file"', "unknown key store"),
        ('ca_bundle = ""', "an empty path"),
        ("sync_history_days = 1.5", "a number given, an integer expected"),
        ('sync_overlap_days = "7"', "a string given, an integer expected"),
        ("sync_overlap_days = true", "a boolean given, an integer expected"),
        ("stale_after_hours = -2", "outside 0 to 8760 hours"),
    ],
)
def test_bad_config_values_name_the_file(isolated_env: Path, line: str, needle: str) -> None:
    """A bad value in the file is a ConfigError naming the file and what is wrong."""
    path = write_config(isolated_env, line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"config file {path}" in caught.value.message
    assert needle in caught.value.message
    assert caught.value.exit_code == 1


def test_bad_flag_value_names_the_command_line() -> None:
    """A value given as a flag that the core cannot use names the command line as its source."""
    with pytest.raises(ConfigError, match="in command line"):
        load_settings(overrides={"keyring_timeout": "never"})


def test_invalid_toml_is_one_clear_error(isolated_env: Path) -> None:
    """Broken TOML is a ConfigError naming the file, not a parser traceback."""
    path = write_config(isolated_env, "format = [\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"config file {path} is not valid TOML" in caught.value.message
    assert caught.value.exit_code == 1


def test_unreadable_config_is_a_config_error(isolated_env: Path) -> None:
    """A config path that cannot be read (here a directory) is a ConfigError, not an OSError."""
    (isolated_env / "config" / "config.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings()


def test_a_config_file_that_is_a_loop_of_links_is_a_config_error(isolated_env: Path) -> None:
    """A config path whose links point at each other is one ConfigError naming it, not a traceback.

    Python 3.11 and 3.12 report the loop as RuntimeError (dashtam's own
    message), 3.13 as OSError ELOOP (the system's): both are a ConfigError.
    """
    config = isolated_env / "config"
    config.mkdir(parents=True)
    path = config / "config.toml"
    other = config / "other.toml"
    path.symlink_to(other)
    other.symlink_to(path)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(path) in caught.value.message
    assert re.search(
        r"loop of symbolic links|Too many levels of symbolic links", caught.value.message
    )
    assert caught.value.exit_code == 1


def test_unknown_keys_warn(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Unknown keys are warnings, not errors (a newer dashtam may have written them)."""
    write_config(isolated_env, 'colour = "blue"\nformat = "csv"\n')
    with caplog.at_level(logging.WARNING, logger="dashtam_cli"):
        settings = load_settings()
    assert settings.color is True
    assert settings.format == "csv"
    warnings = [r for r in caplog.records if "ignoring unknown key 'colour'" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_dashtam_config_relocates_the_file(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DASHTAM_CONFIG points at another config file; the one in the config directory is ignored."""
    write_config(isolated_env, 'format = "jsonl"\n')
    other = tmp_path / "elsewhere.toml"
    other.write_text('format = "csv"\n')
    monkeypatch.setenv("DASHTAM_CONFIG", str(other))
    settings = load_settings()
    assert settings.paths.config_file == other
    assert settings.format == "csv"


def test_a_missing_config_file_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file at all means defaults, not an error."""
    monkeypatch.setenv("DASHTAM_CONFIG", str(tmp_path / "absent.toml"))
    assert load_settings().format is None


def test_explicit_environment_mapping_is_used_instead_of_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library caller can pass its own environment; the process environment is then not read."""
    monkeypatch.setenv("DASHTAM_FORMAT", "csv")
    settings = load_settings(environ={"DASHTAM_HOME": str(tmp_path), "DASHTAM_FORMAT": "jsonl"})
    assert settings.format == "jsonl"
    assert settings.paths.config_dir == tmp_path / "config"


DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_names_every_setting() -> None:
    """docs/configuration.md has a row for each setting: its variable and its config key."""
    from dashtam_cli.core.settings import _SPECS

    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    for key, spec in _SPECS.items():
        assert any(f"`{spec.env}`" in row and f"`{key}`" in row for row in rows), key


def test_configuration_doc_example_loads_cleanly(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The example config.toml in the docs is valid: every key known, every value accepted."""
    from dashtam_cli.core.settings import _SPECS

    text = DOC.read_text(encoding="utf-8")
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    write_config(isolated_env, example)
    with caplog.at_level(logging.WARNING, logger="dashtam_cli"):
        settings = load_settings()
    assert caplog.records == []
    # The example shows every key, each one read from the file.
    assert settings.sources == dict.fromkeys(_SPECS, "config")


def test_provider_options_come_from_their_table_and_their_variables(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[providers.NAME]`` keys are kept as given with where; ``DASHTAM_NAME_KEY`` wins over them."""
    path = write_config(isolated_env, "[providers.simplefin]\ndaily_requests = 12\nother = 'x'\n")
    options = load_settings().options_of("simplefin")
    assert options["daily_requests"] == (12, f"config file {path} [providers.simplefin]")
    assert options["other"][0] == "x"
    monkeypatch.setenv("DASHTAM_SIMPLEFIN_DAILY_REQUESTS", "30")
    options = load_settings().options_of("simplefin")
    assert options["daily_requests"] == (
        "30",
        "environment variable DASHTAM_SIMPLEFIN_DAILY_REQUESTS",
    )
    assert load_settings().options_of("schwab") == {}


def test_provider_tables_of_unknown_providers_warn_and_a_bad_providers_key_is_an_error(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A table for a provider this dashtam lacks is a warning; ``providers = 3`` a ConfigError."""
    write_config(isolated_env, "[providers.nosuch]\nx = 1\n")
    with caplog.at_level(logging.WARNING, logger="dashtam_cli"):
        settings = load_settings()
    assert settings.provider_options == {}
    assert any("'providers.nosuch'" in r.getMessage() for r in caplog.records)
    write_config(isolated_env, "providers = 3\n")
    with pytest.raises(ConfigError, match="a table of provider tables expected"):
        load_settings()
