"""The loopback listener over real TLS: every bad request is answered and the real callback still lands."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from typing import TYPE_CHECKING, Any

import pytest
from listener_support import (
    CALLBACK_REASONS,
    CALLBACK_REJECTIONS,
    GOOD,
    STATE,
    get,
    request,
    status,
)
from oauth_fixtures import free_port

from dashtam_cli.core.oauth.errors import AccessDenied, LoginError, PortInUse, RedirectUriError
from dashtam_cli.core.oauth.listener import (
    Callback,
    LoopbackListener,
    RedirectTarget,
    parse_redirect_uri,
    states_equal,
)
from dashtam_cli.core.oauth.tls import listener_ssl_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path


def scenario(
    tmp_path: Path,
    body: Callable[[LoopbackListener[Callback], int, Path], Awaitable[None]],
    **kw: Any,
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


@pytest.mark.parametrize(("raw", "code"), CALLBACK_REJECTIONS)
def test_rejections_then_the_real_callback(tmp_path: Path, raw: bytes, code: int) -> None:
    """Each bad request gets its status; the listener keeps waiting and takes the real code after."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        assert status(await request(port, cert, raw)) == code
        assert listener._result is not None
        assert not listener._result.done()
        answer = await request(port, cert, get(GOOD))
        assert status(answer) == 200
        assert b"Login complete" in answer
        callback = await asyncio.wait_for(listener.wait(), 5)
        assert callback.code == "C0.abc@"  # %40 decoded
        assert status(await request(port, cert, get(GOOD))) == 410  # one-shot

    scenario(tmp_path, body)


def test_plain_http_and_silent_clients_do_not_block(tmp_path: Path) -> None:
    """Plain HTTP gets a plain 400; 20 idle sockets and a half-sent request hold nothing up."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
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

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        assert status(await request(port, cert, get("/?error=access_denied&state=forged"))) == 400
        assert listener._result is not None
        assert not listener._result.done()
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
    ],
)
def test_literal_loopback_redirects_are_accepted(uri: str, bind: str) -> None:
    """127.0.0.1 and [::1] bind exactly that address, path '/' by default."""
    target = parse_redirect_uri(uri, setting="x")
    assert (target.bind, target.port, target.path) == (bind, 8182, "/")


@pytest.mark.parametrize(
    ("uri", "suggested"),
    [
        ("https://localhost:8182", "https://127.0.0.1:8182"),
        ("https://LocalHost:8183/callback", "https://127.0.0.1:8183/callback"),
        ("https://localhost", "https://127.0.0.1:443"),
    ],
)
def test_localhost_is_refused_with_the_address_to_use(uri: str, suggested: str) -> None:
    """Localhost is refused (exit 2): the hint gives the 127.0.0.1 URL to set and to register.

    The listener binds one address; a name that also resolves to ::1 would let
    another local user take the other address on the same port.
    """
    with pytest.raises(RedirectUriError) as caught:
        parse_redirect_uri(uri, setting="SCHWAB_REDIRECT_URI")
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        "the redirect URI must use the address 127.0.0.1 (or [::1]), not the name localhost, "
        "which another local user could answer"
    )
    assert caught.value.hint == (
        f"set SCHWAB_REDIRECT_URI to {suggested}, and register that exact URL as the app's "
        "callback URL in the provider's developer portal"
    )


@pytest.mark.parametrize(("raw", "code", "reason"), CALLBACK_REASONS)
def test_more_rejections_name_their_reason_and_keep_waiting(
    tmp_path: Path, raw: bytes, code: int, reason: str
) -> None:
    """A malformed line, a doubled or empty state, an empty code, HEAD: refused, then the code lands."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        answer = await request(port, cert, raw)
        assert status(answer) == code
        assert b"Login complete" not in answer
        assert listener.rejected == [reason]
        assert status(await request(port, cert, get(GOOD))) == 200
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"

    scenario(tmp_path, body)


def test_favicon_then_callback_then_a_second_callback(tmp_path: Path) -> None:
    """/favicon.ico gets 404 without using the one-shot; the callback wins; a repeat gets 410."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        for _ in range(3):  # browsers ask for it more than once
            assert status(await request(port, cert, get("/favicon.ico"))) == 404
        first = await request(port, cert, get(GOOD))
        assert status(first) == 200
        assert b"You can close this tab" in first
        other = f"/?code=C0.other%40&state={STATE}"
        second = await request(port, cert, get(other))
        assert status(second) == 410
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"  # the first one
        assert listener.rejected == ["wrong path"] * 3 + ["callback already received"]

    scenario(tmp_path, body)


def test_clients_that_send_nothing_are_dropped_and_the_callback_still_lands(
    tmp_path: Path,
) -> None:
    """Silent TCP clients are closed after the idle timeout; a silent TLS client gets 408."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        closed_at_once = socket.create_connection(("127.0.0.1", port))
        closed_at_once.close()  # connects and leaves without a byte
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        context = ssl.create_default_context(cafile=cert)
        tls_reader, tls_writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        try:
            # The listener ends the silent TCP connection: the read sees EOF.
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""
            # The TLS client finished its handshake but sent no request: 408.
            answer = await asyncio.wait_for(tls_reader.read(), 5)
            assert status(answer) == 408
        finally:
            silent_writer.close()
            tls_writer.close()
        assert listener._result is not None
        assert not listener._result.done()
        assert status(await request(port, cert, get(GOOD))) == 200
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"
        assert "request not completed in time" in listener.rejected

    scenario(tmp_path, body, idle_timeout=0.3)


def test_the_port_is_free_after_a_login_with_clients_still_connected(tmp_path: Path) -> None:
    """Leaving the listener closes idle connections and the socket: the port binds again at once."""
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="SCHWAB_REDIRECT_URI")
    context, cert = listener_ssl_context(tmp_path / "tls")
    idle: list[socket.socket] = []

    async def run() -> int:
        async with LoopbackListener(
            target, ssl_context=context, check_state=states_equal(STATE), idle_timeout=30.0
        ) as listener:
            idle.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(5))
            assert status(await request(port, cert, get(GOOD))) == 200
            await asyncio.wait_for(listener.wait(), 5)
            tasks = len(listener._tasks)  # the accept loop and the idle clients
        assert not listener._tasks  # every connection task ended
        return tasks

    try:
        assert asyncio.run(run()) >= 6  # the 5 idle clients were being served
        for sock in idle:  # the listener hung up on each of them
            sock.settimeout(5)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    socket.create_server(("127.0.0.1", port)).close()
    # A second login right away binds the same port.
    asyncio.run(_enter_and_leave(target, context))


async def _enter_and_leave(target: RedirectTarget, context: ssl.SSLContext) -> None:
    """Bind ``target`` with a listener and release it."""
    async with LoopbackListener(target, ssl_context=context, check_state=states_equal(STATE)):
        pass


def _ipv6_loopback_port() -> int | None:
    """A free port on ::1, or None where this machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
            return int(sock.getsockname()[1])
    except OSError:
        return None


def test_ipv6_loopback_listener_takes_the_callback(tmp_path: Path) -> None:
    """https://[::1]:PORT binds ::1 only, and the callback over IPv6 TLS delivers the code."""
    port = _ipv6_loopback_port()
    if port is None:
        pytest.skip("no IPv6 loopback on this machine")
    target = parse_redirect_uri(f"https://[::1]:{port}", setting="SCHWAB_REDIRECT_URI")
    context, cert = listener_ssl_context(tmp_path / "tls")

    async def run() -> str:
        async with LoopbackListener(
            target, ssl_context=context, check_state=states_equal(STATE)
        ) as listener:
            with pytest.raises(OSError):  # noqa: PT011 - refused: nothing on the IPv4 side
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            verify = ssl.create_default_context(cafile=cert)
            reader, writer = await asyncio.open_connection(
                "::1", port, ssl=verify, server_hostname="::1"
            )
            try:
                writer.write(get(GOOD))
                await writer.drain()
                assert status(await asyncio.wait_for(reader.read(), 5)) == 200
            finally:
                writer.close()
            return (await asyncio.wait_for(listener.wait(), 5)).code

    assert asyncio.run(run()) == "C0.abc@"


@pytest.mark.parametrize(
    "uri",
    ["https://127.0.0.1:8182/?x=1", "https://127.0.0.1:8182/#top", "https://127.0.0.1:port"],
)
def test_redirects_with_a_query_fragment_or_bad_port_are_refused(uri: str) -> None:
    """A query, a fragment or a port that is not a number is refused with the setting's name."""
    with pytest.raises(RedirectUriError) as caught:
        parse_redirect_uri(uri, setting="SCHWAB_REDIRECT_URI")
    assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "uri", ["https://127.0.0.1:0", "https://[::1]:0/cb", "https://127.0.0.1:65536"]
)
def test_a_redirect_port_of_0_or_beyond_65535_is_refused(uri: str) -> None:
    """Port 0 would bind a random port the provider never sends the browser to: exit 2."""
    with pytest.raises(RedirectUriError) as caught:
        parse_redirect_uri(uri, setting="SCHWAB_REDIRECT_URI")
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith("the redirect URI's port must be a number from 1 to")
    assert "SCHWAB_REDIRECT_URI" in (caught.value.hint or "")


def test_a_redirect_path_is_the_only_path_answered(tmp_path: Path) -> None:
    """With https://127.0.0.1:PORT/callback, '/' is a 404 and '/callback' delivers the code."""
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}/callback", setting="X")
    context, cert = listener_ssl_context(tmp_path / "tls")

    async def run() -> str:
        async with LoopbackListener(
            target, ssl_context=context, check_state=states_equal(STATE)
        ) as listener:
            assert status(await request(port, cert, get(GOOD))) == 404
            good = GOOD.replace("/?", "/callback?")
            assert status(await request(port, cert, get(good))) == 200
            return (await asyncio.wait_for(listener.wait(), 5)).code

    assert target.path == "/callback"
    assert asyncio.run(run()) == "C0.abc@"


def test_the_certificate_is_kept_private_reused_and_renewed(tmp_path: Path) -> None:
    """Key and certificate are 0600 in a 0700 folder, reused across logins, remade near expiry."""
    import datetime as dt
    import stat

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    folder = tmp_path / "tls"
    _, cert = listener_ssl_context(folder)
    key = folder / "listener-key.pem"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(cert.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    loaded = x509.load_pem_x509_certificate(first)
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}

    listener_ssl_context(folder)
    assert cert.read_bytes() == first  # reused: the browser's exception stays valid

    # A certificate that expires tomorrow is replaced.
    now = dt.datetime.now(dt.UTC)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=300))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(old.public_bytes(Encoding.PEM))
    listener_ssl_context(folder)
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.not_valid_after_utc - now > dt.timedelta(days=300)
    assert stat.S_IMODE(cert.stat().st_mode) == 0o600


def test_leaving_right_after_the_callback_still_delivers_the_page(tmp_path: Path) -> None:
    """The flow leaves as soon as it has the code: the page still arrives and nothing stays open.

    The browser here reads its page only after the listener is gone and never
    answers the TLS close, the slowest case; no transport may be left behind
    (a ResourceWarning fails the test).
    """
    import gc

    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="X")
    context, cert = listener_ssl_context(tmp_path / "tls")
    verify = ssl.create_default_context(cafile=cert)

    clients: list[ssl.SSLSocket] = []

    def send_callback() -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            clients.append(verify.wrap_socket(raw, server_hostname="127.0.0.1"))
        except BaseException:
            raw.close()
            raise
        clients[0].sendall(get(GOOD))

    async def run() -> str:
        async with LoopbackListener(
            target, ssl_context=context, check_state=states_equal(STATE)
        ) as listener:
            await asyncio.to_thread(send_callback)
            callback = await asyncio.wait_for(listener.wait(), 5)
        return callback.code

    try:
        code = asyncio.run(run())
        answer = b""
        while chunk := clients[0].recv(65536):
            answer += chunk
    finally:
        for client in clients:
            client.close()
    gc.collect()
    assert code == "C0.abc@"
    assert status(answer) == 200
    assert b"Login complete" in answer


def test_waiting_connections_beyond_the_limit_are_dropped_oldest_first(tmp_path: Path) -> None:
    """With max_waiting=5, 20 silent clients: the 15 oldest are hung up on, the callback lands."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        loop = asyncio.get_running_loop()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            for sock in idle:
                sock.setblocking(False)  # noqa: FBT003 - the socket API
            for sock in idle[:15]:  # each sees the listener close it
                assert await asyncio.wait_for(loop.sock_recv(sock, 1), 5) == b""
            assert listener.dropped == 15
            assert status(await request(port, cert, get(GOOD))) == 200
            assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"
            assert listener.dropped == 16  # the callback's arrival pushed out one more
        finally:
            for sock in idle:
                sock.close()

    scenario(tmp_path, body, idle_timeout=30.0, max_waiting=5)


class FlakySocket(socket.socket):
    """A listening socket whose accept() fails with the given errors first, as the kernel's can."""

    def __init__(self, failures: list[int]) -> None:
        """Bind a free port on 127.0.0.1 and listen; fail the next accepts with ``failures``."""
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.failures = failures
        self.bind(("127.0.0.1", 0))
        self.listen()
        self.setblocking(False)  # noqa: FBT003 - the socket API

    def accept(self) -> tuple[socket.socket, Any]:
        """Raise the next queued error, or accept for real."""
        if self.failures:
            code = self.failures.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


@pytest.mark.parametrize(
    "code",
    [
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
    ],
    ids=errno.errorcode.get,
)
def test_transient_accept_errors_do_not_stop_the_listener(tmp_path: Path, code: int) -> None:
    """accept() failing with a transient error (three times) leaves the loop running: the code lands."""
    flaky = FlakySocket([code] * 3)

    async def body(listener: LoopbackListener[Callback], _port: int, cert: Path) -> None:
        listener._spawn(listener._accept(flaky))
        port = flaky.getsockname()[1]
        assert status(await request(port, cert, get(GOOD))) == 200
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"
        assert flaky.failures == []

    try:
        scenario(tmp_path, body)
    finally:
        flaky.close()


def test_a_lasting_accept_error_ends_the_login_with_a_clear_error(tmp_path: Path) -> None:
    """accept() failing with an error that will not pass (EBADF) ends the wait at once, exit 1."""
    flaky = FlakySocket([errno.EBADF])

    async def body(listener: LoopbackListener[Callback], _port: int, _cert: Path) -> None:
        listener._spawn(listener._accept(flaky))
        with pytest.raises(LoginError) as caught:
            await asyncio.wait_for(listener.wait(), 5)
        assert caught.value.message == "the login listener stopped: Bad file descriptor"
        assert caught.value.exit_code == 1
        assert "--manual" in (caught.value.hint or "")

    try:
        scenario(tmp_path, body)
    finally:
        flaky.close()


def test_an_accept_error_after_the_callback_does_not_undo_the_login(tmp_path: Path) -> None:
    """Once the callback has landed, a later lasting accept error leaves the login's result as is."""
    flaky = FlakySocket([errno.EBADF])

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        assert status(await request(port, cert, get(GOOD))) == 200
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"
        await asyncio.wait_for(listener._spawn(listener._accept(flaky)), 5)
        assert flaky.failures == []  # the error was met
        assert (await asyncio.wait_for(listener.wait(), 5)).code == "C0.abc@"

    try:
        scenario(tmp_path, body)
    finally:
        flaky.close()


def test_a_bind_refused_for_another_reason_names_that_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bind that fails other than "in use" (no permission here) says why and what to change."""
    port = free_port()
    target = parse_redirect_uri(f"https://127.0.0.1:{port}", setting="SCHWAB_REDIRECT_URI")
    context, _ = listener_ssl_context(tmp_path / "tls")

    def refuse(*_args: object, **_kwargs: object) -> socket.socket:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(socket, "create_server", refuse)

    async def run() -> None:
        async with LoopbackListener(
            target,
            ssl_context=context,
            check_state=states_equal(STATE),
            setting="SCHWAB_REDIRECT_URI",
        ):
            pass

    with pytest.raises(PortInUse) as caught:
        asyncio.run(run())
    assert caught.value.message == (
        f"cannot listen on 127.0.0.1 port {port}: {os.strerror(errno.EACCES)}"
    )
    assert caught.value.hint == "choose another port in SCHWAB_REDIRECT_URI"


def test_the_listener_reports_the_port_it_bound(tmp_path: Path) -> None:
    """``port`` is the port actually listened on, the one the redirect URI names."""

    async def body(listener: LoopbackListener[Callback], port: int, cert: Path) -> None:
        assert listener.port == port
        assert status(await request(port, cert, get(GOOD))) == 200

    scenario(tmp_path, body)
