"""The sandbox institution: Schwab's OAuth endpoints and Trader API over local HTTPS.

It behaves like Schwab where dashtam depends on it: codes end in ``%40`` and
work once within 30 seconds; the token endpoint wants HTTP Basic client
authentication; access tokens last 30 minutes and refresh tokens 7 days;
every Trader API call needs a valid bearer token; transactions need
``startDate``, ``endDate`` (``yyyy-MM-dd'T'HH:mm:ss.SSSZ``, or without the
milliseconds) and ``types`` and
cover at most a year; errors come in Schwab's shapes. Paths under
``/simplefin/`` go to the SimpleFIN server (:mod:`dashtam_cli.sandbox.simplefin`),
paths under ``/plaid/`` to the Plaid server (:mod:`dashtam_cli.sandbox.plaid`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import html
import json
import random
import re
import secrets
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, Final, Self

from dashtam_cli.core.providers import provider
from dashtam_cli.sandbox.data import SandboxAccount, generate_accounts
from dashtam_cli.sandbox.http import HttpServer, Request, Response
from dashtam_cli.sandbox.plaid import PREFIX as PLAID_PREFIX
from dashtam_cli.sandbox.plaid import SANDBOX_PLAID_CLIENT_ID, SANDBOX_PLAID_SECRET, Plaid
from dashtam_cli.sandbox.simplefin import PREFIX as SIMPLEFIN_PREFIX
from dashtam_cli.sandbox.simplefin import SimpleFin

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["Sandbox", "SandboxConfig"]

# yyyy-MM-dd'T'HH:mm:ss.SSSZ as documented, and without the milliseconds as
# live Schwab also takes (schwab-py sends 2024-03-28T21:10:42Z).
SCHWAB_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3})?Z$")
# The transaction types Schwab accepts: the client's own list, so the two never drift.
# The Schwab sandbox accepts exactly the types the Schwab provider knows.
TYPES: Final = frozenset(provider("schwab").transaction_types)
MAX_ITEMS: Final = 3000
CODE_TTL: Final = 30.0
SANDBOX_CLIENT_ID: Final = "dashtam-sandbox-app-key-00000000"  # 32 characters, like Schwab's
SANDBOX_CLIENT_SECRET: Final = "sandbox-secret00"  # noqa: S105 - a public throwaway value
SIMPLEFIN_CLAIM: Final = SIMPLEFIN_PREFIX + "/claim/"


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxConfig:
    """What the sandbox serves and how it misbehaves."""

    port: int = 0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    accounts: int = 3
    transactions_per_account: int = 250
    seed: int = 1
    access_ttl: int = 1800
    refresh_ttl: int = 7 * 24 * 3600
    auto_approve: bool = False
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = dataclasses.field(default=SANDBOX_CLIENT_SECRET, repr=False)
    redirect_uris: tuple[str, ...] = ("https://127.0.0.1:8182",)
    now: dt.datetime | None = None
    # SimpleFIN (see dashtam_cli.sandbox.simplefin): the protocol version served, the
    # Bridge's daily request thresholds per access, and injected errors by key.
    simplefin_version: int = 2
    simplefin_budget_warn: int = 48
    simplefin_budget_block: int = 96
    simplefin_failed_accounts: tuple[str, ...] = ()
    simplefin_missing_accounts: tuple[str, ...] = ()
    simplefin_reauth_connections: tuple[str, ...] = ()
    simplefin_access_failed: bool = False
    simplefin_hostile: bool = False
    # Plaid (see dashtam_cli.sandbox.plaid): the app's public keys, and faults injected once
    # per item ("rate-limit", "server-error", "mutation").
    plaid_client_id: str = SANDBOX_PLAID_CLIENT_ID
    plaid_secret: str = dataclasses.field(default=SANDBOX_PLAID_SECRET, repr=False)
    plaid_faults: tuple[str, ...] = ()


def _json(status: int, body: object, **headers: str) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode(), headers=dict(headers))


def _trader_error(status: int, message: str, *errors: str) -> Response:
    return _json(status, {"message": message, "errors": list(errors) or [message]})


def _parse_time(text: str | None) -> dt.datetime | None:
    if text is None or not SCHWAB_TIME.match(text):
        return None
    try:
        return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
    except ValueError:  # the shape of a date, not a real one (2024-02-30)
        return None


@dataclasses.dataclass
class _Grant:
    refresh_token: str
    refresh_expires: float


class Sandbox:
    """A running sandbox: ``async with Sandbox(config, tls_dir) as sandbox: ...``.

    ``clock`` (seconds, like ``time.time``) is injectable so tests can age tokens.
    """

    def __init__(
        self,
        config: SandboxConfig,
        tls_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Generate the data; nothing listens until entered."""
        self.config = config
        self.clock = clock
        self._tls_dir = tls_dir
        self.accounts: list[SandboxAccount] = generate_accounts(
            seed=config.seed,
            accounts=config.accounts,
            transactions_per_account=config.transactions_per_account,
            now=config.now or dt.datetime.now(dt.UTC).replace(microsecond=0),
        )
        self._by_hash = {a.hash_value: a for a in self.accounts}
        self._codes: dict[str, tuple[str, float]] = {}  # code -> (redirect_uri, issued)
        self._access: dict[str, tuple[float, _Grant]] = {}  # token -> (expires, grant)
        self._refresh: dict[str, _Grant] = {}
        self._pending: dict[str, dict[str, str]] = {}  # consent id -> authorize params
        self._faults = random.Random(config.seed + 1)  # noqa: S311 - fault injection, not security
        self.counts: dict[str, int] = {}
        self.simplefin = SimpleFin(
            config,
            anchor=config.now or dt.datetime.fromtimestamp(int(clock()), dt.UTC),
            root=lambda: self.base_url + SIMPLEFIN_PREFIX,
            clock=clock,
            fault=self._fault_status,
        )
        self.plaid = Plaid(
            config,
            anchor=config.now or dt.datetime.fromtimestamp(int(clock()), dt.UTC),
            root=lambda: self.base_url + PLAID_PREFIX,
            clock=clock,
            fault=self._fault_status,
        )
        self.ca_path: Path | None = None
        self._server: HttpServer | None = None

    @property
    def base_url(self) -> str:
        """The origin to give dashtam as DASHTAM_SCHWAB_BASE_URL."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.port}"

    def simplefin_setup_token(self) -> str:
        """A fresh SimpleFIN setup token, claimable once (the sandbox must be listening)."""
        return self.simplefin.setup_token()

    async def __aenter__(self) -> Self:
        """Make the TLS material and start listening on 127.0.0.1.

        The new CA replaces ``sandbox-ca.pem`` only once the port is bound: a
        start that fails (the port is in use, perhaps by a running sandbox)
        leaves the files a running sandbox's clients trust as they were.
        """
        import errno
        import pathlib
        import shutil
        import tempfile

        from dashtam_cli.core.errors import DashtamError
        from dashtam_cli.core.vault.files import ensure_private_dir
        from dashtam_cli.sandbox.tls import make_sandbox_tls

        ensure_private_dir(self._tls_dir)
        staging = pathlib.Path(tempfile.mkdtemp(prefix="starting-", dir=self._tls_dir))
        try:
            context, staged_ca = await asyncio.to_thread(make_sandbox_tls, staging)
            server = HttpServer(self.handle, port=self.config.port, ssl_context=context)
            try:
                await server.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                msg = f"port {self.config.port} on 127.0.0.1 is already in use"
                raise DashtamError(
                    msg,
                    hint="stop what listens there (another sandbox?) or choose another port: "
                    "--port 0 takes any free one",
                ) from None
            self._server = server
            self.ca_path = self._tls_dir / "sandbox-ca.pem"
            staged_ca.replace(self.ca_path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.close()

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Answer one request, after the configured latency and maybe an injected fault."""
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        path = request.path
        if path.startswith(SIMPLEFIN_CLAIM):  # a claim path holds a setup token: not kept
            path = SIMPLEFIN_CLAIM + "*"
        key = f"{request.method} {path}"
        self.counts[key] = self.counts.get(key, 0) + 1
        response = self._route(request)
        response.headers.setdefault("Schwab-Client-CorrelId", str(uuid.uuid4()))
        return response

    def _route(self, request: Request) -> Response:  # noqa: PLR0911 - one line per route
        path = request.path
        if path.startswith(SIMPLEFIN_PREFIX + "/"):
            return self.simplefin.route(request)
        if path.startswith(PLAID_PREFIX + "/"):
            return self.plaid.route(request)
        if path == "/v1/oauth/authorize" and request.method == "GET":
            return self._authorize(request)
        if path == "/v1/oauth/authorize/decision" and request.method == "POST":
            return self._decision(request)
        if path == "/v1/oauth/token" and request.method == "POST":
            return self._token(request)
        if path.startswith("/trader/v1/"):
            if request.method != "GET":
                return _trader_error(405, "Method not allowed")
            fault = self._fault()
            if fault is not None:
                return fault
            grant = self._bearer(request)
            if grant is None:
                return _json(
                    401,
                    {
                        "message": "Client not authorized",
                        "errors": ["Invalid or expired access token"],
                    },
                )
            return self._trader(request, path.removeprefix("/trader/v1"))
        return _trader_error(404, "Not found", f"no such path: {path}")

    def _fault_status(self) -> int | None:
        """The status of an injected fault for this call (429, 500 or 503), or None."""
        rate = self.config.error_rate
        if rate <= 0 or self._faults.random() >= rate:
            return None
        status: int = self._faults.choice((429, 500, 503))
        return status

    def _fault(self) -> Response | None:
        status = self._fault_status()
        if status is None:
            return None
        if status == 429:  # noqa: PLR2004
            response = _trader_error(429, "Too many requests", "rate limit exceeded")
            response.headers["Retry-After"] = "1"
            return response
        if status == 500:  # noqa: PLR2004
            return _trader_error(500, "Internal server error", "sandbox injected failure")
        return Response(
            503,
            b'{"fault":{"faultstring":"Service unavailable",'
            b'"detail":{"errorcode":"sandbox.injected"}}}',
        )

    # -- OAuth ------------------------------------------------------------------------------

    def _client_ok(self, params: dict[str, str]) -> bool:
        return (
            params.get("client_id") == self.config.client_id
            and params.get("redirect_uri") in self.config.redirect_uris
        )

    def _redirect(self, redirect_uri: str, params: dict[str, str]) -> Response:
        # A bare origin gets "/" (Schwab sends https://127.0.0.1:8182/?code=...);
        # a registered path is kept exactly as registered.
        path = "" if urllib.parse.urlsplit(redirect_uri).path else "/"
        location = f"{redirect_uri}{path}?{urllib.parse.urlencode(params)}"
        return Response(302, b"", headers={"Location": location}, content_type="text/plain")

    def _approve(self, params: dict[str, str]) -> Response:
        # Schwab's codes end in "@", which the redirect carries as %40.
        code = f"C0.{base64.urlsafe_b64encode(secrets.token_bytes(30)).decode()}@"
        self._codes[code] = (params["redirect_uri"], self.clock())
        reply = {"code": code, "session": str(uuid.uuid4())}
        if params.get("state") is not None:
            reply["state"] = params["state"]
        return self._redirect(params["redirect_uri"], reply)

    def _deny(self, params: dict[str, str]) -> Response:
        reply = {"error": "access_denied", "error_description": "The user declined"}
        if params.get("state") is not None:
            reply["state"] = params["state"]
        return self._redirect(params["redirect_uri"], reply)

    def _authorize(self, request: Request) -> Response:
        params = {k: v[0] for k, v in request.query.items() if v}
        if not self._client_ok(params):
            return _json(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Unknown client_id or redirect_uri",
                },
            )
        if self.config.auto_approve:
            return self._approve(params)
        consent = secrets.token_urlsafe(16)
        self._pending[consent] = params
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox Bank: authorize dashtam</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1>Sandbox Bank</h1>
<p>dashtam asks for read access to your {len(self.accounts)} sandbox accounts.</p>
<form method="post" action="/v1/oauth/authorize/decision">
<input type="hidden" name="consent" value="{html.escape(consent)}">
<button name="decision" value="approve">Approve</button>
<button name="decision" value="deny">Deny</button>
</form></body></html>"""
        return Response(200, page.encode(), content_type="text/html; charset=utf-8")

    def _decision(self, request: Request) -> Response:
        form = request.form()
        params = self._pending.pop(form.get("consent", ""), None)
        if params is None:
            return _json(
                400, {"error": "invalid_request", "error_description": "Unknown or used consent"}
            )
        return self._approve(params) if form.get("decision") == "approve" else self._deny(params)

    def _client_auth(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        expected = f"{self.config.client_id}:{self.config.client_secret}"
        return hmac.compare_digest(decoded.encode(), expected.encode())

    def _issue(self, grant: _Grant) -> dict[str, Any]:
        access = f"I0.{secrets.token_urlsafe(48)}@"
        self._access[access] = (self.clock() + self.config.access_ttl, grant)
        return {
            "expires_in": self.config.access_ttl,
            "token_type": "Bearer",
            "scope": "api",
            "refresh_token": grant.refresh_token,
            "access_token": access,
            "id_token": base64.urlsafe_b64encode(secrets.token_bytes(48)).decode(),
        }

    def _token(self, request: Request) -> Response:
        if not self._client_auth(request):
            return _json(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
        form = request.form()
        grant_type = form.get("grant_type")
        now = self.clock()
        if grant_type == "authorization_code":
            issued = self._codes.pop(form.get("code", ""), None)
            if (
                issued is None
                or now - issued[1] > CODE_TTL
                or form.get("redirect_uri") != issued[0]
            ):
                return _json(
                    400,
                    {"error": "invalid_grant", "error_description": "Invalid authorization code"},
                )
            grant = _Grant(f"R0.{secrets.token_urlsafe(48)}@", now + self.config.refresh_ttl)
            self._refresh[grant.refresh_token] = grant
            return _json(200, self._issue(grant))
        if grant_type == "refresh_token":
            known = self._refresh.get(form.get("refresh_token", ""))
            if known is None or known.refresh_expires <= now:
                return _json(
                    400,
                    {
                        "error": "unsupported_token_type",
                        "error_description": "400 Bad Request: refresh_token_authentication_error",
                    },
                )
            # Schwab keeps the refresh token (and its 7-day limit) across refreshes.
            return _json(200, self._issue(known))
        return _json(
            400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}
        )

    def _bearer(self, request: Request) -> _Grant | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        found = self._access.get(header[7:])
        if found is None or found[0] <= self.clock():
            return None
        return found[1]

    # -- Trader API -------------------------------------------------------------------------

    def _trader(self, request: Request, path: str) -> Response:  # noqa: C901, PLR0911 - routes
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts == ["accounts", "accountNumbers"]:
            return _json(
                200, [{"accountNumber": a.number, "hashValue": a.hash_value} for a in self.accounts]
            )
        if parts == ["accounts"]:
            return _json(200, [self._account_body(a, request) for a in self.accounts])
        if parts == ["userPreference"]:
            return _json(200, self._user_preference())
        if len(parts) >= 2 and parts[0] == "accounts":  # noqa: PLR2004
            account = self._by_hash.get(parts[1])
            if account is None:
                return _trader_error(404, "Invalid account number", "unknown account hash")
            if len(parts) == 2:  # noqa: PLR2004
                return _json(200, self._account_body(account, request))
            if parts[2:] == ["transactions"]:
                return self._transactions(account, request)
            if len(parts) == 4 and parts[2] == "transactions":  # noqa: PLR2004
                for item in account.transactions:
                    if str(item["activityId"]) == parts[3]:
                        return _json(200, [item])
                return _trader_error(404, "Transaction not found")
        return _trader_error(404, "Not found", f"no such path: /trader/v1{path}")

    def _user_preference(self) -> dict[str, Any]:
        """The user's preferences as live Schwab answers them: one object, not the spec's list.

        Its keys are those of the live answer (fixtures/user_preferences.json):
        each account with its ``nickName``, the first one primary.
        """
        customer = hashlib.sha256(f"customer:{self.config.seed}".encode()).hexdigest()
        return {
            "accounts": [
                {
                    "accountNumber": a.number,
                    "primaryAccount": index == 0,
                    "type": "BROKERAGE",
                    "nickName": a.nickname,
                    "displayAcctId": "..." + a.number[-3:],
                    "autoPositionEffect": False,
                    "accountColor": "Green" if index % 2 == 0 else "Blue",
                    "lotSelectionMethod": "FIFO",
                }
                for index, a in enumerate(self.accounts)
            ],
            "streamerInfo": [
                {
                    "streamerSocketUrl": "wss://127.0.0.1/ws",
                    "schwabClientCustomerId": customer,
                    "schwabClientCorrelId": str(uuid.uuid4()),
                    "schwabClientChannel": "N9",
                    "schwabClientFunctionId": "APIAPP",
                }
            ],
            "offers": [{"level2Permissions": False, "mktDataPermission": "NP"}],
        }

    def _account_body(self, account: SandboxAccount, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(account.body))
        if "positions" not in (request.arg("fields") or ""):
            body["securitiesAccount"].pop("positions", None)
        return body

    def _transactions(self, account: SandboxAccount, request: Request) -> Response:
        start_text, end_text, types_text = (
            request.arg("startDate"),
            request.arg("endDate"),
            request.arg("types"),
        )
        missing = [
            n
            for n, v in (("startDate", start_text), ("endDate", end_text), ("types", types_text))
            if not v
        ]
        if missing:
            return _trader_error(
                400, "Missing required parameter", *(f"{n} is required" for n in missing)
            )
        start, end = _parse_time(start_text), _parse_time(end_text)
        if start is None or end is None:
            return _trader_error(
                400,
                "Invalid date format",
                "dates must be yyyy-MM-dd'T'HH:mm:ss.SSSZ or yyyy-MM-dd'T'HH:mm:ssZ, for example "
                "2024-03-28T21:10:42.000Z",
            )
        if end < start:
            return _trader_error(400, "Invalid date range", "endDate is before startDate")
        if end - start > dt.timedelta(days=365):
            return _trader_error(400, "Invalid date range", "the range must not exceed one year")
        wanted = {t.strip() for t in (types_text or "").split(",") if t.strip()}
        if not wanted or not wanted <= TYPES:
            return _trader_error(
                400,
                "Invalid types",
                f"unknown types: {', '.join(sorted(wanted - TYPES)) or '(none)'}",
            )
        symbol = request.arg("symbol")
        items = [
            item
            for item in account.between(start, end)
            if item["type"] in wanted
            and (
                symbol is None
                or any(t["instrument"].get("symbol") == symbol for t in item["transferItems"])
            )
        ]
        return _json(200, items[-MAX_ITEMS:])
