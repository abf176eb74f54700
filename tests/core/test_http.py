"""Reading provider answers: bounded per endpoint while streaming, decompressed bounded, JSON depth."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import tracemalloc
import zlib
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from hostile_server import HostileServer, gzip_bomb, huge

from dashtam_cli.core.http import (
    MAX_JSON_DEPTH,
    TOKEN_BODY_LIMIT,
    BadBody,
    BodyTooLarge,
    MiB,
    load_json,
    make_client,
    read_body,
)
from dashtam_cli.core.oauth.errors import TokenExchangeFailed
from dashtam_cli.core.oauth.tokens import AppCredentials, post_token_request
from dashtam_cli.core.providers import get_provider
from dashtam_cli.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    import trustme
    from hostile_server import Reply, Seen


class Chunks(httpx.AsyncByteStream):
    """A response body that arrives in the given chunks, as from a network."""

    def __init__(self, chunks: list[bytes]) -> None:
        """Send ``chunks`` one by one."""
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Each chunk in turn."""
        for chunk in self.chunks:
            yield chunk


def read(
    content: bytes | list[bytes], headers: dict[str, str] | None = None, **options: Any
) -> bytes:
    """Read a streamed answer made of ``content`` (chunks) with read_body."""
    chunks = [content] if isinstance(content, bytes) else content

    async def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers or {}, stream=Chunks(chunks))

    async def main() -> bytes:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
            client.stream("GET", "https://p.test/x") as response,
        ):
            return await read_body(response, what="the test endpoint", **options)

    return asyncio.run(main())


def test_a_body_within_the_limit_is_read_whole() -> None:
    """Chunks adding up to exactly the limit are read and joined."""
    assert read([b"ab", b"cd", b"ef"], limit=6) == b"abcdef"


def test_a_body_over_the_limit_is_refused_with_a_clear_message() -> None:
    """One byte over: BodyTooLarge naming the endpoint, the limit and the status, with a hint."""
    with pytest.raises(BodyTooLarge) as caught:
        read([b"abc", b"defg"], limit=6)
    assert caught.value.message == (
        "the test endpoint answered with more than 6 bytes (HTTP 200); dashtam stopped reading it"
    )
    assert caught.value.hint
    assert caught.value.http_status == 200


def test_an_error_body_is_cut_not_refused() -> None:
    """With truncate (error answers, read for their message), the start is kept."""
    assert read([b"abc", b"defg"], limit=5, truncate=True) == b"abcde"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    """Content-Length over the limit: refused though the body sent is small."""
    with pytest.raises(BodyTooLarge):
        read(b"tiny", {"Content-Length": str(10 * MiB)}, limit=MiB)


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [
        # mtime=0: gzip stamps the time, and pytest-xdist workers must collect identical ids.
        ("gzip", gzip.compress(b'{"a": 1}', mtime=0)),
        ("deflate", zlib.compress(b'{"a": 1}')),
        ("deflate", zlib.compress(b'{"a": 1}')[2:-4]),  # raw deflate, as some servers send
    ],
    ids=["gzip", "zlib-deflate", "raw-deflate"],
)
def test_compressed_bodies_are_decoded(encoding: str, packed: bytes) -> None:
    """gzip, zlib-wrapped deflate and raw deflate are decoded."""
    assert read(packed, {"Content-Encoding": encoding}, limit=100) == b'{"a": 1}'


def test_a_compression_bomb_stops_at_the_limit() -> None:
    """64 MiB of zeros in 64 KiB of gzip: refused at a 1 MiB limit, never expanded past it."""
    bomb = gzip.compress(b"\0" * (64 * MiB))
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            read(bomb, {"Content-Encoding": "gzip"}, limit=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


def test_a_damaged_or_unknown_encoding_is_a_clear_error() -> None:
    """A gzip body that does not decompress, or an encoding not asked for: BadBody."""
    with pytest.raises(BadBody, match="does not decompress"):
        read(b"not gzip at all", {"Content-Encoding": "gzip"}, limit=100)
    with pytest.raises(BadBody, match="unsupported Content-Encoding"):
        read(b"x", {"Content-Encoding": "br"}, limit=100)


def test_the_client_asks_only_for_encodings_it_bounds() -> None:
    """Dashtam's client sends Accept-Encoding: gzip, deflate, whatever httpx could decode."""
    client = make_client(load_settings())
    assert client.headers["Accept-Encoding"] == "gzip, deflate"


def nested(depth: int) -> bytes:
    """A JSON value ``depth`` levels deep, with brackets and quotes inside its strings."""
    inner = json.dumps({"text": 'a "quoted" [bracket} \\ back'})
    return ("[" * (depth - 1) + inner + "]" * (depth - 1)).encode()


def test_json_nesting_is_bounded() -> None:
    """MAX_JSON_DEPTH levels parse; one more is refused with a clear message, whatever the strings."""
    assert load_json(nested(MAX_JSON_DEPTH), what="x") is not None
    with pytest.raises(BadBody, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        load_json(nested(MAX_JSON_DEPTH + 1), what="x")


def test_absurd_nesting_is_refused_not_a_recursion_error() -> None:
    """A million levels, and an unbalanced tower, are BadBody, never RecursionError."""
    with pytest.raises(BadBody):
        load_json(b"[" * 1_000_000 + b"]" * 1_000_000, what="x")
    with pytest.raises((BadBody, ValueError)):
        load_json(b'"]"' + b"[" * 100_000 + b"}", what="x")


def test_not_json_is_a_value_error() -> None:
    """Text that is not JSON raises ValueError, as json.loads does."""
    with pytest.raises(ValueError, match="Expecting value"):
        load_json(b"<html>", what="x")


@pytest.fixture
def hostile(ca: trustme.CA, ca_file: Path) -> Iterator[HostileServer]:
    """A hostile server trusted through SSL_CERT_FILE."""
    with HostileServer(ca) as server:
        yield server
    del ca_file


def exchange() -> None:
    """POST a refresh grant to the server's token endpoint."""
    spec = get_provider("schwab")
    credentials = AppCredentials("client-id-0001", "client-secret-01", "https://127.0.0.1:1", "env")

    async def main() -> None:
        async with make_client(load_settings()) as client:
            await post_token_request(
                client, spec, credentials, {"grant_type": "refresh_token", "refresh_token": "r"}
            )

    asyncio.run(main())


@pytest.mark.parametrize("answer", [huge(200 * MiB), gzip_bomb(200 * MiB)], ids=["plain", "gzip"])
def test_a_huge_token_answer_is_refused_in_bounded_memory(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, answer: Callable[[Seen], Reply]
) -> None:
    """200 MB from the token endpoint: refused past 64 KiB; memory and bytes read stay small."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", hostile.base_url)
    hostile.answers["token"] = answer
    tracemalloc.start()
    try:
        with pytest.raises(TokenExchangeFailed) as caught:
            exchange()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "token endpoint answered with more than 64 KiB" in caught.value.message
    assert "DASHTAM_SCHWAB_BASE_URL" in (caught.value.hint or "")
    assert caught.value.http_status == 200
    assert peak < 16 * MiB
    assert hostile.settled()
    assert hostile.sent["token"] < 64 * MiB
    assert TOKEN_BODY_LIMIT == 64 * 1024


# Strings that look like structure once everything else is removed: brackets,
# quotes and backslashes inside them, empty ones side by side.
_TRICKY: Final = ("", "", "[", "]]", "{[", "}", '"', "\\", 'a\\"[', "[]", '""', "x")


def _tricky_value(rng: random.Random, depth: int) -> object:
    """A JSON value exactly ``depth`` levels deep, strings from _TRICKY as keys and values."""
    if depth == 0:
        return rng.choice(_TRICKY)
    children = [_tricky_value(rng, depth - 1)] + [
        _tricky_value(rng, rng.randint(0, min(depth - 1, 2))) for _ in range(rng.randint(0, 2))
    ]
    rng.shuffle(children)
    if rng.random() < 0.5:  # lists and objects alike
        return children
    return {f"{rng.choice(_TRICKY)}{i}": child for i, child in enumerate(children)}


def test_nesting_is_counted_outside_strings_only() -> None:
    """At exactly MAX_JSON_DEPTH a value parses, one deeper it is refused, whatever its strings."""
    rng = random.Random(12)  # noqa: S311 - test data
    for _ in range(60):
        deep = _tricky_value(rng, MAX_JSON_DEPTH)
        assert load_json(json.dumps(deep).encode(), what="x") == deep
        text = json.dumps(_tricky_value(rng, MAX_JSON_DEPTH + 1), separators=(",", ":"))
        with pytest.raises(BadBody, match="nested more than"):
            load_json(text.encode(), what="x")
