"""The console-script entry point; it answers `--version` before importing typer."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the `dashtam` command."""
    if sys.argv[1:] == ["--version"]:
        # Scripts and package managers call this often; it needs no CLI framework.
        from dashtam_cli import __version__

        sys.stdout.write(f"dashtam {__version__}\n")
        return
    import atexit
    import gc
    import os

    # The interpreter's shutdown ends with a full collection of every object
    # still alive, the imported modules' included: 0.16 to 0.23 s after a
    # sync, for memory the OS takes back at once anyway. Frozen objects are
    # left out of it (0.03 s). At exit only, so nothing is frozen while the
    # command runs.
    atexit.register(gc.freeze)
    # No pydantic plugin runs in dashtam: the loader would scan every installed
    # distribution's entry points on first model use (a quarter of a second),
    # and a third-party plugin sees every value validated, secrets included.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # httpx imports its own command line (httpx._main) when click, rich and
    # pygments are installed, as typer installs them: about 35 ms of every
    # command that talks to a provider, for a tool dashtam never runs. A None
    # in sys.modules makes that import fail, and httpx then defines a stub.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from dashtam_cli.cli.app import app

    if os.environ.get("_DASHTAM_COMPLETE"):
        # A shell asks for completions: typer's completion classes answer it.
        from typer._completion_classes import completion_init

        completion_init()

    try:
        app(prog_name="dashtam")
    except BrokenPipeError:
        # The reader went away (`dashtam ... | head -1`): nothing to say. Point
        # stdout at /dev/null so the flush at exit does not complain on stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
