"""A small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies, TLS) for the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import urllib.parse
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16384
MAX_BODY: Final = 1 << 20
IDLE: Final = 30.0

_REASONS: Final = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str) -> str | None:
        """The single value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, str]:
        """The body as a url-encoded form."""
        return dict(
            urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        )


@dataclasses.dataclass(slots=True)
class Response:
    """One response."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self, *, keep_alive: bool) -> bytes:
        """The response on the wire."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}"]
        headers = {
            "Content-Type": self.content_type,
            "Content-Length": str(len(self.body)),
            "Cache-Control": "no-store",
            "Connection": "keep-alive" if keep_alive else "close",
            **self.headers,
        }
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def _content_length(headers: dict[str, str]) -> int:
    """The body's length, or -1 when the header is not a count (answered 400)."""
    try:
        return int(headers.get("content-length", "0") or 0)
    except ValueError:
        return -1


class HttpServer:
    """Serves ``handler`` on ``host``:``port`` over TLS, one task per connection."""

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Prepare; nothing listens until :meth:`start`."""
        self._handler = handler
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(
            self._serve,
            self._host,
            self._port,
            ssl=self._ssl,
            limit=MAX_HEAD,
            # asyncio refuses a handshake timeout without TLS (plain HTTP in tests).
            ssl_handshake_timeout=IDLE if self._ssl is not None else None,
        )

    async def close(self) -> None:
        """Stop serving and drop open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(
                        Response(431, b'{"message":"request head too large"}').encode(
                            keep_alive=False
                        )
                    )
                    await writer.drain()
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ")
                except ValueError:
                    writer.write(Response(400).encode(keep_alive=False))
                    await writer.drain()
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = _content_length(headers)
                if not 0 <= length <= MAX_BODY:
                    writer.write(Response(400 if length < 0 else 413).encode(keep_alive=False))
                    await writer.drain()
                    return
                body = await reader.readexactly(length) if length else b""
                url = urllib.parse.urlsplit(target)
                request = Request(
                    method=method,
                    path=url.path,
                    query=urllib.parse.parse_qs(url.query, keep_blank_values=True),
                    headers=headers,
                    body=body,
                )
                try:
                    response = await self._handler(request)
                except Exception:
                    log.exception("sandbox handler failed")
                    response = Response(
                        500, b'{"message":"internal error","errors":["sandbox failure"]}'
                    )
                keep = headers.get("connection", "").lower() != "close"
                writer.write(response.encode(keep_alive=keep))
                await writer.drain()
                if not keep:
                    return
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
