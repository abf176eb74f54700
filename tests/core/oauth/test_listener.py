"""The loopback listener over real TLS: every bad request is answered and the real callback still lands."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

import pytest
from oauth_fixtures import free_port

from dashtam_cli.core.oauth.errors import AccessDenied, PortInUse, RedirectUriError
from dashtam_cli.core.oauth.listener import LoopbackListener, parse_redirect_uri, states_equal
from dashtam_cli.core.oauth.tls import listener_ssl_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

STATE = "s" * 43
GOOD = f"/?code=C0.abc%40&session=x&state={STATE}"


async def request(port: int, cert: Path, raw: bytes) -> bytes:
    """Send raw bytes over verified TLS and return the whole answer."""
    context = ssl.create_default_context(cafile=cert)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def get(path: str) -> bytes:
    """A minimal GET request."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def status(answer: bytes) -> int:
    """The status code of an answer."""
    return int(answer.split(b" ", 2)[1])


def scenario(
    tmp_path: Path, body: Callable[[LoopbackListener, int, Path], Awaitable[None]], **kw: float
) -> None:
    """Run ``body`` with a listener on a free port; it must leave the real callback to end the wait."""
    target = parse_redirect_uri(f"https://127.0.0.1:{free_port()}", setting="SCHWAB_REDIRECT_URI")
    context, cert = listener_ssl_context(tmp_path / "tls")

    async def run() -> None:
        async with LoopbackListener(
            target, ssl_context=context, check_state=states_equal(STATE), **kw
        ) as listener:
            await body(listener, target.port, cert)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (get(f"/wrong?code=c&state={STATE}"), 404),
        (get("/favicon.ico"), 404),
        (get("/?code=c"), 400),
        (get("/?code=c&state=forged"), 400),
        (get(f"/?state={STATE}"), 400),
        (f"POST {GOOD} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode(), 405),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_rejections_then_the_real_callback(tmp_path: Path, raw: bytes, code: int) -> None:
    """Each bad request gets its status; the listener keeps waiting and takes the real code after."""

    async def body(listener: LoopbackListener, port: int, cert: Path) -> None:
        assert status(await request(port, cert, raw)) == code
        assert not listener._result.done()  # type: ignore[union-attr]
        answer = await request(port, cert, get(GOOD))
        assert status(answer) == 200
        assert b"Login complete" in answer
        callback = await asyncio.wait_for(listener.wait(), 5)
        assert callback.code == "C0.abc@"  # %40 decoded
        assert status(await request(port, cert, get(GOOD))) == 410  # one-shot

    scenario(tmp_path, body)


def test_plain_http_and_silent_clients_do_not_block(tmp_path: Path) -> None:
    """Plain HTTP gets a plain 400; 20 idle sockets and a half-sent request hold nothing up."""

    async def body(listener: LoopbackListener, port: int, cert: Path) -> None:
        plain_r, plain_w = await asyncio.open_connection("127.0.0.1", port)
        plain_w.write(get(GOOD))
        await plain_w.drain()
        plain = await asyncio.wait_for(plain_r.read(), 5)
        assert plain.startswith(b"HTTP/1.1 400")
        assert b"speaks HTTPS" in plain
        plain_w.close()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        context = ssl.create_default_context(cafile=cert)
        _, half = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        half.write(b"GET /?code=x HTTP/1.1\r\nHost: 127")  # never finished
        await half.drain()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert status(await request(port, cert, get(GOOD))) == 200
            assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"
            assert loop.time() - started < 10  # far below the 30 s idle timeout
        finally:
            for sock in idle:
                sock.close()
            half.close()

    scenario(tmp_path, body, idle_timeout=30.0)


def test_access_denied_ends_the_wait_only_with_the_right_state(tmp_path: Path) -> None:
    """error=access_denied with a forged state is ignored; with the real one it ends the login."""

    async def body(listener: LoopbackListener, port: int, cert: Path) -> None:
        assert status(await request(port, cert, get("/?error=access_denied&state=forged"))) == 400
        assert not listener._result.done()  # type: ignore[union-attr]
        answer = await request(port, cert, get(f"/?error=access_denied&state={STATE}"))
        assert b"Login cancelled" in answer
        with pytest.raises(AccessDenied, match="access_denied"):
            await asyncio.wait_for(listener.wait(), 5)

    scenario(tmp_path, body)


def test_port_in_use_and_released(tmp_path: Path) -> None:
    """A taken port is named with the setting to change; the port is free again after the listener."""
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="SCHWAB_REDIRECT_URI")
    context, _ = listener_ssl_context(tmp_path / "tls")
    blocker = socket.create_server(("127.0.0.1", port))

    async def run() -> None:
        async with LoopbackListener(
            target,
            ssl_context=context,
            check_state=states_equal(STATE),
            setting="SCHWAB_REDIRECT_URI",
        ):
            pass

    try:
        with pytest.raises(PortInUse) as caught:
            asyncio.run(run())
    finally:
        blocker.close()
    assert f"port {port}" in caught.value.message
    assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")
    asyncio.run(run())
    socket.create_server(("127.0.0.1", port)).close()  # released


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:8182", "https://192.0.2.1:8182", "https://example.com:8182"]
)
def test_non_loopback_or_plain_redirects_are_refused(uri: str) -> None:
    """Only https on 127.0.0.1, [::1] or localhost is accepted (exit 2)."""
    with pytest.raises(RedirectUriError) as caught:
        parse_redirect_uri(uri, setting="SCHWAB_REDIRECT_URI")
    assert caught.value.exit_code == 2
    assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("uri", "bind"),
    [
        ("https://127.0.0.1:8182", "127.0.0.1"),
        ("https://[::1]:8182", "::1"),
        ("https://localhost:8182", "127.0.0.1"),
    ],
)
def test_loopback_redirects_are_accepted(uri: str, bind: str) -> None:
    """The three loopback spellings bind where they should, path '/' by default."""
    target = parse_redirect_uri(uri, setting="x")
    assert (target.bind, target.port, target.path) == (bind, 8182, "/")
