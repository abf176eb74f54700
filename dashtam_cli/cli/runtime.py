"""The one place that runs the async core for a command and turns its errors into exit codes."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from dashtam_cli.core.errors import DashtamError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from rich.console import Console

    from dashtam_cli.cli.output import Renderer
    from dashtam_cli.core.settings import Settings

__all__ = ["State", "fail", "merge_global", "renderer", "run", "settings", "stderr"]

T = TypeVar("T")
log = logging.getLogger("dashtam_cli")

_LIBRARY_LOGGERS = ("httpx", "httpcore", "aiosqlite", "sqlalchemy", "keyring", "asyncio")

# Objects the cycle collector lets pile up before it looks at the young ones
# (CPython's default is 700). A sync allocates millions of short-lived
# containers (parsed answers, records, rows): at 700 many survive each young
# collection only because they are still in use, and the full collections
# that follow traversed everything held, 0.54 of 4.6 s of CPU in a sync of
# 60,000 transactions; at 50,000 the collector costs about 0.13 s there
# (nox -s bench). Cyclic garbage is still collected, a little later.
YOUNG_COLLECTION_THRESHOLD = 50_000


@dataclasses.dataclass(slots=True)
class State:
    """What the root callback parsed, shared by every command of one invocation."""

    verbose: int = 0
    format: str | None = None
    no_color: bool = False
    settings_cache: Settings | None = None
    stderr_console: Console | None = None
    logging_ready: bool = False

    @property
    def debug(self) -> bool:
        """Show tracebacks: ``-vv`` or ``DASHTAM_DEBUG=1``."""
        return self.verbose >= 2 or os.environ.get("DASHTAM_DEBUG", "") not in {"", "0"}  # noqa: PLR2004


def _state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def merge_global(ctx: typer.Context, *, verbose: int = 0, no_color: bool = False) -> None:
    """Add a global option given after the command to what the root callback parsed."""
    state = _state(ctx)
    state.verbose += verbose
    state.no_color = state.no_color or no_color


def stderr(ctx: typer.Context) -> Console:
    """The console for messages, progress and prompts: always stderr."""
    state = _state(ctx)
    if state.stderr_console is None:
        from rich.console import Console

        color = not state.no_color and os.environ.get("NO_COLOR", "") == ""
        state.stderr_console = Console(
            stderr=True, no_color=not color, highlight=False, soft_wrap=True
        )
    return state.stderr_console


class _StderrHandler(logging.Handler):
    """Hands log records to rich's handler on stderr, built (and rich imported) on the first one.

    Most commands log nothing at the default level: they do not pay for rich.
    """

    def __init__(self, ctx: typer.Context, *, show_time: bool) -> None:
        super().__init__()
        self._ctx = ctx
        self._show_time = show_time
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Print ``record`` on the stderr console (the filters of this handler already ran)."""
        if self._rich is None:
            from rich.logging import RichHandler

            self._rich = RichHandler(
                console=stderr(self._ctx),
                show_path=False,
                show_time=self._show_time,
                rich_tracebacks=False,
                markup=False,
            )
        self._rich.emit(record)


def _setup_logging(ctx: typer.Context) -> None:
    state = _state(ctx)
    if state.logging_ready:
        return
    from dashtam_cli.core.redact import RedactingFilter

    level = {0: logging.WARNING, 1: logging.INFO}.get(state.verbose, logging.DEBUG)
    handler = _StderrHandler(ctx, show_time=state.verbose >= 2)  # noqa: PLR2004
    handler.addFilter(RedactingFilter())
    handler.setLevel(level)
    pkg = logging.getLogger("dashtam_cli")
    pkg.handlers[:] = [handler]
    pkg.setLevel(level)
    pkg.propagate = False
    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.propagate = False
        # httpx logs every request URL at INFO, and a callback URL carries the
        # OAuth code and state: library chatter stays at WARNING or above.
        lib.setLevel(logging.WARNING)
    state.logging_ready = True


def settings(ctx: typer.Context, **flags: object) -> Settings:
    """Resolve settings once per invocation, command-line flags first."""
    state = _state(ctx)
    _setup_logging(ctx)
    if state.settings_cache is None:
        from dashtam_cli.core.settings import load_settings

        overrides: dict[str, object] = {"format": state.format, **flags}
        if state.no_color:
            overrides["color"] = False
        try:
            state.settings_cache = load_settings(overrides=overrides)
        except DashtamError as exc:
            fail(ctx, exc)
    return state.settings_cache


def forget_settings(ctx: typer.Context) -> None:
    """Resolve settings again on next use (after the environment changed, as in the demo)."""
    _state(ctx).settings_cache = None


def renderer(ctx: typer.Context, fmt: str | None = None) -> Renderer:
    """A renderer for this command: ``--format`` given here, then settings, then a TTY check.

    Its rich console is made only for a table: machine formats never import rich.
    """
    from dashtam_cli.cli.output import Renderer

    conf = settings(ctx)
    chosen = fmt or conf.format or ("table" if sys.stdout.isatty() else "json")
    return Renderer(fmt=chosen, color=conf.color)


def _print_traceback(console: Console, exc: BaseException) -> None:
    import traceback

    from dashtam_cli.core.redact import redact

    console.print(redact("".join(traceback.format_exception(exc))), markup=False, highlight=False)


def fail(ctx: typer.Context, exc: DashtamError) -> NoReturn:
    """Print a core error as one line and a hint on stderr, and exit with its code."""
    console = stderr(ctx)
    from rich.markup import escape

    from dashtam_cli.core.redact import redact

    console.print(f"[bold red]error:[/] {escape(redact(exc.message))}", highlight=False)
    if exc.hint:
        console.print(f"[dim]hint:[/] {escape(redact(exc.hint))}", highlight=False)
    if _state(ctx).debug:
        _print_traceback(console, exc)
    raise typer.Exit(int(exc.exit_code))


def run(
    ctx: typer.Context,
    job: Callable[[Settings], Coroutine[Any, Any, T]],
    **flags: object,
) -> T:
    """Run ``job`` in a fresh event loop and return its result.

    This is the only ``asyncio.run`` of a command. A core error becomes its
    one-line message and exit code; Ctrl-C becomes exit 130; anything else is
    a bug, shown as one line unless ``-vv`` or ``DASHTAM_DEBUG=1`` asks for the
    traceback, which is redacted like every log record.
    """
    import asyncio

    conf = settings(ctx, **flags)
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_COLLECTION_THRESHOLD), middle, old)
    # The result leaves the loop through this box, not as the coroutine's
    # return value: CPython 3.11 and 3.12 compute the repr of that value
    # (twice), which for thousands of records cost a third of the command.
    box: list[T] = []

    async def main() -> None:
        box.append(await job(conf))

    try:
        asyncio.run(main())
        return box[0]
    except DashtamError as exc:
        fail(ctx, exc)
    except KeyboardInterrupt:
        stderr(ctx).print("interrupted", highlight=False)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        raise  # the reader of stdout went away: entry.main ends quietly
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no raw traceback
        console = stderr(ctx)
        if _state(ctx).debug:
            _print_traceback(console, exc)
        console.print(
            f"[bold red]error:[/] internal error ({type(exc).__name__}); this is a bug in dashtam",
            highlight=False,
        )
        console.print("[dim]hint:[/] rerun with -vv for details and report it", highlight=False)
        raise typer.Exit(int(ExitCode.ERROR)) from None
