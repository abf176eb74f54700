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
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dashtam_cli.core.oauth.flow import AuditNote, LoginOptions
    from dashtam_cli.core.oauth.listener import RedirectTarget
    from dashtam_cli.core.settings import Settings

__all__ = ["HostedPage", "hosted_login"]


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
    back on success; anything else is dropped.
    """

    title: str
    body: str
    script_sources: tuple[str, ...] = ()
    frame_sources: tuple[str, ...] = ()
    connect_sources: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    result_fields: tuple[str, ...] = ()


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
    login does.
    """
    raise NotImplementedError  # the contract: built on the plaid-link branch
