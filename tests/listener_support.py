"""Shared by the loopback listener's tests: a raw TLS client and the hostile requests thrown at it.

The OAuth callback (tests/core/oauth/test_listener.py) and the hosted-page
login (tests/core/oauth/test_hosted.py) get the same corpus.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

STATE: Final = "s" * 43
GOOD: Final = f"/?code=C0.abc%40&session=x&state={STATE}"


async def request(port: int, cert: Path, raw: bytes) -> bytes:
    """Send raw bytes over verified TLS and return the whole answer."""
    context = ssl.create_default_context(cafile=cert)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), 10
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


# Bad requests and the OAuth callback's answer to each.
CALLBACK_REJECTIONS: Final = [
    (get(f"/wrong?code=c&state={STATE}"), 404),
    (get("/favicon.ico"), 404),
    (get("/?code=c"), 400),
    (get("/?code=c&state=forged"), 400),
    (get(f"/?state={STATE}"), 400),
    (f"POST {GOOD} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode(), 405),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
]

# More of them, with the reason the callback's listener records for each.
CALLBACK_REASONS: Final = [
    (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
    (get(f"/?code=c&state={STATE}&state={STATE}"), 400, "missing or wrong state"),
    (get("/?code=c&state="), 400, "missing or wrong state"),
    (get(f"/?code=&state={STATE}"), 400, "callback without a code"),
    (f"HEAD {GOOD} HTTP/1.1\r\n\r\n".encode(), 405, "method not allowed"),
    (get(f"/favicon.ico?code=c&state={STATE}"), 404, "wrong path"),
]

# Every hostile request above, for another listener to refuse as well.
HOSTILE: Final = [raw for raw, _ in CALLBACK_REJECTIONS] + [raw for raw, *_ in CALLBACK_REASONS]
