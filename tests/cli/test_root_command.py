"""Global options and the one place that turns core errors into messages and exit codes."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import pytest
import typer
from entry_probe import probe_main
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
    from conftest import CliCall

SECRET = "refresh-token-9f8e7d6c5b"


def probe_app(raise_: BaseException | None = None) -> typer.Typer:
    """A tiny app wired like dashtam's: a root callback with the state, a command using runtime.run.

    The job logs at INFO and DEBUG, then raises ``raise_`` or returns a value
    that the command prints on stdout as its data.
    """
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, verbose: int = typer.Option(0, "-v", count=True)) -> None:
        ctx.obj = runtime.State(verbose=verbose)

    @app.command()
    def go(ctx: typer.Context) -> None:
        async def job(_conf: object) -> str:
            log = logging.getLogger("dashtam_cli.test")
            log.info("working with %s", SECRET)
            log.debug("debug detail")
            if raise_ is not None:
                raise raise_
            return "the data"

        typer.echo(runtime.run(ctx, job))

    return app


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DashtamError("it broke", hint="do this"), 1),
        (ConfigError("bad config", hint="fix it"), 1),
        (InputError("bad input", hint="use that"), 2),
        (PartialFailure("some failed", hint="see above"), 3),
        (ReauthRequired("log in", hint="run: dashtam connect schwab"), 4),
    ],
)
def test_core_errors_become_one_line_and_their_exit_code(error: DashtamError, code: int) -> None:
    """Each error class maps to its exit code with one 'error:' and one 'hint:' line, no traceback."""
    result = CliRunner().invoke(probe_app(error), ["go"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {error.message}", f"hint: {error.hint}"]


def test_an_error_without_a_hint_is_one_line() -> None:
    """No hint, no 'hint:' line."""
    result = CliRunner().invoke(probe_app(PartialFailure("two of three")), ["go"])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == ["error: two of three"]


def test_keyboard_interrupt_is_exit_130() -> None:
    """Ctrl-C inside the job exits 130 with one word on stderr and no traceback."""
    result = CliRunner().invoke(probe_app(KeyboardInterrupt()), ["go"])
    assert result.exit_code == 130
    assert result.stdout == ""
    assert result.stderr.strip() == "interrupted"


def test_success_returns_the_jobs_result() -> None:
    """A job that returns gives its value to the command and exit 0."""
    result = CliRunner().invoke(probe_app(), ["go"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "the data\n", "")


@pytest.mark.parametrize(
    ("args", "shown", "hidden"),
    [
        (["go"], [], ["working with", "debug detail"]),
        (["-v", "go"], ["working with ***"], ["debug detail"]),
        (["-vv", "go"], ["working with ***", "debug detail"], []),
    ],
)
def test_verbosity_logs_to_stderr_only(
    args: list[str], shown: list[str], hidden: list[str]
) -> None:
    """-v shows progress, -vv debug detail, both on stderr (masked); stdout keeps only the data."""
    register_secret(SECRET)
    result = CliRunner().invoke(probe_app(), args)
    assert result.exit_code == 0
    assert result.stdout == "the data\n"
    for text in shown:
        assert text in result.stderr
    for text in hidden:
        assert text not in result.stderr
    assert SECRET not in result.stderr


def test_unexpected_error_is_one_line_and_never_shows_a_secret() -> None:
    """A bug is 'internal error (Type)', exit 1; its message (with a secret) is not shown."""
    register_secret(SECRET)
    result = CliRunner().invoke(probe_app(RuntimeError(f"boom {SECRET}")), ["go"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: internal error (RuntimeError)" in result.stderr
    assert "hint: rerun with -vv" in result.stderr
    assert "boom" not in result.stderr
    assert SECRET not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["-vv", "DASHTAM_DEBUG"])
def test_debug_shows_a_redacted_traceback(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """-vv or DASHTAM_DEBUG=1 adds the traceback of a bug, with registered secrets masked."""
    register_secret(SECRET)
    args = ["-vv", "go"] if how == "-vv" else ["go"]
    if how == "DASHTAM_DEBUG":
        monkeypatch.setenv("DASHTAM_DEBUG", "1")
    result = CliRunner().invoke(probe_app(RuntimeError(f"boom {SECRET}")), args)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: boom ***" in result.stderr
    assert "internal error (RuntimeError)" in result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(("how", "traceback"), [("-vv", True), ("1", True), ("0", False)])
def test_debug_shows_the_traceback_of_a_core_error(
    how: str, traceback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A core error gets its traceback too with -vv or DASHTAM_DEBUG=1 (not with DASHTAM_DEBUG=0)."""
    args = ["-vv", "go"] if how == "-vv" else ["go"]
    if how != "-vv":
        monkeypatch.setenv("DASHTAM_DEBUG", how)
    result = CliRunner().invoke(probe_app(ReauthRequired("log in", hint="connect")), args)
    assert result.exit_code == 4
    assert "error: log in" in result.stderr
    assert ("Traceback" in result.stderr) is traceback
    assert ("ReauthRequired: log in" in result.stderr) is traceback


def test_version_in_process_and_fast_path(
    cli: CliCall, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--version prints the version through typer and through the entry's fast path."""
    result = cli("--version")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"dashtam {__version__}\n", "")
    monkeypatch.setattr("sys.argv", ["dashtam", "--version"])
    main()
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (f"dashtam {__version__}\n", "")


def test_entry_runs_the_app_for_everything_else(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other arguments go to the typer app, under the name 'dashtam'."""
    monkeypatch.setattr("sys.argv", ["/some/where/dashtam", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert "Usage: dashtam [OPTIONS] COMMAND" in capsys.readouterr().out


def test_help_lists_the_commands_and_global_options(cli: CliCall) -> None:
    """--help exits 0 on stdout, listing the commands and the global options."""
    helped = cli("--help")
    assert helped.exit_code == 0
    assert helped.stdout.startswith("Usage: dashtam")
    for name in ("demo", "connect", "accounts", "transactions", "tokens", "vault", "paths"):
        assert f"  {name} " in helped.stdout
    for option in ("--format", "--verbose", "--no-color", "--version"):
        assert option in helped.stdout
    assert "completion" in helped.stdout  # the command; typer's own options are not offered


def test_the_sandbox_help_names_the_institutions_it_serves(cli: CliCall) -> None:
    """`dashtam --help` and `dashtam sandbox --help` name Schwab's API, SimpleFIN and Plaid."""
    for args in (("--help",), ("sandbox", "--help")):
        helped = cli(*args)
        assert helped.exit_code == 0
        text = " ".join(helped.stdout.split())  # the help wraps lines
        assert "sandbox institution that speaks Schwab's API, SimpleFIN and Plaid" in text, args


def test_no_arguments_shows_help(cli: CliCall) -> None:
    """Plain `dashtam` shows the help (as a usage error: nothing was asked for)."""
    result = cli()
    assert result.exit_code == 2
    shown = result.stdout + result.stderr
    assert "Usage: dashtam" in shown
    assert "Commands" in shown
    assert "paths" in shown


def test_unknown_command_and_option_are_usage_errors(cli: CliCall) -> None:
    """An unknown command or option is exit 2 with the reason on stderr."""
    unknown = cli("frobnicate")
    assert unknown.exit_code == 2
    assert "No such command 'frobnicate'" in unknown.stderr
    assert unknown.stdout == ""
    bad_option = cli("--frobnicate")
    assert bad_option.exit_code == 2
    assert "No such option" in bad_option.stderr


def test_shell_completion_still_works(cli: CliCall) -> None:
    """Typer's completion script is produced for bash, keyed on dashtam's variable."""
    result = cli("completion", "bash")
    assert result.exit_code == 0
    assert "_DASHTAM_COMPLETE" in result.stdout
    assert "complete " in result.stdout


class _Counted:
    """A result that counts how often its repr is computed (a large result pays for each)."""

    reprs = 0

    def __repr__(self) -> str:
        """Count, then describe."""
        type(self).reprs += 1
        return "<counted>"


def test_the_jobs_result_is_never_repr_d_on_its_way_out() -> None:
    """CPython 3.11 and 3.12 compute the repr of what asyncio.run's coroutine returns.

    With every Transaction of a large result that was a third of a command's
    CPU; the result must reach the command without that (on 3.13 too).
    """
    app = typer.Typer()
    _Counted.reprs = 0

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = runtime.State()

    @app.command()
    def go(ctx: typer.Context) -> None:
        async def job(_conf: object) -> _Counted:
            return _Counted()

        result = runtime.run(ctx, job)
        typer.echo(type(result).__name__)

    outcome = CliRunner().invoke(app, ["go"])
    assert (outcome.exit_code, outcome.stdout) == (0, "_Counted\n")
    assert _Counted.reprs == 0


def test_a_command_runs_with_the_cycle_collector_s_young_threshold_raised() -> None:
    """Inside a command's job the young generation holds 50,000 objects, not CPython's 700.

    At 700 a sync's full collections cost 12% of its CPU (nox -s bench);
    the other two thresholds are left as they were.
    """
    app = typer.Typer()
    seen: list[tuple[int, int, int]] = []

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = runtime.State()

    @app.command()
    def go(ctx: typer.Context) -> None:
        async def job(_conf: object) -> None:
            seen.append(gc.get_threshold())

        runtime.run(ctx, job)

    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        outcome = CliRunner().invoke(app, ["go"])
    finally:
        gc.set_threshold(*before)
    assert outcome.exit_code == 0
    assert seen == [(runtime.YOUNG_COLLECTION_THRESHOLD, 10, 10)]
    assert runtime.YOUNG_COLLECTION_THRESHOLD == 50_000


def test_the_objects_are_frozen_at_exit_not_while_the_command_runs() -> None:
    """The shutdown's full collection skips what the command left (gc.freeze at exit only).

    A handler registered before main() runs after main's own at exit (they
    run last-registered first), and sees the objects frozen; during the
    command nothing is frozen.
    """
    result = probe_main(
        ["--help"],
        before="import atexit, gc\n"
        "atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0, file=sys.stderr))",
        after="print('after main', gc.get_freeze_count(), file=sys.stderr)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-2:] == ["after main 0", "at exit True"]
