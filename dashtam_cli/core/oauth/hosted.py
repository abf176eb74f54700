"""The hosted-page login: the loopback listener serves a provider's widget and receives its result.

A third kind of login (:attr:`LoginKind.LINK`), beside the OAuth redirect and
the pasted token. The provider supplies a :class:`HostedPage` (the widget's
script and the few lines that start it); this module serves it on the
loopback HTTPS listener, one-shot and state-checked like the OAuth callback,
and returns the fields the page hands back (for Plaid, the ``public_token``).
Nothing here names a provider.

The page the listener serves defines two functions for the provider's code:
``dashtamFinish(fields)`` (an object of strings: the login succeeded) and
``dashtamCancel(message)`` (the person closed the widget). Each posts once to
the listener, on the page's own origin, with the state.

A page may declare a ``return_parameter``: the provider's redirect back to
the page after an institution's own login site (no state in it) is then
served the same page, for this login only, after its first page, and a few
times at most.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from dashtam_cli.core.errors import DashtamError, InputError
from dashtam_cli.core.oauth.errors import CallbackTimeout, LoginCancelled
from dashtam_cli.core.oauth.flow import open_with_webbrowser
from dashtam_cli.core.oauth.listener import (
    Answer,
    LoopbackListener,
    Request,
    html_response,
    http_response,
    states_equal,
)
from dashtam_cli.core.redact import register_secret, sanitize
from dashtam_cli.core.threads import in_daemon_thread

if TYPE_CHECKING:
    from collections.abc import Callable

    from dashtam_cli.core.oauth.flow import AuditNote, LoginOptions
    from dashtam_cli.core.oauth.listener import RedirectTarget
    from dashtam_cli.core.settings import Settings

__all__ = ["HostedPage", "hosted_login"]

PAGE_PATH: Final = "/link"
DONE_PATH: Final = "/link/done"
MAX_RESULT: Final = 16 * 1024  # bytes of a result POST's body
_MAX_MESSAGE: Final = 160  # characters of a cancel message kept for the error
# A CSP source the page may name: an https URL or origin, nothing that could
# end the directive (';' ','), quote a keyword or add another source (space).
_SOURCE: Final = re.compile(
    r"https://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/%+]*)?"
)
_JSON: Final = "application/json"
MAX_RETURNS: Final = 3  # times the page is served again on a provider's redirect back to it
MAX_RETURN_VALUE: Final = 256  # characters of the return parameter's value
# A return parameter's value: printable ASCII without spaces (and MAX_RETURN_VALUE at most).
_RETURN_VALUE: Final = re.compile(r"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True, slots=True)
class HostedPage:
    """A provider's widget, as the listener serves it.

    ``body`` is HTML placed in the page's ``<body>``: its inline ``<script>``
    elements must carry ``nonce="{{nonce}}"`` (the listener fills in a fresh
    nonce; no other placeholder is filled) and call ``dashtamFinish`` or
    ``dashtamCancel``. ``script_sources``, ``frame_sources`` and
    ``connect_sources`` are the URLs or origins the widget needs, added to the
    Content-Security-Policy's ``script-src``, ``frame-src`` and
    ``connect-src`` (the page's own origin is always allowed to be posted
    to). ``secrets`` are values in ``body`` that are never logged or audited
    (a link token). ``result_fields`` are the field names the page must hand
    back on success (each one required, a string); anything else is
    dropped. ``setting`` names where the listener's address comes from (an
    environment variable), for the hint when its port is taken.

    ``return_parameter`` names the query parameter a provider's redirect back
    to the page carries (Plaid's ``oauth_state_id``, after an institution's
    own login site): ``GET /link?NAME=VALUE``, without the state, is then
    answered with the same page, but only after the page was served with the
    state, while the login is still waiting, and at most
    :data:`MAX_RETURNS` times. None (the default): no such return.
    """

    title: str
    body: str
    script_sources: tuple[str, ...] = ()
    frame_sources: tuple[str, ...] = ()
    connect_sources: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    result_fields: tuple[str, ...] = ()
    setting: str = "the redirect URI"
    return_parameter: str | None = None


_SCRIPT = """(function () {
  "use strict";
  var state = __STATE__;
  var sent = false;
  function show(text) {
    document.getElementById("dashtam-status").textContent = text;
  }
  function post(payload, doneText) {
    if (sent) { return Promise.resolve(false); }
    sent = true;
    return fetch("__DONE__", {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(payload)
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (response.ok && answer.ok) { show(doneText); return true; }
        show("dashtam refused the result: " + (answer.error || response.status));
        sent = false;
        return false;
      });
    }).catch(function (error) {
      show("Could not reach dashtam: " + error);
      sent = false;
      return false;
    });
  }
  window.dashtamFinish = function (fields) {
    return post({state: state, fields: fields}, "Done: you can close this window");
  };
  window.dashtamCancel = function (message) {
    return post(
      {state: state, cancelled: true, message: String(message || "")},
      "Cancelled: you can close this window"
    );
  };
})();"""

_DOCUMENT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style nonce="{nonce}">body {{ font-family: system-ui, sans-serif; margin: 3em; }}</style>
<script nonce="{nonce}">{script}</script>
</head>
<body>
<h1>{title}</h1>
<p id="dashtam-status" role="status"></p>
{body}
</body></html>
"""


def _origin(target: RedirectTarget) -> tuple[str, str]:
    """The listener's ``Host`` header value and its origin, as a browser writes them."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    authority = host if target.port == 443 else f"{host}:{target.port}"  # noqa: PLR2004 - https
    return authority, f"https://{authority}"


def _check(page: HostedPage, options: LoginOptions) -> None:
    """Refuse a mode the page cannot work in, and a source that would widen its policy."""
    if options.mode == "manual":
        raise InputError(
            "a hosted-page login cannot be pasted back: the page must reach dashtam's "
            "listener on this machine",
            hint="run it without --manual (--no-browser prints the address to open here)",
        )
    if options.mode not in {"browser", "print"}:
        raise InputError(f"unknown login mode {options.mode!r}", hint="use browser or print")
    for source in (*page.script_sources, *page.frame_sources, *page.connect_sources):
        if not _SOURCE.fullmatch(source):
            raise InputError(
                f"the login page may only load https addresses, not {sanitize(source, limit=80)!r}",
                hint="check the provider's base URL setting (an https origin without spaces)",
            )


def content_security_policy(page: HostedPage, nonce: str) -> str:
    """The page's policy: nothing but its nonce'd script and style, and the widget's sources."""
    frames = " ".join(page.frame_sources) or "'none'"
    return "; ".join(
        [
            "default-src 'none'",
            " ".join(["script-src", f"'nonce-{nonce}'", *page.script_sources]),
            f"frame-src {frames}",
            " ".join(["connect-src", "'self'", *page.connect_sources]),
            f"style-src 'nonce-{nonce}'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def render_page(page: HostedPage, *, state: str, nonce: str) -> bytes:
    """The whole HTML document: the title escaped, the provider's body as given, nonces filled."""
    script = _SCRIPT.replace("__STATE__", json.dumps(state)).replace("__DONE__", DONE_PATH)
    return _DOCUMENT.format(
        title=html.escape(page.title),
        nonce=nonce,
        script=script,
        body=page.body.replace("{{nonce}}", nonce),
    ).encode()


def _json(status: int, reason: str, payload: dict[str, Any]) -> bytes:
    return http_response(
        status, reason, json.dumps(payload).encode(), content_type="application/json"
    )


class _HostedRoute:
    """Answers the listener's requests for one hosted login: the page, and its one result."""

    def __init__(self, target: RedirectTarget, page: HostedPage, state: str, nonce: str) -> None:
        self._fields = page.result_fields
        self._return = page.return_parameter
        self._check_state = states_equal(state)
        self._host, self._origin = _origin(target)
        csp = content_security_policy(page, nonce)
        self._page = http_response(
            200,
            "OK",
            render_page(page, state=state, nonce=nonce),
            csp=csp,
            extra=(("X-Frame-Options", "DENY"),),
        )
        self.served = asyncio.Event()
        self.finished = False
        self.returns = 0  # times the page was served again on the provider's redirect back
        self.returned = asyncio.Event()  # set at each return (for its audit note)

    def __call__(self, request: Request) -> Answer[dict[str, str]]:
        url = urllib.parse.urlsplit(request.target)
        if url.path not in {PAGE_PATH, DONE_PATH}:
            return Answer(html_response(404, "Not Found", "Not found", ""), rejected="wrong path")
        wanted = "GET" if url.path == PAGE_PATH else "POST"
        if request.method != wanted:
            return Answer(
                html_response(405, "Method Not Allowed", "Method not allowed", ""),
                rejected="method not allowed",
            )
        hosts = request.values("host")
        if len(hosts) != 1 or hosts[0].lower() != self._host:
            return Answer(
                html_response(421, "Misdirected Request", "Wrong address", ""),
                rejected="wrong Host",
            )
        if url.path == PAGE_PATH:
            return self._page_answer(url.query)
        return self._result(request)

    def _page_answer(self, query: str) -> Answer[dict[str, str]]:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if self._is_return(params):
            return self._return_answer()
        states = params.get("state", [])
        if len(states) != 1 or not self._check_state(states[0]):
            return Answer(_not_this_login(), rejected="missing or wrong state")
        if self.finished:
            return Answer(_gone(), rejected="login already finished")
        self.served.set()
        return Answer(self._page)

    def _is_return(self, params: dict[str, list[str]]) -> bool:
        """The provider's redirect back: only its one parameter, once, with a plain value."""
        if self._return is None or set(params) != {self._return}:
            return False
        (values,) = params.values()
        return (
            len(values) == 1
            and len(values[0]) <= MAX_RETURN_VALUE
            and _RETURN_VALUE.fullmatch(values[0]) is not None
        )

    def _return_answer(self) -> Answer[dict[str, str]]:
        """The page again, for the login whose page was served and that is still waiting."""
        if self.finished:
            return Answer(_gone(), rejected="login already finished")
        if not self.served.is_set():
            return Answer(_not_this_login(), rejected="return before the page was served")
        if self.returns >= MAX_RETURNS:
            return Answer(_not_this_login(), rejected="too many returns to the page")
        self.returns += 1
        self.returned.set()
        return Answer(self._page)

    def _result(self, request: Request) -> Answer[dict[str, str]]:  # noqa: PLR0911
        origins = request.values("origin")
        if origins and (len(origins) != 1 or origins[0].lower() != self._origin):
            return _refuse(403, "Forbidden", "another site's page", "wrong Origin")
        types = request.values("content-type")
        media = types[0].split(";", 1)[0].strip().lower() if len(types) == 1 else ""
        if media != _JSON:
            return _refuse(415, "Unsupported Media Type", "not JSON", "wrong Content-Type")
        try:
            payload = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _refuse(400, "Bad Request", "not JSON", "body not JSON")
        if not isinstance(payload, dict):
            return _refuse(400, "Bad Request", "not a JSON object", "body not an object")
        state = payload.get("state")
        if not isinstance(state, str) or not self._check_state(state):
            return _refuse(400, "Bad Request", "not this login", "missing or wrong state")
        if self.finished:
            return _refuse(410, "Gone", "already done", "login already finished")
        if payload.get("cancelled") is True:
            self.finished = True
            return Answer(_json(200, "OK", {"ok": True}), outcome=_cancelled(payload))
        return self._fields_of(payload.get("fields"))

    def _fields_of(self, fields: object) -> Answer[dict[str, str]]:
        """The result fields the page handed back, or why they are refused."""
        if not isinstance(fields, dict):
            return _refuse(400, "Bad Request", "no fields", "fields not an object")
        kept = {name: fields[name] for name in self._fields if name in fields}
        if len(kept) != len(self._fields):
            return _refuse(400, "Bad Request", "a field is missing", "missing field")
        result: dict[str, str] = {}
        for name, value in kept.items():
            if not isinstance(value, str):
                return _refuse(400, "Bad Request", "a field is not text", "field not a string")
            result[name] = value
        self.finished = True
        return Answer(_json(200, "OK", {"ok": True}), outcome=result)


def _not_this_login() -> bytes:
    return html_response(
        400,
        "Bad Request",
        "This is not the login dashtam is waiting for",
        "Start the login again.",
    )


def _gone() -> bytes:
    return html_response(410, "Gone", "Already done", "This login was already completed.")


def _refuse(status: int, reason: str, error: str, why: str) -> Answer[dict[str, str]]:
    return Answer(_json(status, reason, {"error": error}), rejected=why)


def _cancelled(payload: dict[str, Any]) -> LoginCancelled:
    said = payload.get("message")
    text = sanitize(said, limit=_MAX_MESSAGE) if isinstance(said, str) else ""
    message = "the login was closed before it finished"
    return LoginCancelled(
        f"{message} ({text})" if text else message, hint="run the same command again"
    )


class _PageNotes:
    """The audit notes of the page: served once, then each return to it (never its value)."""

    def __init__(self, route: _HostedRoute, note: AuditNote) -> None:
        self._route = route
        self._note = note
        self._ended = False

    async def watch(self) -> None:
        """Note the page when it is served, then each return, until :meth:`end`."""
        route = self._route
        await route.served.wait()
        await self._note("login.page", "served")
        noted = 0
        while True:
            route.returned.clear()
            while noted < route.returns:
                noted += 1
                await self._note("login.page", "returned")
            if self._ended:
                return
            await route.returned.wait()

    def end(self) -> None:
        """The login is over: :meth:`watch` notes the returns it has not noted yet, and stops."""
        self._ended = True
        self._route.returned.set()


async def hosted_login(
    settings: Settings,
    target: RedirectTarget,
    page: HostedPage,
    options: LoginOptions,
    note: AuditNote,
) -> dict[str, str]:
    """Serve ``page`` on ``target``, open the browser there, and return the fields it hands back.

    Raises :class:`~dashtam_cli.core.oauth.errors.LoginCancelled` (exit 1) when
    the person closes the widget, :class:`CallbackTimeout` after
    ``options.timeout``, and the listener's errors (port in use) as the OAuth
    login does. Each step goes through ``note`` (the audit hook), never with
    the state, the page's secrets or the returned values.
    """
    _check(page, options)
    for secret in page.secrets:
        register_secret(secret)
    state = secrets.token_urlsafe(32)
    register_secret(state)
    route = _HostedRoute(target, page, state, secrets.token_urlsafe(18))

    pages = _PageNotes(route, note)
    watcher = asyncio.ensure_future(pages.watch())

    async def page_noted() -> None:
        # The page's records come before the login's end, when the page was served.
        if route.served.is_set():
            pages.end()
            await asyncio.shield(watcher)
        else:
            watcher.cancel()

    started = time.monotonic()
    try:
        fields = await _serve(
            settings, target=target, page=page, options=options, route=route, state=state
        )
    except CallbackTimeout:
        await page_noted()
        await note("login.done", "timeout")
        raise
    except LoginCancelled as exc:
        await page_noted()
        await note("login.cancelled", "cancelled", detail=exc.message)
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        watcher.cancel()
        await asyncio.shield(note("login.done", "interrupted"))
        raise
    except DashtamError as exc:
        await page_noted()
        await note("login.done", "failed", detail=exc.message)
        raise
    for value in fields.values():
        register_secret(value)
    await page_noted()
    await note("login.done", "ok", duration_ms=int((time.monotonic() - started) * 1000))
    return fields


async def _serve(  # noqa: PLR0913 - one login's parts
    settings: Settings,
    *,
    target: RedirectTarget,
    page: HostedPage,
    options: LoginOptions,
    route: _HostedRoute,
    state: str,
) -> dict[str, str]:
    """Listen, send the browser to the page, and wait for its result (as flow._obtain_code)."""
    from dashtam_cli.core.oauth.tls import listener_ssl_context

    _, origin = _origin(target)
    url = f"{origin}{PAGE_PATH}?state={state}"
    notify = options.notify
    context, cert_path = listener_ssl_context(settings.paths.data_dir / "tls")
    listener = LoopbackListener(
        target, ssl_context=context, route=route, max_body=MAX_RESULT, setting=page.setting
    )
    async with listener:
        notify(
            f"Waiting for the login on {origin}. dashtam's certificate there is "
            f"self-signed ({cert_path}), so the browser will warn about it: that is expected, "
            "continue to the page to finish."
        )
        result = asyncio.ensure_future(listener.wait())
        opening: asyncio.Future[bool] | None = None
        try:
            async with asyncio.timeout(options.timeout):
                opened = False
                if options.mode == "browser":
                    opener: Callable[[str], bool] = options.open_browser or open_with_webbrowser
                    notify(f"Opening your browser to log in to {page.title}...")
                    # A $BROWSER command may run until that browser is closed.
                    opening = in_daemon_thread(lambda: opener(url), name="login")
                    either: set[asyncio.Future[Any]] = {opening, result}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    opened = not opening.done() or opening.result()
                if not opened:
                    notify(
                        "Open this address in a browser on this machine to log in to "
                        f"{page.title}:\n\n  {url}\n"
                    )
                return await result
        except TimeoutError:
            raise CallbackTimeout(
                f"the login page was not completed within {options.timeout:g} s",
                hint="run the command again (--timeout gives more time)",
            ) from None
        finally:
            result.cancel()
            if opening is not None:
                opening.cancel()
