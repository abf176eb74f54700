"""`dashtam connect plaid` end to end against the respx Plaid, the hosted page faked, then sync."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
import respx
from plaid_support import CLIENT_ID, ORIGIN, SECRET, Plaid, PlaidItem, account, txn

from dashtam_cli.core.oauth import hosted

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import CliCall

    from dashtam_cli.core.oauth.hosted import HostedPage
    from dashtam_cli.core.oauth.listener import RedirectTarget


class Link:
    """A fake hosted login: checks the page, makes an item at Plaid, hands back its public token."""

    def __init__(self, plaid: Plaid) -> None:
        """Log in to ``plaid``."""
        self.plaid = plaid
        self.pages: list[HostedPage] = []
        self.targets: list[RedirectTarget] = []
        self.items: list[PlaidItem] = []
        self.public_tokens: list[str] = []

    async def __call__(
        self, settings: object, target: RedirectTarget, page: HostedPage, options: object, note: Any
    ) -> dict[str, str]:
        """What the listener would return after Link's onSuccess."""
        del settings, options
        self.pages.append(page)
        self.targets.append(target)
        assert page.script_sources == (f"{ORIGIN}/link/v2/stable/link-initialize.js",)
        assert page.connect_sources == (ORIGIN,)
        assert page.result_fields == ("public_token", "institution")
        # Plaid's redirect back after an OAuth institution is served the page again.
        assert page.return_parameter == "oauth_state_id"
        assert "receivedRedirectUri: " not in page.body  # set only on the return, below
        assert "config.receivedRedirectUri = window.location.href" in page.body
        token = self.plaid.link_tokens[-1]
        assert page.secrets == (token,)
        assert json.dumps(token) in page.body
        assert 'nonce="{{nonce}}"' in page.body
        assert "Plaid.create" in page.body
        await note("login.fake", "ok")
        if self.plaid.link_bodies[-1].get("access_token"):
            return {"public_token": "", "institution": ""}  # update mode hands back nothing to use
        item = PlaidItem("item-new", [account("acc-checking", "Plaid Checking", "110.00")])
        item.add(txn("t1", "25.00", "Grocer"))
        access = self.plaid.new_item(item)
        self.items.append(item)
        public = self.plaid.public_token_for(access)
        self.public_tokens.append(public)
        return {"public_token": public, "institution": "First Platypus Bank"}


@pytest.fixture
def link(master_key: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Link]:
    """Plaid's keys in the environment, the respx Plaid, and the fake hosted login installed."""
    del master_key
    monkeypatch.setenv("PLAID_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("PLAID_SECRET", SECRET)
    monkeypatch.setenv("PLAID_ENV", "sandbox")
    monkeypatch.setenv("DASHTAM_PLAID_BASE_URL", ORIGIN)
    plaid = Plaid()
    fake = Link(plaid)
    monkeypatch.setattr(hosted, "hosted_login", fake)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        plaid.install(router)
        yield fake


def test_connect_then_sync_then_accounts_list(
    link: Link, cli: CliCall, caplog: pytest.LogCaptureFixture
) -> None:
    """Link token, the page, the exchange, the sealed item; then a sync and the accounts; no token leaks."""
    with caplog.at_level(logging.DEBUG):
        connected = cli("connect", "plaid", "--name", "bank", "--no-browser")
        assert connected.exit_code == 0, connected.stderr
        synced = cli("sync")
    assert synced.exit_code == 0, synced.stderr
    (body,) = link.plaid.link_bodies
    assert body["client_name"] == "dashtam"
    assert body["products"] == ["transactions"]
    assert body["country_codes"] == ["US"]
    assert body["language"] == "en"
    assert "redirect_uri" not in body
    assert body["user"]["client_user_id"].startswith("dashtam-")
    assert len(body["user"]["client_user_id"]) > 20
    (exchange,) = link.plaid.calls("/item/public_token/exchange")
    assert exchange == {"public_token": link.public_tokens[0]}
    (target,) = link.targets
    assert (target.host, target.port) == ("127.0.0.1", 8182)
    listed = cli("accounts", "list", "-f", "json")
    assert [a["name"] for a in json.loads(listed.stdout)] == ["Plaid Checking"]
    assert json.loads(listed.stdout)[0]["institution"] == "First Platypus Bank"
    txns = json.loads(cli("transactions", "list", "-f", "json").stdout)
    assert [(t["description"], t["amount"]) for t in txns] == [("Grocer", "-25.00")]
    audit = cli("audit", "list", "-f", "json").stdout
    operations = {r["operation"] for r in json.loads(audit)}
    assert {"login.link/token/create", "login.item/public_token/exchange"} <= operations
    access = next(iter(link.plaid.items))
    secrets = (access, SECRET, link.plaid.link_tokens[0], link.public_tokens[0])
    for text in (audit, connected.stderr, connected.stdout, synced.stderr, caplog.text):
        for secret in secrets:
            assert secret not in text


def test_products_and_a_configured_redirect_uri_reach_the_link_token(
    link: Link, cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--products transactions,investments`` and ``PLAID_REDIRECT_URI`` go to ``/link/token/create``."""
    monkeypatch.setenv("PLAID_REDIRECT_URI", "https://127.0.0.1:8765/plaid")
    connected = cli("connect", "plaid", "--products", "transactions,investments", "--no-browser")
    assert connected.exit_code == 0, connected.stderr
    (body,) = link.plaid.link_bodies
    assert body["products"] == ["transactions", "investments"]
    assert body["redirect_uri"] == "https://127.0.0.1:8765/plaid"
    assert link.targets[0].port == 8765


def test_country_codes_come_from_the_providers_settings(
    link: Link, cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[providers.plaid] country_codes`` (here its variable): Link is asked for those countries."""
    monkeypatch.setenv("DASHTAM_PLAID_COUNTRY_CODES", "us, ca")
    assert cli("connect", "plaid", "--no-browser").exit_code == 0
    assert link.plaid.link_bodies[0]["country_codes"] == ["US", "CA"]


def test_an_unknown_product_is_a_usage_error(link: Link, cli: CliCall) -> None:
    """``--products auth``: exit 2 naming the products dashtam syncs; no link token made."""
    refused = cli("connect", "plaid", "--products", "auth", "--no-browser")
    assert refused.exit_code == 2
    assert "transactions, investments" in refused.stderr
    assert link.plaid.link_bodies == []


def test_update_mode_keeps_the_item_and_its_data(link: Link, cli: CliCall) -> None:
    """``--update NAME``: a link token with the item's access token, no exchange, data kept, active again."""
    assert cli("connect", "plaid", "--name", "bank", "--no-browser").exit_code == 0
    assert cli("sync").exit_code == 0
    (item,) = link.items
    item.login_required = True
    assert cli("sync").exit_code == 4
    item.login_required = False
    updated = cli("connect", "plaid", "--update", "bank", "--no-browser")
    assert updated.exit_code == 0, updated.stderr
    first, second = link.plaid.link_bodies
    assert second["access_token"] == next(iter(link.plaid.items))
    assert "products" not in second
    assert second["user"]["client_user_id"] == first["user"]["client_user_id"]
    assert len(link.plaid.calls("/item/public_token/exchange")) == 1
    listed = json.loads(cli("connections", "list", "-f", "json").stdout)
    assert [(c["name"], c["status"]) for c in listed] == [("bank", "active")]
    assert len(json.loads(cli("transactions", "list", "-f", "json").stdout)) == 1
    assert cli("sync").exit_code == 0


def test_update_of_a_connection_that_does_not_exist_is_a_usage_error(
    link: Link, cli: CliCall
) -> None:
    """``--update nope``: exit 2 with a hint; Plaid is never asked."""
    refused = cli("connect", "plaid", "--update", "nope", "--no-browser")
    assert refused.exit_code == 2
    assert "no connection named 'nope'" in refused.stderr
    assert "dashtam connections list" in refused.stderr
    assert link.plaid.requests == []


def test_keys_configured_in_the_vault_are_used_and_listed(
    link: Link, cli: CliCall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`providers configure plaid --client-id ID --environment sandbox` (secret on stdin): sealed, used."""
    monkeypatch.delenv("PLAID_CLIENT_ID")
    monkeypatch.delenv("PLAID_SECRET")
    monkeypatch.delenv("PLAID_ENV")
    missing = cli("connect", "plaid", "--no-browser")
    assert missing.exit_code == 1
    assert "providers configure plaid --client-id ID --environment ENV" in missing.stderr
    stored = cli(
        "providers",
        "configure",
        "plaid",
        "--client-id",
        CLIENT_ID,
        "--environment",
        "sandbox",
        input=f"{SECRET}\n",
    )
    assert stored.exit_code == 0, stored.stderr
    listed = json.loads(cli("providers", "list", "-f", "json").stdout)
    (row,) = [p for p in listed if p["name"] == "plaid"]
    assert row["credentials"] == "vault"
    assert row["base_url"] == ORIGIN
    assert cli("connect", "plaid", "--no-browser").exit_code == 0
    assert cli("sync").exit_code == 0
    assert link.plaid.requests[-1].headers["PLAID-SECRET"] == SECRET
    doctor = cli("doctor", "-f", "json")
    (check,) = [c for c in json.loads(doctor.stdout) if c["check"] == "plaid keys"]
    assert (check["status"], check["verdict"]) == ("ok", "stored in the vault")
    assert SECRET not in doctor.stdout


def test_doctor_says_the_keys_come_from_the_environment(link: Link, cli: CliCall) -> None:
    """`dashtam doctor`: the Plaid keys' source and environment, never their values."""
    del link
    assert cli("vault", "init").exit_code == 0
    doctor = cli("doctor", "-f", "json")
    (check,) = [c for c in json.loads(doctor.stdout) if c["check"] == "plaid keys"]
    assert check["verdict"] == "from PLAID_CLIENT_ID and PLAID_SECRET (sandbox)"
    assert SECRET not in doctor.stdout


def test_an_environment_plaid_does_not_have_is_refused(link: Link, cli: CliCall) -> None:
    """``--environment development``: exit 1 naming sandbox and production; nothing stored."""
    del link
    refused = cli(
        "providers",
        "configure",
        "plaid",
        "--client-id",
        CLIENT_ID,
        "--environment",
        "dev",
        input=f"{SECRET}\n",
    )
    assert refused.exit_code != 0
    assert "sandbox, production" in refused.stderr
