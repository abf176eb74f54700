"""Blocking calls run on daemon threads, so a call that never returns cannot hold the process."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["in_daemon_thread"]

T = TypeVar("T")


def in_daemon_thread(fn: Callable[[], T], *, name: str) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread; the future gets its result or its exception.

    Not ``asyncio.to_thread``: ``asyncio.run`` waits at exit for the default
    executor's workers, so a hung Secret Service or a read of stdin that never
    returns would hold the command after its timeout was reported. A daemon
    thread is abandoned instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: object) -> None:
        if not future.done():
            setter(value)

    def worker() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(deliver, future.set_exception, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, future.set_result, result)

    threading.Thread(target=worker, name=f"dashtam-{name}", daemon=True).start()
    return future
