"""The authorization-code login: authorize URL, loopback callback (or pasted URL), code exchange."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Protocol

from dashtam_cli.core.errors import DashtamError, InputError
from dashtam_cli.core.oauth.errors import (
    AccessDenied,
    CallbackTimeout,
    LoginError,
    TokenExchangeFailed,
)
from dashtam_cli.core.oauth.listener import (
    Callback,
    LoopbackListener,
    RedirectTarget,
    interpret_query,
    states_equal,
)
from dashtam_cli.core.redact import register_secret
from dashtam_cli.core.threads import in_daemon_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import httpx

    from dashtam_cli.core.oauth.tokens import AppCredentials, TokenSet
    from dashtam_cli.core.providers.base import ProviderSpec
    from dashtam_cli.core.settings import Settings

__all__ = [
    "AuditNote",
    "LoginOptions",
    "PendingAuthorization",
    "authorize",
    "check_name",
]

log = logging.getLogger(__name__)

MODES = ("browser", "print", "manual")
_MAX_NAME = 64


def _ignore(_message: str) -> None:
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class LoginOptions:
    """How to run one login.

    ``mode``: ``browser`` opens the system browser (``$BROWSER`` honoured),
    ``print`` only shows the URL, ``manual`` shows it and reads the redirected
    URL pasted back (for SSH sessions) with ``read_pasted_url``, which raises
    ``EOFError`` when its input ends. ``notify`` receives the messages meant
    for the person at the terminal (the CLI prints them on stderr); they may
    contain the authorize URL, so they never go through logging.

    For providers that log in with a pasted token, the token comes from
    ``token_file`` when given, else from ``read_token`` (a hidden prompt, or
    standard input when it is not a terminal; it raises ``EOFError`` when
    its input ends). The browser options do not apply to them.

    For providers that log in with a hosted page, ``products`` are what the
    login asks for (empty: the provider's default) and ``update`` names a
    stored connection to log in to again (its data and credential stay).
    """

    name: str | None = None
    mode: str = "browser"
    timeout: float = 300.0
    notify: Callable[[str], None] = _ignore
    open_browser: Callable[[str], bool] | None = None
    read_pasted_url: Callable[[], str] | None = None
    confirm_replace: Callable[[str], bool] | None = None
    passphrase_prompt: Callable[[bool], str] | None = None
    read_token: Callable[[], str] | None = None
    token_file: Path | None = None
    transport: httpx.AsyncBaseTransport | None = None
    environ: Mapping[str, str] | None = None
    products: tuple[str, ...] = ()
    update: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """One login in progress: its state (and PKCE verifier), held only in memory."""

    spec: ProviderSpec
    credentials: AppCredentials
    target: RedirectTarget
    state: str = dataclasses.field(repr=False)
    code_verifier: str | None = dataclasses.field(repr=False)

    @classmethod
    def new(
        cls, spec: ProviderSpec, credentials: AppCredentials, target: RedirectTarget
    ) -> PendingAuthorization:
        """Make a fresh 256-bit state, and a PKCE verifier when the provider supports it."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48) if spec.supports_pkce else None
        register_secret(state)
        register_secret(verifier)
        return cls(spec, credentials, target, state, verifier)

    def authorize_url(self) -> str:
        """The provider's consent page for this login."""
        params = {
            "client_id": self.credentials.client_id,
            "redirect_uri": self.credentials.redirect_uri,
            "response_type": "code",
            "state": self.state,
        }
        if self.code_verifier is not None:
            digest = hashlib.sha256(self.code_verifier.encode("ascii")).digest()
            params["code_challenge"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            params["code_challenge_method"] = "S256"
        return f"{self.spec.base_url()}{self.spec.authorize_path}?{urllib.parse.urlencode(params)}"

    def check_state(self, received: str) -> bool:
        """Constant-time comparison with this login's state."""
        return states_equal(self.state)(received)

    def token_form(self, code: str) -> dict[str, str]:
        """The form body that exchanges ``code``."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.credentials.redirect_uri,
        }
        if self.code_verifier is not None:
            form["code_verifier"] = self.code_verifier
        return form


def check_name(name: str) -> str:
    """A connection name, trimmed: 1 to 64 printable characters, or an InputError."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > _MAX_NAME or not all(ch.isprintable() for ch in cleaned):
        raise InputError(
            f"a connection name is 1 to {_MAX_NAME} printable characters",
            hint="for example: --name ira",
        )
    return cleaned


def _read_pasted(pending: PendingAuthorization, pasted: str) -> Callback:
    """Check a redirected URL pasted by the user exactly as the listener checks a request."""
    target = pending.target
    try:
        url = urllib.parse.urlsplit(pasted.strip())
        where = (url.scheme, (url.hostname or "").lower(), url.port or 443, url.path or "/")
    except ValueError:  # a port that is not a number, a broken [IPv6] host
        where = None
    if where != ("https", target.host, target.port, target.path):
        raise LoginError(
            "the pasted text is not the redirect address of this login",
            hint=f"paste the whole address the browser landed on; it starts with {target.uri}",
        )
    outcome = interpret_query(url.query, pending.check_state)
    if isinstance(outcome, AccessDenied):
        raise outcome
    if isinstance(outcome, str):
        raise LoginError(
            f"the pasted address was refused: {outcome}",
            hint="paste the address of the login you just started, or run the command again",
        )
    return outcome


async def _obtain_code(
    settings: Settings, pending: PendingAuthorization, options: LoginOptions
) -> Callback:
    notify = options.notify
    url = pending.authorize_url()
    name = pending.spec.display_name
    if options.mode == "manual":
        if options.read_pasted_url is None:
            raise InputError(
                "--manual needs a terminal to paste into", hint="run it from a terminal"
            )
        notify(f"Open this address in a browser on any machine and log in to {name}:\n\n  {url}\n")
        notify(
            f"After you approve, the browser goes to {pending.target.uri}/?code=... and may show "
            "an error page there: that is expected. Copy the whole address from the address bar "
            "and paste it here."
        )
        reader = options.read_pasted_url
        try:
            pasted = await asyncio.wait_for(in_daemon_thread(reader, name="login"), options.timeout)
        except TimeoutError:
            raise CallbackTimeout(
                f"no address was pasted within {options.timeout:g} s",
                hint="run the command again; --timeout gives more time",
            ) from None
        except EOFError:
            raise LoginError(
                "no address was pasted: the input ended before a line was read",
                hint="run the command again and paste the address the browser landed on, "
                "then press Enter",
            ) from None
        register_secret(pasted.strip())
        return _read_pasted(pending, pasted)

    from dashtam_cli.core.oauth.tls import listener_ssl_context

    context, cert_path = listener_ssl_context(settings.paths.data_dir / "tls")
    listener = LoopbackListener(
        pending.target,
        ssl_context=context,
        check_state=pending.check_state,
        setting=pending.credentials.redirect_setting or pending.spec.redirect_uri_env,
    )
    async with listener:
        notify(
            f"Waiting for the login on {pending.target.uri}. dashtam's certificate there is "
            f"self-signed ({cert_path}), so the browser will warn about it: that is expected, "
            "continue to the page to finish."
        )
        callback = asyncio.ensure_future(listener.wait())
        opening: asyncio.Future[bool] | None = None
        try:
            async with asyncio.timeout(options.timeout):
                opened = False
                if options.mode == "browser":
                    opener = options.open_browser or open_with_webbrowser
                    notify(f"Opening your browser to log in to {name}...")
                    # A $BROWSER command may run until that browser is closed:
                    # the code expires in seconds, so the callback never waits for it.
                    opening = in_daemon_thread(lambda: opener(url), name="login")
                    either: set[asyncio.Future[Any]] = {opening, callback}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    opened = not opening.done() or opening.result()
                if not opened:
                    notify(
                        f"Open this address in a browser on this machine and log in to {name}:"
                        f"\n\n  {url}\n"
                    )
                return await callback
        except TimeoutError:
            raise CallbackTimeout(
                f"no login callback arrived within {options.timeout:g} s",
                hint="run the command again (--timeout gives more time; --manual works over SSH)",
            ) from None
        finally:
            callback.cancel()
            if opening is not None:
                opening.cancel()


def open_with_webbrowser(url: str) -> bool:
    """Open ``url`` in the system browser (``$BROWSER`` honoured); False when none opened it."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


class AuditNote(Protocol):
    """Where the login's steps go: one audit record each (never with a secret)."""

    async def __call__(  # noqa: PLR0913 - the audit columns
        self,
        operation: str,
        outcome: str,
        *,
        http_status: int | None = None,
        duration_ms: int | None = None,
        correlation_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record one step."""


async def authorize(
    settings: Settings, pending: PendingAuthorization, options: LoginOptions, note: AuditNote
) -> TokenSet:
    """Run one authorization-code login to its tokens; saving them is the caller's job.

    Each step goes through ``note`` (the audit hook).
    """
    spec = pending.spec
    await note("oauth.authorize", "started", detail=f"mode={options.mode}")
    started = time.monotonic()
    try:
        callback = await _obtain_code(settings, pending, options)
    except AccessDenied as exc:
        await note("oauth.callback", "denied", detail=exc.message)
        raise
    except CallbackTimeout:
        await note("oauth.callback", "timeout")
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        await asyncio.shield(note("oauth.callback", "interrupted"))
        raise
    except DashtamError as exc:
        await note("oauth.callback", "failed", detail=exc.message)
        raise
    await note("oauth.callback", "ok", duration_ms=int((time.monotonic() - started) * 1000))
    register_secret(callback.code)

    from dashtam_cli.core.http import make_client
    from dashtam_cli.core.oauth.tokens import post_token_request

    async with make_client(settings, transport=options.transport) as client:
        try:
            response = await post_token_request(
                client, spec, pending.credentials, pending.token_form(callback.code)
            )
        except TokenExchangeFailed as exc:
            await note(
                "oauth.token_exchange",
                "failed",
                http_status=exc.http_status,
                correlation_id=exc.correlation_id,
                detail=exc.message,
            )
            raise
    await note(
        "oauth.token_exchange",
        "ok",
        http_status=response.http_status,
        duration_ms=response.duration_ms,
        correlation_id=response.correlation_id,
    )
    return response.tokens
