"""`dashtam vault ...`: create, inspect, re-key and destroy the encrypted vault; move its key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dashtam_cli.cli import options, prompts, runtime

if TYPE_CHECKING:
    from dashtam_cli.core.models import KeyImport
    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

vault_app = typer.Typer(
    name="vault",
    help="Create, inspect, re-key and destroy the local encrypted vault.",
    no_args_is_help=True,
)

KEY_STORES = ("keyring", "passphrase")

WEAK_PASSPHRASE = typer.Option(
    "--weak-passphrase",
    help="Accept a new passphrase shorter than 12 characters.",
)


def _check_key_store(value: str | None) -> str | None:
    if value is not None and value not in KEY_STORES:
        msg = f"{value!r} is not one of {', '.join(KEY_STORES)}"
        raise typer.BadParameter(msg)
    return value


@vault_app.command("init")
def init(
    ctx: typer.Context,
    key_store: Annotated[
        str | None,
        typer.Option(
            "--key-store",
            help="Where the master key lives: keyring (default) or passphrase (a key file "
            "wrapped by a passphrase, for machines without a keyring).",
            callback=_check_key_store,
            metavar="[keyring|passphrase]",
        ),
    ] = None,
    weak_passphrase: Annotated[bool, WEAK_PASSPHRASE] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Create the vault and its master key (an existing vault is left as it is).

    A new passphrase (--key-store passphrase, or DASHTAM_PASSPHRASE) must be at
    least 12 characters long, unless --weak-passphrase is given.
    """
    from dashtam_cli.core.vault import service

    opts = prompts.open_options(key_store=key_store, weak_passphrase=weak_passphrase)
    result = runtime.run(ctx, lambda conf: service.init(conf, opts))
    err = runtime.stderr(ctx)
    place = (
        f"the shared vault at {result.database}"
        if result.database
        else f"the vault at {result.path}"
    )
    if result.created:
        err.print(f"created {place} (key in {result.key_source})", markup=False)
    else:
        err.print(f"{place} already exists; nothing changed", markup=False)
    runtime.renderer(ctx, fmt).one(result)


@vault_app.command("status")
def status(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """Show the vault's path, size, schema, key source and rows per table.

    Exits 1 when the vault exists but cannot be opened, after saying why.
    """
    from dashtam_cli.core.errors import ExitCode
    from dashtam_cli.core.vault import service

    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: service.status(conf, opts))
    runtime.renderer(ctx, fmt).one(result)
    if result.state == "error":
        err = runtime.stderr(ctx)
        err.print(f"error: {result.error}", markup=False)
        if result.hint:
            err.print(f"hint: {result.hint}", markup=False)
        raise typer.Exit(int(ExitCode.ERROR))


@vault_app.command("rotate-key")
def rotate_key(ctx: typer.Context, fmt: Annotated[str | None, options.FORMAT] = None) -> None:
    """Re-seal every field with a new master key; the old key is removed only after the commit."""
    from dashtam_cli.core.vault import service

    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: service.rotate_key(conf, opts))
    err = runtime.stderr(ctx)
    err.print(f"re-sealed {result.fields_resealed} fields with the new key", markup=False)
    if result.damaged_rows:
        err.print(
            f"warning: {result.damaged_rows} cached row(s) already failed their integrity check "
            "and were left as they were; the next fetch replaces them",
            markup=False,
        )
    runtime.renderer(ctx, fmt).one(result)


@vault_app.command("copy")
def copy(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="postgresql+asyncpg://USER@HOST/DATABASE (an empty database; the password in "
            "~/.pgpass, never here), or a new .../vault.sqlite3 file.",
        ),
    ],
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Copy the vault to an empty PostgreSQL database or a new SQLite file, sealed as it is.

    Every row goes across unopened, then the row counts are compared and the
    copy is opened with the same key. Point DASHTAM_DATABASE_URL (or
    [database] url) at the copy to use it.
    """
    from dashtam_cli.core.vault import service

    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: service.copy(conf, opts, to))
    rows = sum(result.counts.values())
    runtime.stderr(ctx).print(
        f"copied {rows} rows from {result.source} to {result.destination}; counts match",
        markup=False,
    )
    runtime.renderer(ctx, fmt).one(result)


def _read_password() -> str:
    """The database password from a hidden prompt, or standard input (never argv)."""
    return prompts.secret_input("Database password (input hidden)", limit=4096)


@vault_app.command("db-password")
def db_password(ctx: typer.Context) -> None:
    """Keep the shared vault's database password in the OS keyring (from a prompt or stdin).

    For when the URL has no password and ~/.pgpass has no line for it. The
    password never goes on the command line; dashtam logs in with it at once.
    """
    from dashtam_cli.core.vault import service

    async def job(conf: Settings) -> tuple[str, str]:
        import asyncio

        secret = await asyncio.to_thread(_read_password)
        return await service.store_database_password(conf, secret)

    entry, url = runtime.run(ctx, job)
    runtime.stderr(ctx).print(
        f"stored the password of {url} in the OS keyring ({entry}); logged in with it",
        markup=False,
    )


@vault_app.command("export-key")
def export_key(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The new file to write the key to (0600; an existing file is never overwritten).",
        ),
    ],
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Write the vault's master key to a new file, to bring it to another machine.

    For a shared vault: copy the file to the other machine by a private way,
    run `dashtam vault import-key --input FILE` there, then delete both copies.
    The key never goes to the screen or standard output.
    """
    from dashtam_cli.core.vault import service

    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: service.export_key(conf, opts, output))
    runtime.stderr(ctx).print(
        f"wrote the vault's key to {result.path}: it opens the vault, so keep it private, "
        "import it on the other machine, then delete it",
        markup=False,
    )
    runtime.renderer(ctx, fmt).one(result)


def _read_key(source: Path | None) -> str:
    """The exported key line: from --input, a hidden prompt, or standard input (never argv)."""
    from dashtam_cli.core.errors import InputError

    if source is not None:
        try:
            with source.open("rb") as handle:
                return handle.read(4096).decode("utf-8", "replace")
        except OSError as exc:
            raise InputError(
                f"cannot read {source}: {exc.strerror or exc.__class__.__name__}",
                hint="give --input the file `dashtam vault export-key` wrote",
            ) from None
    return prompts.secret_input("Exported key (input hidden)", limit=4096)


@vault_app.command("import-key")
def import_key(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="The file `dashtam vault export-key` wrote (else a hidden prompt, or stdin).",
        ),
    ] = None,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Store a key exported on another machine here, once it is proved to open the vault.

    A key that is not this vault's, or no longer opens it, is refused and nothing is written.
    It goes to this machine's key store (DASHTAM_KEY_STORE: the keyring, or a key file).
    """
    opts = prompts.open_options()
    result = runtime.run(ctx, lambda conf: _import(conf, opts, source))
    runtime.stderr(ctx).print(
        f"stored the vault's key in {result.key_source}; delete the exported file now",
        markup=False,
    )
    runtime.renderer(ctx, fmt).one(result)


async def _import(conf: Settings, opts: OpenOptions, source: Path | None) -> KeyImport:
    import asyncio

    from dashtam_cli.core.vault import service

    text = await asyncio.to_thread(_read_key, source)
    return await service.import_key(conf, opts, text)


@vault_app.command("change-passphrase")
def change_passphrase(
    ctx: typer.Context,
    weak_passphrase: Annotated[bool, WEAK_PASSPHRASE] = False,
    fmt: Annotated[str | None, options.FORMAT] = None,
) -> None:
    """Wrap the master key under a new passphrase (key file vaults only); the data is untouched.

    The current passphrase comes from the prompt or DASHTAM_PASSPHRASE, the new
    one from the prompt (typed twice) or DASHTAM_NEW_PASSPHRASE.
    """
    from dashtam_cli.core.vault import service

    opts = prompts.open_options(weak_passphrase=weak_passphrase)
    new_prompt = prompts.new_passphrase_prompt()
    result = runtime.run(
        ctx, lambda conf: service.change_passphrase(conf, opts, new_prompt=new_prompt)
    )
    runtime.stderr(ctx).print(f"changed the passphrase of {result.key_file}", markup=False)
    runtime.renderer(ctx, fmt).one(result)


@vault_app.command("destroy")
def destroy(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete the vault and its master key, for good."""
    from dashtam_cli.core.vault import service
    from dashtam_cli.core.vault.vault import vault_absent, where

    conf = runtime.settings(ctx)
    path = conf.paths.vault_file
    err = runtime.stderr(ctx)
    if runtime.run(ctx, vault_absent):
        place = where(conf).replace("the shared vault at", "the shared database at")
        absent = (
            f"there is no vault in {place}" if conf.database_url else f"there is no vault at {path}"
        )
        err.print(f"{absent}; nothing to destroy", markup=False)
        return
    shared = " (every machine that shares it loses it)" if conf.database_url else ""
    prompts.confirm(f"Delete {where(conf)} and its key{shared}? Everything in it is lost.", yes=yes)
    removed = runtime.run(ctx, service.destroy)
    for item in removed:
        err.print(f"removed {item}", markup=False)
