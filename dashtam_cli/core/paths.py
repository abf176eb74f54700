"""Where dashtam keeps its files: platformdirs locations, relocatable with DASHTAM_HOME."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["APP_NAME", "HOME_ENV", "Paths", "resolve_paths"]

APP_NAME = "dashtam"
HOME_ENV = "DASHTAM_HOME"
CONFIG_ENV = "DASHTAM_CONFIG"


@dataclasses.dataclass(frozen=True, slots=True)
class Paths:
    """The four directories dashtam uses, and the files inside them."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path
    config_file: Path

    @property
    def vault_file(self) -> Path:
        """The SQLite database of the vault."""
        return self.data_dir / "vault.sqlite3"

    @property
    def key_file(self) -> Path:
        """The passphrase-wrapped master key, for machines without a keyring."""
        return self.data_dir / "vault.key"


def resolve_paths(environ: Mapping[str, str] | None = None) -> Paths:
    """Return the directories for this user.

    With ``DASHTAM_HOME`` set, all four live under that one folder (``config``,
    ``data``, ``cache``, ``logs``); otherwise they follow the platform's
    conventions (XDG on Linux). ``DASHTAM_CONFIG`` names another config file.
    """
    env = os.environ if environ is None else environ
    home = env.get(HOME_ENV, "").strip()
    if home:
        root = Path(home).expanduser().absolute()
        config_dir = root / "config"
        data_dir = root / "data"
        cache_dir = root / "cache"
        log_dir = root / "logs"
    else:
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        config_dir = Path(dirs.user_config_dir)
        data_dir = Path(dirs.user_data_dir)
        cache_dir = Path(dirs.user_cache_dir)
        log_dir = Path(dirs.user_log_dir)
    config_override = env.get(CONFIG_ENV, "").strip()
    config_file = (
        Path(config_override).expanduser().absolute()
        if config_override
        else config_dir / "config.toml"
    )
    return Paths(
        config_dir=config_dir,
        data_dir=data_dir,
        cache_dir=cache_dir,
        log_dir=log_dir,
        config_file=config_file,
    )
