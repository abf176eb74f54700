"""Login-test fixtures (a plugin for the whole suite): a test CA, a local OAuth server, a browser."""

from __future__ import annotations

import itertools
import os
import socket
import ssl
from typing import TYPE_CHECKING

import httpx
import pytest
import trustme
from oauth_server import OAuthServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


_SLICE = 500  # ports per xdist worker
_FIRST = 20000  # below Linux's ephemeral range (32768-60999), which client sockets draw from


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


_candidates = itertools.cycle(
    range(_FIRST + _SLICE * (_worker_index() % 24), _FIRST + _SLICE * (_worker_index() % 24 + 1))
)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now, and that nothing else will pick.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range
    every outgoing connection on the machine draws its source port from: between choosing it
    and a test binding it, another worker's HTTP client may take it (CI saw exactly that). So
    the port comes from below that range, from a slice of its own for each xdist worker, and
    successive calls in one worker go round the slice.
    """
    for port in itertools.islice(_candidates, _SLICE):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's slice of {_SLICE}")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority the tests trust."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test CA in a PEM file, trusted by dashtam through SSL_CERT_FILE."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return path


@pytest.fixture
def redirect_uri() -> str:
    """A loopback redirect URI on a free port."""
    return f"https://127.0.0.1:{free_port()}"


@pytest.fixture
def oauth(
    ca: trustme.CA, ca_file: Path, redirect_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OAuthServer]:
    """A running OAuth server, with dashtam's Schwab settings pointing at it."""
    server = OAuthServer(ca, redirect_uri=redirect_uri)
    with server:
        monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", server.base_url)
        monkeypatch.setenv("SCHWAB_API_KEY", server.client_id)
        monkeypatch.setenv("SCHWAB_API_SECRET", server.client_secret)
        monkeypatch.setenv("SCHWAB_REDIRECT_URI", redirect_uri)
        yield server
    del ca_file


def listener_cert(home: Path) -> Path:
    """Where dashtam keeps the listener's self-signed certificate."""
    return home / "data" / "tls" / "listener-cert.pem"


class Browser:
    """A browser: GET the authorize URL, then follow its redirect to the listener over TLS.

    It verifies the provider against the test CA and the listener against
    the certificate dashtam made, so both TLS hops are real. The listener's
    answers are kept in ``pages``.
    """

    def __init__(self, ca_file: Path, home: Path) -> None:
        """Trust ``ca_file`` for the provider and the listener certificate under ``home``."""
        self.ca_file = ca_file
        self.home = home
        self.pages: list[httpx.Response] = []

    def __call__(self, url: str) -> bool:
        """Open ``url`` as dashtam's ``open_browser`` would; True, as a browser that opened."""
        with httpx.Client(verify=ssl.create_default_context(cafile=self.ca_file)) as client:
            answer = client.get(url)
        location = answer.headers["location"]
        trusted = ssl.create_default_context(cafile=listener_cert(self.home))
        with httpx.Client(verify=trusted) as client:
            self.pages.append(client.get(location))
        return True


@pytest.fixture
def browser(ca_file: Path, isolated_env: Path) -> Browser:
    """A browser that follows the login to the listener; see ``Browser``."""
    return Browser(ca_file, isolated_env)
