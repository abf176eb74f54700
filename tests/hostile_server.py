"""A hostile provider for the tests: Schwab's endpoints over real TLS on 127.0.0.1, answering badly.

Each endpoint gets an *answer*: a function from the request the server saw
to the reply it sends. ``HostileServer.answers`` maps the endpoint's name to
its answer; tests set them between steps. The endpoints, by path:

============================  =====================================
``token``                     ``POST /v1/oauth/token``
``account_numbers``           ``GET /trader/v1/accounts/accountNumbers``
``accounts``                  ``GET /trader/v1/accounts``
``user_preference``           ``GET /trader/v1/userPreference``
``account``                   ``GET /trader/v1/accounts/{hash}``
``transactions``              ``GET /trader/v1/accounts/{hash}/transactions``
``other``                     anything else (404 unless set)
============================  =====================================

The modes, each a function returning an answer:

- :func:`json_answer`: a fixed body (text or a JSON-able object), status and headers.
- :func:`echo`: an error whose ``error_description``/``message`` repeats the
  request back: its line, every header (``Authorization: Basic ...`` or
  ``Bearer ...`` included), its body as sent (form-encoded) and decoded, the
  Basic credentials decoded, and any ``extra`` text (an account number the
  provider "knows"). The shape of a real provider that echoes its input.
- :func:`html`: an HTML error page (a gateway's), with terminal escape
  sequences and control characters in its text.
- :func:`huge`: a body of ``size`` bytes, generated while it is sent (so a
  200 MB body costs the test no memory), with or without Content-Length.
- :func:`gzip_bomb`: a gzip body small on the wire that expands to ``size`` bytes.
- :func:`deep`: JSON nested ``levels`` deep.
- :func:`absurd_numbers`: a token answer whose numbers are absurd (5000
  digits, 1e400, negative).
- :func:`wrong_types`: JSON of the right endpoint with the wrong type in
  every field (lists for strings, strings for lists, objects for numbers).

``seen`` keeps every request; ``sent`` counts, per endpoint, the body bytes
the server managed to write before the client hung up, which is how a test
sees that the client stopped reading a huge body early.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import re
import ssl
import threading
import urllib.parse
import zlib
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import trustme
from oauth_server import QuietServer

CHUNK = 64 * 1024
# How long settled() waits for the replies still being written (a hang-up ends them).
SETTLE_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request the server received."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass
class Reply:
    """What to send: a status, headers, and a body given whole or as chunks made while sending."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


_PATHS = (
    ("POST", re.compile(r"^/v1/oauth/token$"), "token"),
    ("GET", re.compile(r"^/trader/v1/accounts/accountNumbers$"), "account_numbers"),
    ("GET", re.compile(r"^/trader/v1/accounts$"), "accounts"),
    ("GET", re.compile(r"^/trader/v1/userPreference$"), "user_preference"),
    ("GET", re.compile(r"^/trader/v1/accounts/[^/]+/transactions$"), "transactions"),
    ("GET", re.compile(r"^/trader/v1/accounts/[^/]+$"), "account"),
)


def endpoint_of(method: str, path: str) -> str:
    """The endpoint name of a request (the keys of ``HostileServer.answers``)."""
    bare = urllib.parse.urlsplit(path).path
    return next((name for m, rx, name in _PATHS if m == method and rx.match(bare)), "other")


# --- modes -----------------------------------------------------------------------------------


def json_answer(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Callable[[Seen], Reply]:
    """A fixed answer; ``body`` is sent as is if it is text or bytes, else as JSON."""
    data = (
        body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body))
    )
    raw = data.encode() if isinstance(data, str) else data
    fixed = {"Content-Type": "application/json", **(headers or {})}
    return lambda _seen: Reply(status, fixed, raw)


ECHO_PARTS = ("body", "decoded", "authorization", "credentials", "path", "headers")


def echo_text(seen: Seen, extra: str = "", parts: Iterable[str] = ECHO_PARTS) -> str:
    """The request as an echoing provider repeats it: ``extra``, then the ``parts`` asked for.

    ``body`` as sent (form-encoded), ``decoded`` (percent-decoded),
    ``authorization`` (the header as sent), ``credentials`` (a Basic header
    decoded to ``id:secret``), ``path`` (as sent and decoded), ``headers``
    (every header). The order lets a test put first what a bounded message keeps.
    """
    body = seen.body.decode("utf-8", "replace")
    auth = seen.headers.get("Authorization", "")
    texts = {
        "body": f"body: {body}",
        "decoded": f"decoded: {urllib.parse.unquote_plus(body)}",
        "authorization": f"Authorization: {auth}",
        "credentials": "",
        "path": f"{seen.method} {seen.path} {urllib.parse.unquote(seen.path)}",
        "headers": "; ".join(f"{name}: {value}" for name, value in seen.headers.items()),
    }
    if auth.startswith("Basic "):
        with contextlib.suppress(ValueError):
            decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
            texts["credentials"] = f"credentials: {decoded}"
    return "; ".join(t for t in (extra, *(texts[p] for p in parts)) if t)


def echo(
    status: int = 400, *, extra: str = "", parts: Iterable[str] = ECHO_PARTS
) -> Callable[[Seen], Reply]:
    """An error answer that repeats the request back, in both OAuth's and Schwab's error shapes."""
    chosen = tuple(parts)

    def answer(seen: Seen) -> Reply:
        text = echo_text(seen, extra, chosen)
        body = {
            "error": "invalid_request",
            "error_description": text,
            "message": text,
            "errors": [{"title": "echo", "detail": text}],
        }
        return Reply(
            status,
            {"Content-Type": "application/json", "Schwab-Client-CorrelId": "echo-0001"},
            json.dumps(body).encode(),
        )

    return answer


def html(status: int = 502, *, extra: str = "") -> Callable[[Seen], Reply]:
    """A gateway's HTML error page, with terminal escapes and control characters in its text."""

    def answer(seen: Seen) -> Reply:
        page = (
            "<html><head><title>502 Bad Gateway</title></head><body>"
            "<h1>\x1b[31mBad Gateway\x1b[0m</h1>\r\n<p>upstream said: \x07\x00"
            f"{echo_text(seen, extra)}</p></body></html>"
        )
        return Reply(status, {"Content-Type": "text/html"}, page.encode())

    return answer


def _repeat(size: int, unit: bytes, head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """``size`` bytes: ``head``, whole ``unit``s, spaces to fill, ``tail``; a chunk at a time.

    Valid JSON when head, units and tail make it so (spaces are allowed between values).
    """
    per_block = max(1, CHUNK // len(unit))
    units, spaces = divmod(size - len(head) - len(tail), len(unit))
    yield head
    while units > 0:
        count = min(units, per_block)
        units -= count
        yield unit * count
    yield b" " * spaces + tail


def huge(size: int, *, status: int = 200, declare: bool = False) -> Callable[[Seen], Reply]:
    """A JSON list of ``size`` bytes, generated while sent; Content-Length only if ``declare``."""

    def answer(_seen: Seen) -> Reply:
        headers = {"Content-Type": "application/json"}
        if declare:
            headers["Content-Length"] = str(size)
        return Reply(status, headers, _repeat(size, b'{"x":"' + b"a" * 90 + b'"},', b"[", b"{}]"))

    return answer


def gzip_bomb(size: int) -> Callable[[Seen], Reply]:
    """A gzip body that expands to ``size`` bytes of JSON, compressed while sent (about 1000:1)."""

    def chunks() -> Iterator[bytes]:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        for piece in _repeat(size, b" ", b"[", b"]"):
            out = packer.compress(piece)
            if out:
                yield out
        yield packer.flush()

    return lambda _seen: Reply(
        200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, chunks()
    )


def deep(levels: int = 100_000, *, status: int = 200) -> Callable[[Seen], Reply]:
    """JSON nested ``levels`` deep: a list in a list in a list..."""
    body = b"[" * levels + b"]" * levels
    return lambda _seen: Reply(status, {"Content-Type": "application/json"}, body)


def absurd_numbers(access_token: str, refresh_token: str) -> Callable[[Seen], Reply]:
    """A token answer whose lifetimes are absurd: 5000 digits, 1e400 and negative."""
    body = (
        '{"access_token": '
        + json.dumps(access_token)
        + ', "refresh_token": '
        + json.dumps(refresh_token)
        + ', "token_type": "Bearer", "expires_in": '
        + "9" * 5000
        + ', "refresh_token_expires_in": 1e400, "id_token_expires_in": -1800}'
    )
    return json_answer(body)


def wrong_types(endpoint: str) -> Callable[[Seen], Reply]:
    """The endpoint's JSON with the wrong type in every field."""
    bodies: dict[str, Any] = {
        "token": {"access_token": ["a"], "refresh_token": {"r": 1}, "expires_in": "soon"},
        "account_numbers": {"accountNumber": ["12345678"], "hashValue": 7},
        "accounts": [{"securitiesAccount": ["not", "an", "object"]}, "text", 3],
        "account": ["not an object"],
        "transactions": [{"activityId": {"id": 1}, "time": 12, "transferItems": "none"}],
    }
    return json_answer(bodies.get(endpoint, {"unexpected": True}))


# --- the server ------------------------------------------------------------------------------


class HostileServer:
    """Schwab's endpoints on 127.0.0.1 over TLS, each answering as its mode says."""

    def __init__(self, ca: trustme.CA) -> None:
        """Prepare a server with a certificate for 127.0.0.1 issued by ``ca``."""
        self.ca = ca
        self.answers: dict[str, Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.answered = 0  # requests whose reply ended (sent whole, or the client hung up)
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """The origin to put in DASHTAM_SCHWAB_BASE_URL."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        """Start serving in a thread."""
        owner = self

        class Handler(_Handler):
            server_owner: ClassVar[HostileServer] = owner

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop serving."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def settled(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every request seen has its reply ended, so ``sent`` is final."""
        with self.done:
            return self.done.wait_for(lambda: self.answered == len(self.seen), timeout)

    def requests_to(self, endpoint: str) -> list[Seen]:
        """The requests one endpoint received."""
        return [s for s in self.seen if s.endpoint == endpoint]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_owner: ClassVar[HostileServer]
    # HTTP/1.0: a body without Content-Length ends when the server closes.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""

    def _serve(self) -> None:
        owner = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(
            endpoint_of(self.command, self.path),
            self.command,
            self.path,
            dict(self.headers.items()),
            self.rfile.read(length) if length else b"",
        )
        with owner.lock:
            owner.seen.append(seen)
        answer = owner.answers.get(seen.endpoint)
        reply = answer(seen) if answer else Reply(404, {}, b'{"message":"no such endpoint"}')
        sent = 0
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if isinstance(reply.body, bytes) and "Content-Length" not in reply.headers:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            for chunk in [reply.body] if isinstance(reply.body, bytes) else reply.body:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (OSError, ssl.SSLError):
            pass  # the client hung up: what counts is how much it took first
        finally:
            with owner.done:
                owner.sent[seen.endpoint] = owner.sent.get(seen.endpoint, 0) + sent
                owner.answered += 1
                owner.done.notify_all()

    do_GET = _serve  # noqa: N815 - http.server's naming
    do_POST = _serve  # noqa: N815
