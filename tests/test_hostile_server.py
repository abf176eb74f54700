"""The hostile test server answers as its modes say, so tests can rely on what they provoke."""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hostile_server import (
    HostileServer,
    absurd_numbers,
    deep,
    echo,
    endpoint_of,
    gzip_bomb,
    html,
    huge,
    wrong_types,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import trustme


@pytest.fixture
def server(ca: trustme.CA, ca_file: Path) -> Iterator[HostileServer]:
    """A running hostile server (its CA trusted through SSL_CERT_FILE)."""
    with HostileServer(ca) as running:
        yield running
    del ca_file


def get(server: HostileServer, path: str, **options: Any) -> httpx.Response:
    """One request to the server, read whole."""
    with httpx.Client(base_url=server.base_url, headers={"Accept-Encoding": "identity"}) as client:
        return client.request(str(options.pop("method", "GET")), path, **options)


def test_endpoints_are_named_by_method_and_path() -> None:
    """Each Schwab path maps to its endpoint name; anything else is "other"."""
    assert endpoint_of("POST", "/v1/oauth/token") == "token"
    assert endpoint_of("GET", "/trader/v1/accounts/accountNumbers") == "account_numbers"
    assert endpoint_of("GET", "/trader/v1/accounts?fields=positions") == "accounts"
    assert endpoint_of("GET", "/trader/v1/accounts/ABC/transactions?x=1") == "transactions"
    assert endpoint_of("GET", "/trader/v1/accounts/ABC") == "account"
    assert endpoint_of("GET", "/v1/oauth/token") == "other"


def test_echo_repeats_the_request_in_every_form(server: HostileServer) -> None:
    """The echo holds the form body as sent and decoded, the header, and the Basic credentials."""
    server.answers["token"] = echo(401, extra="first")
    answer = get(
        server,
        "/v1/oauth/token",
        method="POST",
        data={"refresh_token": "R0.x/y+z@"},
        auth=("id", "se/cret"),
    )
    text = answer.json()["error_description"]
    assert answer.status_code == 401
    assert text.startswith(
        "first; body: refresh_token=R0.x%2Fy%2Bz%40; decoded: refresh_token=R0.x/y+z@"
    )
    assert "Authorization: Basic aWQ6c2UvY3JldA==" in text
    assert "credentials: id:se/cret" in text
    assert server.requests_to("token")[0].body == b"refresh_token=R0.x%2Fy%2Bz%40"


def test_html_huge_deep_and_bomb_bodies(server: HostileServer) -> None:
    """The HTML page has escapes; huge sends exactly its size; deep nests; the bomb expands."""
    server.answers["accounts"] = html(502)
    page = get(server, "/trader/v1/accounts")
    assert page.status_code == 502
    assert "\x1b[31m" in page.text
    server.answers["accounts"] = huge(3 * 1024 * 1024 + 7)
    body = get(server, "/trader/v1/accounts").content
    assert len(body) == 3 * 1024 * 1024 + 7
    assert len(json.loads(body)) > 1000
    server.answers["accounts"] = deep(500)
    assert get(server, "/trader/v1/accounts").content == b"[" * 500 + b"]" * 500
    server.answers["accounts"] = gzip_bomb(10 * 1024 * 1024)
    with (
        httpx.Client(base_url=server.base_url) as client,
        client.stream("GET", "/trader/v1/accounts") as packed,
    ):
        raw = b"".join(packed.iter_raw())
        assert packed.headers["Content-Encoding"] == "gzip"
    assert len(raw) < 64 * 1024
    assert len(gzip.decompress(raw)) == 10 * 1024 * 1024


def test_absurd_numbers_and_wrong_types(server: HostileServer) -> None:
    """The absurd token answer carries a 5000-digit lifetime; wrong types swap every field's type."""
    server.answers["token"] = absurd_numbers("access-0001", "refresh-0001")
    text = get(server, "/v1/oauth/token", method="POST").text
    assert '"expires_in": ' + "9" * 5000 in text
    assert '"refresh_token_expires_in": 1e400' in text
    server.answers["account_numbers"] = wrong_types("account_numbers")
    assert get(server, "/trader/v1/accounts/accountNumbers").json() == {
        "accountNumber": ["12345678"],
        "hashValue": 7,
    }
