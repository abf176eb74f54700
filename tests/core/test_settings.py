"""Settings: flag over environment over config file over default, with clear errors."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from dashtam_cli.core.errors import ConfigError
from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from pathlib import Path


def write_config(home: Path, text: str) -> Path:
    """Write config.toml in the config directory under DASHTAM_HOME."""
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults() -> None:
    """With nothing set, the documented defaults apply."""
    settings = load_settings()
    assert (settings.format, settings.color, settings.keyring_timeout, settings.key_store) == (
        None,
        True,
        10.0,
        "keyring",
    )
    assert settings.sources == {}


def test_precedence_flag_env_config(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer wins over the ones below it, and the source is recorded."""
    write_config(isolated_env, 'format = "csv"\nkeyring_timeout = 20\n')
    assert load_settings().format == "csv"
    assert load_settings().sources["format"] == "config"
    monkeypatch.setenv("DASHTAM_FORMAT", "jsonl")
    assert load_settings().format == "jsonl"
    assert load_settings().sources["format"] == "env"
    settings = load_settings(overrides={"format": "table"})
    assert settings.format == "table"
    assert settings.sources["format"] == "flag"
    assert settings.keyring_timeout == 20.0
    assert load_settings(overrides={"format": None}).format == "jsonl"


def test_no_color_and_color_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR turns colour off; DASHTAM_COLOR takes precedence over it."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert load_settings().color is False
    monkeypatch.setenv("DASHTAM_COLOR", "yes")
    assert load_settings().color is True


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("DASHTAM_FORMAT", "xml", "unknown output format"),
        ("DASHTAM_KEYRING_TIMEOUT", "soon", "not a number of seconds"),
        ("DASHTAM_KEYRING_TIMEOUT", "0", "outside 0 to 3600"),
        ("DASHTAM_KEY_STORE", "file", "unknown key store"),
        ("DASHTAM_COLOR", "maybe", "not a boolean"),
    ],
)
def test_bad_environment_values_name_their_source(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    """A bad value is a ConfigError naming the variable and what is wrong."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert name in caught.value.message
    assert needle in caught.value.message
    assert caught.value.exit_code == 1


def test_bad_config_values_and_toml(isolated_env: Path) -> None:
    """A bad value in the file names the file; broken TOML is one clear error."""
    path = write_config(isolated_env, "keyring_timeout = true\n")
    with pytest.raises(ConfigError, match=f"config file {path}"):
        load_settings()
    write_config(isolated_env, "format = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


def test_unknown_keys_warn(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Unknown keys are warnings, not errors (a newer dashtam may have written them)."""
    write_config(isolated_env, 'colour = "blue"\n')
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.color is True
    assert "ignoring unknown key 'colour'" in caplog.text


def test_dashtam_config_relocates_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DASHTAM_CONFIG points at another config file."""
    other = tmp_path / "elsewhere.toml"
    other.write_text('format = "csv"\n')
    monkeypatch.setenv("DASHTAM_CONFIG", str(other))
    settings = load_settings()
    assert settings.paths.config_file == other
    assert settings.format == "csv"
