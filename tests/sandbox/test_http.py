"""The sandbox's small HTTP/1.1 server on its own: parsing, keep-alive, limits, failures, closing."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import pytest

from dashtam_cli.sandbox.http import MAX_BODY, MAX_HEAD, HttpServer, Request, Response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TIMEOUT: Final = 10.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names) and the Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        key, value = line.split(":", 1)
        headers[key.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
    return int(status_line.split(" ")[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server has closed its end (nothing more but end of file)."""
    return await asyncio.wait_for(reader.read(), TIMEOUT) == b""


def serve(
    handler: Callable[[Request], Awaitable[Response]],
    client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> None:
    """Start a plain-TCP server with ``handler`` on a free loopback port and run ``client`` on it."""

    async def run() -> None:
        server = HttpServer(handler)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                await client(reader, writer)
            finally:
                writer.close()
        finally:
            await server.close()

    asyncio.run(run())


async def echo(request: Request) -> Response:
    """Answer with what was parsed, so the client can check it."""
    text = repr(
        (request.method, request.path, request.query, request.headers.get("x-probe"), request.body)
    )
    return Response(200, text.encode(), headers={"X-Path": request.path})


def test_two_requests_share_one_connection_and_are_parsed() -> None:
    """Keep-alive: both requests are answered on one connection, each parsed fully."""
    answers: list[tuple[int, dict[str, str], bytes]] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /v1/a?x=1&x=2&empty= HTTP/1.1\r\nX-Probe:  one \r\n\r\n")
        answers.append(await read_response(reader))
        writer.write(b"POST /v1/b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        answers.append(await read_response(reader))

    serve(echo, client)
    (s1, h1, b1), (s2, h2, b2) = answers
    assert (s1, s2) == (200, 200)
    assert b1 == repr(("GET", "/v1/a", {"x": ["1", "2"], "empty": [""]}, "one", b"")).encode()
    assert b2 == repr(("POST", "/v1/b", {}, None, b"hello")).encode()
    assert h1["connection"] == h2["connection"] == "keep-alive"
    assert (h1["x-path"], h2["x-path"]) == ("/v1/a", "/v1/b")
    assert h1["cache-control"] == "no-store"


def test_connection_close_is_answered_then_closed() -> None:
    """A client asking to close gets its answer marked ``close``, then end of file."""
    seen: list[object] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /x HTTP/1.1\r\nConnection: Close\r\n\r\n")
        status, headers, _ = await read_response(reader)
        seen.extend([status, headers["connection"], await closed(reader)])

    serve(echo, client)
    assert seen == [200, "close", True]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="no-request-line"),
        pytest.param(b"GET / HTTP/1.1 extra\r\n\r\n", 400, id="four-parts"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, id="length-not-a-number"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, id="negative-length"),
        pytest.param(
            f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
            413,
            id="body-over-1-MiB",
        ),
        pytest.param(
            b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n", 431, id="head-over-16-KiB"
        ),
    ],
)
def test_a_malformed_request_is_refused_and_the_connection_closed(raw: bytes, status: int) -> None:
    """Bad framing is answered with its status (never reaching the handler), then the end."""
    seen: list[object] = []
    reached: list[Request] = []

    async def handler(request: Request) -> Response:
        reached.append(request)
        return Response(200)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        got, headers, _ = await read_response(reader)
        seen.extend([got, headers["connection"], await closed(reader)])

    serve(handler, client)
    assert seen == [status, "close", True]
    assert reached == []


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    """A 1 MiB body is read whole and handed to the handler."""
    sizes: list[int] = []

    async def handler(request: Request) -> Response:
        sizes.append(len(request.body))
        return Response(200)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode())
        writer.write(b"b" * MAX_BODY)
        status, _, _ = await read_response(reader)
        sizes.append(status)

    serve(handler, client)
    assert sizes == [MAX_BODY, 200]


def test_a_failing_handler_is_a_500_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in the handler is logged and answered 500; the next request still works."""
    statuses: list[tuple[int, bytes]] = []

    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response(200, b"fine")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for path in (b"/boom", b"/ok"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\n\r\n")
            status, _, body = await read_response(reader)
            statuses.append((status, body))

    with caplog.at_level(logging.ERROR, logger="dashtam_cli.sandbox.http"):
        serve(handler, client)
    assert statuses[0][0] == 500
    assert b"sandbox failure" in statuses[0][1]
    assert b"handler bug" not in statuses[0][1]
    assert statuses[1] == (200, b"fine")
    ours = [r for r in caplog.records if r.name == "dashtam_cli.sandbox.http"]
    # Other tests' redacting filters may fold the traceback into the message: the first line counts.
    assert [r.getMessage().splitlines()[0] for r in ours] == ["sandbox handler failed"]


def test_close_drops_an_idle_keep_alive_connection() -> None:
    """Closing the server ends connections that are waiting for their next request."""
    outcome: list[bool] = []

    async def run() -> None:
        server = HttpServer(echo)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await read_response(reader)
        await server.close()
        outcome.append(await closed(reader))
        writer.close()

    asyncio.run(run())
    assert outcome == [True]


# --- the request and response objects -------------------------------------------------------------


def test_request_arg_and_form() -> None:
    """``arg`` gives the first value or None; ``form`` reads a url-encoded body, blanks kept."""
    request = Request(
        method="POST",
        path="/token",
        query={"a": ["1", "2"], "e": []},
        headers={},
        body=b"grant_type=refresh_token&code=C0.abc%40&blank=&bad=%FF",
    )
    assert request.arg("a") == "1"
    assert request.arg("e") is None
    assert request.arg("missing") is None
    assert request.form() == {
        "grant_type": "refresh_token",
        "code": "C0.abc@",
        "blank": "",
        "bad": "\ufffd",
    }


def test_response_encoding() -> None:
    """Status line with its reason, default headers, caller's headers last and winning, then body."""
    wire = Response(429, b"{}", headers={"Retry-After": "3", "Cache-Control": "max-age=1"}).encode(
        keep_alive=False
    )
    head, body = wire.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 429 Too Many Requests"
    assert lines[1:] == [
        "Content-Type: application/json",
        "Content-Length: 2",
        "Cache-Control: max-age=1",
        "Connection: close",
        "Retry-After: 3",
    ]
    assert body == b"{}"


def test_an_unlisted_status_still_has_a_reason_phrase() -> None:
    """A status without a known reason is sent with a generic one, never an empty status line."""
    wire = Response(418, content_type="text/plain").encode(keep_alive=True)
    assert wire.startswith(b"HTTP/1.1 418 Status\r\nContent-Type: text/plain\r\n")
    assert wire.endswith(b"Connection: keep-alive\r\n\r\n")
