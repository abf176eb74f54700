"""`dashtam paths`: where dashtam keeps its configuration, vault, cache and logs."""

from __future__ import annotations

from typing import Annotated

import typer

from dashtam_cli.cli import options, runtime


def paths(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """Show where dashtam keeps its files (relocate them all with DASHTAM_HOME)."""
    from dashtam_cli.core.models import PathEntry

    conf = runtime.settings(ctx)
    p = conf.paths
    entries = [
        PathEntry(name=name, path=path, exists=path.exists())
        for name, path in (
            ("config_dir", p.config_dir),
            ("config_file", p.config_file),
            ("data_dir", p.data_dir),
            ("vault", p.vault_file),
            ("cache_dir", p.cache_dir),
            ("log_dir", p.log_dir),
        )
    ]
    if conf.database_url is not None:
        from dashtam_cli.core.vault.vault import where

        runtime.stderr(ctx).print(
            f"the vault is {where(conf)} (DASHTAM_DATABASE_URL or [database] url); "
            "the vault file above is not used",
            markup=False,
        )
    runtime.renderer(ctx, fmt).rows(PathEntry, entries)
