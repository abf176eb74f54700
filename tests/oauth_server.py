"""A local OAuth2 authorization server shaped like Schwab's, over real TLS on 127.0.0.1 (tests only)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import secrets
import ssl
import threading
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    import trustme

HOLD_TIMEOUT_S = 30.0


class QuietServer(http.server.ThreadingHTTPServer):
    """A server that keeps a client's abrupt disconnect to itself.

    A client that only checks the certificate (``dashtam doctor``) or gives
    up mid-answer makes the handler fail; socketserver would print that
    traceback on stderr, where the CLI under test is being read.
    """

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore: the test asserts on what the client saw, not on this."""


@dataclasses.dataclass
class TokenRequest:
    """One request the token endpoint received."""

    form: dict[str, str]
    authorization: str | None
    content_type: str | None


@dataclasses.dataclass
class Behaviour:
    """How the server answers; tests change it between steps."""

    approve: bool = True
    token_status: int | None = None  # force this status on the token endpoint
    token_body: bytes | None = None  # with this raw body
    expires_in: int = 1800
    rotate_refresh: bool = True
    # Refuse (400 invalid_grant) a refresh token that is not live: never issued,
    # or already rotated away, as providers that rotate treat its reuse as theft.
    check_refresh: bool = False
    # A forced answer (status, raw body) for the refresh grant of one refresh token.
    refresh_answers: dict[str, tuple[int, bytes]] = dataclasses.field(default_factory=dict)
    # Issue the tokens (the provider's state changes), then wait for this event
    # before answering: the client can be killed while the answer is held.
    hold: threading.Event | None = None
    # Issue the tokens, then close the connection without answering.
    drop_answer: bool = False


class OAuthServer:
    """Authorize and token endpoints at ``/v1/oauth/...`` checking what Schwab checks."""

    def __init__(
        self,
        ca: trustme.CA,
        *,
        client_id: str = "test-app-key-0123456789abcdef",
        client_secret: str = "test-app-secret-0123",
        redirect_uri: str = "https://127.0.0.1:8182",
    ) -> None:
        """Prepare a server with a certificate for 127.0.0.1 issued by ``ca``."""
        self.ca = ca
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.behaviour = Behaviour()
        self.codes: dict[str, bool] = {}  # code -> used
        self.token_requests: list[TokenRequest] = []
        self.issued: list[dict[str, Any]] = []
        self.live_refresh: set[str] = set()  # refresh tokens the server accepts (check_refresh)
        self.holding = threading.Event()  # set once a token answer is being held
        self.state_lock = threading.Lock()
        self.authorize_queries: list[dict[str, str]] = []
        # GET /trader/v1/accounts/accountNumbers answers these (number, hash) pairs to any
        # access token the server issued; None: 404, as an OAuth server alone would.
        self.account_numbers: list[tuple[str, str]] | None = None
        self.account_number_requests = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The origin to put in DASHTAM_SCHWAB_BASE_URL."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        """Start serving in a thread."""
        owner = self

        class Handler(_Handler):
            server_owner: ClassVar[OAuthServer] = owner

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        # A short poll interval: shutdown() waits for the loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop serving."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def new_code(self) -> str:
        """A code shaped like Schwab's: it ends in '@', sent as %40."""
        code = f"C0.{base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()}@"
        self.codes[code] = False
        return code


class _Handler(http.server.BaseHTTPRequestHandler):
    server_owner: ClassVar[OAuthServer]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Schwab-Client-CorrelId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """The authorize endpoint: approve (or deny) at once and redirect back."""
        owner = self.server_owner
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/trader/v1/accounts/accountNumbers" and owner.account_numbers is not None:
            self._account_numbers(owner)
            return
        if url.path != "/v1/oauth/authorize":
            self._json(404, {"message": "not found"})
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        owner.authorize_queries.append(query)
        if (
            query.get("client_id") != owner.client_id
            or query.get("redirect_uri") != owner.redirect_uri
        ):
            self._json(400, {"error": "invalid_request"})
            return
        params = {"state": query.get("state", "")}
        if owner.behaviour.approve:
            params = {"code": owner.new_code(), "session": str(uuid.uuid4()), **params}
        else:
            params = {"error": "access_denied", **params}
        location = f"{owner.redirect_uri}/?{urllib.parse.urlencode(params)}"
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _account_numbers(self, owner: OAuthServer) -> None:
        """The Trader API's account list, for a bearer token this server issued."""
        owner.account_number_requests += 1
        issued = {tokens["access_token"] for tokens in owner.issued}
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if bearer not in issued:
            self._json(401, {"errors": [{"status": 401, "detail": "bad token"}]})
            return
        pairs = owner.account_numbers or []
        self._json(200, [{"accountNumber": n, "hashValue": h} for n, h in pairs])

    def do_POST(self) -> None:
        """The token endpoint: Basic client authentication, form body, codes used once."""
        owner = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        auth = self.headers.get("Authorization")
        owner.token_requests.append(TokenRequest(form, auth, self.headers.get("Content-Type")))
        behaviour = owner.behaviour
        if behaviour.token_status is not None:
            body = behaviour.token_body or b""
            self.send_response(behaviour.token_status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        expected = (
            "Basic "
            + base64.b64encode(f"{owner.client_id}:{owner.client_secret}".encode()).decode()
        )
        if auth != expected:
            self._json(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
            return
        grant = form.get("grant_type")
        presented = form.get("refresh_token", "")
        if grant == "authorization_code":
            code = form.get("code", "")
            if owner.codes.get(code) is not False or form.get("redirect_uri") != owner.redirect_uri:
                self._json(
                    400, {"error": "invalid_grant", "error_description": "Bad authorization code"}
                )
                return
            owner.codes[code] = True
        elif grant != "refresh_token":
            self._json(400, {"error": "unsupported_grant_type"})
            return
        elif presented in behaviour.refresh_answers:
            self._raw(*behaviour.refresh_answers[presented])
            return
        tokens = self._issue(str(grant), presented)
        if tokens is None:
            self._json(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "refresh token is invalid, expired or already used",
                },
            )
        else:
            self._answer(tokens)

    def _answer(self, tokens: dict[str, Any]) -> None:
        """Send issued tokens: at once, after the hold event, or never (drop_answer)."""
        owner = self.server_owner
        if owner.behaviour.drop_answer:
            self.close_connection = True
            return
        if owner.behaviour.hold is not None:
            owner.holding.set()
            owner.behaviour.hold.wait(timeout=HOLD_TIMEOUT_S)
        with contextlib.suppress(OSError):  # the client may be gone: killed while held
            self._json(200, tokens)

    def _issue(self, grant: str, presented: str) -> dict[str, Any] | None:
        """New tokens (rotating the refresh token if asked), or None for a dead refresh token."""
        owner = self.server_owner
        behaviour = owner.behaviour
        with owner.state_lock:
            refreshing = grant == "refresh_token"
            if refreshing and behaviour.check_refresh and presented not in owner.live_refresh:
                return None
            tokens: dict[str, Any] = {
                "expires_in": behaviour.expires_in,
                "token_type": "Bearer",
                "scope": "api",
                "access_token": f"I0.{secrets.token_urlsafe(32)}@",
                "id_token": secrets.token_urlsafe(40),
            }
            if not refreshing or behaviour.rotate_refresh:
                tokens["refresh_token"] = f"R0.{secrets.token_urlsafe(32)}@"
                owner.live_refresh.discard(presented)
                owner.live_refresh.add(tokens["refresh_token"])
            owner.issued.append(tokens)
            return tokens

    def _raw(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
