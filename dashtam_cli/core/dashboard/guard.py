"""The gate in front of every dashboard request: address, method, origin and session checked first.

It is plain ASGI, outermost: nothing of the pages runs before it, and every
answer (refusals, errors, pages, files) leaves through it with the security
headers. The first request bearing the one-time token gets a session cookie
and a redirect that drops the token from the address bar; after that, only
the session opens a page.
"""

from __future__ import annotations

import hmac
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["CSP", "SECURITY_HEADERS", "Guard"]

CSP: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
ALLOWED_METHODS: Final = frozenset({"GET", "HEAD"})
# What a browser says of a request made by a page of this origin, or typed by the user.
ALLOWED_FETCH_SITES: Final = frozenset({b"same-origin", b"none"})


def _same(given: str, expected: str) -> bool:
    """Compare in constant time (as bytes: compare_digest refuses non-ASCII text)."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """Wraps the dashboard's ASGI app: refuses what is not the user's own browser, adds headers.

    ``port`` is the port listened on (the ``Host`` must be exactly
    ``127.0.0.1:port``); ``token`` the one-time value of the URL opened.
    """

    def __init__(self, app: ASGIApp, *, port: int, token: str) -> None:
        """Guard ``app``; ``token`` opens one session, once."""
        self._app = app
        self._host = f"127.0.0.1:{port}".encode()
        self._token: str | None = token
        self._session = secrets.token_urlsafe(32)
        # Cookies are not told apart by port: a dashboard on another port keeps its own.
        self.cookie_name = f"dashtam_session_{port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request; answer a refusal, or hand it to the app; add the headers."""
        if scope["type"] != "http":
            return  # no websockets, no lifespan events are served

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*headers, *SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, text, extra = refusal
            await _plain(secured, status, text, extra)
            return
        if self._token_given(scope) is not None:
            await self._unlock(scope, secured)
            return
        await self._app(scope, receive, secured)

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why this request is refused, if it is: (status, text, extra headers)."""
        hosts = [v for k, v in scope["headers"] if k.lower() == b"host"]
        if len(hosts) != 1 or not hmac.compare_digest(hosts[0], self._host):
            # DNS rebinding: a page of another site whose name now points at 127.0.0.1.
            return 421, "wrong Host: open the address dashtam printed", []
        if scope["method"] not in ALLOWED_METHODS:
            return 405, "the dashboard is read-only", [(b"allow", b"GET, HEAD")]
        sites = [v for k, v in scope["headers"] if k.lower() == b"sec-fetch-site"]
        if any(site.lower() not in ALLOWED_FETCH_SITES for site in sites):
            return 403, "refused: this request came from another site", []
        if self._token_given(scope) is None and not self._has_session(scope):
            return 403, "no session: open the address dashtam printed (it works once)", []
        return None

    def _token_given(self, scope: Scope) -> str | None:
        if scope["path"] != "/":
            return None
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = query.get("token")
        return values[0] if values else None

    def _has_session(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name.lower() != b"cookie":
                continue
            for part in value.decode("latin-1").split(";"):
                key, _, given = part.strip().partition("=")
                if key == self.cookie_name and _same(given, self._session):
                    return True
        return False

    async def _unlock(self, scope: Scope, send: Send) -> None:
        """Exchange the one-time token for a session cookie, and drop it from the address."""
        given = self._token_given(scope) or ""
        if self._has_session(scope):
            await _plain(send, 303, "", [(b"location", b"/")])
            return
        if self._token is None or not _same(given, self._token):
            await _plain(send, 403, "this address was already used, or is wrong", [])
            return
        self._token = None  # it works once
        cookie = f"{self.cookie_name}={self._session}; HttpOnly; SameSite=Strict; Path=/"
        await _plain(send, 303, "", [(b"location", b"/"), (b"set-cookie", cookie.encode())])


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = (text + "\n").encode() if text else b""
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
