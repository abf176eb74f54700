"""The short-lived loopback HTTPS server that receives the OAuth redirect.

Each connection is handled in its own task with its own deadlines: a client
that connects and sends nothing, a slow TLS handshake, a half-sent request or
plain HTTP on the TLS port never holds up the real callback. Connections
that have not sent a whole request yet are bounded in number, and when the
process runs out of file descriptors (or memory) the oldest of them are
dropped so that accepting goes on: a flood of idle connections from another
local user cannot starve the browser's. Only a request
on the redirect path with the expected ``state`` and a ``code`` (or an
``error``) ends the wait; everything else gets an error status and the
listener keeps waiting. Nothing here logs a URL, a code or a state.

Given a route instead (the hosted-page login, :mod:`.hosted`), the listener
keeps all of the above, reads a bounded body, and lets the route answer each
whole request; the route's first outcome ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import hmac
import logging
import socket
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Final, Generic, Self, TypeVar, cast, overload

from dashtam_cli.core.oauth.errors import (
    AccessDenied,
    LoginError,
    PortInUse,
    RedirectUriError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = [
    "Answer",
    "Callback",
    "LoopbackListener",
    "RedirectTarget",
    "Request",
    "html_response",
    "http_response",
    "parse_redirect_uri",
]

R = TypeVar("R")

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
_TLS_HANDSHAKE: Final = 0x16
_LOOPBACK_ADDRESSES: Final = frozenset({"127.0.0.1", "::1"})
_MAX_PORT: Final = 65535
# accept() failed for want of descriptors, buffers or memory: dropping
# waiting connections frees some, and a short pause lets their tasks close.
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() failed for one queued connection (it was reset, or the network
# said no): that connection is gone from the queue, so accepting again cannot
# spin without new connections arriving. accept(2) lists these for Linux;
# EINTR is listed too, though Python and asyncio already retry it.
_ONE_CONNECTION_LOST: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "ECONNRESET",
        "EINTR",
        "EPROTO",
        "EPERM",
        "ETIMEDOUT",
        "ENETDOWN",
        "ENETUNREACH",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "ENONET",
        "EOPNOTSUPP",
    )
    if hasattr(errno, name)
)
_RESOURCE_PAUSE: Final = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class RedirectTarget:
    """Where the listener binds and which path it answers, from the redirect URI."""

    uri: str
    host: str
    bind: str
    port: int
    path: str


def parse_redirect_uri(uri: str, *, setting: str) -> RedirectTarget:
    """Check that ``uri`` is https on a literal loopback address with a port, and split it.

    ``setting`` names where the URI came from, for the error's hint. The name
    ``localhost`` is refused: the listener binds one address, and a name that
    resolves to both 127.0.0.1 and ::1 lets another local user bind the other
    one on the same port and receive the browser's connection (RFC 8252
    sections 7.3 and 8.3 recommend the literal IP for this reason).
    """
    parts = urllib.parse.urlsplit(uri)
    host = (parts.hostname or "").lower()
    hint = f"set {setting} to a loopback https address such as https://127.0.0.1:8182"
    if parts.scheme != "https":
        raise RedirectUriError(
            f"the redirect URI must use https, not {parts.scheme or 'nothing'}", hint=hint
        )
    try:
        port = 443 if parts.port is None else parts.port
    except ValueError:  # not a number, or beyond 65535
        port = 0
    if not 0 < port <= _MAX_PORT:
        raise RedirectUriError(
            "the redirect URI's port must be a number from 1 to 65535 (the provider sends "
            "the browser to exactly that port)",
            hint=hint,
        )
    if host == "localhost":
        raise RedirectUriError(
            "the redirect URI must use the address 127.0.0.1 (or [::1]), not the name "
            "localhost, which another local user could answer",
            hint=f"set {setting} to https://127.0.0.1:{port}{parts.path}, and register that "
            "exact URL as the app's callback URL in the provider's developer portal",
        )
    if host not in _LOOPBACK_ADDRESSES:
        raise RedirectUriError(
            f"the redirect URI's host {host or '(none)'} is not loopback "
            "(127.0.0.1 or [::1]); dashtam listens only on this machine",
            hint=hint,
        )
    if parts.query or parts.fragment:
        raise RedirectUriError("the redirect URI must not have a query or fragment", hint=hint)
    return RedirectTarget(uri=uri, host=host, bind=host, port=port, path=parts.path or "/")


@dataclasses.dataclass(frozen=True, slots=True)
class Callback:
    """The code the provider sent back, its state already checked."""

    code: str


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dashtam</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1>{title}</h1><p>{body}</p></body></html>
"""
_ERROR_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"


def http_response(  # noqa: PLR0913 - the parts of an answer
    status: int,
    reason: str,
    body: bytes,
    *,
    content_type: str = "text/html; charset=utf-8",
    csp: str = _ERROR_CSP,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A whole HTTP/1.1 answer with the listener's hardening headers; the connection then closes."""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Referrer-Policy: no-referrer",
        f"Content-Security-Policy: {csp}",
        "X-Content-Type-Options: nosniff",
        *(f"{name}: {value}" for name, value in extra),
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def html_response(status: int, reason: str, title: str, body: str) -> bytes:
    """The listener's small HTML answer; ``title`` and ``body`` are trusted text."""
    return http_response(status, reason, _PAGE.format(title=title, body=body).encode())


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One whole request as the listener read it, for a route (see :class:`LoopbackListener`).

    ``headers`` holds every header line in order, names lowercased; ``body``
    is the body as sent (at most the listener's ``max_body`` bytes).
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


@dataclasses.dataclass(frozen=True, slots=True)
class Answer(Generic[R]):
    """A route's reply: the bytes to send, what it settles (if anything), why it refused."""

    response: bytes
    outcome: R | BaseException | None = None
    rejected: str | None = None


if TYPE_CHECKING:
    # What a route does with one whole request (the hosted-page login has one).
    Route = Callable[[Request], Answer[R]]


def _parse_head(head: bytes) -> Request | str:
    """The request line and headers of ``head``, or why they are malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):  # noqa: PLR2004
        return "malformed request line"
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            return "malformed header"
        headers.append((name.lower(), value.strip(" \t")))
    return Request(method=parts[0], target=parts[1], headers=tuple(headers))


class LoopbackListener(Generic[R]):
    """Listens on the redirect URI's host and port until the real callback arrives.

    ``check_state`` compares a received state with the one the flow made (in
    constant time); the listener itself holds no secret. At most
    ``max_waiting`` connections that have not yet sent a whole request are
    kept; a new one beyond that drops the oldest.

    Given a ``route`` instead of ``check_state``, the listener answers every
    whole request with it (the hosted-page login): the listener still does
    the TLS, the deadlines, the shedding, malformed heads and bodies (a body
    needs a ``Content-Length`` of at most ``max_body`` bytes); the route
    decides the rest, and the first :class:`Answer` with an outcome ends
    the wait.
    """

    @overload
    def __init__(
        self: LoopbackListener[Callback],
        target: RedirectTarget,
        *,
        ssl_context: ssl.SSLContext,
        check_state: Callable[[str], bool],
        idle_timeout: float = 15.0,
        max_waiting: int = 64,
        setting: str = "the redirect URI",
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: RedirectTarget,
        *,
        ssl_context: ssl.SSLContext,
        route: Route[R],
        max_body: int,
        idle_timeout: float = 15.0,
        max_waiting: int = 64,
        setting: str = "the redirect URI",
    ) -> None: ...

    def __init__(  # noqa: PLR0913 - each is one setting of the listener
        self,
        target: RedirectTarget,
        *,
        ssl_context: ssl.SSLContext,
        check_state: Callable[[str], bool] | None = None,
        route: Route[R] | None = None,
        max_body: int = 0,
        idle_timeout: float = 15.0,
        max_waiting: int = 64,
        setting: str = "the redirect URI",
    ) -> None:
        """Prepare to listen; nothing is bound until the listener is entered."""
        self.target = target
        self._ssl = ssl_context
        self._check_state = check_state or _no_state
        self._route = route
        self._max_body = max(0, max_body)
        self._idle = idle_timeout
        self._max_waiting = max(1, max_waiting)
        self._setting = setting
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering: set[asyncio.Task[None]] = set()
        # Connections with no whole request yet, oldest first (dicts keep order).
        self._waiting: dict[asyncio.Task[None], None] = {}
        self._closing = False
        self._result: asyncio.Future[R] | None = None
        self._claimed = False
        self.rejected: list[str] = []
        self.dropped = 0  # waiting connections shed to make room

    async def __aenter__(self) -> Self:
        """Bind the port (failing fast if it is taken) and start accepting."""
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        family = socket.AF_INET6 if ":" in self.target.bind else socket.AF_INET
        try:
            sock = socket.create_server((self.target.bind, self.target.port), family=family)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {self.target.port} on {self.target.bind} is already in use",
                    hint=f"stop that program, or choose another port in {self._setting} "
                    "(and register the same URL with the provider)",
                ) from None
            raise PortInUse(
                f"cannot listen on {self.target.bind} port {self.target.port}: {exc.strerror}",
                hint=f"choose another port in {self._setting}",
            ) from None
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        self._sockets.append(sock)
        self._spawn(self._accept(sock))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Stop accepting, drop every open connection, and release the port."""
        self._closing = True
        for sock in self._sockets:
            sock.close()
        if self._answering:
            # The connection that ended the wait is still closing: cancelling it
            # now could reset it before the browser has read its page.
            await asyncio.wait(self._answering, timeout=2)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sockets.clear()

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._sockets[0].getsockname()[1])

    async def wait(self) -> R:
        """Wait for the real callback (or a route's outcome); AccessDenied if the user declined."""
        assert self._result is not None, "enter the listener first"
        return await asyncio.shield(self._result)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, sock: socket.socket) -> None:
        """Accept connections until the listener closes, whatever accept() meets on the way."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(sock)
            except OSError as exc:
                if self._closing:
                    return
                if exc.errno in _OUT_OF_RESOURCES:
                    shed = self._shed(max(1, len(self._waiting) // 2))
                    log.info(
                        "login listener: accept failed (%s); dropped %d waiting connections",
                        exc.strerror,
                        shed,
                    )
                    await asyncio.sleep(_RESOURCE_PAUSE)
                    continue
                if exc.errno in _ONE_CONNECTION_LOST:
                    await asyncio.sleep(0)  # a failing accept does not yield either
                    continue
                self._settle(
                    LoginError(
                        f"the login listener stopped: {exc.strerror or type(exc).__name__}",
                        hint="run the command again; --manual logs in without a listener",
                    )
                )
                return
            conn.setblocking(False)  # noqa: FBT003 - the socket API
            if len(self._waiting) >= self._max_waiting:
                self._shed(len(self._waiting) - self._max_waiting + 1)
            task = self._spawn(self._serve(conn))
            self._waiting[task] = None
            task.add_done_callback(self._no_longer_waiting)
            # A task shed before it first ran never reaches its own `finally`.
            task.add_done_callback(functools.partial(_close_socket, conn))
            # An accept that succeeds at once does not yield: without this, a
            # queue of connections would keep the tasks shed above (and every
            # other task) from running, and from freeing their descriptors.
            await asyncio.sleep(0)

    def _no_longer_waiting(self, task: asyncio.Task[None]) -> None:
        self._waiting.pop(task, None)

    def _shed(self, count: int) -> int:
        """Drop the ``count`` oldest connections that have not sent a whole request yet."""
        oldest = list(self._waiting)[:count]
        for task in oldest:
            self._no_longer_waiting(task)
            task.cancel()
        self.dropped += len(oldest)
        return len(oldest)

    async def _peek(self, conn: socket.socket) -> bytes:
        """Wait until the client sends something, and look at its first byte without taking it."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), readable)
        try:
            await asyncio.wait_for(ready, self._idle)
        finally:
            loop.remove_reader(conn.fileno())
        try:
            return conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return await self._peek(conn)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        writer: asyncio.StreamWriter | None = None
        try:
            first = await self._peek(conn)
            if not first:
                return
            if first[0] != _TLS_HANDSHAKE:
                self._reject("plain HTTP on the TLS port")
                await loop.sock_sendall(
                    conn,
                    html_response(
                        400,
                        "Bad Request",
                        "This address speaks HTTPS",
                        f"dashtam's login listener only accepts https://{self.target.host}:{self.target.port}.",
                    ),
                )
                await self._linger(conn)
                return
            reader = asyncio.StreamReader(limit=MAX_HEAD)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=self._ssl, ssl_handshake_timeout=self._idle
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._idle)
            except (asyncio.LimitOverrunError, ValueError):
                self._reject("request head too large")
                writer.write(
                    html_response(431, "Request Header Fields Too Large", "Request too large", "")
                )
                await writer.drain()
                return
            except TimeoutError:
                self._reject("request not completed in time")
                writer.write(html_response(408, "Request Timeout", "Request timeout", ""))
                await writer.drain()
                return
            if self._route is not None:
                await self._answer_route(head, reader, writer, me)
                return
            self._no_longer_waiting(me)  # a whole request: answered at once, never shed
            response, outcome = self._handle(head)
            try:
                writer.write(response)
                await writer.drain()
            finally:
                # Settle only once the page is on its way: the flow closes the
                # listener as soon as it has its answer.
                if outcome is not None:
                    self._answering.add(me)
                    # Without a route the listener is a LoopbackListener[Callback].
                    self._settle(cast("R | BaseException", outcome))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            # Idle clients, dropped connections and failed handshakes (a browser
            # that has not accepted the certificate yet) are simply closed.
            pass
        finally:
            await self._close(conn, writer, dropped=me.cancelling() > 0)

    async def _close(
        self, conn: socket.socket, writer: asyncio.StreamWriter | None, *, dropped: bool
    ) -> None:
        """Close a connection; one that was shed (or that a leaving listener drops) at once."""
        if writer is None:
            conn.close()
        elif dropped:
            # Free the descriptor now rather than wait for the client's half
            # of the TLS close.
            writer.transport.abort()
        else:
            writer.close()
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
            finally:
                # A peer that never completes the TLS close, or a listener that
                # is leaving, must not leave the transport open.
                writer.transport.abort()

    async def _linger(self, conn: socket.socket) -> None:
        """Half-close, then drain what the client still sends.

        Closing with its request unread would reset the connection, and the
        client could lose the answer.
        """
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                while await loop.sock_recv(conn, 4096):
                    pass

    def _reject(self, why: str) -> None:
        self.rejected.append(why)
        log.info("login listener rejected a request: %s", why)

    async def _answer_route(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        me: asyncio.Task[None],
    ) -> None:
        """Read the body a route's request declares, then send the route's answer."""
        assert self._route is not None
        request = _parse_head(head)
        if isinstance(request, str):
            self._no_longer_waiting(me)
            self._reject(request)
            writer.write(html_response(400, "Bad Request", "Bad request", ""))
            await writer.drain()
            return
        answer = await self._read_body(request, reader, writer)
        if answer is None:
            return
        self._no_longer_waiting(me)  # a whole request: answered at once, never shed
        if isinstance(answer, Request):
            answer = self._route(answer)
        if answer.rejected is not None:
            self._reject(answer.rejected)
        try:
            writer.write(answer.response)
            await writer.drain()
        finally:
            if answer.outcome is not None:
                self._answering.add(me)
                self._settle(answer.outcome)

    async def _read_body(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | Answer[R] | None:
        """The request with its body; or the refusal of a body that is unbounded or too large.

        None when the client did not send the body it declared in time (it
        was answered 408).
        """
        if request.values("transfer-encoding"):
            return Answer(
                html_response(411, "Length Required", "A body needs a Content-Length", ""),
                rejected="body without a Content-Length",
            )
        lengths = request.values("content-length")
        if not lengths:
            return request
        if len(lengths) != 1 or not lengths[0].isascii() or not lengths[0].isdigit():
            return Answer(
                html_response(400, "Bad Request", "Bad request", ""),
                rejected="malformed Content-Length",
            )
        size = int(lengths[0])
        if size > self._max_body:
            self._reject("body too large")
            writer.write(html_response(413, "Content Too Large", "Request too large", ""))
            await writer.drain()
            await _discard(reader, min(size, 64 * self._max_body + MAX_HEAD))
            return None
        try:
            body = await asyncio.wait_for(reader.readexactly(size), self._idle)
        except TimeoutError:
            self._reject("request not completed in time")
            writer.write(html_response(408, "Request Timeout", "Request timeout", ""))
            await writer.drain()
            return None
        return dataclasses.replace(request, body=body)

    def _settle(self, outcome: R | BaseException) -> None:
        assert self._result is not None
        if self._result.done():
            return
        if isinstance(outcome, BaseException):
            self._result.set_exception(outcome)
        else:
            self._result.set_result(outcome)

    def _handle(self, head: bytes) -> tuple[bytes, Callback | BaseException | None]:  # noqa: PLR0911
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):  # noqa: PLR2004
            self._reject("malformed request line")
            return html_response(400, "Bad Request", "Bad request", ""), None
        method, target, _version = parts
        if method != "GET":
            self._reject("method not allowed")
            return html_response(405, "Method Not Allowed", "Method not allowed", ""), None
        url = urllib.parse.urlsplit(target)
        if url.path != self.target.path:
            self._reject("wrong path")
            return html_response(404, "Not Found", "Not found", ""), None
        outcome = interpret_query(url.query, self._check_state)
        if isinstance(outcome, str):
            self._reject(outcome)
            page = html_response(
                400,
                "Bad Request",
                "This is not the login dashtam is waiting for",
                "Start the login again.",
            )
            return page, None
        if self._claimed:
            self._reject("callback already received")
            return html_response(
                410, "Gone", "Already done", "This login was already completed."
            ), None
        self._claimed = True
        if isinstance(outcome, AccessDenied):
            page = html_response(
                200,
                "OK",
                "Login cancelled",
                "dashtam was not given access. You can close this tab.",
            )
            return page, outcome
        page = html_response(
            200,
            "OK",
            "Login complete",
            "dashtam received the authorization. You can close this tab.",
        )
        return page, outcome


def _close_socket(conn: socket.socket, _task: object) -> None:
    conn.close()


def _no_state(_received: str) -> bool:
    return False


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    """Read and drop up to ``limit`` bytes (for at most a second), so that closing does not reset.

    A connection closed with its request unread is reset, and the client
    could lose the answer already sent.
    """
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
        async with asyncio.timeout(1.0):
            while limit > 0 and (chunk := await reader.read(min(limit, 65536))):
                limit -= len(chunk)


def interpret_query(
    query: str, check_state: Callable[[str], bool]
) -> Callback | AccessDenied | str:
    """Read a redirect's query: the code, the user's refusal, or why it is rejected.

    The state is checked first, so a forged or stale link can neither deliver
    a code nor cancel the login. ``parse_qs`` decodes percent-escapes: Schwab's
    code ends in ``%40``, which must reach the token endpoint as ``@``.
    """
    params = urllib.parse.parse_qs(query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values and len(values) == 1 else None

    state = one("state")
    if state is None or not check_state(state):
        return "missing or wrong state"
    error = one("error")
    if error is not None:
        return AccessDenied(
            f"the provider did not grant access ({_printable(error)})",
            hint="run the command again and approve access in the browser",
        )
    code = one("code")
    if not code:
        return "callback without a code"
    return Callback(code=code)


def _printable(text: str) -> str:
    """Keep a provider's error word short and on one line."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:80]


def states_equal(expected: str) -> Callable[[str], bool]:
    """A constant-time comparison against ``expected``."""
    wanted = expected.encode()

    def check(received: str) -> bool:
        return hmac.compare_digest(received.encode(), wanted)

    return check
