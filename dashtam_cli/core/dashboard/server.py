"""Serve the dashboard on 127.0.0.1 until interrupted, or write it to one file."""

from __future__ import annotations

import contextlib
import errno
import secrets
import socket
from typing import TYPE_CHECKING

from dashtam_cli.core.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

__all__ = ["export", "listen", "serve"]

LOOPBACK = "127.0.0.1"


def listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1 only, on ``port`` (0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"--port: {port} is already in use on {LOOPBACK}",
                hint="choose another --port, or leave it out for a free one",
            ) from None
        raise InputError(
            f"--port: cannot listen on {LOOPBACK}:{port} ({exc.strerror})",
            hint="choose a port above 1023, or leave --port out for a free one",
        ) from None
    return sock


async def serve(
    settings: Settings,
    open_options: OpenOptions,
    *,
    port: int = 0,
    on_ready: Callable[[str], Awaitable[None]],
) -> None:
    """Serve the dashboard until a signal stops it; ``on_ready`` gets the one-time URL.

    The vault is read once first, so a missing vault or a wrong key is told
    before anything listens. The URL's token is at least 256 bits of
    randomness and opens one browser session, once.
    """
    import uvicorn

    from dashtam_cli.core.dashboard.app import build_app
    from dashtam_cli.core.dashboard.data import overview

    await overview(settings, open_options)
    sock = listen(port)
    with contextlib.closing(sock):
        chosen = sock.getsockname()[1]
        token = secrets.token_urlsafe(32)
        app = build_app(settings, open_options, port=chosen, token=token)
        config = uvicorn.Config(
            app,
            host=LOOPBACK,
            port=chosen,
            log_config=None,  # dashtam's logging stays as the CLI set it
            access_log=False,  # an access log would hold the URL's token
            server_header=False,
            proxy_headers=False,
            lifespan="off",
            ws="none",
            http="h11",
        )
        server = uvicorn.Server(config)
        # The socket already listens: the browser's first request waits in its queue.
        await on_ready(f"http://{LOOPBACK}:{chosen}/?token={token}")
        await server.serve(sockets=[sock])


async def export(settings: Settings, open_options: OpenOptions, path: Path) -> None:
    """Write the dashboard's views and every transaction to ``path``, one file, mode 0600.

    It replaces ``path`` only once complete (see :func:`write_export`).
    """
    from dashtam_cli.core.dashboard.data import overview, transactions_page
    from dashtam_cli.core.dashboard.pages import render_export
    from dashtam_cli.core.export.files import write_export

    data = await overview(settings, open_options)
    everything = await transactions_page(settings, open_options, page_size=None)
    try:
        write_export(path, [render_export(data, everything)])
    except OSError as exc:
        raise InputError(
            f"cannot write {path}: {exc.strerror or type(exc).__name__}",
            hint="choose a file in a directory you can write to",
        ) from None
