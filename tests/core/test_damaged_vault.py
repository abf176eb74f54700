"""A damaged vault row: a clear error naming the row, a way out, and token refresh never blocked."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import respx
from schwab_support import (
    BASE_URL,
    CORRELATION,
    TOKEN_URL,
    add_connection,
    mock_connection_api,
)
from sync_support import NOW, at, run_sync, transactions

from dashtam_cli.core.connections import list_connections, load_tokens
from dashtam_cli.core.credentials import resolve_credentials, store_credentials
from dashtam_cli.core.errors import ExitCode
from dashtam_cli.core.providers import get_provider
from dashtam_cli.core.settings import load_settings
from dashtam_cli.core.tokens import refresh_connections, status_report
from dashtam_cli.core.vault.errors import RecordDamaged, RecordTampered
from dashtam_cli.core.vault.vault import OpenOptions, open_vault

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from conftest import CliCall

    from dashtam_cli.core.vault.vault import Vault

NAME: Final = "brokerage"
TOKEN: Final = "token-b"
FIRST, SECOND = "11111111", "22222222"
LOGIN_AGAIN: Final = f"dashtam connect schwab --name {NAME}"


@pytest.fixture(autouse=True)
def schwab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schwab at the mocked origin, with the app's credentials in the environment."""
    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    monkeypatch.setenv("SCHWAB_API_KEY", "test-app-key-0123456789abcdef")
    monkeypatch.setenv("SCHWAB_API_SECRET", "test-app-secret-0123")


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router that refuses any request no route matches."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def raw_sql(statement: str, *params: Any) -> list[Any]:
    """Run SQL on the vault file behind dashtam's back, as a bit flip or an editor would."""
    with sqlite3.connect(load_settings().paths.vault_file) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


def with_vault(job: Callable[[Vault], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``job`` on the test's vault."""

    async def main() -> Any:
        async with open_vault(load_settings()) as vault:
            return await job(vault)

    return asyncio.run(main())


def token_row_id() -> str:
    """The id of the connection's tokens row."""
    ((row_id,),) = raw_sql("SELECT id FROM tokens")
    return str(row_id)


def token_answer() -> httpx.Response:
    """Schwab's token answer to a refresh (README: same refresh token, 1800 s)."""
    body = {
        "expires_in": 1800,
        "token_type": "Bearer",
        "scope": "api",
        "refresh_token": f"refresh-for-{TOKEN}",
        "access_token": "I0.fresh-access@",
        "id_token": "eyJ0eXAiOiJKV1QifQ.e30.c2ln",
    }
    return httpx.Response(
        200, content=json.dumps(body).encode(), headers={CORRELATION: "corr-refresh"}
    )


# --- times that are not times ---------------------------------------------------------------------

NOT_A_TIME = [
    pytest.param("next tuesday", id="text"),
    pytest.param(1741014000, id="digits"),  # a TEXT column stores an integer as its digits
    pytest.param(b"\x00\x01", id="blob"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("value", NOT_A_TIME)
@pytest.mark.parametrize("field", ["access_expires_at", "refresh_expires_at"])
def test_a_token_expiry_that_is_not_a_time_names_the_row(field: str, value: object) -> None:
    """`tokens status` on a damaged expiry: RecordDamaged naming tokens/<id> and the field."""
    add_connection(NAME, TOKEN)
    row_id = token_row_id()
    raw_sql(f"UPDATE tokens SET {field} = ?", value)  # noqa: S608 - a test's own column names

    with pytest.raises(RecordDamaged) as caught:
        asyncio.run(status_report(load_settings(), None, OpenOptions()))

    error = caught.value
    assert error.exit_code == ExitCode.ERROR
    assert f"record tokens/{row_id} (field {field})" in error.message
    assert "\n" not in error.message
    assert error.hint is not None
    assert LOGIN_AGAIN in error.hint


@pytest.mark.parametrize("value", NOT_A_TIME)
def test_an_issue_time_that_is_not_a_time_names_the_row_on_refresh(
    router: respx.MockRouter, value: object
) -> None:
    """A damaged issued_at stops that connection's refresh with the row named, not a traceback."""
    add_connection(NAME, TOKEN)
    row_id = token_row_id()
    raw_sql("UPDATE tokens SET issued_at = ?", value)
    router.post(TOKEN_URL).mock(return_value=token_answer())
    transport = httpx.MockTransport(router.async_handler)

    (result,) = asyncio.run(
        refresh_connections(load_settings(), NAME, OpenOptions(), force=True, transport=transport)
    )

    assert result.result == "failed"
    assert result.message is not None
    assert f"record tokens/{row_id} (field issued_at)" in result.message
    assert LOGIN_AGAIN in result.message


def test_a_damaged_token_row_can_be_replaced_by_a_new_login_or_removed() -> None:
    """The ways out the hint names work: a new login rewrites the row; disconnect removes it."""
    add_connection(NAME, TOKEN)
    raw_sql("UPDATE tokens SET access_expires_at = 'garbage', refresh_expires_at = 7")
    add_connection(NAME, "token-after-login")  # save_login, as `dashtam connect` does

    info, tokens = with_vault(lambda v: load_tokens(v, NAME))
    assert tokens.access_token == "token-after-login"
    assert info.access_expires_at == tokens.access_expires_at

    add_connection("other", "token-o")
    raw_sql("UPDATE tokens SET access_expires_at = 'garbage' WHERE access_token IS NOT NULL")
    from dashtam_cli.core.connections import disconnect

    removed = asyncio.run(disconnect(load_settings(), "other", OpenOptions()))
    assert removed.name == "other"
    assert raw_sql("SELECT name FROM connections") == [(NAME,)]
    removed = asyncio.run(disconnect(load_settings(), NAME, OpenOptions()))
    assert removed.name == NAME
    assert raw_sql("SELECT name FROM connections") == []  # both rows were damaged: both can go


# --- sealed columns of the wrong type -------------------------------------------------------------

WRONG_TYPES = [
    pytest.param("A0.plain-text-token@", id="text"),
    pytest.param(4611686018427387904, id="huge-integer"),
    pytest.param(12345, id="integer"),
    pytest.param(1.5, id="real"),
]


@pytest.mark.parametrize("value", WRONG_TYPES)
@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
def test_a_sealed_token_of_the_wrong_type_names_the_row(field: str, value: object) -> None:
    """TEXT, an integer or a REAL where a sealed blob belongs: RecordTampered naming the row."""
    add_connection(NAME, TOKEN)
    row_id = token_row_id()
    raw_sql(f"UPDATE tokens SET {field} = ?", value)  # noqa: S608 - a test's own column names

    with pytest.raises(RecordTampered) as caught:
        with_vault(lambda v: load_tokens(v, NAME))

    assert caught.value.message == (
        f"record tokens/{row_id} (field {field}) failed its integrity check"
    )


@pytest.mark.parametrize("value", WRONG_TYPES)
def test_sealed_app_credentials_of_the_wrong_type_name_the_row(value: object) -> None:
    """A client secret column holding TEXT or a number: RecordTampered, not a TypeError."""
    spec = get_provider("schwab")
    with_vault_create(
        lambda v: store_credentials(
            v, spec, client_id="k" * 32, client_secret="s" * 16, redirect_uri=None
        )
    )
    raw_sql("UPDATE provider_credentials SET client_secret = ?", value)

    with pytest.raises(RecordTampered) as caught:
        with_vault(lambda v: resolve_credentials(v, spec, environ={}))

    assert "(field client_secret) failed its integrity check" in caught.value.message


def with_vault_create(job: Callable[[Vault], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``job`` on the test's vault, creating it first."""

    async def main() -> Any:
        async with open_vault(load_settings(), OpenOptions(create=True)) as vault:
            return await job(vault)

    return asyncio.run(main())


def test_the_cli_names_the_damaged_row_in_one_line(cli: CliCall) -> None:
    """`tokens status` and `connections list` on a damaged expiry: exit 1, one error line."""
    add_connection(NAME, TOKEN)
    row_id = token_row_id()
    raw_sql("UPDATE tokens SET refresh_expires_at = 'not a date'")

    for args in (("tokens", "status"), ("connections", "list")):
        result = cli(*args, "--format", "json")
        assert result.exit_code == 1, args
        assert result.stdout == ""
        assert f"record tokens/{row_id} (field refresh_expires_at) is damaged" in result.stderr
        assert "Traceback" not in result.stderr
        assert "internal error" not in result.stderr


# --- damaged cache rows -------------------------------------------------------------------------


def _fill_cache(router: respx.MockRouter) -> None:
    add_connection(NAME, TOKEN)
    mock_connection_api(router, TOKEN, [FIRST, SECOND])
    result = run_sync(router, clock=at(NOW))
    assert result.outcome.failures == []
    assert transactions()[0]


def test_damaged_cache_rows_never_block_a_token_refresh(router: respx.MockRouter) -> None:
    """Accounts, positions and transactions rows of every wrong type: `tokens refresh` still works."""
    _fill_cache(router)
    raw_sql("UPDATE accounts SET number = 'plain', payload = 5, fetched_at = 7")
    raw_sql("UPDATE positions SET payload = 'plain', fetched_at = x'00'")
    raw_sql("UPDATE transactions SET payload = 4611686018427387904, occurred_at = 1.5")
    route = router.post(TOKEN_URL).mock(return_value=token_answer())
    transport = httpx.MockTransport(router.async_handler)

    (result,) = asyncio.run(
        refresh_connections(load_settings(), NAME, OpenOptions(), force=True, transport=transport)
    )

    assert (result.result, result.message) == ("refreshed", None)
    assert route.call_count == 1
    assert with_vault(lambda v: load_tokens(v, NAME))[1].access_token == "I0.fresh-access@"
    (info,) = with_vault(list_connections)
    assert info.status == "active"
