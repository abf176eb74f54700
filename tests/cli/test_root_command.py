"""Global options and the one place that turns core errors into messages and exit codes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import typer
from typer.testing import CliRunner

from dashtam_cli import __version__
from dashtam_cli.cli import runtime
from dashtam_cli.cli.entry import main
from dashtam_cli.core.errors import (
    ConfigError,
    DashtamError,
    InputError,
    PartialFailure,
    ReauthRequired,
)
from dashtam_cli.core.redact import register_secret

if TYPE_CHECKING:
    from tests.conftest import CliCall

SECRET = "refresh-token-9f8e7d6c5b"


def probe_app(raise_: BaseException) -> typer.Typer:
    """A tiny app wired like dashtam's: a root callback with the state, a command using runtime.run."""
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, verbose: int = typer.Option(0, "-v", count=True)) -> None:
        ctx.obj = runtime.State(verbose=verbose)

    @app.command()
    def go(ctx: typer.Context) -> None:
        async def job(_conf: object) -> None:
            logging.getLogger("dashtam_cli.test").info("working with %s", SECRET)
            raise raise_

        runtime.run(ctx, job)

    return app


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DashtamError("it broke", hint="do this"), 1),
        (ConfigError("bad config", hint="fix it"), 1),
        (InputError("bad input", hint="use that"), 2),
        (PartialFailure("some failed", hint="see above"), 3),
        (ReauthRequired("log in", hint="run: dashtam connect schwab"), 4),
        (KeyboardInterrupt(), 130),
    ],
)
def test_core_errors_become_one_line_and_their_exit_code(error: BaseException, code: int) -> None:
    """Each error class maps to its exit code with 'error:' and 'hint:' lines and no traceback."""
    result = CliRunner().invoke(probe_app(error), ["go"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    if isinstance(error, DashtamError):
        assert f"error: {error.message}" in result.stderr
        assert f"hint: {error.hint}" in result.stderr
    else:
        assert "interrupted" in result.stderr


def test_unexpected_error_is_one_line_and_never_shows_a_secret() -> None:
    """A bug is 'internal error (Type)', exit 1; its message (with a secret) is not shown."""
    register_secret(SECRET)
    result = CliRunner().invoke(probe_app(RuntimeError(f"boom {SECRET}")), ["go"])
    assert result.exit_code == 1
    assert "internal error (RuntimeError)" in result.stderr
    assert SECRET not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["-vv", "DASHTAM_DEBUG"])
def test_debug_shows_a_redacted_traceback(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """-vv or DASHTAM_DEBUG=1 adds the traceback, with registered secrets masked; logs go to stderr."""
    register_secret(SECRET)
    args = ["-vv", "go"] if how == "-vv" else ["go"]
    if how == "DASHTAM_DEBUG":
        monkeypatch.setenv("DASHTAM_DEBUG", "1")
    result = CliRunner().invoke(probe_app(RuntimeError(f"boom {SECRET}")), args)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: boom ***" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    if how == "-vv":
        assert "working with ***" in result.stderr


def test_version_in_process_and_fast_path(
    cli: CliCall, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--version prints the version through typer and through the entry's fast path."""
    result = cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"dashtam {__version__}")
    monkeypatch.setattr("sys.argv", ["dashtam", "--version"])
    main()
    assert capsys.readouterr().out == f"dashtam {__version__}\n"


def test_help_and_usage_errors(cli: CliCall) -> None:
    """--help exits 0 and lists the commands; no arguments shows help; an unknown command is exit 2."""
    helped = cli("--help")
    assert helped.exit_code == 0
    for name in ("demo", "connect", "accounts", "transactions", "tokens", "vault", "paths"):
        assert name in helped.stdout
    assert cli().exit_code in {0, 2}
    assert "Usage" in cli().stdout + cli().stderr
    unknown = cli("frobnicate")
    assert unknown.exit_code == 2
    assert "No such command" in unknown.stderr


def test_shell_completion_still_works(cli: CliCall) -> None:
    """Typer's completion script is produced for bash."""
    result = cli("--show-completion", "bash")
    assert result.exit_code == 0
    assert "_DASHTAM_COMPLETE" in result.stdout
