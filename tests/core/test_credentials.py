"""The app-credential resolution chain: environment, then vault, then a clear error; and storing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest

from dashtam_cli.core import audit
from dashtam_cli.core.credentials import (
    configure,
    list_providers,
    providers,
    resolve_credentials,
    store_credentials,
)
from dashtam_cli.core.errors import ConfigError, ExitCode, InputError
from dashtam_cli.core.providers import get_provider
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.vault.vault import OpenOptions, Vault, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from dashtam_cli.core.oauth.tokens import AppCredentials

pytestmark = pytest.mark.usefixtures("master_key")

T = TypeVar("T")
SPEC: Final = get_provider("schwab")
ENV_ID: Final = "EnvClientId0123456789abcdefABCDEF"
ENV_SECRET: Final = "EnvSecret0123456"
VAULT_ID: Final = "VaultClientId0123456789abcdefABC"
VAULT_SECRET: Final = "VaultSecret01234"
STORED_REDIRECT: Final = "https://127.0.0.1:9001/stored"


def in_vault(job: Callable[[Vault], Coroutine[Any, Any, T]]) -> T:
    """Run ``job`` on the test's vault (made on first use)."""

    async def run() -> T:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(run())


def store_in_vault(redirect_uri: str | None = STORED_REDIRECT) -> None:
    """Seal VAULT_ID and VAULT_SECRET (and a redirect URI) in the vault."""
    in_vault(
        lambda v: store_credentials(
            v, SPEC, client_id=VAULT_ID, client_secret=VAULT_SECRET, redirect_uri=redirect_uri
        )
    )


def resolve(env: dict[str, str]) -> AppCredentials:
    """Resolve Schwab's credentials with ``env`` as the whole environment."""
    return in_vault(lambda v: resolve_credentials(v, SPEC, env))


def both(client_id: str = ENV_ID, secret: str = ENV_SECRET) -> dict[str, str]:
    """An environment with both of Schwab's variables set."""
    return {"SCHWAB_API_KEY": client_id, "SCHWAB_API_SECRET": secret}


# --- resolution -------------------------------------------------------------------------------------


def test_the_environment_wins_over_the_vault() -> None:
    """Both variables set: they are used, not the stored pair; the redirect still comes from the vault."""
    store_in_vault()
    creds = resolve(both())
    assert (creds.client_id, creds.client_secret, creds.source) == (
        ENV_ID,
        ENV_SECRET,
        "environment",
    )
    assert creds.redirect_uri == STORED_REDIRECT
    assert "--redirect-uri" in creds.redirect_setting


def test_environment_values_are_stripped() -> None:
    """Surrounding whitespace (a pasted newline) is not part of the credential."""
    creds = resolve(both(f"  {ENV_ID}\n", f"\t{ENV_SECRET} "))
    assert (creds.client_id, creds.client_secret) == (ENV_ID, ENV_SECRET)


@pytest.mark.parametrize(
    ("env", "present", "missing"),
    [
        pytest.param(
            {"SCHWAB_API_KEY": ENV_ID}, "SCHWAB_API_KEY", "SCHWAB_API_SECRET", id="id-only"
        ),
        pytest.param(
            {"SCHWAB_API_SECRET": ENV_SECRET},
            "SCHWAB_API_SECRET",
            "SCHWAB_API_KEY",
            id="secret-only",
        ),
        pytest.param(
            {"SCHWAB_API_KEY": ENV_ID, "SCHWAB_API_SECRET": "   "},
            "SCHWAB_API_KEY",
            "SCHWAB_API_SECRET",
            id="secret-blank",
        ),
    ],
)
def test_a_half_set_environment_is_refused_even_with_the_vault_configured(
    env: dict[str, str], present: str, missing: str
) -> None:
    """One variable without the other is an error naming both, not a silent use of the vault."""
    store_in_vault()
    with pytest.raises(ConfigError) as caught:
        resolve(env)
    assert caught.value.message == f"{present} is set but {missing} is not"
    assert caught.value.exit_code == ExitCode.ERROR
    assert caught.value.hint is not None
    assert "unset both" in caught.value.hint
    assert ENV_ID not in str(caught.value)
    assert ENV_SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param(both(client_id="has space"), "SCHWAB_API_KEY", id="space-in-id"),
        pytest.param(both(secret="ctl\x07char"), "SCHWAB_API_SECRET", id="control-in-secret"),
        pytest.param(both(secret="s\u00e9cret"), "SCHWAB_API_SECRET", id="non-ascii-secret"),
        pytest.param(both(client_id="x" * 513), "SCHWAB_API_KEY", id="id-over-512"),
    ],
)
def test_a_malformed_environment_value_is_named_not_echoed(env: dict[str, str], named: str) -> None:
    """A pasted value with spaces, control or non-ASCII characters, or too long, is refused by name."""
    with pytest.raises(ConfigError) as caught:
        resolve(env)
    assert caught.value.message.startswith(f"{named} ")
    for value in env.values():
        assert value not in str(caught.value)
        assert value not in (caught.value.hint or "")


def test_exactly_512_characters_are_accepted() -> None:
    """The length bound is inclusive: 512 characters pass."""
    creds = resolve(both(client_id="x" * 512))
    assert creds.client_id == "x" * 512


def test_the_vault_is_used_when_the_environment_is_empty() -> None:
    """No variables set: the sealed pair and its redirect URI come back, named as the vault's."""
    store_in_vault()
    creds = resolve({})
    assert (creds.client_id, creds.client_secret, creds.source) == (
        VAULT_ID,
        VAULT_SECRET,
        "vault",
    )
    assert creds.redirect_uri == STORED_REDIRECT


def test_the_redirect_variable_wins_over_the_stored_one() -> None:
    """SCHWAB_REDIRECT_URI overrides the stored redirect URI, and is what a hint names."""
    store_in_vault()
    creds = resolve({"SCHWAB_REDIRECT_URI": " https://127.0.0.1:9443 "})
    assert creds.client_id == VAULT_ID
    assert creds.redirect_uri == "https://127.0.0.1:9443"
    assert creds.redirect_setting == "SCHWAB_REDIRECT_URI"


def test_without_any_redirect_the_provider_default_is_used() -> None:
    """Neither variable nor stored redirect: the provider's default, with its variable as the hint."""
    store_in_vault(redirect_uri=None)
    creds = resolve({})
    assert creds.redirect_uri == SPEC.default_redirect_uri == "https://127.0.0.1:8182"
    assert creds.redirect_setting == "SCHWAB_REDIRECT_URI"


def test_nothing_anywhere_is_an_error_saying_both_ways() -> None:
    """No variables and nothing stored: one error naming the configure command and the variables."""
    with pytest.raises(ConfigError) as caught:
        resolve({})
    assert caught.value.message == "no app credentials for Charles Schwab"
    hint = caught.value.hint or ""
    assert "dashtam providers configure schwab" in hint
    assert "SCHWAB_API_KEY" in hint
    assert "SCHWAB_API_SECRET" in hint


# --- storing ----------------------------------------------------------------------------------------


def test_storing_again_replaces_the_pair() -> None:
    """A second store replaces the first: one row, the new values."""
    store_in_vault()
    in_vault(
        lambda v: store_credentials(
            v, SPEC, client_id="NewId", client_secret="NewSecret", redirect_uri=None
        )
    )
    creds = resolve({})
    assert (creds.client_id, creds.client_secret) == ("NewId", "NewSecret")
    assert creds.redirect_uri == SPEC.default_redirect_uri

    async def rows(vault: Vault) -> int:
        from sqlalchemy import func, select

        from dashtam_cli.core.vault import schema

        async with vault.reading() as conn:
            return int(
                await conn.scalar(select(func.count()).select_from(schema.provider_credentials))
                or 0
            )

    assert in_vault(rows) == 1


def test_stored_credentials_are_sealed_on_disk() -> None:
    """Neither the client id nor the secret is in the vault's files (or pg_dump) in the clear."""
    from raw_vault import raw_vault_bytes

    store_in_vault()
    data = raw_vault_bytes()
    assert data
    assert VAULT_SECRET.encode() not in data
    assert VAULT_ID.encode() not in data


# --- listing and configuring ------------------------------------------------------------------------


def test_list_providers_says_where_credentials_come_from_never_what_they_are() -> None:
    """None, then the vault, then the environment (which wins), and never a value."""
    listed = asyncio.run(list_providers(None, {}))
    assert [(p.name, p.credentials) for p in listed] == [
        ("schwab", None),
        ("simplefin", None),
        ("plaid", None),
    ]
    store_in_vault()
    stored, simplefin, _ = in_vault(lambda v: list_providers(v, {}))
    # A pasted-token login has no app credentials: nothing to say where they come from.
    assert (simplefin.name, simplefin.credentials, simplefin.base_url) == ("simplefin", None, None)
    assert (stored.name, stored.display_name, stored.credentials) == (
        "schwab",
        "Charles Schwab",
        "vault",
    )
    env, _, _ = in_vault(lambda v: list_providers(v, both()))
    assert env.credentials == "environment"
    half, _, _ = in_vault(lambda v: list_providers(v, {"SCHWAB_API_KEY": ENV_ID}))
    assert half.credentials == "vault"
    dumped = env.model_dump_json()
    for secret in (ENV_ID, ENV_SECRET, VAULT_ID, VAULT_SECRET):
        assert secret not in dumped


def test_providers_without_a_vault_does_not_create_one() -> None:
    """Listing providers before any vault exists reports none stored and makes no vault."""
    settings = load_settings()
    infos = asyncio.run(providers(settings, OpenOptions()))
    assert [(i.name, i.credentials) for i in infos] == [
        ("schwab", None),
        ("simplefin", None),
        ("plaid", None),
    ]
    assert not settings.paths.vault_file.exists()


def test_configure_stores_strips_and_audits() -> None:
    """Configure stores the stripped pair, reports the vault as the source, and audits it."""
    info = asyncio.run(
        configure(
            load_settings(),
            "schwab",
            client_id=f" {VAULT_ID} ",
            client_secret=f"{VAULT_SECRET}\n",
            redirect_uri="https://127.0.0.1:9002",
            options=OpenOptions(),
        )
    )
    assert info.credentials == "vault"
    creds = resolve({})
    assert (creds.client_id, creds.client_secret) == (VAULT_ID, VAULT_SECRET)
    assert creds.redirect_uri == "https://127.0.0.1:9002"
    entries = in_vault(audit.list_audit)
    assert [(e.operation, e.outcome, e.provider) for e in entries] == [
        ("provider.configure", "ok", "schwab")
    ]
    assert VAULT_SECRET not in entries[0].model_dump_json()


@pytest.mark.parametrize(
    ("client_id", "secret", "words"),
    [
        pytest.param(" ", VAULT_SECRET, "must not be empty", id="empty-id"),
        pytest.param(VAULT_ID, "", "must not be empty", id="empty-secret"),
        pytest.param("two words", VAULT_SECRET, "the client id holds spaces", id="space-in-id"),
        pytest.param(VAULT_ID, "x" * 600, "the secret is over 512 characters", id="long-secret"),
    ],
)
def test_configure_refuses_bad_input_before_making_a_vault(
    client_id: str, secret: str, words: str
) -> None:
    """Empty or malformed input is a usage error (exit 2), and no vault is created for it."""
    settings = load_settings()
    with pytest.raises(InputError) as caught:
        asyncio.run(
            configure(
                settings,
                "schwab",
                client_id=client_id,
                client_secret=secret,
                redirect_uri=None,
                options=OpenOptions(),
            )
        )
    assert words in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert secret.strip() == "" or secret not in str(caught.value)
    assert not settings.paths.vault_file.exists()
