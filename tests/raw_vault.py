"""What the vault holds at rest, as an attacker with the disk or the database would read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse

from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.files import sidecar_files


def raw_vault_bytes() -> bytes:
    """Every byte of the vault at rest.

    The SQLite file and its sidecars, or a shared vault's ``pg_dump`` (schema
    and data, as a database administrator or a backup would have it).
    """
    settings = load_settings()
    if settings.database_url is None:
        path = settings.paths.vault_file
        return b"".join(p.read_bytes() for p in sidecar_files(path) if p.exists())
    parts = urllib.parse.urlsplit(settings.database_url)
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    done = subprocess.run(
        [
            pg_dump,
            "--no-owner",
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            urllib.parse.unquote(parts.username or "postgres"),
            parts.path.lstrip("/"),
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout
