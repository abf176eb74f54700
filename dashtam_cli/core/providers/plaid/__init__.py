"""Plaid: banks, cards, loans and brokerages through Plaid Link, with the user's own app keys."""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.providers.base import KeySpec, LoginKind, Provider

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    import httpx

    from dashtam_cli.core.models import Kind
    from dashtam_cli.core.oauth.hosted import HostedPage
    from dashtam_cli.core.providers.base import (
        AppKeys,
        CallRecord,
        LinkRequest,
        ProviderSession,
        SessionContext,
    )

__all__ = ["HOSTS", "KEYS", "PRODUCTS", "PROVIDER", "TRANSACTION_TYPES", "PlaidProvider"]

HOSTS: Final = {
    "sandbox": "https://sandbox.plaid.com",
    "production": "https://production.plaid.com",
}
KEYS: Final = KeySpec(
    client_id_env="PLAID_CLIENT_ID",
    secret_env="PLAID_SECRET",  # noqa: S106 - a variable's name, not a secret
    environment_env="PLAID_ENV",
    environments=tuple(HOSTS),
    redirect_uri_env="PLAID_REDIRECT_URI",
    default_redirect_uri="https://127.0.0.1:8182",
    portal="https://dashboard.plaid.com/developers/keys",
)
# Plaid's personal finance categories (primary), which `--type` accepts.
TRANSACTION_TYPES: Final = (
    "INCOME",
    "TRANSFER_IN",
    "TRANSFER_OUT",
    "LOAN_PAYMENTS",
    "BANK_FEES",
    "ENTERTAINMENT",
    "FOOD_AND_DRINK",
    "GENERAL_MERCHANDISE",
    "HOME_IMPROVEMENT",
    "MEDICAL",
    "PERSONAL_CARE",
    "GENERAL_SERVICES",
    "GOVERNMENT_AND_NON_PROFIT",
    "TRANSPORTATION",
    "TRAVEL",
    "RENT_AND_UTILITIES",
)

# The products `dashtam connect plaid --products` accepts; transactions by default.
PRODUCTS: Final = ("transactions", "investments")
SCRIPT_ORIGIN: Final = "https://cdn.plaid.com"
# The query parameter of Plaid's redirect back to the page after an institution's OAuth login.
OAUTH_RETURN: Final = "oauth_state_id"
# The page's scripts: Plaid's Link script loaded (from the page's only script source), then
# Link started with the link token; its result handed to the listener. Back at the redirect
# URI from an institution's OAuth login (``?oauth_state_id=``), Link is created again with
# the same token and ``receivedRedirectUri`` (Plaid's web OAuth flow), and opened.
_BODY: Final = """<p id="status">Opening Plaid Link&hellip;</p>
<script nonce="{{nonce}}" src="%SCRIPT%"></script>
<script nonce="{{nonce}}">
(function () {
  // Back from an institution's OAuth login: Link again with the same token and this address.
  var returned = new URLSearchParams(window.location.search).has("oauth_state_id");
  var config = {
    token: %s,
    onSuccess: function (public_token, metadata) {
      // Every field must be text: the listener refuses a missing or null one.
      var institution = metadata && metadata.institution ? metadata.institution.name : "";
      dashtamFinish({
        public_token: String(public_token),
        institution: institution ? String(institution) : ""
      });
    },
    onExit: function (err, metadata) {
      dashtamCancel(err && err.display_message ? String(err.display_message)
        : "Plaid Link was closed before the login completed");
    }
  };
  if (returned) { config.receivedRedirectUri = window.location.href; }
  Plaid.create(config).open();
})();
</script>
"""


def link_body(link_token: str, script: str) -> str:
    """The page's body: Link's ``script`` loaded, then started with ``link_token``.

    The token goes in as a JSON string literal escaped for a script element;
    the script's URL as an HTML attribute value.
    """
    literal = json.dumps(link_token).replace("<", "\\u003c").replace(">", "\\u003e")
    values = {"%SCRIPT%": html.escape(script, quote=True), "%s": literal}
    # One pass, so neither value is searched for the other's placeholder.
    return re.sub("%SCRIPT%|%s", lambda found: values[found[0]], _BODY)


class PlaidProvider(Provider):
    """Plaid: Link in the browser for an item whose access token does not expire."""

    name = "plaid"
    display_name = "Plaid"
    login = LoginKind.LINK
    refreshes = False
    keys = KEYS
    transaction_types = TRANSACTION_TYPES

    def kind_of(self, provider_type: str) -> Kind:
        """The neutral kind of a Plaid category or investment type."""
        from dashtam_cli.core.providers.plaid.mapping import kind_of

        return kind_of(provider_type)

    def session(self, context: SessionContext) -> ProviderSession:
        """A session of one item."""
        from dashtam_cli.core.providers.plaid.session import PlaidSession

        return PlaidSession(self, context)

    def base_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """``PLAID_ENV``'s host, or ``DASHTAM_PLAID_BASE_URL`` when set."""
        import os

        from dashtam_cli.core.providers.plaid.protocol import base_url

        env = os.environ if environ is None else environ
        return base_url(env.get(KEYS.environment_env, "").strip().lower(), env)

    def relogin_command(self, connection: str) -> str:
        """Update mode: the item and its data stay, only the login is renewed."""
        return f"dashtam connect plaid --update {connection}"

    async def hosted_page(
        self,
        client: httpx.AsyncClient,
        keys: AppKeys,
        request: LinkRequest,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        environ: Mapping[str, str] | None = None,
    ) -> HostedPage:
        """``/link/token/create`` (update mode with the item's token), and Link's page for it."""
        from dashtam_cli.core.oauth.hosted import HostedPage
        from dashtam_cli.core.providers.plaid.protocol import (
            PlaidCaller,
            base_url,
            script_url,
        )
        from dashtam_cli.core.providers.plaid.session import Item, country_codes
        from dashtam_cli.core.redact import register_secret

        unknown = sorted(set(request.products) - set(PRODUCTS))
        if unknown:
            from dashtam_cli.core.errors import InputError

            raise InputError(
                f"--products: Plaid product {unknown[0]!r} is not one dashtam syncs",
                hint=f"choose from: {', '.join(PRODUCTS)}",
            )
        if request.update is not None and request.products:
            from dashtam_cli.core.errors import InputError

            raise InputError(
                "--products does not apply to --update: the item keeps its products",
                hint="drop --products",
            )
        body: dict[str, object] = {
            "client_name": "dashtam",
            "user": {"client_user_id": request.user_id},
            "country_codes": list(country_codes(request.options)),
            "language": "en",
        }
        environment = keys.environment
        if request.update is not None:
            item = Item.read(request.update)
            environment = item.environment
            body["access_token"] = item.access_token
        else:
            body["products"] = list(request.products or ("transactions",))
        if request.redirect_uri is not None:
            body["redirect_uri"] = request.redirect_uri
        caller = PlaidCaller(
            client,
            keys,
            origin=base_url(environment, environ),
            record=record,
            relogin="dashtam connect plaid",
        )
        answer = await caller.post("/link/token/create", body)
        token = answer.get("link_token")
        if not isinstance(token, str) or not token or not token.isprintable():
            from dashtam_cli.core.errors import ProviderError

            raise ProviderError(
                "Plaid answered /link/token/create without a link token",
                hint="retry later",
            )
        register_secret(token)
        script = script_url(environ)
        api = urllib.parse.urlsplit(base_url(environment, environ))
        api_origin = f"{api.scheme}://{api.netloc}"
        overridden = not script.startswith(f"{SCRIPT_ORIGIN}/")
        return HostedPage(
            title="Connect an institution with Plaid",
            body=link_body(token, script),
            script_sources=(script,),
            # Plaid's guidance: Link runs in a frame from its CDN and calls the API host.
            # A stand-in (the base URL overridden) runs in the page and calls its own origin.
            frame_sources=() if overridden else (SCRIPT_ORIGIN,),
            connect_sources=(api_origin,),
            secrets=(token,),
            result_fields=("public_token", "institution"),
            setting=KEYS.redirect_uri_env,
            return_parameter=OAUTH_RETURN,
        )

    async def complete_hosted(  # noqa: PLR0913 - one login's parts
        self,
        client: httpx.AsyncClient,
        keys: AppKeys,
        fields: Mapping[str, str],
        request: LinkRequest,
        *,
        record: Callable[[CallRecord], Awaitable[None]],
        environ: Mapping[str, str] | None = None,
    ) -> str:
        """``/item/public_token/exchange``: the item's record to seal (its access token, id)."""
        from dashtam_cli.core.errors import InputError, ProviderError
        from dashtam_cli.core.providers.plaid.protocol import PlaidCaller, base_url
        from dashtam_cli.core.providers.plaid.session import Item
        from dashtam_cli.core.redact import plain, register_secret

        public_token = fields.get("public_token", "")
        if not public_token or len(public_token) > 512 or not public_token.isprintable():  # noqa: PLR2004
            raise InputError(
                "Plaid Link handed back no usable public token",
                hint="run dashtam connect plaid again",
            )
        register_secret(public_token)
        caller = PlaidCaller(
            client,
            keys,
            origin=base_url(keys.environment, environ),
            record=record,
            relogin="dashtam connect plaid",
        )
        answer = await caller.post("/item/public_token/exchange", {"public_token": public_token})
        token, item_id = answer.get("access_token"), answer.get("item_id")
        if not isinstance(token, str) or not token or not isinstance(item_id, str):
            raise ProviderError(
                "Plaid answered /item/public_token/exchange without an access token",
                hint="run dashtam connect plaid again",
            )
        register_secret(token)
        institution = fields.get("institution") or None
        return Item(
            access_token=token,
            item_id=item_id,
            environment=keys.environment,
            products=tuple(request.products or ("transactions",)),
            institution=plain(institution, limit=200) if institution else None,
            user_id=request.user_id,
        ).record()


PROVIDER = PlaidProvider()
